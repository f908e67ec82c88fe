//! The HTTPS listener: rustls (aws-lc-rs, TLS 1.2+) with optional client
//! certificates, so workloads may authenticate with mTLS and others with tokens.
//! The verified client certificate and the peer are handed to the handlers as request
//! extensions. Connections are admitted against the caps of [`crate::admission`] before
//! the handshake, and closed when idle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use canopy::ca::CaError;
use canopy::cert::Certificate;
use canopy::dns::DnsName;
use canopy::key::{KeyPair, KeyType, Passphrase};
use canopy::profile::{LeafProfile, LeafRequest};
use canopy::ttl::Ttl;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::admission::{Admission, LogThrottle, PeerKey, Refusal};
use crate::config::{Limits, TlsFiles};
use crate::intermediate::Intermediate;
use crate::metrics::Metrics;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an idle connection told to close (HTTP/2 GOAWAY) gets before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(10);
/// One log line per this period about refused connections (each is counted in metrics).
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);
/// HTTP/2 receive windows: bodies are at most `limits.body_bytes` (64 KiB by default)
/// and read at once, so larger windows would only let a client park more unread bytes in
/// the connection's buffers (hyper's default is 1 MiB per stream and per connection).
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Lifetime of the server certificate the issuer makes for itself.
const SERVER_CERT_TTL: Ttl = Ttl::days(30);

/// The client certificate of the connection, verified against our roots.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Option<Arc<Certificate>>);

/// The peer of the connection, as the per-peer limits count it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub PeerKey);

/// How connections are admitted and how long they are kept: `limits.max_connections*`,
/// `limits.http2_*`, `limits.idle_timeout`, `limits.header_read_timeout`.
#[derive(Debug)]
pub struct ConnectionLimits {
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    refusals_logged: LogThrottle,
    http2_max_concurrent_streams: u32,
    http2_keep_alive_interval: Duration,
    http2_keep_alive_timeout: Duration,
    idle_timeout: Duration,
    header_read_timeout: Duration,
}

impl ConnectionLimits {
    /// The connection limits of `limits`, counting refusals in `metrics`.
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        let secs = |t: canopy::ttl::Ttl| Duration::from_secs(t.as_seconds().max(1) as u64);
        Arc::new(ConnectionLimits {
            admission: Admission::new(limits.max_connections, limits.max_connections_per_peer),
            metrics,
            refusals_logged: LogThrottle::new(REFUSAL_LOG_PERIOD),
            http2_max_concurrent_streams: limits.http2_max_concurrent_streams,
            http2_keep_alive_interval: secs(limits.http2_keep_alive_interval),
            http2_keep_alive_timeout: secs(limits.http2_keep_alive_timeout),
            idle_timeout: secs(limits.idle_timeout),
            header_read_timeout: secs(limits.header_read_timeout),
        })
    }

    /// Counts (and now and then logs) a connection closed at accept.
    fn refused(&self, refusal: Refusal, peer: PeerKey) {
        self.metrics.refuse_connection(refusal.reason());
        if let Some(held_back) = self.refusals_logged.check(std::time::Instant::now()) {
            tracing::warn!(
                %peer,
                reason = refusal.reason(),
                held_back,
                open = self.admission.open(),
                "connection closed at accept: a connection cap is reached \
                 (limits.max_connections, limits.max_connections_per_peer)"
            );
        }
    }
}

/// Requests in flight on one connection and when the last one began or ended, for the
/// idle timeout.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// One request in flight; dropped when its response is ready.
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            let quiet_until = *self.last.lock().unwrap_or_else(|e| e.into_inner()) + timeout;
            let now = Instant::now();
            if !busy && quiet_until <= now {
                return;
            }
            tokio::time::sleep_until(if busy { now + timeout } else { quiet_until }).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate or key unusable.
    #[error("listener certificate: {0}")]
    Certificate(String),
    /// rustls refused the setup.
    #[error("tls setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// Client verifier refused the roots.
    #[error("client certificate roots: {0}")]
    Verifier(String),
}

/// Server certificate that can be swapped while serving (renewal).
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl ServerCert {
    /// Replaces the certificate served from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("key: {e}")))?;
    let signing_key = aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Certificate(format!("key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// Loads the listener certificate chain and key from files.
pub fn load_server_cert(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| {
            TlsError::Certificate(format!("cannot read {}: {}", p.display(), e.kind()))
        })
    };
    let certs = Certificate::parse_pem_all(&read(&files.cert)?)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let passphrase = match &files.passphrase_file {
        Some(p) => {
            Some(Passphrase::from_file(p).map_err(|e| TlsError::Certificate(e.to_string()))?)
        }
        None => None,
    };
    let key = KeyPair::from_pem_with(&read(&files.key)?, passphrase.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let chain = certs
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    certified_key(chain, &key.to_unencrypted_pem())
}

/// Issues the listener's own server certificate from `intermediate`.
/// Returns the key to serve and the certificate (to record).
pub fn issue_server_cert(
    intermediate: &Intermediate,
    dns_names: &[String],
    ip_addresses: &[std::net::IpAddr],
    now: OffsetDateTime,
) -> Result<(Arc<CertifiedKey>, Certificate), TlsError> {
    let dns_names = dns_names
        .iter()
        .map(|d| d.parse::<DnsName>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let request = LeafRequest {
        dns_names,
        ip_addresses: ip_addresses.to_vec(),
        ttl: Some(SERVER_CERT_TTL),
        clamp_to_issuer: true,
        ..LeafRequest::new(LeafProfile::Server)
    };
    let (issued, key) = intermediate
        .ca
        .issue_with_new_key(&request, KeyType::EcdsaP256, now)
        .map_err(|e: CaError| TlsError::Certificate(e.to_string()))?;
    let chain = issued
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let certified = certified_key(chain, &key.to_unencrypted_pem())?;
    Ok((certified, issued.certificate))
}

/// Reads CRL files (PEM or DER) for the client-certificate verifier.
pub fn load_crls(paths: &[std::path::PathBuf]) -> Result<Vec<canopy::crl::Crl>, TlsError> {
    let mut crls = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| {
            TlsError::Verifier(format!("cannot read CRL {}: {}", path.display(), e.kind()))
        })?;
        let crl = match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN") => canopy::crl::Crl::from_pem(text),
            _ => canopy::crl::Crl::from_der(bytes),
        }
        .map_err(|e| TlsError::Verifier(format!("CRL {}: {e}", path.display())))?;
        crls.push(crl);
    }
    Ok(crls)
}

/// The rustls server configuration: TLS 1.2 and 1.3, aws-lc-rs, client
/// certificates optional (verified against `roots` when presented, and refused when a
/// CA on their path is revoked by one of `crls`, the root's CRL for instance; a leaf's
/// own revocation is checked against storage on every request).
pub fn server_config(
    roots: &[Certificate],
    crls: &[canopy::crl::Crl],
    cert: Arc<ServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.der().to_vec()))
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    }
    let crls = crls
        .iter()
        .map(|c| rustls::pki_types::CertificateRevocationListDer::from(c.der().to_vec()));
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .with_crls(crls)
        // A CA without a CRL here (an intermediate, whose leaves storage answers for)
        // is not a reason to refuse.
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl ServerCert {
    /// Wraps an initial certificate.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(ServerCert {
            current: RwLock::new(key),
        })
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    limits: Arc<ConnectionLimits>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Closed before any TLS work: a refused connection costs an accept and a close.
        let slot = match limits.admission.admit(PeerKey::from(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                limits.refused(refusal, PeerKey::from(peer.ip()));
                drop(stream);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            limits.metrics.connections_open.inc();
            if let Err(e) = connection(stream, peer, acceptor, router, &limits).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            limits.metrics.connections_open.dec();
            drop(slot);
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    limits: &ConnectionLimits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await??;
    // rustls has verified the chain against our roots; parse the leaf once per connection.
    let client = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| match Certificate::from_der(der.to_vec()) {
            Ok(cert) => Some(Arc::new(cert)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "unreadable client certificate");
                None
            }
        });
    let client = ClientCert(client);
    let peer_key = Peer(PeerKey::from(peer.ip()));
    let activity = Activity::new();
    let in_flight = activity.clone();
    let service = router
        .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(client.clone());
            request.extensions_mut().insert(peer_key);
            request
        })
        .map_future(move |response| {
            let guard = in_flight.begin();
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });
    // The protocol comes from ALPN (RFC 9113 §3.2: HTTP/2 over TLS is negotiated, never
    // sniffed): sniffing the preface would wait for a client's first byte with no time
    // limit. HTTP/1 heads must arrive whole within the header timeout (slowloris); an
    // HTTP/2 peer must answer PINGs; either is closed after the idle timeout.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_timeout)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => return served,
        () = activity.idle_for(limits.idle_timeout) => {}
    }
    tracing::debug!(%peer, "closing an idle connection");
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await {
        Ok(served) => served,
        Err(_) => Ok(()),
    }
}
