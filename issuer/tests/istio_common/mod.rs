//! Shared by the istio_* tests: a PKI (roots, per-cloud intermediates as files), two real
//! control planes (aws, azure: etcd and kube-apiserver, audited), the issuer config and
//! store, and independent openssl checks. istio_faults runs the same `Mesh` on the fake API
//! server for the faults the real one cannot produce on demand.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use canopy::ca::{CertificateAuthority, IssuedCertificate};
use canopy::cert::Certificate;
use canopy::key::{KeyPair, KeyType};
use canopy::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest};
use canopy::ttl::Ttl;
use canopy_issuer::config::Config;
use canopy_issuer::istio::{IstioClusterConfig, IstioConfig, IstioSetup};
use canopy_issuer::store::Store;
use canopy_testsupport::cluster::{AuditMark, ClusterOptions, TestCluster};
use kube_testserver::TestApiServer;
use serde_json::{json, Value};
use time::OffsetDateTime;

pub const TD: &str = "mesh.example";
pub const NS: &str = "istio-system";

pub fn req(profile: CaProfile, cn: &str, ttl: Option<Ttl>) -> CaRequest {
    CaRequest {
        trust_domain: Some(TD.parse().unwrap()),
        ttl,
        ..CaRequest::new(profile, cn)
    }
}

/// A root CA kept in memory, its certificate written to `root-NAME.pem`.
pub fn new_root(dir: &Path, name: &str, now: OffsetDateTime) -> CertificateAuthority {
    let key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
    std::fs::write(
        dir.join(format!("root-{name}-key.pem")),
        key.to_unencrypted_pem().as_bytes(),
    )
    .unwrap();
    let root = CertificateAuthority::new_root(
        Arc::new(key),
        &req(CaProfile::Root, &format!("Root {name}"), None),
        now,
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("root-{name}.pem")),
        root.certificate().to_pem(),
    )
    .unwrap();
    root
}

/// Issues an intermediate under `root` and writes NAME.pem and NAME-key.pem.
pub fn new_intermediate(
    dir: &Path,
    root: &CertificateAuthority,
    name: &str,
    key_type: KeyType,
    ttl: Option<Ttl>,
    now: OffsetDateTime,
) -> (IssuedCertificate, PathBuf) {
    let (issued, key) = root
        .issue_with_new_key(&req(CaProfile::Intermediate, name, ttl), key_type, now)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), issued.certificate.to_pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}-key.pem")),
        key.to_unencrypted_pem().as_bytes(),
    )
    .unwrap();
    (issued, dir.join(format!("{name}.pem")))
}

/// One cluster's API server: a real control plane (etcd and kube-apiserver, audited), or
/// the fake one, kept only for the faults the real apiserver cannot produce on demand
/// (istio_faults, which reads the fake's own request log).
pub enum Api {
    Real(TestCluster),
    Fake(TestApiServer),
}

impl Api {
    pub fn name(&self) -> &str {
        match self {
            Api::Real(c) => c.name(),
            Api::Fake(s) => s.name(),
        }
    }

    pub fn real(&self) -> &TestCluster {
        match self {
            Api::Real(c) => c,
            Api::Fake(_) => panic!("{} is the fake API server", self.name()),
        }
    }

    pub fn real_mut(&mut self) -> &mut TestCluster {
        match self {
            Api::Real(c) => c,
            Api::Fake(s) => panic!("{} is the fake API server", s.name()),
        }
    }

    pub fn fake(&self) -> &TestApiServer {
        match self {
            Api::Fake(s) => s,
            Api::Real(c) => panic!("{} is a real control plane", c.name()),
        }
    }

    /// `kubectl get RESOURCE [NAME] -n NS -o json` on the real server.
    fn kubectl_get(c: &TestCluster, args: &[&str]) -> Option<Value> {
        let out = c
            .kubectl()
            .args(["get", "-n", NS, "-o", "json"])
            .args(args)
            .output()
            .expect("run kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("NotFound") {
            return None;
        }
        assert!(out.status.success(), "kubectl get {args:?}: {stderr}");
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }

    /// `istio-system/cacerts`, as JSON.
    pub fn secret(&self) -> Option<Value> {
        match self {
            Api::Real(c) => Api::kubectl_get(c, &["secret", "cacerts"]),
            Api::Fake(s) => s.get("v1", "secrets", Some(NS), "cacerts"),
        }
    }

    /// The Events in `istio-system` (real control plane).
    pub fn events(&self) -> Vec<Value> {
        Api::kubectl_get(self.real(), &["events"]).unwrap()["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Where the audit log ends now (real control plane).
    pub fn mark(&self) -> AuditMark {
        self.real().audit_mark()
    }

    /// The requests since `mark`, as (verb, resource, code), the writes first received
    /// whether or not they succeeded or changed anything; the apiserver's own requests
    /// are left out.
    pub fn requests_since(&self, mark: AuditMark) -> Vec<(String, String, u16)> {
        self.real()
            .audit_since(mark)
            .into_iter()
            .filter(|e| e.user != "system:apiserver")
            .map(|e| (e.verb, e.resource, e.code))
            .collect()
    }

    /// The writes since `mark` (create, update, patch, delete), as text.
    pub fn writes_since(&self, mark: AuditMark) -> Vec<String> {
        self.real()
            .writes_since(mark)
            .iter()
            .map(|e| e.to_string())
            .collect()
    }
}

/// Two clusters' API servers, a PKI under root A, a store.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub aws: Api,
    pub azure: Api,
    pub root_a: CertificateAuthority,
    pub store: Store,
    pub t0: OffsetDateTime,
    /// Root files named in the config, in order.
    pub roots: Vec<String>,
    /// (name, intermediate) per cluster.
    pub cluster_intermediates: Vec<(String, String)>,
    /// Extra intermediates named in the config.
    pub intermediates: Vec<String>,
}

/// Starts the real aws and azure control planes (audited) side by side.
pub async fn real_clusters() -> (TestCluster, TestCluster) {
    let start = |name: &'static str| {
        tokio::task::spawn_blocking(move || {
            TestCluster::start_with(name, ClusterOptions::default().audit())
        })
    };
    let (aws, azure) = (start("aws"), start("azure"));
    (aws.await.unwrap(), azure.await.unwrap())
}

impl Mesh {
    /// Real aws and azure control planes with `istio-system`, intermediates aws and azure
    /// (P-256) under root A.
    pub async fn start() -> Mesh {
        let (aws, azure) = real_clusters().await;
        Mesh::with(Api::Real(aws), Api::Real(azure)).await
    }

    /// [`Mesh::start`] on two fake API servers, for faults the real one cannot produce.
    pub async fn start_fake() -> Mesh {
        let aws = TestApiServer::start("aws").await;
        let azure = TestApiServer::start("azure").await;
        Mesh::with(Api::Fake(aws), Api::Fake(azure)).await
    }

    async fn with(aws: Api, azure: Api) -> Mesh {
        let dir = canopy_testsupport::tempdir();
        let t0 = canopy_issuer::clock::now();
        let root_a = new_root(dir.path(), "a", t0);
        for name in ["aws", "azure"] {
            new_intermediate(dir.path(), &root_a, name, KeyType::EcdsaP256, None, t0);
        }
        for s in [&aws, &azure] {
            let kubeconfig = dir.path().join(format!("{}.kubeconfig", s.name()));
            match s {
                Api::Real(c) => {
                    canopy_testsupport::run_ok(c.kubectl().args(["create", "namespace", NS]));
                    // The admin kubeconfig, whose context is the cluster's name.
                    std::fs::copy(c.kubeconfig(), &kubeconfig).unwrap();
                }
                Api::Fake(f) => {
                    f.create(
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
                    )
                    .unwrap();
                    f.write_kubeconfig(&kubeconfig, f.name()).unwrap();
                }
            }
        }
        let url = format!("sqlite://{}/issuer.db", dir.path().display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        Mesh {
            aws,
            azure,
            root_a,
            store,
            t0,
            roots: vec!["root-a.pem".into()],
            cluster_intermediates: vec![
                ("aws".into(), "aws".into()),
                ("azure".into(), "azure".into()),
            ],
            intermediates: vec!["aws".into(), "azure".into()],
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn server(&self, name: &str) -> &Api {
        match name {
            "aws" => &self.aws,
            "azure" => &self.azure,
            other => panic!("no server {other}"),
        }
    }

    /// The issuer config as YAML.
    pub fn config_yaml(&self) -> String {
        let d = self.path().display();
        let mut y = format!(
            "trust_domain: {TD}\nstorage: {{ url: \"sqlite://{d}/issuer.db\" }}\nroots: [{}]\nintermediates:\n",
            self.roots.iter().map(|r| format!("{d}/{r}")).collect::<Vec<_>>().join(", ")
        );
        for i in &self.intermediates {
            y.push_str(&format!(
                "  - {{ name: {i}, cert: {d}/{i}.pem, key: {d}/{i}-key.pem }}\n"
            ));
        }
        y.push_str("clusters:\n");
        for (c, i) in &self.cluster_intermediates {
            y.push_str(&format!(
                "  - {{ name: {c}, intermediate: {i}, kubeconfig: {d}/{c}.kubeconfig, context: {c} }}\n"
            ));
        }
        y
    }

    pub fn config(&self) -> Config {
        Config::parse(&self.config_yaml(), Path::new("issuer.yaml")).unwrap()
    }

    /// The Istio setup with per-cluster settings from `settings` and mesh settings `istio`.
    pub fn setup_with(
        &self,
        istio: &IstioConfig,
        settings: impl Fn(&str) -> IstioClusterConfig,
    ) -> Arc<IstioSetup> {
        let config = self.config();
        let clusters = config
            .clusters
            .iter()
            .map(|c| (c.clone(), settings(c.name.as_str())))
            .collect();
        Arc::new(IstioSetup::load(&config, istio, clusters).unwrap())
    }

    /// Default settings everywhere, short request timeout.
    pub fn setup(&self) -> Arc<IstioSetup> {
        self.setup_with(&fast(), |_| IstioClusterConfig::default())
    }

    /// The Secret in a cluster, as JSON.
    pub fn secret(&self, cluster: &str) -> Option<Value> {
        self.server(cluster).secret()
    }

    pub fn rv(&self, cluster: &str) -> String {
        self.secret(cluster).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The Secret's files.
    pub fn files(&self, cluster: &str) -> BTreeMap<String, Vec<u8>> {
        files_of(&self.secret(cluster).expect("cacerts exists"))
    }

    /// Where a cluster's audit log ends now ([`Mesh::writes_since`]).
    pub fn mark(&self, cluster: &str) -> AuditMark {
        self.server(cluster).mark()
    }

    /// The writes to a cluster since `mark`, attempted or done.
    pub fn writes_since(&self, cluster: &str, mark: AuditMark) -> Vec<String> {
        self.server(cluster).writes_since(mark)
    }

    /// Mesh CA certificates recorded in the store for a cluster.
    pub async fn recorded_mesh_cas(&self, cluster: &str) -> Vec<String> {
        let (records, _) = self
            .store
            .certificates(&Default::default(), None, 1000)
            .await
            .unwrap();
        records
            .into_iter()
            .filter(|r| r.profile == "mesh-ca" && r.cluster.as_deref() == Some(cluster))
            .map(|r| r.serial)
            .collect()
    }
}

/// Mesh settings with a short request timeout for tests.
pub fn fast() -> IstioConfig {
    IstioConfig {
        request_timeout: Ttl::from_seconds(2).unwrap(),
        ..IstioConfig::default()
    }
}

pub fn files_of(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap(),
            )
        })
        .collect()
}

pub fn text(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(files[name].clone()).unwrap()
}

fn openssl_out(args: &[&str], files: &[(&str, &Path)]) -> std::process::Output {
    let mut c = canopy_testsupport::openssl();
    c.args(args);
    for (flag, p) in files {
        if !flag.is_empty() {
            c.arg(flag);
        }
        c.arg(p);
    }
    c.output().unwrap()
}

/// [`canopy_testsupport::openssl_verify_at`] of `cert` through `untrusted` to `root` at `at`:
/// Ok, or openssl's output.
fn verifies_at(
    root: &Path,
    untrusted: &Path,
    cert: &Path,
    at: OffsetDateTime,
) -> Result<(), String> {
    let out = canopy_testsupport::openssl_verify_at(
        root,
        Some(untrusted),
        cert,
        Some(at.unix_timestamp()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() && stdout.contains(": OK") {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Writes a Secret's files into `dir`.
pub fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
}

/// The independent check of one cluster's Secret with openssl: ca-cert verifies through
/// cert-chain to root-cert (-x509_strict), the key matches the certificate.
pub fn openssl_check_secret(dir: &Path, files: &BTreeMap<String, Vec<u8>>, at: OffsetDateTime) {
    write_files(dir, files);
    for k in files.keys() {
        assert!(
            [
                "ca-cert.pem",
                "ca-key.pem",
                "cert-chain.pem",
                "root-cert.pem"
            ]
            .contains(&k.as_str()),
            "unexpected key {k}"
        );
        assert!(files[k].ends_with(b"\n"), "{k} must end with a newline");
    }
    verifies_at(
        &dir.join("root-cert.pem"),
        &dir.join("cert-chain.pem"),
        &dir.join("ca-cert.pem"),
        at,
    )
    .unwrap_or_else(|e| panic!("ca-cert.pem does not verify to root-cert.pem: {e}"));
    let from_key = openssl_out(
        &["pkey", "-pubout", "-in"],
        &[("", &dir.join("ca-key.pem"))],
    );
    let from_cert = openssl_out(
        &["x509", "-pubkey", "-noout", "-in"],
        &[("", &dir.join("ca-cert.pem"))],
    );
    assert!(from_key.status.success() && from_cert.status.success());
    assert_eq!(
        from_key.stdout, from_cert.stdout,
        "ca-key.pem does not match ca-cert.pem"
    );
    // cert-chain.pem: ca-cert first, root last.
    let chain = Certificate::parse_pem_all(&text(files, "cert-chain.pem")).unwrap();
    let ca = Certificate::from_pem(&text(files, "ca-cert.pem")).unwrap();
    let roots = Certificate::parse_pem_all(&text(files, "root-cert.pem")).unwrap();
    assert_eq!(chain.first(), Some(&ca));
    assert!(roots.contains(chain.last().unwrap()));
}

/// Signs a workload leaf with the mesh CA in `files` (as istiod would) and writes
/// leaf.pem (leaf, then cert-chain.pem: what a proxy presents) into `dir`.
pub fn leaf_from(dir: &Path, files: &BTreeMap<String, Vec<u8>>, at: OffsetDateTime) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let ca = Certificate::from_pem(&text(files, "ca-cert.pem")).unwrap();
    let key = KeyPair::from_pem(&text(files, "ca-key.pem")).unwrap();
    let chain = Certificate::parse_pem_all(&text(files, "cert-chain.pem")).unwrap();
    let above: Vec<Certificate> = chain[1..chain.len() - 1].to_vec();
    let mesh_ca = CertificateAuthority::new(ca, above, Arc::new(key)).unwrap();
    let r = LeafRequest {
        trust_domain: Some(TD.parse().unwrap()),
        spiffe_id: Some(format!("spiffe://{TD}/ns/default/sa/app").parse().unwrap()),
        ..LeafRequest::new(LeafProfile::Workload)
    };
    let (leaf, _) = mesh_ca
        .issue_with_new_key(&r, KeyType::EcdsaP256, at)
        .unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf.certificate.to_pem()).unwrap();
    std::fs::write(dir.join("leaf-chain.pem"), text(files, "cert-chain.pem")).unwrap();
    dir.join("leaf.pem")
}

/// Verifies a leaf (with its chain) against another cluster's root-cert.pem at `at`.
pub fn leaf_verifies(
    leaf: &Path,
    other_roots: &[u8],
    scratch: &Path,
    at: OffsetDateTime,
) -> Result<(), String> {
    std::fs::create_dir_all(scratch).unwrap();
    let roots = scratch.join("other-root-cert.pem");
    std::fs::write(&roots, other_roots).unwrap();
    let chain = leaf.with_file_name("leaf-chain.pem");
    verifies_at(&roots, &chain, leaf, at)
}

/// Runs `kubectl --kubeconfig K -n istio-system ARGS` against a cluster.
pub fn kubectl(mesh: &Mesh, cluster: &str, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(mesh.path().join(format!("{cluster}.kubeconfig")))
        .env("HOME", mesh.path().join("kubectl-home"))
        .env_remove("KUBECONFIG")
        .args(["-n", NS])
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A ValidatingAdmissionPolicy (and its binding) in a real cluster that denies every
/// update of a Secret named `cacerts`: the apiserver refuses the write with 403.
const FREEZE_CACERTS: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: { name: freeze-cacerts }
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["UPDATE"]
      resources: ["secrets"]
  validations:
  - expression: "object.metadata.name != 'cacerts'"
    message: "cacerts is frozen by the test"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: { name: freeze-cacerts }
spec:
  policyName: freeze-cacerts
  validationActions: [Deny]
"#;

/// Whether the apiserver now admits an update of `istio-system/cacerts` (a server-side
/// dry run, which goes through admission and stores nothing).
fn cacerts_update_admitted(c: &TestCluster) -> bool {
    let out = c
        .kubectl()
        .args(["-n", NS, "annotate", "secret", "cacerts", "--overwrite"])
        .args(["--dry-run=server", "canopy.test/probe=1"])
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("cacerts is frozen by the test"),
        "{stderr}"
    );
    out.status.success()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "not {what} in 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Makes the real apiserver refuse every update of `istio-system/cacerts` (which must
/// exist), and returns once it does.
pub fn freeze_cacerts(c: &TestCluster) {
    c.apply(FREEZE_CACERTS);
    wait_until("refusing updates of cacerts", || {
        !cacerts_update_admitted(c)
    });
}

/// Undoes [`freeze_cacerts`], and returns once updates are admitted again.
pub fn unfreeze_cacerts(c: &TestCluster) {
    canopy_testsupport::run_ok(c.kubectl().args([
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        "freeze-cacerts",
    ]));
    wait_until("admitting updates of cacerts", || {
        cacerts_update_admitted(c)
    });
}
