//! `canopy-issuer serve`: load everything once, start the controllers (each behind its
//! Lease) and background tasks, then answer until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::certmanager::ControllerError;
use crate::config::Config;
use crate::intermediate::Authorities;
use crate::issuance::Issuer;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::names::ClusterName;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::tls;

mod listener;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A cluster's controllers could not start.
    #[error(transparent)]
    Controller(#[from] ControllerError),
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
    controllers: Controllers,
}

impl Service {
    /// Connects storage (and migrates it), loads the CAs, starts the controllers (each
    /// behind its Lease), binds the listener.
    pub async fn start(config: &Config) -> Result<Service, ServeError> {
        let store = Store::connect(&config.storage.url, config.storage.max_connections).await?;
        store.migrate().await?;
        let material = crate::ca_material::CaMaterial::load(config)?;
        let authorities = Arc::new(Authorities::new(config, &material, crate::clock::now())?);
        let metrics = Arc::new(Metrics::new());
        let issuer = Arc::new(Issuer::new(
            config,
            authorities.clone(),
            store.clone(),
            metrics.clone(),
        ));
        let identity = crate::leader::replica_identity();
        let mut controllers = Controllers::new();
        start_kubernetes_signers(config, &issuer, &identity, &mut controllers).await?;
        start_retention(config, &store, &metrics, &identity, &mut controllers)?;
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
        let server_cert = listener::listener_cert(config, &authorities, &store).await?;
        start_audit_checkpoints(config, &store)?;
        let crls = tls::load_crls(&config.crls)?;
        let tls = tls::server_config(&authorities.roots, &crls, server_cert)?;
        let istio = start_istio(
            config,
            &material,
            &store,
            &metrics,
            &identity,
            &mut controllers,
        )
        .await?;
        let connection_limits = tls::ConnectionLimits::new(&config.limits, metrics.clone());
        let state = AppState {
            issuer,
            auth,
            limiter,
            metrics,
            istio,
        };
        let router = api::router(state, &config.limits);
        let (listener, local_addr) = bind(config.listen.address).await?;
        Ok(Service {
            local_addr,
            listener,
            tls,
            router,
            connection_limits,
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
        self.controllers.stop().await;
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let failed = |e: std::io::Error| ServeError::Bind {
        addr,
        reason: e.to_string(),
    };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let local_addr = listener.local_addr().map_err(failed)?;
    Ok((listener, local_addr))
}

/// The background tasks this replica runs (controllers, retention) and the signal that
/// stops them.
#[derive(Debug)]
struct Controllers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Controllers {
    fn new() -> Self {
        Controllers {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Completes when the controllers are told to stop.
    fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Spawns a controller of `cluster`; its start-up error is logged as `failed`.
    fn spawn_for(
        &mut self,
        cluster: &ClusterName,
        failed: &'static str,
        run: impl Future<Output = Result<(), ControllerError>> + Send + 'static,
    ) {
        let cluster = cluster.clone();
        self.spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(cluster = %cluster, error = %e, "{failed}");
            }
        });
    }

    /// Tells every task to stop and waits for each (at most 10 s).
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// Starts, for every cluster, the cert-manager external issuer (`cert_manager:`) and the
/// pod certificate signer (`pod_certificates:`), each behind its own Lease.
async fn start_kubernetes_signers(
    config: &Config,
    issuer: &Arc<Issuer>,
    identity: &str,
    controllers: &mut Controllers,
) -> Result<(), ServeError> {
    for cluster in &config.clusters {
        if let Some(cm) = &cluster.cert_manager {
            let settings = crate::certmanager::Settings::from_config(&cluster.name, cm, identity);
            let client = crate::certmanager::client_for(cluster).await?;
            let (config, issuer, shutdown) =
                (cluster.clone(), issuer.clone(), controllers.shutdown());
            controllers.spawn_for(
                &cluster.name,
                "cert-manager controllers failed",
                async move {
                    crate::certmanager::Controller::run(&config, client, issuer, settings, shutdown)
                        .await
                },
            );
        }
        if let Some(pc) = &cluster.pod_certificates {
            let settings =
                crate::podcertificate::Settings::from_config(&cluster.name, pc, identity);
            let client = crate::certmanager::client_for(cluster).await?;
            let (config, issuer, shutdown) =
                (cluster.clone(), issuer.clone(), controllers.shutdown());
            controllers.spawn_for(&cluster.name, "pod certificate signer failed", async move {
                let (is_leader, _) = watch::channel(false);
                crate::podcertificate::Controller::run(
                    &config, client, issuer, settings, shutdown, is_leader,
                )
                .await
            });
        }
    }
    Ok(())
}

/// Starts retention when it (or audit pruning) is configured; replicas take turns
/// through the store.
fn start_retention(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    identity: &str,
    controllers: &mut Controllers,
) -> Result<(), ServeError> {
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
        let stop = controllers.stop.subscribe();
        controllers.spawn(crate::retention::run(
            store.clone(),
            config.retention.clone(),
            audit_pruning,
            metrics.retention.clone(),
            identity.to_string(),
            stop,
        ));
    }
    Ok(())
}

/// Starts signing audit checkpoints when a checkpoint key is configured.
fn start_audit_checkpoints(config: &Config, store: &Store) -> Result<(), ServeError> {
    if let Some(path) = &config.audit.checkpoint_key {
        let key = crate::audit::checkpoint::CheckpointKey::load(path)?;
        tokio::spawn(checkpoint_audit(
            store.clone(),
            key,
            config.audit.checkpoint_interval(),
        ));
    }
    Ok(())
}

/// Starts the Istio `cacerts` controller when `istio:` is configured: behind
/// `istio.lease` (only the holder syncs, so replicas do not each mint a mesh CA), else
/// on this replica alone. Returns its health, for `/readyz`.
async fn start_istio(
    config: &Config,
    material: &crate::ca_material::CaMaterial,
    store: &Store,
    metrics: &Metrics,
    identity: &str,
    controllers: &mut Controllers,
) -> Result<Option<Arc<crate::istio::Health>>, ServeError> {
    let Some(setup) = crate::istio::IstioSetup::of_config(config, material)? else {
        return Ok(None);
    };
    let controller =
        crate::istio::Controller::new(setup, store.clone(), Some(metrics.istio.clone()));
    let health = controller.health();
    let leadership = istio_leadership(config, identity).await?;
    let shutdown = controllers.shutdown();
    controllers.spawn(async move { controller.run(&leadership, shutdown).await });
    Ok(Some(health))
}

/// The mesh's one Lease (`istio.lease`, in the API server of the cluster it names), or
/// none: this replica alone.
async fn istio_leadership(config: &Config, identity: &str) -> Result<Leadership, ServeError> {
    let Some(lease) = config.istio.as_ref().and_then(|i| i.lease.as_ref()) else {
        return Ok(Leadership::Alone);
    };
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name.as_str() == lease.cluster)
        .expect("validated: istio.lease.cluster names a cluster");
    let client = crate::certmanager::client_for(cluster).await?;
    let settings = lease.lease().settings(
        crate::istio::config::IstioLeaseConfig::DEFAULT_NAME,
        identity,
    );
    Leadership::new(client, Some(settings))
        .map_err(|e| ServeError::Controller(ControllerError::from(e)))
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
