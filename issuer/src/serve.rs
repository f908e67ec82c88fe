//! `canopy-issuer serve`: load everything once, then answer until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canopy::cert::Certificate;
use serde_json::json;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::audit::{AuditEvent, Outcome};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::intermediate::{Authorities, Intermediate};
use crate::issuance::Issuer;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{CertificateRecord, Store, Write};
use crate::tls::{self, ServerCert};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A cluster's controllers could not start.
    #[error(transparent)]
    Controller(#[from] crate::certmanager::ControllerError),
    /// The Istio cacerts sync could not be set up.
    #[error(transparent)]
    Istio(#[from] crate::istio::SetupError),
    /// Storage.
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    /// CA material.
    #[error(transparent)]
    Load(#[from] crate::intermediate::LoadError),
    /// JWKS.
    #[error(transparent)]
    Jwks(#[from] crate::auth::JwksError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The audit checkpoint key.
    #[error(transparent)]
    Checkpoint(#[from] crate::audit::checkpoint::CheckpointError),
    /// Binding the socket.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A service ready to accept connections.
#[derive(Debug)]
pub struct Service {
    /// The bound address (the real port when 0 was asked).
    pub local_addr: SocketAddr,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    connection_limits: Arc<tls::ConnectionLimits>,
    controllers_stop: tokio::sync::watch::Sender<bool>,
    controllers: Vec<tokio::task::JoinHandle<()>>,
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
        .commit(&[Write::Issued(
            Box::new(record_of(&cert, &inter.name, now)),
            event,
        )])
        .await?;
    Ok((key, cert))
}

impl Service {
    /// Connects storage (and migrates it), loads the CAs, binds the listener.
    pub async fn start(config: &Config) -> Result<Service, ServeError> {
        let store = Store::connect(&config.storage.url, config.storage.max_connections).await?;
        store.migrate().await?;
        let now = crate::clock::now();
        let material = crate::ca_material::CaMaterial::load(config)?;
        let authorities = Arc::new(Authorities::new(config, &material, now)?);
        let metrics = Arc::new(Metrics::new());
        let issuer = Arc::new(Issuer::new(
            config,
            authorities.clone(),
            store.clone(),
            metrics.clone(),
        ));
        let (controllers_stop, mut controllers) = start_cert_manager(config, &issuer).await?;
        let audit_pruning = match (
            &config.audit.retention,
            &config.audit.archive_dir,
            &config.audit.checkpoint_key,
        ) {
            (Some(retention), Some(dir), Some(key)) => Some(crate::retention::AuditPruning {
                archive_dir: dir.clone(),
                retention: *retention,
                key: crate::audit::checkpoint::CheckpointKey::load(key)?.public_key(),
            }),
            _ => None,
        };
        if config.retention.enabled || audit_pruning.is_some() {
            controllers.push(tokio::spawn(crate::retention::run(
                store.clone(),
                config.retention.clone(),
                audit_pruning,
                metrics.retention.clone(),
                crate::certmanager::replica_identity(),
                controllers_stop.subscribe(),
            )));
        }
        let auth = Arc::new(Authenticator::new(
            store.clone(),
            config.trust_domain.clone(),
            &config.clusters,
            authorities
                .all()
                .map(|i| (i.name.clone(), i.ca.certificate().clone()))
                .collect(),
        )?);
        let limiter = Arc::new(RateLimiter::new(
            config.limits.rate_per_second,
            config.limits.burst,
        ));

        let server_cert = match &config.listen.tls {
            Some(files) => ServerCert::new(tls::load_server_cert(files)?),
            None => {
                let name = config
                    .listen
                    .intermediate
                    .as_deref()
                    .unwrap_or(config.default_intermediate());
                let inter = authorities
                    .get(name)
                    .expect("validated: listen.intermediate names an intermediate")
                    .clone();
                let (key, cert) = issue_listener_cert(config, &inter, &store).await?;
                let server_cert = ServerCert::new(key);
                tokio::spawn(renew_listener_cert(
                    config.clone(),
                    inter,
                    store.clone(),
                    server_cert.clone(),
                    cert,
                ));
                server_cert
            }
        };
        if let Some(path) = &config.audit.checkpoint_key {
            let key = crate::audit::checkpoint::CheckpointKey::load(path)?;
            tokio::spawn(checkpoint_audit(
                store.clone(),
                key,
                config.audit.checkpoint_interval(),
            ));
        }
        let crls = tls::load_crls(&config.crls)?;
        let tls = tls::server_config(&authorities.roots, &crls, server_cert)?;
        let istio = match crate::istio::IstioSetup::of_config(config, &material)? {
            None => None,
            Some(setup) => {
                let controller = crate::istio::Controller::new(
                    setup,
                    store.clone(),
                    Some(metrics.istio.clone()),
                );
                let health = controller.health();
                controllers
                    .push(start_istio(config, controller, controllers_stop.subscribe()).await?);
                Some(health)
            }
        };
        let connection_limits = tls::ConnectionLimits::new(&config.limits, metrics.clone());
        let state = AppState {
            issuer,
            auth,
            limiter,
            metrics,
            istio,
        };
        let router = api::router(state, &config.limits);
        let addr = config.listen.address;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Bind {
                addr,
                reason: e.to_string(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| ServeError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        Ok(Service {
            local_addr,
            listener,
            tls,
            router,
            connection_limits,
            controllers_stop,
            controllers,
        })
    }

    /// Serves until SIGINT or SIGTERM, then stops the controllers (releasing their Leases,
    /// so a standby replica takes over at once instead of after a lease period).
    pub async fn run(self) {
        tls::serve(
            self.listener,
            self.tls,
            self.router,
            self.connection_limits,
            shutdown_signal(),
        )
        .await;
        let _ = self.controllers_stop.send(true);
        for c in self.controllers {
            let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        }
    }
}

type Controllers = (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Starts the cert-manager external issuer of every cluster that has `cert_manager:`
/// and the pod certificate signer of every cluster that has `pod_certificates:`.
async fn start_cert_manager(
    config: &Config,
    issuer: &Arc<Issuer>,
) -> Result<Controllers, ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let identity = crate::certmanager::replica_identity();
    let mut controllers = Vec::new();
    for cluster in &config.clusters {
        let Some(cm) = &cluster.cert_manager else {
            continue;
        };
        let settings = crate::certmanager::Settings::from_config(&cluster.name, cm, &identity);
        let client = crate::certmanager::client_for(cluster).await?;
        let cluster = cluster.clone();
        let issuer = issuer.clone();
        let mut stop = stop_rx.clone();
        controllers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) =
                crate::certmanager::Controller::run(&cluster, client, issuer, settings, shutdown)
                    .await
            {
                tracing::error!(cluster = %cluster.name, error = %e, "cert-manager controllers failed");
            }
        }));
    }
    for cluster in &config.clusters {
        let Some(pc) = &cluster.pod_certificates else {
            continue;
        };
        let settings = crate::podcertificate::Settings::from_config(&cluster.name, pc, &identity);
        let client = crate::certmanager::client_for(cluster).await?;
        let cluster = cluster.clone();
        let issuer = issuer.clone();
        let mut stop = stop_rx.clone();
        controllers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let (is_leader, _) = tokio::sync::watch::channel(false);
            if let Err(e) = crate::podcertificate::Controller::run(
                &cluster, client, issuer, settings, shutdown, is_leader,
            )
            .await
            {
                tracing::error!(cluster = %cluster.name, error = %e, "pod certificate signer failed");
            }
        }));
    }
    Ok((stop_tx, controllers))
}

/// Starts the Istio `cacerts` controller: behind `istio.lease` when configured (only the
/// holder syncs, so replicas do not each mint a mesh CA), else on this replica alone.
/// Stops when `stop` turns true, releasing the Lease.
async fn start_istio(
    config: &Config,
    controller: crate::istio::Controller,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let lease = config.istio.as_ref().and_then(|i| i.lease.as_ref());
    let elector = match lease {
        None => None,
        Some(lease) => {
            let cluster = config
                .clusters
                .iter()
                .find(|c| c.name.as_str() == lease.cluster)
                .expect("validated: istio.lease.cluster names a cluster");
            let client = crate::certmanager::client_for(cluster).await?;
            let settings = lease.lease().settings(
                crate::istio::config::IstioLeaseConfig::DEFAULT_NAME,
                &crate::certmanager::replica_identity(),
            );
            Some(
                crate::leader::LeaderElector::new(client, settings)
                    .map_err(crate::certmanager::ControllerError::from)?,
            )
        }
    };
    Ok(tokio::spawn(async move {
        match elector {
            Some(elector) => {
                let (is_leader, _) = tokio::sync::watch::channel(false);
                let work = || controller.run(std::future::pending());
                elector.run(work, stop, is_leader).await;
            }
            None => {
                controller
                    .run(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }
        }
        tracing::info!("istio cacerts controller stopped");
    }))
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

/// Signs the audit head every `interval` when it moved (a checkpoint at an unchanged
/// head is the same one), so the log stays verifiable once older entries are pruned.
async fn checkpoint_audit(
    store: Store,
    key: crate::audit::checkpoint::CheckpointKey,
    interval: canopy::ttl::Ttl,
) {
    let period = Duration::from_secs(interval.as_seconds().max(1) as u64);
    loop {
        tokio::time::sleep(period).await;
        match store.checkpoint(&key, crate::clock::now_precise()).await {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "audit checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the audit log; retrying"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
