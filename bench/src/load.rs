//! The load generator every system gets: N keep-alive HTTPS/1.1 connections (rustls,
//! aws-lc-rs), each sending one request after another until the time is up. Every
//! answer must be a 2xx with a certificate in it; the first answer on each
//! connection and every 64th after it is parsed and must name the requested SPIFFE ID.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::workload::Body;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a setup step may take ([`Endpoint::call`]): OpenBao's `sys/init` on raft storage
/// took over 10 s once in the suite (key generation and the first raft writes on a busy
/// machine).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connection (TCP + TLS + HTTP) may take to set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Every this many answers on a connection, the certificate is parsed and checked.
const DEEP_CHECK_EVERY: u64 = 64;
/// How many distinct error messages an outcome keeps.
const ERROR_SAMPLES: usize = 3;

/// An HTTPS endpoint: where, which CA to trust, which headers to send.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    authority: HeaderValue,
    server_name: ServerName<'static>,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    connector: TlsConnector,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// TLS client settings trusting only the CA certificates in `ca_pem`.
fn tls_config(ca_pem: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(der.context("reading the CA PEM")?)
            .context("adding a CA certificate")?;
    }
    if roots.is_empty() {
        bail!("no CA certificate to trust");
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Endpoint {
    /// `url` is `https://IP:PORT/path`; the server certificate must chain to `ca_pem`
    /// and name the IP.
    pub fn new(url: &str, ca_pem: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("{url}: only https:// URLs are driven (the same TLS for every system)");
        }
        let host = uri.host().ok_or_else(|| anyhow!("{url}: no host"))?;
        let port = uri.port_u16().unwrap_or(443);
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .with_context(|| format!("{url}: the host must be an IP address (loopback)"))?;
        let server_name = ServerName::try_from(host.to_string())?;
        Ok(Endpoint {
            addr,
            authority: HeaderValue::from_str(&format!("{host}:{port}"))?,
            server_name,
            path: uri.path().to_string(),
            headers: Vec::new(),
            connector: TlsConnector::from(tls_config(ca_pem)?),
        })
    }

    /// Adds a header sent with every request (`Authorization`, `X-Vault-Token`).
    pub fn with_header(mut self, name: &str, value: &str) -> anyhow::Result<Endpoint> {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        ));
        Ok(self)
    }

    /// `https://IP:PORT`, the server this endpoint reaches.
    pub fn origin(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The same server and headers at another path.
    pub fn at(&self, path: &str) -> Endpoint {
        Endpoint {
            path: path.to_string(),
            ..self.clone()
        }
    }

    async fn connect(&self) -> anyhow::Result<(SendRequest<Full<Bytes>>, String)> {
        let setup = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await?;
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            anyhow::Ok((sender, version))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.addr))?
    }

    fn request(&self, method: Method, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() =
            Uri::try_from(self.path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
        let headers = req.headers_mut();
        headers.insert(HOST, self.authority.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        req
    }

    /// One request on a new connection (setup steps and readiness checks).
    pub async fn call(&self, method: Method, body: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let (mut sender, _) = self.connect().await?;
        let req = self.request(method, Bytes::copy_from_slice(body.as_bytes()));
        let exchange = async {
            let response = sender.send_request(req).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        tokio::time::timeout(SETUP_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{} {} timed out", self.addr, self.path))?
    }
}

impl Endpoint {
    /// GETs each of `paths` in turn on one keep-alive connection and returns the
    /// latency of each, microseconds; fails on the first answer that is not a 200.
    pub async fn get_each(&self, paths: &[String]) -> anyhow::Result<Vec<u32>> {
        let (mut sender, _) = self.connect().await?;
        let mut latencies = Vec::with_capacity(paths.len());
        for path in paths {
            let req = self.at(path).request(Method::GET, Bytes::new());
            let started = Instant::now();
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(req).await?;
                let status = response.status();
                let bytes = response.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, bytes))
            };
            let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| anyhow!("GET {path} timed out"))??;
            if status != StatusCode::OK {
                anyhow::bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
            }
            latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
        Ok(latencies)
    }
}

/// How hard and how long to drive an endpoint.
#[derive(Clone, Debug)]
pub struct Load {
    /// Concurrent keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// How long new requests are sent.
    pub duration: Duration,
    /// Request bodies, used round-robin.
    pub bodies: Arc<Vec<Body>>,
}

/// What a run produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Answers that were a 2xx with a certificate.
    pub ok: u64,
    /// Everything else (status, body, timeout, connection failure).
    pub errors: u64,
    /// A few of the error messages.
    pub error_samples: Vec<String>,
    /// Answers whose certificate was parsed and checked.
    pub deep_checked: u64,
    /// Latency of each good answer, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// TLS version negotiated.
    pub tls_version: String,
}

impl Outcome {
    /// Good answers per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100), milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        f64::from(self.latencies_us[index]) / 1000.0
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    /// Adds `other`, a run right after this one: answers, latencies and time add up.
    pub fn append(&mut self, other: Outcome) {
        let elapsed = self.elapsed + other.elapsed;
        self.merge(other);
        self.elapsed = elapsed;
        self.latencies_us.sort_unstable();
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.deep_checked += other.deep_checked;
        self.latencies_us.extend(other.latencies_us);
        for message in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
        self.errors += other.errors;
        if self.tls_version.is_empty() {
            self.tls_version = other.tls_version;
        }
    }
}

/// Which body a connection sends next.
enum Cursor {
    /// Its own position, wrapping around: bodies are reused.
    RoundRobin(usize),
    /// One position shared by every connection: each body is sent once (one-time
    /// tokens); a connection stops when none is left.
    Shared(Arc<AtomicUsize>),
}

impl Cursor {
    fn next(&mut self, len: usize) -> Option<usize> {
        match self {
            Cursor::RoundRobin(next) => {
                let i = *next % len;
                *next += 1;
                Some(i)
            }
            Cursor::Shared(next) => Some(next.fetch_add(1, Ordering::Relaxed)).filter(|i| *i < len),
        }
    }
}

/// Drives `endpoint` with POSTs of `load.bodies` on `load.connections` connections
/// until `load.duration` is over, then waits for the answers in flight.
pub async fn drive(endpoint: &Endpoint, load: &Load) -> Outcome {
    let stride = (load.bodies.len() / load.connections.max(1)).max(1);
    drive_with(endpoint, load, |i| Cursor::RoundRobin(i * stride)).await
}

/// Like [`drive`], but every body is sent at most once (each carries a one-time
/// token); also says whether the bodies ran out before the time was up.
pub async fn drive_each_once(endpoint: &Endpoint, load: &Load) -> (Outcome, bool) {
    let shared = Arc::new(AtomicUsize::new(0));
    let outcome = drive_with(endpoint, load, |_| Cursor::Shared(shared.clone())).await;
    let ran_out = shared.load(Ordering::Relaxed) >= load.bodies.len();
    (outcome, ran_out)
}

async fn drive_with(endpoint: &Endpoint, load: &Load, cursor: impl Fn(usize) -> Cursor) -> Outcome {
    let started = Instant::now();
    let deadline = started + load.duration;
    let workers: Vec<_> = (0..load.connections)
        .map(|i| {
            let endpoint = endpoint.clone();
            let bodies = load.bodies.clone();
            tokio::spawn(connection(endpoint, bodies, cursor(i), deadline))
        })
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        match worker.await {
            Ok(outcome) => total.merge(outcome),
            Err(e) => total.error(format!("load task failed: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

async fn connection(
    endpoint: Endpoint,
    bodies: Arc<Vec<Body>>,
    mut cursor: Cursor,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut answers_on_connection = 0u64;
    while Instant::now() < deadline {
        let Some(live) = sender.as_mut() else {
            match endpoint.connect().await {
                Ok((s, version)) => {
                    sender = Some(s);
                    answers_on_connection = 0;
                    if outcome.tls_version.is_empty() {
                        outcome.tls_version = version;
                    }
                }
                Err(e) => {
                    outcome.error(format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        let Some(next) = cursor.next(bodies.len()) else {
            break;
        };
        let body = &bodies[next];
        let request = endpoint.request(Method::POST, body.bytes.clone());
        let sent = Instant::now();
        let exchange = async {
            let response = live.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let latency = sent.elapsed();
        match result {
            Ok(Ok((status, bytes))) => {
                let deep = answers_on_connection.is_multiple_of(DEEP_CHECK_EVERY);
                answers_on_connection += 1;
                match check_answer(status, &bytes, &body.uri, deep) {
                    Ok(()) => {
                        outcome.ok += 1;
                        outcome.deep_checked += u64::from(deep);
                        outcome
                            .latencies_us
                            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                    }
                    Err(e) => outcome.error(e),
                }
            }
            Ok(Err(e)) => {
                outcome.error(format!("request: {e:#}"));
                sender = None;
            }
            Err(_) => {
                outcome.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
                sender = None;
            }
        }
    }
    outcome
}

const PEM_CERT: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// A good answer is a 2xx (200; step-ca's 201) whose body holds a certificate; a deep
/// check also parses the JSON's certificate field and requires the SPIFFE ID asked for.
fn check_answer(status: StatusCode, body: &[u8], uri: &str, deep: bool) -> Result<(), String> {
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Err(format!("HTTP {status}: {text}"));
    }
    if !body.windows(PEM_CERT.len()).any(|w| w == PEM_CERT) {
        return Err(format!("{status} without a certificate in the body"));
    }
    if deep {
        check_certificate(body, uri)?;
    }
    Ok(())
}

fn find_certificate(value: &serde_json::Value) -> Option<&str> {
    match value {
        // `certificate` (canopy, OpenBao, CFSSL) or `crt` (step-ca).
        serde_json::Value::Object(map) => ["certificate", "crt"]
            .iter()
            .find_map(|k| map.get(*k)?.as_str())
            .or_else(|| map.values().find_map(find_certificate)),
        _ => None,
    }
}

fn check_certificate(body: &[u8], uri: &str) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let pem = find_certificate(&json).ok_or("no certificate field in the answer")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("certificate DER: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| format!("certificate SAN: {e}"))?
        .ok_or("certificate has no SAN")?;
    let has_uri = names
        .value
        .general_names
        .iter()
        .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == uri));
    if !has_uri {
        return Err(format!("certificate does not carry {uri}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let outcome = Outcome {
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
            ..Outcome::default()
        };
        assert_eq!(outcome.percentile_ms(50.0), 50.0);
        assert_eq!(outcome.percentile_ms(99.0), 99.0);
        assert_eq!(outcome.percentile_ms(100.0), 100.0);
    }

    #[test]
    fn cursors_reuse_or_use_once() {
        let mut reuse = Cursor::RoundRobin(2);
        let seen: Vec<_> = (0..4).map(|_| reuse.next(3)).collect();
        assert_eq!(seen, [Some(2), Some(0), Some(1), Some(2)]);
        let shared = Arc::new(AtomicUsize::new(0));
        let (mut a, mut b) = (
            Cursor::Shared(shared.clone()),
            Cursor::Shared(shared.clone()),
        );
        assert_eq!(
            (a.next(3), b.next(3), a.next(3)),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!((b.next(3), a.next(3)), (None, None));
    }

    #[test]
    fn answers_are_checked() {
        assert!(check_answer(StatusCode::FORBIDDEN, b"{}", "spiffe://x/y", false).is_err());
        assert!(check_answer(StatusCode::OK, b"{}", "spiffe://x/y", false).is_err());
        assert!(check_answer(
            StatusCode::OK,
            b"{\"certificate\":\"-----BEGIN CERTIFICATE-----\"}",
            "spiffe://x/y",
            false
        )
        .is_ok());
        assert!(check_answer(
            StatusCode::CREATED,
            b"{\"crt\":\"-----BEGIN CERTIFICATE-----\"}",
            "spiffe://x/y",
            false
        )
        .is_ok());
    }
}
