//! The listener's certificate: the configured files, or one issued under an
//! intermediate like any other server certificate (recorded and audited), re-issued at
//! 2/3 of its life.

use std::sync::Arc;
use std::time::Duration;

use canopy::cert::Certificate;
use serde_json::json;
use time::OffsetDateTime;

use super::ServeError;
use crate::audit::{AuditEvent, Outcome};
use crate::config::Config;
use crate::intermediate::{Authorities, Intermediate};
use crate::store::{CertificateRecord, Store, Write};
use crate::tls::{self, ServerCert};

/// The listener's certificate: the configured files, or one issued under
/// `listen.intermediate` (recorded like any other) and renewed in the background.
pub(super) async fn listener_cert(
    config: &Config,
    authorities: &Authorities,
    store: &Store,
) -> Result<Arc<ServerCert>, ServeError> {
    if let Some(files) = &config.listen.tls {
        return Ok(ServerCert::new(tls::load_server_cert(files)?));
    }
    let name = config
        .listen
        .intermediate
        .as_deref()
        .unwrap_or(config.default_intermediate());
    let inter = authorities
        .get(name)
        .expect("validated: listen.intermediate names an intermediate")
        .clone();
    let (key, cert) = issue_listener_cert(config, &inter, store).await?;
    let server_cert = ServerCert::new(key);
    tokio::spawn(renew_listener_cert(
        config.clone(),
        inter,
        store.clone(),
        server_cert.clone(),
        cert,
    ));
    Ok(server_cert)
}

fn record_of(cert: &Certificate, intermediate: &str, now: OffsetDateTime) -> CertificateRecord {
    let issued_at = now.unix_timestamp();
    CertificateRecord::new(
        cert,
        intermediate,
        "server",
        "canopy-issuer",
        "internal",
        issued_at,
    )
}

/// Issues the listener certificate and records it like any other.
async fn issue_listener_cert(
    config: &Config,
    inter: &Intermediate,
    store: &Store,
) -> Result<(Arc<rustls::sign::CertifiedKey>, Certificate), ServeError> {
    let now = crate::clock::now();
    let (key, cert) = tls::issue_server_cert(
        inter,
        &config.listen.server_names,
        &config.listen.server_ips,
        now,
    )?;
    let event = AuditEvent::new(
        crate::clock::unix_ms(now),
        "canopy-issuer",
        "sign",
        cert.serial().to_string(),
        Outcome::Ok,
        json!({"profile": "server", "intermediate": inter.name, "purpose": "listener",
               "not_after": cert.not_after().unix_timestamp(), "fingerprint": cert.fingerprint_sha256()}),
    );
    store
        .commit([Write::Issued(
            Box::new(record_of(&cert, &inter.name, now)),
            event,
        )])
        .await?;
    Ok((key, cert))
}

/// Re-issues the self-made listener certificate at 2/3 of its life.
async fn renew_listener_cert(
    config: Config,
    inter: Arc<Intermediate>,
    store: Store,
    server_cert: Arc<ServerCert>,
    mut current: Certificate,
) {
    loop {
        let life = current.not_after() - current.not_before();
        let renew_at = current.not_before() + life * 2 / 3;
        let wait: time::Duration = renew_at - crate::clock::now_precise();
        tokio::time::sleep(Duration::from_secs(wait.whole_seconds().max(60) as u64)).await;
        match issue_listener_cert(&config, &inter, &store).await {
            Ok((key, cert)) => {
                server_cert.replace(key);
                tracing::info!(serial = %cert.serial(), "renewed the listener certificate");
                current = cert;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the listener certificate; retrying")
            }
        }
    }
}
