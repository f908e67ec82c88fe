//! A real Kubernetes control plane for tests: `canopy-testcluster` (tests/cluster), one
//! process per cluster running embedded etcd and the real kube-apiserver, built from Go
//! modules by tests/cluster/build.sh once per test process.
//!
//! There is no controller-manager, scheduler or kubelet: no `default` ServiceAccount is
//! made in new namespaces, no token Secrets are filled in, deleted namespaces stay
//! `Terminating` and Pods never run. Tests create the ServiceAccounts they need and get
//! tokens through the TokenRequest API ([`TestCluster::service_account_token`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{tempdir, workspace_root};

/// How long a cluster may take to answer /readyz.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Path to `canopy-testcluster`, built with tests/cluster/build.sh once per test process
/// (a no-op of a few seconds when the Go build cache is warm).
pub fn testcluster_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::built_by(
                &workspace_root().join("tests/cluster/build.sh"),
                &["canopy-testcluster"],
            )
        })
        .clone()
}

/// What a cluster is started with, beyond its name.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    users: Vec<(String, Vec<String>)>,
    runtime_config: Option<String>,
    feature_gates: Option<String>,
    apiserver_args: Vec<String>,
    audit: bool,
}

/// The audit policy [`ClusterOptions::audit`] starts the apiserver with: every request at
/// Metadata level (who, verb, object, response code, no bodies), at every stage. The
/// `RequestReceived` stage is written before the request is served, so a write shows in
/// the log even when it fails or changes nothing.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: []
rules:
- level: Metadata
";

/// The verbs that change stored objects.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl ClusterOptions {
    /// Audit every request to `DIR/audit.log` (kube-apiserver `--audit-policy-file`,
    /// `--audit-log-path`, blocking mode: a request's event is written before it is
    /// answered); read it with [`TestCluster::audit_mark`] and [`TestCluster::writes_since`].
    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// A static-token user with these groups (no RBAC bindings); see [`TestCluster::token_for`].
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        self.users.push((
            name.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        ));
        self
    }

    /// kube-apiserver `--runtime-config`, e.g. `certificates.k8s.io/v1beta1=true`.
    pub fn runtime_config(mut self, value: &str) -> Self {
        self.runtime_config = Some(value.to_string());
        self
    }

    /// kube-apiserver `--feature-gates`, e.g. `PodCertificateRequest=true`.
    pub fn feature_gates(mut self, value: &str) -> Self {
        self.feature_gates = Some(value.to_string());
        self
    }

    /// Any other kube-apiserver argument, e.g. `--v=4`.
    pub fn apiserver_arg(mut self, arg: &str) -> Self {
        self.apiserver_args.push(arg.to_string());
        self
    }

    fn args(&self, dir: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if self.audit {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).expect("write audit policy");
            a.push(format!(
                "--apiserver-arg=--audit-policy-file={}",
                policy.display()
            ));
            a.push(format!(
                "--apiserver-arg=--audit-log-path={}",
                dir.join("audit.log").display()
            ));
            a.push("--apiserver-arg=--audit-log-mode=blocking".to_string());
        }
        for (name, groups) in &self.users {
            a.push(format!("--user={name}:{}", groups.join(",")));
        }
        if let Some(v) = &self.runtime_config {
            a.push(format!("--runtime-config={v}"));
        }
        if let Some(v) = &self.feature_gates {
            a.push(format!("--feature-gates={v}"));
        }
        for v in &self.apiserver_args {
            a.push(format!("--apiserver-arg={v}"));
        }
        a
    }
}

/// One running control plane. Stopped (its process group killed) and its folder removed on
/// drop; the folder is kept, and its path printed, when the test is panicking.
pub struct TestCluster {
    name: String,
    options: ClusterOptions,
    child: Option<Child>,
    ready: Value,
    startup: Duration,
    dir: Option<tempfile::TempDir>,
}

impl TestCluster {
    /// Starts a cluster named `name` (issuer `https://NAME.canopy.test`) and waits until it
    /// is ready; panics, with the tail of its log, if it is not within 60 s.
    pub fn start(name: &str) -> TestCluster {
        TestCluster::start_with(name, ClusterOptions::default())
    }

    /// [`TestCluster::start`] with extra users or kube-apiserver flags.
    pub fn start_with(name: &str, options: ClusterOptions) -> TestCluster {
        let bin = testcluster_bin();
        let mut c = TestCluster {
            name: name.to_string(),
            options,
            child: None,
            ready: Value::Null,
            startup: Duration::ZERO,
            dir: Some(tempdir()),
        };
        // The ports are chosen free but released before etcd and the apiserver bind them:
        // if another process took one meanwhile, start over with new ports.
        for attempt in 1.. {
            match c.spawn(&bin) {
                Ok(()) => break,
                Err(e) if attempt < 3 && e.contains("address already in use") => {
                    let _ = std::fs::remove_file(c.dir().join("state.json"));
                }
                Err(e) => panic!("{e}"),
            }
        }
        c
    }

    fn spawn(&mut self, bin: &Path) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let dir = self.dir().to_path_buf();
        let ready_path = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_path);
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let (stdout, stderr) = (append("testcluster.stdout"), append("testcluster.stderr"));
        let started = Instant::now();
        let child = Command::new(bin)
            .arg(format!("--name={}", self.name))
            .arg(format!("--dir={}", dir.display()))
            .args(self.options.args(&dir))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        self.child = Some(child);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    self.ready = v;
                    break;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("wait") {
                self.child = None;
                return Err(format!(
                    "canopy-testcluster {} exited before ready ({status})\n{}",
                    self.name,
                    self.diagnostics()
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                self.kill();
                panic!(
                    "canopy-testcluster {} not ready within {READY_TIMEOUT:?}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.startup = started.elapsed();
        Ok(())
    }

    /// The end of the cluster's logs, for panic messages.
    pub fn diagnostics(&self) -> String {
        let dir = self.dir();
        let mut s = String::new();
        for (file, lines) in [
            ("testcluster.stderr", 20),
            ("etcd.log", 10),
            ("apiserver.log", 60),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            s.push_str(&format!(
                "---- {} (last {} lines)\n{}\n",
                dir.join(file).display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        s
    }

    fn field(&self, key: &str) -> &str {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("ready.json has no {key}: {}", self.ready))
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's data folder (PKI, etcd data, logs, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster dir").path()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        self.field("server")
    }

    /// The admin kubeconfig (client certificate `CN=kubernetes-admin, O=system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.field("kubeconfig"))
    }

    /// The cluster CA certificate file, which signs the serving and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.field("ca_file"))
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_file()).expect("read CA file")
    }

    /// A static bearer token in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        self.field("admin_token")
    }

    /// The service-account issuer (`iss` of its tokens), `https://NAME.canopy.test`.
    pub fn issuer(&self) -> &str {
        self.field("issuer")
    }

    /// The embedded etcd's client URL.
    pub fn etcd(&self) -> &str {
        self.field("etcd")
    }

    /// The bearer token of a user given with [`ClusterOptions::user`].
    pub fn token_for(&self, user: &str) -> &str {
        self.ready["tokens"][user].as_str().unwrap_or_else(|| {
            panic!(
                "{} has no user {user} (add it with ClusterOptions::user)",
                self.name
            )
        })
    }

    /// Writes a kubeconfig in the cluster's folder that authenticates as `user` (a
    /// [`ClusterOptions::user`]) with its static token, and returns its path.
    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        let path = self.dir().join(format!("{user}.kubeconfig"));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {user}\ncurrent-context: {n}\n",
            n = self.name,
            server = self.server(),
            ca = self.ca_file().display(),
            token = self.token_for(user),
        );
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    /// Wall time of the last start, from spawn to ready.json.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The process id of the running control plane.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, with its cache inside the cluster folder.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new("kubectl");
        let home = self.dir().join("kubectl-home");
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join("cache"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl` authenticated only by a bearer token (e.g. [`TestCluster::token_for`]):
    /// no kubeconfig, so no admin client certificate is sent along.
    pub fn kubectl_with_token(&self, token: &str) -> Command {
        let mut c = Command::new("kubectl");
        let home = self.dir().join("kubectl-home");
        c.arg(format!("--server={}", self.server()))
            .arg("--certificate-authority")
            .arg(self.ca_file())
            .arg(format!("--token={token}"))
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join("cache"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl apply -f -` of `yaml` as admin; panics with kubectl's output if it fails.
    /// Returns kubectl's stdout.
    pub fn apply(&self, yaml: &str) -> String {
        let mut c = self.kubectl();
        c.args(["apply", "-f", "-"]);
        let out = crate::certmanager::output_with_stdin(&mut c, yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A service-account token from the TokenRequest API (`kubectl create token`).
    pub fn service_account_token(
        &self,
        ns: &str,
        sa: &str,
        audience: &str,
        ttl_secs: u64,
    ) -> String {
        let out = self
            .kubectl()
            .args(["create", "token", sa, "-n", ns, "--audience", audience])
            .arg(format!("--duration={ttl_secs}s"))
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl create token {sa} -n {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn audit_log(&self) -> PathBuf {
        assert!(
            self.options.audit,
            "{} was started without ClusterOptions::audit",
            self.name
        );
        self.dir().join("audit.log")
    }

    /// Where the audit log ends now: [`TestCluster::audit_since`] reads what comes after.
    pub fn audit_mark(&self) -> AuditMark {
        AuditMark(std::fs::metadata(self.audit_log()).map_or(0, |m| m.len()))
    }

    /// The requests audited after `mark`, one per request, in the order received. Waits
    /// (up to 10 s) until each request received has also completed, so that its response
    /// code is known. Needs [`ClusterOptions::audit`].
    pub fn audit_since(&self, mark: AuditMark) -> Vec<AuditEvent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let bytes = std::fs::read(self.audit_log()).unwrap_or_default();
            let tail = bytes.get(mark.0 as usize..).unwrap_or_default();
            let mut events: Vec<AuditEvent> = Vec::new();
            for line in String::from_utf8_lossy(tail).lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let e = AuditEvent::from_json(&v);
                match events.iter_mut().find(|x| x.id == e.id) {
                    Some(x) if e.stage != "RequestReceived" => *x = e,
                    Some(_) => {}
                    None => events.push(e),
                }
            }
            // Long-running requests (watches) complete only when they end.
            let open = events
                .iter()
                .any(|e| e.stage == "RequestReceived" && e.verb != "watch");
            if !open || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The writes (create, update, patch, delete) after `mark` by anyone but the apiserver
    /// itself (`system:apiserver`, which renews its own Lease), whether or not they
    /// succeeded or changed anything. Needs [`ClusterOptions::audit`].
    pub fn writes_since(&self, mark: AuditMark) -> Vec<AuditEvent> {
        self.audit_since(mark)
            .into_iter()
            .filter(|e| e.is_write() && e.user != "system:apiserver")
            .collect()
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            // The child leads its own process group (process_group(0)).
            let _ = Command::new("kill")
                .args([sig, "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn kill(&mut self) {
        self.signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the control plane cleanly (SIGTERM: apiserver, then etcd), killing it if it
    /// takes more than 30 s. The data folder stays.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("wait") {
                self.child = None;
                assert!(
                    status.success(),
                    "canopy-testcluster {} (pid {pid}) exited with {status} on SIGTERM\n{}",
                    self.name,
                    self.diagnostics()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        panic!(
            "canopy-testcluster {} did not stop within 30 s of SIGTERM\n{}",
            self.name,
            self.diagnostics()
        );
    }

    /// Stops and starts again on the same data folder, ports, PKI and tokens: watches are
    /// cut, clients can reconnect to the same address, and the data is still there.
    pub fn restart(&mut self) {
        self.stop();
        let bin = testcluster_bin();
        if let Err(e) = self.spawn(&bin) {
            panic!("restart: {e}");
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "test cluster {} kept for inspection: {}",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}

/// A position in a cluster's audit log ([`TestCluster::audit_mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditMark(u64);

impl AuditMark {
    /// The start of the log: every request since the cluster first started.
    pub const START: AuditMark = AuditMark(0);
}

/// One request in the audit log, at the last stage logged for it.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// `auditID`.
    pub id: String,
    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    pub stage: String,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// The authenticated user name.
    pub user: String,
    /// `objectRef.resource` (e.g. `secrets`), empty for non-resource URLs.
    pub resource: String,
    /// `objectRef.namespace`.
    pub namespace: String,
    /// `objectRef.name` (for a create, set only if the request names the object).
    pub name: String,
    /// `objectRef.subresource` (e.g. `status`).
    pub subresource: String,
    /// The HTTP response code (0 before the response).
    pub code: u16,
    /// `requestURI`.
    pub uri: String,
    /// `userAgent`.
    pub user_agent: String,
}

impl AuditEvent {
    fn from_json(v: &Value) -> AuditEvent {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        AuditEvent {
            id: s(&v["auditID"]),
            stage: s(&v["stage"]),
            verb: s(&v["verb"]),
            user: s(&v["user"]["username"]),
            resource: s(&v["objectRef"]["resource"]),
            namespace: s(&v["objectRef"]["namespace"]),
            name: s(&v["objectRef"]["name"]),
            subresource: s(&v["objectRef"]["subresource"]),
            code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            uri: s(&v["requestURI"]),
            user_agent: s(&v["userAgent"]),
        }
    }

    /// create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} -> {} ({})",
            self.verb, self.uri, self.user, self.code, self.stage
        )
    }
}
