//! The HTTPS listener: rustls (aws-lc-rs, TLS 1.2+) with optional client
//! certificates, so workloads may authenticate with mTLS and others with tokens.
//! The verified client certificate is handed to the handlers as a request extension.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use canopy::ca::CaError;
use canopy::cert::Certificate;
use canopy::key::{KeyPair, KeyType, Passphrase};
use canopy::profile::{CertRequest, Profile};
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
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::TlsFiles;
use crate::intermediate::Intermediate;

/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an HTTP/1 request head to arrive whole (from the connection's start,
/// then from the end of each response), so slow clients cannot hold connections.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the server certificate the issuer makes for itself.
const SERVER_CERT_TTL: Ttl = Ttl::days(30);

/// The client certificate of the connection, verified against our roots.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Option<Arc<Certificate>>);

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
    let request = CertRequest {
        dns_names: dns_names.to_vec(),
        ip_addresses: ip_addresses.to_vec(),
        ttl: Some(SERVER_CERT_TTL),
        clamp_to_issuer: true,
        ..CertRequest::default()
    };
    let (issued, key) = intermediate
        .ca
        .issue_with_new_key(Profile::Server, &request, KeyType::EcdsaP256, now)
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
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, acceptor, router).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
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
    let service = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(client.clone());
        request
    });
    // The protocol comes from ALPN (RFC 9113 §3.2: HTTP/2 over TLS is negotiated, never
    // sniffed): sniffing the preface would wait for a client's first byte with no time
    // limit. HTTP/1 heads must arrive whole within HEADER_READ_TIMEOUT (slowloris).
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
        .await
}
