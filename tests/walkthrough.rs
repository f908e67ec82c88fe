//! The README's "Two clouds, end to end" section, followed word by word.
//!
//! Everything between `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->` in
//! README.md is executed in document order, in a fresh folder:
//! - a ```yaml block is written to the file the prose line above it names last in
//!   backticks ("Save this as `issuer.yaml`:");
//! - every `$ ` line of a ```console block runs with bash; the lines shown below it must
//!   appear, in that order, in what the command prints (stdout and stderr as a terminal
//!   shows them; other lines may come in between). `…` stands for any text, leading and
//!   trailing spaces do not count, `# ` lines are comments. A command ending in `&` runs in
//!   the background until the end of the test; the lines shown below it are awaited in
//!   its output;
//! - a ```sh block is run as one script; a ```bash block is shown, not run (commands for
//!   a setup other than the walkthrough's).
//!
//! The two clusters are real control planes (embedded etcd and the real kube-apiserver,
//! tests/cluster), each with the real cert-manager (controller with its approver, and its
//! webhook, which writes `spec.username` from the caller's credentials) and the
//! `istio-system` namespace; their kubeconfigs are `aws.kubeconfig` and
//! `azure.kubeconfig`. The only change made to the README text: the ports 8443 and 8444
//! are replaced by free ones.
//!
//! `WALKTHROUGH_VERBOSE=1` prints what every command printed (to update the README).
//!
//! Afterwards rustls (not openssl) checks the certificates the walkthrough produced: the
//! aws and the azure workload complete mutual TLS trusting only the root and checking each
//! other's SPIFFE ID; the other trust domain's workload is rejected both ways.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_testsupport::certmanager::CertManager;
use canopy_testsupport::cluster::TestCluster;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
};
use serde_json::json;

const START: &str = "<!-- walkthrough:start -->";
const END: &str = "<!-- walkthrough:end -->";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(60);

const WEB_ID: &str = "spiffe://mesh.example/ns/frontend/sa/web";
const API_ID: &str = "spiffe://mesh.example/ns/backend/sa/api";

// ---------------------------------------------------------------------------------------
// The README, parsed.

#[derive(Debug)]
enum Step {
    /// A file the README shows; written as is.
    File { name: String, content: String },
    /// A `$ ` command and the lines it must print.
    Command {
        line: String,
        expected: Vec<String>,
        readme_line: usize,
    },
    /// A ```sh block, run as one script.
    Script { text: String, readme_line: usize },
}

fn walkthrough_section(readme: &str) -> (&str, usize) {
    let start = readme
        .find(START)
        .expect("README.md has no `<!-- walkthrough:start -->` marker");
    let end = readme[start..]
        .find(END)
        .map(|e| start + e)
        .expect("README.md has no `<!-- walkthrough:end -->` after the start marker");
    let first_line = readme[..start].lines().count() + 1;
    (&readme[start + START.len()..end], first_line)
}

/// The last file name (a backticked span with a `.`) on a prose line ending with `:`.
fn file_name_of(prose: &str) -> Option<String> {
    let prose = prose.trim();
    if !prose.ends_with(':') {
        return None;
    }
    let parts: Vec<&str> = prose.split('`').collect();
    // Backticked spans are the odd-indexed parts.
    parts
        .iter()
        .enumerate()
        .filter(|(i, s)| i % 2 == 1 && s.contains('.'))
        .map(|(_, s)| s.to_string())
        .next_back()
}

fn parse(section: &str, first_line: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = section.lines().enumerate().peekable();
    let mut last_prose = String::new();
    while let Some((i, line)) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            if !line.trim().is_empty() {
                last_prose = line.to_string();
            }
            continue;
        };
        let lang = lang.trim().to_string();
        let mut body = Vec::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push(l);
        }
        assert!(
            closed,
            "README line {}: unclosed code block",
            first_line + i
        );
        match lang.as_str() {
            "console" => {
                for (j, l) in body.iter().enumerate() {
                    if let Some(cmd) = l.strip_prefix("$ ") {
                        steps.push(Step::Command {
                            line: cmd.to_string(),
                            expected: Vec::new(),
                            readme_line: first_line + i + 1 + j,
                        });
                    } else if l.trim().is_empty() || l.starts_with("# ") || l.trim() == "…" {
                        continue;
                    } else {
                        match steps.last_mut() {
                            Some(Step::Command { expected, .. }) => expected.push(l.to_string()),
                            _ => panic!(
                                "README line {}: output line {l:?} before any `$ ` command",
                                first_line + i + 1 + j
                            ),
                        }
                    }
                }
            }
            "sh" => steps.push(Step::Script {
                text: body.join("\n"),
                readme_line: first_line + i,
            }),
            "yaml" => {
                let name = file_name_of(&last_prose).unwrap_or_else(|| {
                    panic!(
                        "README line {}: a yaml block needs a line like \"Save this as `FILE`:\" above it",
                        first_line + i
                    )
                });
                steps.push(Step::File {
                    name,
                    content: body.join("\n") + "\n",
                });
            }
            // Commands for a setup other than the walkthrough's (the approver turned off).
            "bash" => {}
            other => panic!(
                "README line {}: unexpected code block language {other:?} in the walkthrough",
                first_line + i
            ),
        }
        // A Command's output lines belong to the block; prose restarts after it.
        last_prose.clear();
    }
    steps
}

/// `pattern` (trimmed, `…` = any text) matches `line` (trimmed).
fn line_matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (pattern.trim(), line.trim());
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(p) => rest = &rest[p + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Index after the last matched line if every pattern matches, in order; else the first
/// pattern that did not.
fn match_in_order(expected: &[String], output: &str) -> Result<(), String> {
    let actual: Vec<&str> = output.lines().collect();
    let mut at = 0;
    for pattern in expected {
        match actual[at..].iter().position(|l| line_matches(pattern, l)) {
            Some(p) => at += p + 1,
            None => return Err(pattern.clone()),
        }
    }
    Ok(())
}

#[test]
fn parser_and_matcher() {
    assert!(line_matches("  serial:      …", "serial:      0a1b"));
    assert!(line_matches("subject=…", "subject=CN = aws mesh CA"));
    assert!(line_matches("a…b…c", "a-x-b-y-c"));
    assert!(!line_matches("a…b…c", "a-x-c-y-b"));
    assert!(!line_matches("ab…ba", "aba"));
    assert!(!line_matches("Issued", "Pending"));
    assert!(match_in_order(&["x".into(), "z".into()], "x\ny\nz\n").is_ok());
    assert!(match_in_order(&["z".into(), "x".into()], "x\ny\nz\n").is_err());
    assert_eq!(
        file_name_of("Save it as `certificaterequest.yaml` (`REQUEST` is replaced):"),
        Some("certificaterequest.yaml".into())
    );
    assert_eq!(
        file_name_of("Save this as `issuer.yaml`:"),
        Some("issuer.yaml".into())
    );
    let steps = parse(
        "\nSave this as `a.yaml`:\n\n```yaml\nk: v\n```\n\n```console\n# note\n$ echo hi\nhi\n\n$ true\n```\n```sh\nexit 0\n```\n",
        1,
    );
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(
        matches!(&steps[0], Step::File { name, content } if name == "a.yaml" && content == "k: v\n")
    );
    assert!(
        matches!(&steps[1], Step::Command { line, expected, .. } if line == "echo hi" && expected == &["hi"])
    );
    assert!(matches!(&steps[3], Step::Script { .. }));
}

// ---------------------------------------------------------------------------------------
// Running commands.

struct Shell {
    work: PathBuf,
    logs: PathBuf,
    path: String,
    home: PathBuf,
    background: Vec<(String, Child)>,
    counter: usize,
}

impl Shell {
    fn bash(&mut self, script: &str, log: &Path) -> Command {
        let out = File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .current_dir(&self.work)
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("kube-cache"))
            .env("LC_ALL", "C")
            .env_remove("KUBECONFIG")
            .env_remove("CANOPY_STORAGE_URL")
            .env_remove("CANOPY_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        c
    }

    /// Runs a command to completion; returns (success, output).
    fn run(&mut self, script: &str) -> (bool, String) {
        self.counter += 1;
        let log = self.logs.join(format!("{:03}.log", self.counter));
        let mut child = self.bash(script, &log).spawn().expect("spawn bash");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        match status {
            Some(s) => (s.success(), output),
            None => (
                false,
                format!("{output}\n[timed out after {COMMAND_TIMEOUT:?}]"),
            ),
        }
    }

    /// Starts `script` in the background and waits until it printed `expected`.
    fn start(&mut self, script: &str, expected: &[String]) -> Result<(), String> {
        self.counter += 1;
        let log = self
            .logs
            .join(format!("{:03}-background.log", self.counter));
        let child = self.bash(script, &log).spawn().expect("spawn bash");
        self.background.push((script.to_string(), child));
        let deadline = Instant::now() + BACKGROUND_TIMEOUT;
        loop {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            if match_in_order(expected, &output).is_ok() {
                return Ok(());
            }
            let child = &mut self.background.last_mut().unwrap().1;
            if let Some(s) = child.try_wait().expect("wait") {
                return Err(format!(
                    "exited with {s} before printing what the README shows\n{output}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "did not print what the README shows within {BACKGROUND_TIMEOUT:?}\n{output}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn kill_group(child: &mut Child) {
    let pgid = format!("-{}", child.id());
    for signal in ["-TERM", "-KILL"] {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args([signal, "--", &pgid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.wait();
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Background processes, last started first; each in its own process group.
        while let Some((_, mut child)) = self.background.pop() {
            kill_group(&mut child);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn follow_readme(work: &Path, logs: &Path, readme: &str) {
    let (section, first_line) = walkthrough_section(readme);
    let steps = parse(section, first_line);
    assert!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::Command { .. }))
            .count()
            >= 20,
        "the walkthrough lost its commands: {steps:#?}"
    );
    let bin_dir = canopy_testsupport::bin("pkictl")
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(bin_dir.join("canopy-issuer").exists());
    let home = logs.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut shell = Shell {
        work: work.to_path_buf(),
        logs: logs.to_path_buf(),
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        ),
        home,
        background: Vec::new(),
        counter: 0,
    };
    for step in &steps {
        match step {
            Step::File { name, content } => {
                std::fs::write(work.join(name), content).unwrap();
            }
            Step::Script { text, readme_line } => {
                let (ok, output) = shell.run(&format!("set -e\n{text}"));
                assert!(
                    ok,
                    "README line {readme_line}: the sh block failed:\n{text}\n--- output:\n{output}"
                );
            }
            Step::Command {
                line,
                expected,
                readme_line,
            } => {
                eprintln!("$ {line}");
                if let Some(background) = line.trim_end().strip_suffix('&') {
                    if let Err(e) = shell.start(background, expected) {
                        panic!(
                            "README line {readme_line}: `{line}` {e}\n--- the README shows:\n{}",
                            expected.join("\n")
                        );
                    }
                    continue;
                }
                let (ok, output) = shell.run(line);
                if std::env::var_os("WALKTHROUGH_VERBOSE").is_some() {
                    eprint!("{output}");
                }
                assert!(ok, "README line {readme_line}: `{line}` failed:\n{output}");
                if let Err(missing) = match_in_order(expected, &output) {
                    panic!(
                        "README line {readme_line}: `{line}` printed something else than the README shows.\n\
                         first line not found (in order): {missing:?}\n--- the README shows:\n{}\n--- the command printed:\n{output}",
                        expected.join("\n")
                    );
                }
            }
        }
    }
    drop(shell);
}

// ---------------------------------------------------------------------------------------
// rustls: the certificates the walkthrough produced, in mutual TLS.

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!v.is_empty(), "{}: no certificate", path.display());
    v
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn uri_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let ee = webpki::EndEntityCert::try_from(cert).expect("parse end-entity certificate");
    ee.valid_uri_names().map(str::to_string).collect()
}

/// Verifies the server's chain with webpki against the given roots only and requires its
/// one URI SAN to be `expected` (the server name is not used: workloads have no DNS name).
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Vec<CertificateDer<'static>>,
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchors: Vec<_> = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).expect("root parses"))
            .collect();
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            }
            other => rustls::Error::General(format!("server certificate: {other}")),
        })?;
        let uris: Vec<&str> = ee.valid_uri_names().collect();
        if uris != [self.expected.as_str()] {
            return Err(rustls::Error::General(format!(
                "server SPIFFE ID {uris:?}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Workload {
    chain: Vec<CertificateDer<'static>>,
    key: PathBuf,
}

impl Workload {
    fn load(dir: &Path, cert: &str, key: &str) -> Workload {
        Workload {
            chain: certs(&dir.join(cert)),
            key: dir.join(key),
        }
    }
}

/// `client` connects to `server`; each trusts only `root`. The client requires the server's
/// SPIFFE ID to be `server_id`; the server returns the client's SPIFFE ID it verified.
fn mutual_tls(
    root: &[CertificateDer<'static>],
    server: &Workload,
    client: &Workload,
    server_id: &str,
) -> Result<Vec<String>, String> {
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    for r in root {
        roots.add(r.clone()).unwrap();
    }
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(server.chain.clone(), key(&server.key))
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: root.to_vec(),
            expected: server_id.to_string(),
            provider: provider.clone(),
        }))
        .with_client_auth_cert(client.chain.clone(), key(&client.key))
        .unwrap();
    let mut c = ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("workload.invalid").unwrap(),
    )
    .unwrap();
    let mut s = ServerConnection::new(Arc::new(server_config)).unwrap();
    use std::io::{Read, Write};
    c.writer().write_all(b"hello from the client").unwrap();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    if c.is_handshaking() || s.is_handshaking() {
        return Err("handshake did not finish".into());
    }
    let mut got = vec![0u8; 21];
    s.reader()
        .read_exact(&mut got)
        .map_err(|e| format!("server read: {e}"))?;
    assert_eq!(&got, b"hello from the client");
    let peer = s
        .peer_certificates()
        .ok_or("server: no client certificate")?;
    Ok(uri_names(&peer[0]))
}

fn rustls_checks(work: &Path) {
    let root = certs(&work.join("root/root-cert.pem"));
    assert_eq!(root.len(), 1);
    let web = Workload::load(work, "web.pem", "web-key.pem");
    let api = Workload::load(work, "api.pem", "api-key.pem");
    let other = Workload::load(work, "other.pem", "other-key.pem");
    // Leaf + its cloud's intermediate, no root.
    assert_eq!(web.chain.len(), 2, "web.pem: leaf and the aws intermediate");
    assert_eq!(
        api.chain.len(),
        2,
        "api.pem: leaf and the azure intermediate"
    );
    assert_eq!(uri_names(&web.chain[0]), [WEB_ID]);
    assert_eq!(uri_names(&api.chain[0]), [API_ID]);

    // aws serves, azure connects; and the other way round.
    assert_eq!(
        mutual_tls(&root, &web, &api, WEB_ID),
        Ok(vec![API_ID.to_string()])
    );
    assert_eq!(
        mutual_tls(&root, &api, &web, API_ID),
        Ok(vec![WEB_ID.to_string()])
    );
    // The SPIFFE ID check bites: api expecting web but reaching another mesh workload.
    let err = mutual_tls(&root, &api, &api, WEB_ID).unwrap_err();
    assert!(err.contains("SPIFFE ID"), "{err}");
    // Another trust domain's workload, as a client and as a server.
    let err = mutual_tls(&root, &web, &other, WEB_ID).unwrap_err();
    assert!(
        err.starts_with("server:") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let err = mutual_tls(&root, &other, &api, WEB_ID).unwrap_err();
    assert!(
        err.starts_with("client:") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------

/// A real control plane with cert-manager and `istio-system`, its kubeconfig written
/// where the README expects it.
fn cluster(name: &str, kubeconfig: &Path) -> (TestCluster, CertManager) {
    let cluster = TestCluster::start(name);
    canopy_testsupport::run_ok(
        cluster
            .kubectl()
            .args(["create", "namespace", "istio-system"]),
    );
    let cert_manager = CertManager::start(&cluster);
    std::fs::copy(cluster.kubeconfig(), kubeconfig).expect("write kubeconfig");
    (cluster, cert_manager)
}

/// `kubectl get -o json` of one object.
fn get(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    let out =
        canopy_testsupport::run_ok(cluster.kubectl().arg("get").args(args).args(["-o", "json"]));
    serde_json::from_str(&out).expect("kubectl JSON")
}

#[test]
fn readme_two_clouds_end_to_end() {
    let started = Instant::now();
    let readme_path = canopy_testsupport::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    // Free ports instead of the README's fixed ones (other tests may run meanwhile).
    let readme = readme
        .replace("8443", &free_port().to_string())
        .replace("8444", &free_port().to_string());

    let dir = canopy_testsupport::tempdir();
    let work = dir.path().join("work");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let (aws_kc, azure_kc) = (work.join("aws.kubeconfig"), work.join("azure.kubeconfig"));
    let ((aws, aws_cm), (azure, azure_cm)) = std::thread::scope(|s| {
        let a = s.spawn(|| cluster("aws", &aws_kc));
        let z = s.spawn(|| cluster("azure", &azure_kc));
        (a.join().unwrap(), z.join().unwrap())
    });
    eprintln!(
        "two clusters with cert-manager ready after {:?}",
        started.elapsed()
    );

    follow_readme(&work, &logs, &readme);

    // What the walkthrough left in the clusters.
    for (cluster, ns) in [(&aws, "frontend"), (&azure, "backend")] {
        let cr = get(cluster, &["-n", ns, "certificaterequest", "workload"]);
        assert_eq!(cr["spec"]["isCA"], json!(false));
        assert!(cr["status"]["ca"].is_string(), "status.ca is filled: {cr}");
        // cert-manager's webhook recorded who created it (the kubeconfig's admin), and
        // its approver approved it.
        assert_eq!(cr["spec"]["username"], "kubernetes-admin", "{cr}");
        let approved = cr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["type"] == "Approved" && c["status"] == "True" && c["reason"] == "cert-manager.io"
            });
        assert!(approved, "approved by cert-manager's approver: {cr}");
        let cacerts = get(cluster, &["-n", "istio-system", "secret", "cacerts"]);
        assert!(cacerts["data"]["cert-chain.pem"].is_string());
    }

    rustls_checks(&work);
    drop((aws_cm, azure_cm, aws, azure));
    eprintln!("walkthrough took {:?}", started.elapsed());
}
