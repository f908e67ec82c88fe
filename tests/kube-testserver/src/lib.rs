//! Test-only in-process fake Kubernetes API server, kept ONLY for fault injection the
//! real kube-apiserver cannot produce on demand. Every other test runs against a real
//! control plane (etcd and kube-apiserver, `canopy_testsupport::cluster`).
//!
//! What it is kept for, and its only users:
//! - `issuer/tests/istio_faults.rs` (`Mesh::start_fake`): a counted number of 500, 503 or
//!   409 answers to one verb on Secrets (create, update), and one update held unanswered
//!   (a hung write) until released;
//! - `issuer/tests/certmanager_branches.rs` (`Env::fake`): `api_server_errors_are_retried`
//!   (five 500s to CertificateRequest status patches, then 503 to everything),
//!   `dropped_watches_and_slow_answers_converge` (every watch stream cut at once, and the
//!   watches opened again held), `restart_between_sign_and_status_write_does_not_sign_twice`
//!   (500 to every status patch while the process crashes).
//!
//! [`TestApiServer`] serves HTTPS on 127.0.0.1 with a self-signed CA and one bearer token
//! (the admin's), stores objects as JSON in memory, and serves only what those tests'
//! clients (kube-rs: the Istio sync, the cert-manager controllers, the test approver) send:
//! get, list, watch (with bookmarks, resuming from a resourceVersion, 410 Gone), create,
//! update with resourceVersion conflicts, JSON merge patch, forced server-side apply with
//! managedFields (so that two managers' status conditions merge by `type`), `/status`
//! subresources, CRDs, and real `Status` errors. The kinds: Namespace, Secret, Event (core
//! and events.k8s.io), CustomResourceDefinition, CertificateSigningRequest, and the kinds
//! CRDs define. Faults ([`Fault`]) can be injected per verb, resource and subresource, and
//! every request is logged ([`TestApiServer::request_log`]).
//!
//! Not served (the real apiserver covers them): delete, discovery, OpenAPI, protobuf,
//! YAML bodies, strategic merge and JSON patch, non-forced apply, label and field
//! selectors, paging, dry run, schema validation, defaulting and pruning, name
//! validation, other users than the admin, and `kubectl`.

#![forbid(unsafe_code)]
// A test-only fake: it stamps objects with the wall clock (clippy.toml keeps that out of
// canopy's own code).
#![allow(clippy::disallowed_methods)]

mod apply;
mod patch;
mod registry;
mod schema;
mod server;
mod status;
mod store;
mod watch;

use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as tokio_watch;

use server::{FaultState, Shared};
use store::{Store, WriteCtx};

/// The cert-manager `cert-manager.io/v1` CRDs (CertificateRequest and Certificate), as a multi-document YAML.
const CERT_MANAGER_CRDS: &str = include_str!("../crds/cert-manager.yaml");

/// A fault injected into request handling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serve normally.
    #[default]
    None,
    /// Answer the next `count` matching requests (all while set, if `None`) with `status` and a Status body.
    Error {
        /// HTTP status code to answer with.
        status: u16,
        /// How many requests to fail; `None` = until cleared.
        count: Option<usize>,
    },
    /// Hold the next `count` matching requests (all, if `None`) until the next `set_fault` call; they are then served normally.
    Hang {
        /// How many requests to hang; `None` = until cleared.
        count: Option<usize>,
    },
    /// Close all open watch streams now (a one-shot action; the fault state is left unchanged).
    DropWatches,
}

/// Restricts a fault to matching requests; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultScope {
    /// API verb: get, list, watch, create, update, patch.
    pub verb: Option<String>,
    /// Resource plural, e.g. `secrets`.
    pub resource: Option<String>,
    /// Subresource, e.g. `status`; `Some("")` matches only the main resource.
    pub subresource: Option<String>,
}

impl FaultScope {
    /// Match all resource requests.
    pub fn all() -> Self {
        Self::default()
    }

    /// Match one verb (e.g. `patch`) on one resource plural (e.g. `secrets`).
    pub fn verb_on(verb: &str, resource: &str) -> Self {
        FaultScope {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            subresource: None,
        }
    }

    /// Restrict to a subresource (e.g. `status`).
    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    fn matches(&self, verb: &str, resource: &str, sub: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.subresource.as_deref().is_none_or(|s| s == sub)
    }
}

/// One served request, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (percent-encoded).
    pub query: String,
    /// Response status code (200 for a watch that started).
    pub status: u16,
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == key).then(|| {
                v.replace("%3D", "=")
                    .replace("%2C", ",")
                    .replace("%2F", "/")
            })
        })
    }
}

/// An in-process fake Kubernetes API server; shuts down on drop.
pub struct TestApiServer {
    name: String,
    url: String,
    ca_pem: String,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn tls_config(ca_cn: &str) -> (rustls::ServerConfig, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_cn.to_string());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, &ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server cert");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (cfg, ca_cert.pem())
}

fn random_token() -> String {
    use rand::Rng;
    let b: [u8; 24] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TestApiServer {
    /// Start a server named `name` (used for the CA name) on 127.0.0.1 with a random port.
    pub async fn start(name: &str) -> TestApiServer {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (cfg, ca_pem) = tls_config(&format!("{name}-kube-testserver-ca"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            token: random_token(),
            fault: Mutex::new(FaultState {
                fault: Fault::None,
                scope: FaultScope::all(),
            }),
            fault_gen: tokio_watch::channel(0).0,
            drop_watches: tokio_watch::channel(0).0,
            shutdown: tokio_watch::channel(false).0,
            log: Mutex::new(Vec::new()),
            bookmark_interval: Duration::from_secs(1),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let shared = task_shared.clone();
                        conns.spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let svc = hyper::service::service_fn(move |req| {
                                server::handle(shared.clone(), req)
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TestApiServer {
            name: name.to_string(),
            url: format!("https://{addr}"),
            ca_pem,
            shared,
            task: Some(task),
        }
    }

    /// The server name given to `start`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A kubeconfig whose cluster, context and user are all named `context`.
    fn kubeconfig_yaml(&self, context: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n    namespace: default\ncurrent-context: {context}\nusers:\n- name: {context}\n  user:\n    token: {token}\npreferences: {{}}\n",
            url = self.url,
            token = self.shared.token,
        )
    }

    /// Write [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, context: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(context))
    }

    /// A kube-rs client for this server (context named after the server).
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(&self.name))
            .expect("kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// Set (or clear with `Fault::None`) a fault for all resource requests; releases hung requests.
    pub fn set_fault(&self, fault: Fault) {
        self.set_fault_scoped(fault, FaultScope::all());
    }

    /// Set a fault for requests matching `scope` only; releases hung requests.
    pub fn set_fault_scoped(&self, fault: Fault, scope: FaultScope) {
        if fault == Fault::DropWatches {
            self.shared.drop_watches.send_modify(|g| *g += 1);
            return;
        }
        {
            let mut f = self.shared.fault.lock().expect("fault lock");
            f.fault = fault;
            f.scope = scope;
        }
        self.shared.fault_gen.send_modify(|g| *g += 1);
    }

    fn type_for(
        &self,
        api_version: &str,
        plural: &str,
    ) -> Option<(registry::ResourceType, String)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let store = self.shared.store.lock().expect("store");
        store
            .registry
            .lookup(group, version, plural)
            .cloned()
            .map(|rt| (rt, version.to_string()))
    }

    /// One object, e.g. `get("v1", "secrets", Some("default"), "x")`; `None` namespace for cluster-scoped kinds.
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (rt, version) = self.type_for(api_version, plural)?;
        let store = self.shared.store.lock().expect("store");
        let ns = if rt.namespaced {
            namespace.unwrap_or("")
        } else {
            ""
        };
        store
            .get_raw(&rt, ns, name)
            .cloned()
            .map(|o| Store::present(&rt, &version, o))
    }

    /// Create an object through the normal create path, as the admin (field manager
    /// `kube-testserver`); errors are Status bodies.
    pub fn create(&self, object: Value) -> Result<Value, Value> {
        let api_version = object["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let mut store = self.shared.store.lock().expect("store");
        let rt = store
            .registry
            .all()
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.contains(&version))
            .cloned()
            .ok_or_else(|| {
                status::ApiError::bad_request(format!(
                    "no kind {kind:?} is registered for version {api_version:?}"
                ))
                .to_status()
            })?;
        let ctx = WriteCtx {
            version,
            namespace: if rt.namespaced {
                Some(
                    object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                )
            } else {
                None
            },
            rt: rt.clone(),
            manager: "kube-testserver".into(),
        };
        store
            .create(&ctx, object)
            .map(|o| Store::present(&rt, &ctx.version, o))
            .map_err(|e| e.to_status())
    }

    /// Create the cert-manager CRDs of [`CERT_MANAGER_CRDS`] (skipping ones that exist).
    pub fn install_cert_manager_crds(&self) -> Result<(), Value> {
        for doc in serde_yaml::Deserializer::from_str(CERT_MANAGER_CRDS) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| status::ApiError::bad_request(e.to_string()).to_status())?;
            if v.is_null() {
                continue;
            }
            match self.create(v) {
                Ok(_) => {}
                Err(s) if s["reason"] == "AlreadyExists" => {}
                Err(s) => return Err(s),
            }
        }
        Ok(())
    }

    /// Every request served so far, in order.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().expect("log").clone()
    }

    /// Forget the request log.
    pub fn clear_request_log(&self) {
        self.shared.log.lock().expect("log").clear();
    }

    fn stop(&mut self) {
        let _ = self.shared.shutdown.send(true);
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
