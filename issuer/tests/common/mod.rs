//! Helpers for the issuer's end-to-end tests: start the real binary, talk HTTPS to
//! it with rustls, make CSRs, run openssl, create PostgreSQL databases.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

pub const BIN: &str = env!("CARGO_BIN_EXE_canopy-issuer");
pub const TD: &str = "dev.canopy.internal";

/// A running `canopy-issuer serve`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Arc<Mutex<String>>,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `canopy-issuer ARGS` and waits for "listening on https://ADDR".
    pub fn start(args: &[&str], log_dir: &Path) -> Server {
        Self::start_with_env(args, log_dir, &[])
    }

    /// [`Server::start`] with more environment variables (e.g. SOFTHSM2_CONF).
    pub fn start_with_env(args: &[&str], log_dir: &Path, env: &[(&str, &Path)]) -> Server {
        let stderr_path = log_dir.join(format!("issuer-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("RUST_LOG", "info,sqlx=warn")
            // The binary would take its database URL from this variable instead of the config.
            .env_remove("CANOPY_STORAGE_URL")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start canopy-issuer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let text = Arc::new(Mutex::new(String::new()));
        let text2 = text.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                text2.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.strip_prefix("listening on https://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.parse::<SocketAddr>().unwrap());
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => Server {
                child,
                addr,
                stdout: text,
                stderr_path,
            },
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("canopy-issuer {args:?} did not start listening; stderr:\n{log}");
            }
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn rand_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Runs the binary to completion: (exit success, stdout, stderr).
pub fn run_bin(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run canopy-issuer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A small blocking HTTPS/1.1 client over rustls (aws-lc-rs).
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

fn der_certs(pem_text: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

impl Client {
    /// Trusts `root_pem`; presents `client` (chain PEM, key PEM) if given.
    pub fn new(addr: SocketAddr, root_pem: &str, client: Option<(&str, &str)>) -> Client {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in der_certs(root_pem) {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    der_certs(chain),
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Client {
            addr,
            config: Arc::new(config),
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(std::io::Error::other)?;
        let sock = TcpStream::connect(self.addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        // Large bodies wait for 100 Continue (as curl does), so a server that refuses
        // them early can answer before the body is sent.
        let large = body.is_some_and(|b| b.len() > 32 * 1024);
        if large {
            req.push_str("Expect: 100-continue\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if large {
            tls.write_all(&bytes)?;
            tls.flush()?;
            bytes.clear();
            let mut first = [0u8; 25];
            let n = tls.read(&mut first)?;
            if !first[..n].starts_with(b"HTTP/1.1 100") {
                let mut raw = first[..n].to_vec();
                let _ = tls.read_to_end(&mut raw);
                return parse_response(&raw);
            }
            // skip the rest of the interim response
            let mut seen = first[..n].to_vec();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1];
                tls.read_exact(&mut b)?;
                seen.push(b[0]);
            }
        }
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        // The server may answer (413) and close before reading a large body: read
        // the answer even when writing failed.
        let written = tls.write_all(&bytes).and_then(|()| tls.flush());
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(_) if !raw.is_empty() => {}
            Err(_) if written.is_err() => return Err(written.unwrap_err()),
            // The server may close without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e),
        }
        parse_response(&raw)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, None)
    }

    pub fn post_json(&self, path: &str, auth: Option<&str>, body: &serde_json::Value) -> Response {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        self.request("POST", path, &headers, Some(body.to_string().as_bytes()))
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("bad chunk"))?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A key and a CSR for it.
pub struct Csr {
    pub key_pem: String,
    pub pem: String,
}

/// A P-256 CSR with the given SANs (and no subject).
pub fn csr(spiffe_id: Option<&str>, dns: &[&str]) -> Csr {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = spiffe_id {
        params
            .subject_alt_names
            .push(SanType::URI(id.try_into().unwrap()));
    }
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName((*d).try_into().unwrap()));
    }
    let req = params.serialize_request(&key).unwrap();
    Csr {
        key_pem: key.serialize_pem(),
        pem: req.pem().unwrap(),
    }
}

/// Runs openssl with args in `dir`; returns (success, stdout+stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Prepares the dev CA material in `dir` (root, aws, azure, dev token) without serving.
pub fn dev_material(dir: &Path) -> String {
    let (ok, out, err) = run_bin(&["migrate", "--dev", "--data-dir", dir.to_str().unwrap()]);
    assert!(ok, "migrate --dev failed: {out}{err}");
    std::fs::read_to_string(dir.join("dev-token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database, dropped on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

const PG_HINT: &str = "PostgreSQL is not reachable at 127.0.0.1:5432 as user postgres: run tests/run.sh, which starts a local PostgreSQL, then run the tests again";

pub fn psql(db: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            sql,
        ])
        .output();
    match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("psql not runnable: {e}")),
    }
}

impl PgDb {
    /// Creates `canopy_test_<random>`; panics with a hint when PostgreSQL is not up.
    pub fn create() -> PgDb {
        let reachable =
            TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(3))
                .is_ok();
        assert!(reachable, "{PG_HINT}");
        let name = format!("canopy_test_{}", rand_suffix());
        let (ok, out) = psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(ok, "{PG_HINT}\n(psql said: {out})");
        PgDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A test JWT signer and its JWKS.
pub struct JwtKey {
    pub encoding: jsonwebtoken::EncodingKey,
    pub jwks: serde_json::Value,
}

impl JwtKey {
    pub fn new(kid: &str) -> JwtKey {
        use base64::Engine;
        let key = KeyPair::generate().unwrap();
        let raw = key.public_key_raw(); // 0x04 || X || Y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        JwtKey {
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
            jwks,
        }
    }

    /// A Kubernetes-style projected service-account token.
    pub fn token(&self, kid: &str, aud: &str, ns: &str, sa: &str, exp_from_now: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = serde_json::json!({
            "aud": [aud],
            "exp": now + exp_from_now,
            "iat": now - 60,
            "nbf": now - 60,
            "iss": "https://kubernetes.default.svc",
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "0000"}},
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// Writes a full (non-dev) config using the dev CA material in `dir`.
pub fn write_config(
    dir: &Path,
    storage_url: &str,
    jwks: &serde_json::Value,
    extra_limits: &str,
) -> PathBuf {
    let path = dir.join(format!("issuer-{}.yaml", rand_suffix()));
    let text = format!(
        r#"trust_domain: {TD}
listen:
  address: "127.0.0.1:0"
storage:
  url: "{storage_url}"
roots: [root.pem]
intermediates:
  - {{ name: aws, cert: aws.pem, key: aws-key.pem, passphrase_file: passphrase }}
  - {{ name: azure, cert: azure.pem, key: azure-key.pem, passphrase_file: passphrase }}
default_intermediate: aws
clusters:
  - name: eks-test
    intermediate: aws
    jwt:
      audiences: [canopy-issuer]
      issuer: "https://kubernetes.default.svc"
      jwks: {jwks}
  - name: aks-test
    intermediate: azure
policies:
  - name: dev
    spiffe_ids: ["spiffe://{TD}/ns/*/sa/*", "spiffe://{TD}/batch/**"]
    dns_names: ["*.svc.cluster.local", "*.*.svc.cluster.local", "localhost"]
    profiles: [workload, server, client]
    max_ttl: 24h
    revoke: true
    list: true
  - name: narrow
    spiffe_ids: ["spiffe://{TD}/ns/narrow/sa/*"]
    max_ttl: 1h
  - name: self
    identities: ["spiffe://{TD}/ns/*/sa/*"]
    spiffe_ids: ["{{self}}"]
    max_ttl: 2h
limits:
{extra_limits}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The dev CA material in a folder, a config from [`write_config`] over it and a token of
/// its `dev` policy: what a test needs before it runs `serve`.
pub struct Configured {
    /// The config file's path.
    pub config: String,
    /// A bearer token of policy `dev`.
    pub token: String,
    /// The root certificate (PEM) clients trust.
    pub root: String,
    /// The signer of cluster `eks-test`'s service-account tokens (key id [`JWT_KID`]).
    pub jwt: JwtKey,
}

/// The key id of [`Configured::jwt`].
pub const JWT_KID: &str = "k";

impl Configured {
    /// Prepares `dir` for an issuer on `storage_url` with `extra_limits` (see [`write_config`]).
    pub fn new(dir: &Path, storage_url: &str, extra_limits: &str) -> Configured {
        dev_material(dir);
        let jwt = JwtKey::new(JWT_KID);
        let config = write_config(dir, storage_url, &jwt.jwks, extra_limits)
            .to_str()
            .unwrap()
            .to_string();
        let mut configured = Configured {
            config,
            token: String::new(),
            root: std::fs::read_to_string(dir.join("root.pem")).unwrap(),
            jwt,
        };
        configured.token = configured.create_token("dev");
        configured
    }

    /// A new bearer token of `policy`, made with `canopy-issuer token create`.
    pub fn create_token(&self, policy: &str) -> String {
        let (ok, out, err) = run_bin(&[
            "token",
            "create",
            "--policy",
            policy,
            "--config",
            &self.config,
        ]);
        assert!(ok, "token create --policy {policy}: {out}{err}");
        assert!(err.contains("shown once"), "{err}");
        out.trim().to_string()
    }

    /// A service-account token of cluster `eks-test` for `ns/sa`, audience `aud`, expiring
    /// `exp_from_now` seconds from now.
    pub fn sa_token(&self, aud: &str, ns: &str, sa: &str, exp_from_now: i64) -> String {
        self.jwt.token(JWT_KID, aud, ns, sa, exp_from_now)
    }

    /// Starts `serve` with this config (its log in `dir`) and a client that trusts the root.
    pub fn serve(&self, dir: &Path) -> (Server, Client) {
        let server = Server::start(&["serve", "--config", &self.config], dir);
        let client = Client::new(server.addr, &self.root, None);
        (server, client)
    }
}

/// Waits until `f` is true or panics after `secs`.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}
