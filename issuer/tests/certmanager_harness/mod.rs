//! Test harness for the cert-manager controllers: a PKI made with the canopy core
//! (root, `aws` and `azure` intermediates), an in-process `Issuer` over SQLite, one
//! real control plane per cluster (etcd and kube-apiserver, audited, with cert-manager's
//! CRDs and its real webhook; its approver is off, so the tests approve), and requests
//! shaped like istio-csr's and cert-manager's. [`Env::fake`] runs the same on the fake API
//! server, for the faults the real one cannot produce on demand.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use canopy::ca::CertificateAuthority;
use canopy::key::{KeyPair, KeyType};
use canopy::profile::{CaProfile, CaRequest};
use canopy::ttl::Ttl;
use canopy_issuer::certmanager::{crd_files, Controller, Settings};
use canopy_issuer::config::{ClusterConfig, Config};
use canopy_issuer::intermediate::Authorities;
use canopy_issuer::metrics::Metrics;
use canopy_issuer::store::{CertificateFilter, CertificateRecord, Store};
use canopy_issuer::Issuer;
use canopy_testsupport::certmanager::{CertManager, CertManagerOptions};
use canopy_testsupport::cluster::{AuditMark, ClusterOptions, TestCluster};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_testserver::TestApiServer;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

pub const TD: &str = "mesh.example";
pub const POLICY: &str = "cert-manager";
/// istio-csr's service account: creates every request in istio-system for all
/// namespaces, so the clusters trust it (`cert_manager.trusted_requesters`).
pub const ISTIO_CSR_USER: &str = "system:serviceaccount:cert-manager:cert-manager-istio-csr";

/// One cluster's API server: a real control plane with cert-manager's webhook, or the
/// fake one (only for the three fault tests of certmanager_branches, which create as
/// admin, read back single objects and read the fake's own request log).
#[allow(clippy::large_enum_variant)] // One per cluster; never moved in a hot path.
pub enum Kube {
    Real(TestCluster, CertManager),
    Fake(TestApiServer),
}

impl Kube {
    pub fn fake(&self) -> &TestApiServer {
        match self {
            Kube::Fake(s) => s,
            Kube::Real(c, _) => panic!("{} is a real control plane", c.name()),
        }
    }

    pub fn real(&self) -> &TestCluster {
        match self {
            Kube::Real(c, _) => c,
            Kube::Fake(s) => panic!("{} is the fake API server", s.name()),
        }
    }

    /// Creates an object as admin; the error is the Status (or, from kubectl, its message).
    pub fn create(&self, object: Value) -> Result<Value, Value> {
        match self {
            Kube::Fake(s) => s.create(object),
            Kube::Real(c, _) => real_create(c, &[], object),
        }
    }

    /// [`Kube::create`] as `user` (real control plane: admin impersonating the user, so the
    /// webhook records the user in a CertificateRequest's `spec.username`).
    pub fn create_as(&self, user: &User, object: Value) -> Result<Value, Value> {
        let mut args = vec![format!("--as={}", user.username)];
        args.extend(
            user.groups
                .iter()
                .filter(|g| *g != "system:authenticated")
                .map(|g| format!("--as-group={g}")),
        );
        real_create(self.real(), &args, object)
    }

    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        match self {
            Kube::Fake(s) => s.get(api_version, plural, namespace, name),
            Kube::Real(c, _) => real_get(c, api_version, plural, namespace, Some(name)),
        }
    }

    /// All objects of a type (real control plane).
    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        real_get(self.real(), api_version, plural, namespace, None)
            .map(|v| v["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        match self {
            Kube::Fake(s) => s.client().await,
            Kube::Real(c, _) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
                let config = kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .unwrap();
                kube::Client::try_from(config).unwrap()
            }
        }
    }
}

/// `kubectl get RESOURCE`, by its full name (`plural.version.group`).
fn resource(api_version: &str, plural: &str) -> String {
    match api_version.split_once('/') {
        Some((group, version)) => format!("{plural}.{version}.{group}"),
        None => plural.to_string(),
    }
}

fn real_get(
    c: &TestCluster,
    api_version: &str,
    plural: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Option<Value> {
    let mut cmd = c.kubectl();
    cmd.args(["get", "-o", "json", &resource(api_version, plural)]);
    cmd.args(name);
    if let Some(ns) = namespace {
        cmd.args(["-n", ns]);
    }
    let out = cmd.output().expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("NotFound") {
        return None;
    }
    assert!(
        out.status.success(),
        "kubectl get {plural} {name:?}: {stderr}"
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn real_create(c: &TestCluster, args: &[String], object: Value) -> Result<Value, Value> {
    let mut cmd = c.kubectl();
    cmd.args(["create", "-o", "json", "-f", "-"]).args(args);
    let out = canopy_testsupport::certmanager::output_with_stdin(&mut cmd, &object.to_string());
    if out.status.success() {
        return Ok(serde_json::from_slice(&out.stdout).unwrap());
    }
    let message = String::from_utf8_lossy(&out.stderr).into_owned();
    let reason = if message.contains("AlreadyExists") || message.contains("already exists") {
        "AlreadyExists"
    } else {
        ""
    };
    Err(json!({"message": message, "reason": reason}))
}

/// A user a request is made as (impersonated by the admin).
pub struct User {
    pub username: String,
    pub groups: Vec<String>,
}

/// istio-csr as the apiserver authenticates it.
pub fn istio_csr_user() -> User {
    User {
        username: ISTIO_CSR_USER.into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:cert-manager".into(),
            "system:authenticated".into(),
        ],
    }
}

/// A PKI, an issuer configuration, and the clusters.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub issuer: Arc<Issuer>,
    pub clusters: Vec<Cluster>,
}

/// One cluster: its API server and its entry in the issuer config.
pub struct Cluster {
    pub server: Kube,
    pub config: ClusterConfig,
}

/// A running controller ("a replica").
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    pub leader: watch::Receiver<bool>,
}

impl Running {
    /// Graceful stop (releases the Lease).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }

    /// A crash: the task is dropped mid-flight, nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Root and the `aws` / `azure` intermediates, written to `dir`.
fn make_pki(dir: &Path) {
    let now = time::OffsetDateTime::now_utc();
    let td: canopy::spiffe::TrustDomain = TD.parse().unwrap();
    let root_key = Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap());
    let root = CertificateAuthority::new_root(
        root_key,
        &CaRequest {
            trust_domain: Some(td.clone()),
            ttl: Some(Ttl::years(10)),
            ..CaRequest::new(CaProfile::Root, "canopy test root")
        },
        now,
    )
    .unwrap();
    write(&dir.join("root.pem"), &root.certificate().to_pem());
    for name in ["aws", "azure"] {
        let (issued, key) = root
            .issue_with_new_key(
                &CaRequest {
                    trust_domain: Some(td.clone()),
                    ttl: Some(Ttl::years(5)),
                    ..CaRequest::new(
                        CaProfile::Intermediate,
                        format!("canopy test {name} intermediate"),
                    )
                },
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        write(
            &dir.join(format!("{name}.pem")),
            &issued.certificate.to_pem(),
        );
        write(
            &dir.join(format!("{name}-key.pem")),
            &key.to_unencrypted_pem(),
        );
    }
}

fn config_yaml(clusters: &[&str]) -> String {
    let mut text = format!(
        "trust_domain: {TD}\n\
         storage: {{ url: \"sqlite:issuer.db\" }}\n\
         roots: [root.pem]\n\
         intermediates:\n\
         \x20 - {{ name: aws, cert: aws.pem, key: aws-key.pem }}\n\
         \x20 - {{ name: azure, cert: azure.pem, key: azure-key.pem }}\n\
         clusters:\n"
    );
    for c in clusters {
        text.push_str(&format!(
            "  - {{ name: {c}, intermediate: {c}, kubeconfig: {c}.kubeconfig, context: {c} }}\n"
        ));
    }
    text.push_str(&format!(
        "policies:\n\
         \x20 - name: {POLICY}\n\
         \x20   spiffe_ids: [\"spiffe://{TD}/ns/*/sa/*\"]\n\
         \x20   dns_names: [\"{{namespace}}.*.example.com\", \"*.{{namespace}}.svc.cluster.local\", \"*.*.example.com\"]\n\
         \x20   max_ttl: 90d\n\
         \x20   profiles: [workload, server, client]\n"
    ));
    text
}

impl Env {
    /// A PKI, an issuer, and one real control plane per named cluster (`aws`, `azure`),
    /// with cert-manager's CRDs and webhook (not its approver) and our CRDs installed.
    pub async fn new(clusters: &[&str]) -> Env {
        Env::with_crds(clusters, true).await
    }

    /// Like [`Env::new`]; `ours` false leaves our CRDs out (to install them with kubectl).
    pub async fn with_crds(clusters: &[&str], ours: bool) -> Env {
        Env::build(clusters, ours, true).await
    }

    /// Like [`Env::new`] on the fake API server, for faults the real one cannot produce.
    pub async fn fake(clusters: &[&str]) -> Env {
        Env::build(clusters, true, false).await
    }

    async fn build(clusters: &[&str], ours: bool, real: bool) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "canopy_issuer=info".into()),
            )
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path());
        let config_path = dir.path().join("issuer.yaml");
        write(&config_path, &config_yaml(clusters));
        let mut envs = Vec::new();
        let config = Config::load(&config_path).unwrap();
        let mut started = Vec::new();
        for name in clusters {
            let name = name.to_string();
            started.push(tokio::task::spawn_blocking(move || {
                real.then(|| start_real(&name))
            }));
        }
        for (i, name) in clusters.iter().enumerate() {
            let kubeconfig = dir.path().join(format!("{name}.kubeconfig"));
            let server = match started.remove(0).await.unwrap() {
                Some((c, cm)) => {
                    std::fs::copy(c.kubeconfig(), &kubeconfig).unwrap();
                    Kube::Real(c, cm)
                }
                None => {
                    let server = TestApiServer::start(name).await;
                    server.write_kubeconfig(&kubeconfig, name).unwrap();
                    server.install_cert_manager_crds().unwrap();
                    Kube::Fake(server)
                }
            };
            for ns in NAMESPACES {
                ensure_namespace(&server, ns);
            }
            if ours {
                install_our_crds(&server);
            }
            envs.push(Cluster {
                server,
                config: config.clusters[i].clone(),
            });
        }
        let issuer = new_issuer(&config).await;
        Env {
            dir,
            config,
            issuer,
            clusters: envs,
        }
    }

    pub fn cluster(&self, name: &str) -> &Cluster {
        self.clusters
            .iter()
            .find(|c| c.config.name.as_str() == name)
            .unwrap()
    }

    /// Another issuer over the same database and CAs: a restarted process.
    pub async fn restarted_issuer(&self) -> Arc<Issuer> {
        new_issuer(&self.config).await
    }

    pub fn db_url(&self) -> String {
        self.config.storage.url.clone()
    }

    /// Starts the controllers of `cluster` with `issuer` and `settings`.
    pub async fn start_with(
        &self,
        cluster: &str,
        issuer: Arc<Issuer>,
        settings: Settings,
    ) -> Running {
        let c = self.cluster(cluster);
        let client = canopy_issuer::certmanager::client_for(&c.config)
            .await
            .unwrap();
        let config = c.config.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (leader_tx, leader_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            Controller::run_observed(
                &config,
                client,
                issuer,
                settings,
                async move {
                    let _ = stop_rx.await;
                },
                leader_tx,
            )
            .await
            .unwrap();
        });
        Running {
            stop: Some(stop_tx),
            task,
            leader: leader_rx,
        }
    }

    pub async fn start(&self, cluster: &str) -> Running {
        self.start_with(cluster, self.issuer.clone(), settings())
            .await
    }

    /// Every certificate record in the store.
    pub async fn records(&self) -> Vec<CertificateRecord> {
        self.issuer
            .store()
            .certificates(&CertificateFilter::default(), None, 1000)
            .await
            .unwrap()
            .0
    }
}

/// A real control plane, audited, with cert-manager's CRDs and webhook; cert-manager's
/// controller runs without its approver (the tests approve, or leave requests unapproved).
fn start_real(name: &str) -> (TestCluster, CertManager) {
    let cluster = TestCluster::start_with(name, ClusterOptions::default().audit());
    let cm = CertManager::start_with(
        &cluster,
        CertManagerOptions::default()
            .controller_arg("--controllers=*,-certificaterequests-approver"),
    );
    canopy_testsupport::run_ok(
        cluster
            .kubectl()
            .args(["create", "namespace", "istio-system"]),
    );
    // istio-csr's RBAC: it creates and watches CertificateRequests in istio-system.
    cluster.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: cert-manager-istio-csr, namespace: istio-system }}
rules:
- apiGroups: [cert-manager.io]
  resources: [certificaterequests]
  verbs: [create, get, list, watch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: cert-manager-istio-csr, namespace: istio-system }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: cert-manager-istio-csr }}
subjects:
- {{ kind: User, name: \"{ISTIO_CSR_USER}\", apiGroup: rbac.authorization.k8s.io }}
"
    ));
    (cluster, cm)
}

/// Our CRDs (ClusterIssuer, Issuer), and on the real apiserver, wait until they are served.
pub fn install_our_crds(server: &Kube) {
    let mut names = Vec::new();
    for (_, yaml) in crd_files() {
        let crd: Value = serde_yaml::from_str(&yaml).unwrap();
        names.push(format!("crd/{}", crd["metadata"]["name"].as_str().unwrap()));
        server.create(crd).unwrap();
    }
    if let Kube::Real(c, _) = server {
        canopy_testsupport::run_ok(
            c.kubectl()
                .args(["wait", "--for=condition=Established", "--timeout=60s"])
                .args(&names),
        );
    }
}

async fn new_issuer(config: &Config) -> Arc<Issuer> {
    let store = Store::connect(&config.storage.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let authorities = Arc::new(Authorities::load(config, time::OffsetDateTime::now_utc()).unwrap());
    Arc::new(Issuer::new(
        config,
        authorities,
        store,
        Arc::new(Metrics::new()),
    ))
}

/// Namespaces every test cluster has.
pub const NAMESPACES: [&str; 5] = ["default", "istio-system", "web", "team-a", "canopy"];

/// Creates a namespace unless it exists.
pub fn ensure_namespace(server: &Kube, name: &str) {
    match server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    {
        Ok(_) => {}
        Err(s) if s["reason"] == "AlreadyExists" => {}
        Err(s) => panic!("namespace {name}: {s}"),
    }
}

/// Fast settings for tests.
pub fn settings() -> Settings {
    let mut s = Settings::new(POLICY);
    s.trusted_requesters = vec![ISTIO_CSR_USER.to_string()];
    s.backoff_base = Duration::from_millis(100);
    s.backoff_max = Duration::from_secs(1);
    s
}

/// A key and a PEM CSR for it.
pub struct KeyedCsr {
    pub key: rcgen::KeyPair,
    pub pem: String,
}

/// A CSR as istio-csr makes it: no subject, one SPIFFE URI SAN.
pub fn istio_csr(spiffe_id: &str) -> KeyedCsr {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        spiffe_id.to_string().try_into().unwrap(),
    )];
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    KeyedCsr { key, pem }
}

/// A CSR as cert-manager makes it for a `Certificate` with `dnsNames` and `commonName`.
pub fn dns_csr(name: &str) -> KeyedCsr {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    KeyedCsr { key, pem }
}

/// A CertificateRequest object.
pub fn certificate_request(
    namespace: &str,
    name: &str,
    csr_pem: &str,
    issuer_ref: Value,
    extra_spec: Value,
) -> Value {
    let mut spec = json!({
        "request": base64::engine::general_purpose::STANDARD.encode(csr_pem.as_bytes()),
        "issuerRef": issuer_ref,
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// As istio-csr sends it: 1 h, isCA false, client auth + server auth.
pub fn istio_csr_spec() -> Value {
    json!({"duration": "1h0m0s", "isCA": false, "usages": ["client auth", "server auth"]})
}

/// As cert-manager sends it for a `Certificate` with default usages and 90 days.
pub fn certificate_spec() -> Value {
    json!({"duration": "2160h0m0s", "isCA": false, "usages": ["digital signature", "key encipherment"]})
}

pub fn cluster_issuer_ref(name: &str) -> Value {
    json!({"group": "pki.canopy.dev", "kind": "ClusterIssuer", "name": name})
}

pub fn issuer_ref(name: &str) -> Value {
    json!({"group": "pki.canopy.dev", "kind": "Issuer", "name": name})
}

/// Creates a ClusterIssuer (`spec` may be `{}`).
pub fn create_cluster_issuer(server: &Kube, name: &str, spec: Value) {
    server
        .create(json!({
            "apiVersion": "pki.canopy.dev/v1alpha1",
            "kind": "ClusterIssuer",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
}

/// Creates an Issuer.
pub fn create_issuer(server: &Kube, namespace: &str, name: &str, spec: Value) {
    server
        .create(json!({
            "apiVersion": "pki.canopy.dev/v1alpha1",
            "kind": "Issuer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .unwrap();
}

fn cr_api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    );
    Api::namespaced_with(client, namespace, &ar)
}

/// Sets a condition (`Approved` / `Denied`) through `/status`, as cert-manager's
/// approver does (its own field manager, so ours never owns it).
pub async fn set_approval(server: &Kube, namespace: &str, name: &str, type_: &str) {
    set_approval_as(server, "cert-manager-approver", namespace, name, type_).await;
}

/// [`set_approval`] under another field manager (a second approver).
pub async fn set_approval_as(
    server: &Kube,
    manager: &str,
    namespace: &str,
    name: &str,
    type_: &str,
) {
    // Retried like cert-manager does: a test may be injecting API errors.
    let mut attempts = 0;
    while let Err(e) = try_set_approval_as(server, manager, namespace, name, type_).await {
        attempts += 1;
        assert!(attempts < 20, "approving {namespace}/{name}: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One attempt of [`set_approval_as`]; the error is the apiserver's answer.
pub async fn try_set_approval_as(
    server: &Kube,
    manager: &str,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Result<(), String> {
    let reason = if type_ == "Approved" {
        "cert-manager.io"
    } else {
        "policy.cert-manager.io"
    };
    let body = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"conditions": [{
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": format!("{type_} by the test approver"),
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }]},
    });
    let api = cr_api(server.client().await, namespace);
    let params = PatchParams::apply(manager).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Labels a namespace `cert-manager.io/disable-validation=true` on the real apiserver, so
/// cert-manager's validating webhook (and its approval check) skips it, as in cert-manager's
/// own namespace; a no-op on the fake, which has no webhook.
pub fn disable_validation(server: &Kube, namespace: &str) {
    if let Kube::Real(c, _) = server {
        canopy_testsupport::run_ok(c.kubectl().args([
            "label",
            "namespace",
            namespace,
            "cert-manager.io/disable-validation=true",
        ]));
    }
}

/// Waits until the store holds `n` certificates; returns them.
pub async fn wait_records(env: &Env, n: usize) -> Vec<CertificateRecord> {
    let start = Instant::now();
    loop {
        let records = env.records().await;
        if records.len() >= n {
            return records;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("expected {n} certificates, have {}", records.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn approve(server: &Kube, namespace: &str, name: &str) {
    set_approval(server, namespace, name, "Approved").await;
}

pub fn get_cr(server: &Kube, namespace: &str, name: &str) -> Option<Value> {
    server.get(
        "cert-manager.io/v1",
        "certificaterequests",
        Some(namespace),
        name,
    )
}

/// The `Ready` condition of a request.
pub fn ready(cr: &Value) -> Option<Value> {
    cr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

/// Polls until `f` returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) for an events.k8s.io Event in `namespace` matching `pred`: the
/// controller publishes it just after the status write, so it may trail the status.
pub async fn wait_event(
    server: &Kube,
    namespace: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = server.list("events.k8s.io/v1", "events", Some(namespace));
        if events.iter().any(&pred) || start.elapsed() > Duration::from_secs(10) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the request's Ready condition to have `reason`; returns the request.
pub async fn wait_reason(server: &Kube, namespace: &str, name: &str, reason: &str) -> Value {
    let mut last = Value::Null;
    let start = Instant::now();
    loop {
        if let Some(cr) = get_cr(server, namespace, name) {
            if ready(&cr).is_some_and(|c| c["reason"] == reason) {
                return cr;
            }
            last = cr;
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "{namespace}/{name} did not reach reason {reason}; last:\n{}",
                serde_json::to_string_pretty(&last["status"]).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `issuer` is signing (in these tests, `what`, held at the store by a
/// [`DbWriteLock`]).
pub async fn wait_signing(issuer: &Issuer, what: &str) {
    let in_flight = &issuer.metrics().signings_in_flight;
    eventually(
        &format!("{what} to be signing (canopy_signings_in_flight above 0)"),
        Duration::from_secs(30),
        || (in_flight.get() > 0).then_some(()),
    )
    .await
}

/// Decodes a base64 PEM status field.
pub fn b64_pem(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The response codes of the status writes (PATCH/PUT on `/status`) made to one
/// request, in order, by anyone but cert-manager's own controllers (user agent
/// `cert-manager-...`), from the real apiserver's audit log.
pub fn status_write_codes(server: &Kube, namespace: &str, name: &str) -> Vec<u16> {
    server
        .real()
        .writes_since(AuditMark::START)
        .iter()
        .filter(|e| {
            e.resource == "certificaterequests"
                && e.subresource == "status"
                && e.namespace == namespace
                && e.name == name
                && !e.user_agent.contains("cert-manager/")
        })
        .map(|e| e.code)
        .collect()
}

/// How many status writes [`status_write_codes`] counts.
pub fn status_writes(server: &Kube, namespace: &str, name: &str) -> usize {
    status_write_codes(server, namespace, name).len()
}

/// Holds SQLite's write lock until dropped: signing blocks before it is recorded.
pub struct DbWriteLock {
    conn: Option<sqlx::SqliteConnection>,
}

impl DbWriteLock {
    pub async fn take(url: &str) -> DbWriteLock {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        DbWriteLock { conn: Some(conn) }
    }

    pub async fn release(mut self) {
        use sqlx::Connection;
        let mut conn = self.conn.take().unwrap();
        sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

pub fn kubeconfig_path(env: &Env, cluster: &str) -> PathBuf {
    env.dir.path().join(format!("{cluster}.kubeconfig"))
}
