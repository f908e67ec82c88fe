//! The real cert-manager for tests: its controller and its webhook as two processes of
//! `canopy-certmanager` (tests/cluster/certmanager, built from the
//! github.com/cert-manager/cert-manager module by tests/cluster/build.sh), run against a
//! [`TestCluster`] with cert-manager's CRDs from that module.
//!
//! [`CertManager::start`] applies the CRDs, creates the `cert-manager` namespace, starts
//! the webhook with a serving certificate for 127.0.0.1 made here (openssl), registers the
//! Validating and Mutating webhook configurations as cert-manager's Helm chart defines them
//! (with `url: https://127.0.0.1:PORT/validate|/mutate` and the caBundle, as there is no
//! Service), starts the controller, and returns once the webhook denies an invalid
//! Certificate through the apiserver and the controller holds its leader Lease.
//!
//! Both run with the cluster's admin kubeconfig (`system:masters`). In particular the
//! controller's approver (`certificaterequests-approver`, on by default) may approve
//! CertificateRequests of any issuer: cert-manager's webhook lets a user set the Approved
//! condition only with the `approve` verb on `signers.cert-manager.io` for the request's
//! signer (`<kind plural>.<group>/<namespace>.<name>` or `<kind plural>.<group>/*`, e.g.
//! `clusterissuers.pki.canopy.dev/*`), and admin has every verb. A controller without
//! `system:masters` (in production, cert-manager's ServiceAccount) needs that RBAC for
//! external issuers: charts/canopy-issuer's `rbac-cert-manager-approver.yaml` grants it.
//! The approval plugin also needs the issuer's kind served by the apiserver (its CRD).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cluster::TestCluster;
use crate::{openssl, run_ok, workspace_root};

/// How long the webhook and the controller may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The namespace of cert-manager's leader Lease and of ClusterIssuers' Secrets.
pub const NAMESPACE: &str = "cert-manager";

/// The Lease the controller holds in [`NAMESPACE`].
pub const LEASE: &str = "cert-manager-controller";

/// The CRDs of the cert-manager module (deploy/crds).
pub const CRDS: [&str; 6] = [
    "certificaterequests.cert-manager.io",
    "certificates.cert-manager.io",
    "challenges.acme.cert-manager.io",
    "clusterissuers.cert-manager.io",
    "issuers.cert-manager.io",
    "orders.acme.cert-manager.io",
];

/// Path to `canopy-certmanager`, built with `tests/cluster/build.sh canopy-certmanager`
/// once per test process (a no-op of a few seconds when the Go build cache is warm).
pub fn certmanager_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::built_by(
                &workspace_root().join("tests/cluster/build.sh"),
                &["canopy-certmanager"],
            )
        })
        .clone()
}

/// Runs `cmd` with `input` on its stdin and returns its output.
pub fn output_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    // Written from a thread so that a child filling its stdout cannot block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"));
    let _ = writer.join();
    out
}

/// Polls `check` every 200 ms until it returns `Ok`, and returns that; panics with `what`
/// and the last error after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => {
                panic!("{what}: not within {timeout:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Standard base64 (for the webhooks' caBundle and CertificateRequests' spec.request).
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Extra arguments for the two processes.
#[derive(Clone, Debug, Default)]
pub struct CertManagerOptions {
    controller_args: Vec<String>,
    webhook_args: Vec<String>,
}

impl CertManagerOptions {
    /// Another flag of cert-manager's controller, e.g. `--controllers=*,-ingress-shim`
    /// or `--v=4` (see `canopy-certmanager controller --help`).
    pub fn controller_arg(mut self, arg: &str) -> Self {
        self.controller_args.push(arg.to_string());
        self
    }

    /// Another flag of cert-manager's webhook (see `canopy-certmanager webhook --help`).
    pub fn webhook_arg(mut self, arg: &str) -> Self {
        self.webhook_args.push(arg.to_string());
        self
    }
}

/// cert-manager's controller and webhook running against one [`TestCluster`]. Both are
/// stopped (their process groups killed) on drop. Their logs are in [`CertManager::dir`],
/// inside the cluster's folder, which is kept when a test panics.
pub struct CertManager {
    dir: PathBuf,
    kubeconfig: PathBuf,
    version: String,
    webhook: Option<Child>,
    controller: Option<Child>,
    webhook_port: u16,
    webhook_ca: String,
    startup: Duration,
}

impl CertManager {
    /// Installs cert-manager into `cluster` and starts it; see the module docs.
    pub fn start(cluster: &TestCluster) -> CertManager {
        CertManager::start_with(cluster, CertManagerOptions::default())
    }

    /// [`CertManager::start`] with extra controller or webhook flags.
    pub fn start_with(cluster: &TestCluster, options: CertManagerOptions) -> CertManager {
        let bin = certmanager_bin();
        let started = Instant::now();
        let dir = cluster.dir().join("cert-manager");
        std::fs::create_dir_all(&dir).expect("create cert-manager dir");
        let version = run_ok(Command::new(&bin).arg("version")).trim().to_string();

        // CRDs (server-side: the Issuer CRDs are too big for the last-applied annotation).
        let crds = run_ok(Command::new(&bin).arg("crds"));
        let mut apply = cluster.kubectl();
        apply.args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=canopy-tests",
            "-f",
            "-",
        ]);
        let out = output_with_stdin(&mut apply, &crds);
        assert!(
            out.status.success(),
            "applying cert-manager's CRDs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut wait = cluster.kubectl();
        wait.args(["wait", "--for=condition=Established", "--timeout=60s"]);
        for crd in CRDS {
            wait.arg(format!("crd/{crd}"));
        }
        run_ok(&mut wait);
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        ));

        let (cert, key, ca) = webhook_serving_cert(&dir);
        let ports = free_ports(3);
        let (webhook_port, webhook_healthz, controller_healthz) = (ports[0], ports[1], ports[2]);
        let kubeconfig = cluster.kubeconfig();

        let mut cm = CertManager {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            version,
            webhook: None,
            controller: None,
            webhook_port,
            webhook_ca: ca,
            startup: Duration::ZERO,
        };

        let mut webhook = Command::new(&bin);
        webhook
            .arg("webhook")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg(format!("--secure-port={webhook_port}"))
            .arg(format!("--healthz-port={webhook_healthz}"))
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-private-key-file")
            .arg(&key)
            .arg("--metrics-listen-address=0")
            .arg("--v=2")
            .args(&options.webhook_args);
        cm.webhook = Some(spawn_logged(&mut webhook, &dir.join("webhook.log")));

        let mut controller = Command::new(&bin);
        controller
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg(format!("--cluster-resource-namespace={NAMESPACE}"))
            .arg("--leader-elect=true")
            .arg(format!("--leader-election-namespace={NAMESPACE}"))
            .arg(format!(
                "--internal-healthz-listen-address=127.0.0.1:{controller_healthz}"
            ))
            .arg("--metrics-listen-address=0")
            .arg("--v=2")
            .args(&options.controller_args);
        cm.controller = Some(spawn_logged(&mut controller, &dir.join("controller.log")));

        // The webhook: its healthz, then the configurations, then a denial through the
        // apiserver (which proves the whole path: registration, TLS, caBundle, handler).
        cm.wait("webhook /healthz", || {
            http_get_status(webhook_healthz, "/healthz").and_then(|s| {
                if s == 200 {
                    Ok(())
                } else {
                    Err(format!("status {s}"))
                }
            })
        });
        let webhook_up = started.elapsed();
        cluster.apply(&cm.webhook_configurations());
        cm.wait("webhook denies an invalid Certificate", || {
            let mut c = cluster.kubectl();
            c.args(["create", "--dry-run=server", "-o", "name", "-f", "-"]);
            let out = output_with_stdin(&mut c, PROBE_CERTIFICATE);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() && err.contains("denied the request") {
                Ok(())
            } else {
                Err(format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
            }
        });
        let webhook_ready = started.elapsed();

        // The controller: the leader Lease, then all controllers started.
        cm.wait("controller holds the leader Lease", || {
            let out = cluster
                .kubectl()
                .args(["get", "lease", LEASE, "-n", NAMESPACE])
                .args(["-o", "jsonpath={.spec.holderIdentity}"])
                .output()
                .map_err(|e| e.to_string())?;
            let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !holder.is_empty() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        let log = dir.join("controller.log");
        cm.wait("controller starts its controllers", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("\"controllers started\"") {
                Ok(())
            } else {
                Err("no \"controllers started\" in controller.log yet".into())
            }
        });
        cm.startup = started.elapsed();
        eprintln!(
            "cert-manager {} ready in {:.1?} (webhook healthy {:.1?}, admitting {:.1?}; controller leading and started {:.1?})",
            cm.version, cm.startup, webhook_up, webhook_ready, cm.startup
        );
        cm
    }

    /// Polls `check` until it succeeds, failing with the logs if a process exits or
    /// [`READY_TIMEOUT`] passes.
    fn wait(&mut self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let start = Instant::now();
        loop {
            let last = match check() {
                Ok(()) => return,
                Err(e) => e,
            };
            let mut exited = None;
            for (name, child) in [
                ("webhook", &mut self.webhook),
                ("controller", &mut self.controller),
            ] {
                if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                    exited = Some((name, status));
                }
            }
            if let Some((name, status)) = exited {
                panic!(
                    "cert-manager {name} exited ({status}) while waiting for: {what}\n{}",
                    self.diagnostics()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "cert-manager: {what}: not within {READY_TIMEOUT:?}; last: {last}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Validating and Mutating webhook configurations of cert-manager's Helm chart
    /// (release `cert-manager`, default values), pointing at this webhook by URL.
    pub fn webhook_configurations(&self) -> String {
        let url = self.webhook_url();
        let ca = base64(self.webhook_ca.as_bytes());
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: cert-manager-webhook
  labels:
    app.kubernetes.io/name: webhook
    app.kubernetes.io/instance: cert-manager
    app.kubernetes.io/component: webhook
webhooks:
  - name: webhook.cert-manager.io
    rules:
      - apiGroups: ["cert-manager.io"]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["certificaterequests"]
    admissionReviewVersions: ["v1"]
    matchPolicy: Equivalent
    timeoutSeconds: 30
    failurePolicy: Fail
    sideEffects: None
    clientConfig:
      url: {url}/mutate
      caBundle: {ca}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: cert-manager-webhook
  labels:
    app.kubernetes.io/name: webhook
    app.kubernetes.io/instance: cert-manager
    app.kubernetes.io/component: webhook
webhooks:
  - name: webhook.cert-manager.io
    namespaceSelector:
      matchExpressions:
        - key: cert-manager.io/disable-validation
          operator: NotIn
          values: ["true"]
    rules:
      - apiGroups: ["cert-manager.io", "acme.cert-manager.io"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["*/*"]
    admissionReviewVersions: ["v1"]
    matchPolicy: Equivalent
    timeoutSeconds: 30
    failurePolicy: Fail
    sideEffects: None
    clientConfig:
      url: {url}/validate
      caBundle: {ca}
"#
        )
    }

    /// The cert-manager module version built into `canopy-certmanager`, e.g. `v1.21.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `https://127.0.0.1:PORT`, where the webhook serves `/validate` and `/mutate`.
    pub fn webhook_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.webhook_port)
    }

    /// The CA (PEM) of the webhook's serving certificate: the configurations' caBundle.
    pub fn webhook_ca_pem(&self) -> &str {
        &self.webhook_ca
    }

    /// The kubeconfig both processes use (the cluster's admin kubeconfig).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Wall time from the start of [`CertManager::start`] (CRDs included) until ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The folder of the serving certificate and of `controller.log` and `webhook.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process ids of the controller and the webhook, while they run (to read their
    /// CPU time).
    pub fn pids(&self) -> Vec<u32> {
        [&self.controller, &self.webhook]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// The controller's log so far.
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    /// The webhook's log so far.
    pub fn webhook_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    /// The end of both logs, for panic messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (file, lines) in [("webhook.log", 30), ("controller.log", 60)] {
            let path = self.dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            s.push_str(&format!(
                "---- {} (last {} lines)\n{}\n",
                path.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        s
    }

    /// Stops both processes (SIGTERM: the controller releases its Lease), killing them
    /// after 10 s.
    pub fn stop(&mut self) {
        for child in [self.controller.take(), self.webhook.take()]
            .into_iter()
            .flatten()
        {
            stop_group(child, Duration::from_secs(10));
        }
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        for mut child in [self.controller.take(), self.webhook.take()]
            .into_iter()
            .flatten()
        {
            signal_group(&child, "-KILL");
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("cert-manager logs: {}", self.dir.display());
        }
    }
}

/// A Certificate the webhook must deny: no names, and a duration under cert-manager's
/// minimum of 1h.
const PROBE_CERTIFICATE: &str = r#"apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: canopy-webhook-probe
  namespace: default
spec:
  secretName: canopy-webhook-probe
  duration: 1m
  issuerRef:
    name: probe
    kind: ClusterIssuer
"#;

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = file.try_clone().expect("clone log file");
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn signal_group(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

fn stop_group(mut child: Child, grace: Duration) {
    signal_group(&child, "-TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_group(&child, "-KILL");
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` distinct free loopback ports, all held open until all are chosen.
fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The status of a plain-HTTP GET on 127.0.0.1.
fn http_get_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = String::new();
    s.read_to_string(&mut head).map_err(|e| e.to_string())?;
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {head:?}"))
}

/// A CA and a serving certificate for IP 127.0.0.1 and DNS localhost (P-256, 2 days),
/// made with openssl in `dir`: returns (cert file, key file, CA PEM).
fn webhook_serving_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (ca_key, ca_crt) = (dir.join("webhook-ca.key"), dir.join("webhook-ca.crt"));
    let (key, csr, crt) = (
        dir.join("webhook.key"),
        dir.join("webhook.csr"),
        dir.join("webhook.crt"),
    );
    let ext = dir.join("webhook.ext");
    run_ok(
        openssl()
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=canopy test cert-manager-webhook CA"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt),
    );
    run_ok(
        openssl()
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes"])
            .args(["-subj", "/CN=cert-manager-webhook"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n",
    )
    .expect("write webhook.ext");
    run_ok(
        openssl()
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt),
    );
    let ca = std::fs::read_to_string(&ca_crt).expect("read webhook CA");
    (crt, key, ca)
}

/// canopy's CRDs (`canopy-issuer crds`), once Established, and a ClusterIssuer `name` of
/// canopy's kind, in `cluster`.
pub fn install_canopy_cluster_issuer(cluster: &TestCluster, name: &str) {
    cluster.apply(&run_ok(crate::cmd("canopy-issuer").arg("crds")));
    run_ok(cluster.kubectl().args([
        "wait",
        "--for=condition=Established",
        "crd/clusterissuers.pki.canopy.dev",
    ]));
    cluster.apply(&format!(
        "apiVersion: pki.canopy.dev/v1alpha1\nkind: ClusterIssuer\nmetadata: {{name: {name}}}\nspec: {{}}\n"
    ));
}

/// Waits up to 60 s until CertificateRequest `ns/name` has Ready with reason `want`
/// (`Issued`, `Failed`, `Denied`) and returns it.
pub fn wait_ready_reason(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    want: &str,
) -> serde_json::Value {
    wait_ready_reason_within(cluster, ns, name, want, Duration::from_secs(60))
}

/// [`wait_ready_reason`], waiting up to `timeout`.
pub fn wait_ready_reason_within(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> serde_json::Value {
    wait_until(&format!("{ns}/{name} Ready={want}"), timeout, || {
        let out = cluster
            .kubectl()
            .args(["-n", ns, "get", "certificaterequest", name, "-o", "json"])
            .output()
            .map_err(|e| e.to_string())?;
        let cr: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let reason = cr["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["reason"].clone());
        match reason {
            Some(r) if r == want => Ok(cr),
            other => Err(format!("{other:?}")),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
    }
}
