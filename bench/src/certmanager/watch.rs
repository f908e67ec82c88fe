//! What the clusters write, timed here: a watch of CertificateRequests and one of
//! Secrets per cluster, each event stamped with this process's clock when it arrives
//! (conditions' lastTransitionTime has one-second resolution, too coarse for a p99).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::oneshot;

/// cert-manager's CertificateRequest (cert-manager.io/v1).
pub fn certificate_requests() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

/// cert-manager's Certificate (cert-manager.io/v1).
pub fn certificates() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// When this process saw a CertificateRequest reach each step.
#[derive(Clone, Debug)]
pub struct RequestSeen {
    /// First event about it (its creation).
    pub created: Instant,
    /// First seen with `Approved=True`.
    pub approved: Option<Instant>,
    /// First seen with `Ready=True` (reason `Issued`).
    pub issued: Option<Instant>,
    /// `Ready=False` with reason `Failed` or `Denied`: the reason and message.
    pub failed: Option<String>,
}

/// A Secret seen with its certificate written.
#[derive(Clone, Debug)]
pub struct SecretSeen {
    /// First seen with a non-empty `tls.crt`.
    pub at: Instant,
    /// `tls.crt` (PEM).
    pub certificate: Vec<u8>,
    /// Whether `ca.crt` was there too.
    pub has_ca: bool,
}

/// Everything seen until every Secret was written or time ran out.
#[derive(Debug, Default)]
pub struct Seen {
    /// By CertificateRequest name.
    pub requests: HashMap<String, RequestSeen>,
    /// By Secret name (= Certificate name).
    pub secrets: HashMap<String, SecretSeen>,
    /// Watch errors (each is retried with backoff).
    pub watch_errors: usize,
}

/// One event of a watch, as far as the benchmark cares.
pub enum Observed {
    /// A CertificateRequest was added or changed.
    Request(Box<DynamicObject>),
    /// A Secret was added or changed.
    Secret(Box<Secret>),
    /// The watch has listed what was there and now follows changes.
    Listed,
    /// A restart of the watch or a deletion: nothing to note.
    Other,
    /// The watch failed (it is retried with backoff).
    Error,
}

/// The watch streams for `namespace` in every cluster.
pub fn streams(clients: &[Client], namespace: &str) -> Vec<BoxStream<'static, Observed>> {
    let mut all = Vec::new();
    for client in clients {
        let requests: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &certificate_requests());
        all.push(
            watcher::watcher(requests, watcher::Config::default())
                .default_backoff()
                .map(|e| match e {
                    Ok(Event::Apply(o) | Event::InitApply(o)) => Observed::Request(Box::new(o)),
                    Ok(Event::InitDone) => Observed::Listed,
                    Ok(Event::Init | Event::Delete(_)) => Observed::Other,
                    Err(_) => Observed::Error,
                })
                .boxed(),
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        all.push(
            watcher::watcher(secrets, watcher::Config::default())
                .default_backoff()
                .map(|e| match e {
                    Ok(Event::Apply(o) | Event::InitApply(o)) => Observed::Secret(Box::new(o)),
                    Ok(Event::InitDone) => Observed::Listed,
                    Ok(Event::Init | Event::Delete(_)) => Observed::Other,
                    Err(_) => Observed::Error,
                })
                .boxed(),
        );
    }
    all
}

/// Collects events until `want` Secrets have their certificate or `timeout` has passed
/// since every watch had listed; tells `listed` when they have (so the creates start
/// with every watch open).
pub async fn collect(
    streams: Vec<BoxStream<'static, Observed>>,
    want: usize,
    timeout: Duration,
    listed: oneshot::Sender<()>,
) -> Seen {
    let watches = streams.len();
    let mut merged = stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |o| (i, o))),
    );
    let mut seen = Seen::default();
    let mut listed_by: HashSet<usize> = HashSet::new();
    let mut listed = Some(listed);
    let mut deadline: Option<Instant> = None;
    loop {
        let left = deadline.map_or(Duration::from_secs(120), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let Ok(Some((watch, observed))) = tokio::time::timeout(left, merged.next()).await else {
            return seen;
        };
        let now = Instant::now();
        match observed {
            Observed::Listed => {
                listed_by.insert(watch);
                if listed_by.len() == watches {
                    if let Some(tell) = listed.take() {
                        let _ = tell.send(());
                        deadline = Some(now + timeout);
                    }
                }
            }
            Observed::Other => {}
            Observed::Error => seen.watch_errors += 1,
            Observed::Request(request) => note_request(&mut seen, &request, now),
            Observed::Secret(secret) => {
                note_secret(&mut seen, &secret, now);
                if seen.secrets.len() >= want {
                    return seen;
                }
            }
        }
    }
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn note_request(seen: &mut Seen, request: &DynamicObject, now: Instant) {
    let entry = seen
        .requests
        .entry(request.name_any())
        .or_insert(RequestSeen {
            created: now,
            approved: None,
            issued: None,
            failed: None,
        });
    let data = &request.data;
    if entry.approved.is_none()
        && condition(data, "Approved").is_some_and(|c| c["status"] == "True")
    {
        entry.approved = Some(now);
    }
    if let Some(ready) = condition(data, "Ready") {
        if entry.issued.is_none() && ready["status"] == "True" {
            entry.issued = Some(now);
        }
        let reason = ready["reason"].as_str().unwrap_or_default();
        if entry.failed.is_none() && matches!(reason, "Failed" | "Denied") {
            entry.failed = Some(format!(
                "{reason}: {}",
                ready["message"].as_str().unwrap_or_default()
            ));
        }
    }
}

fn note_secret(seen: &mut Seen, secret: &Secret, now: Instant) {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let Some(certificate) = data.get("tls.crt").filter(|c| !c.0.is_empty()) else {
        return;
    };
    let has_ca = data.get("ca.crt").is_some_and(|c| !c.0.is_empty());
    seen.secrets
        .entry(secret.name_any())
        .or_insert_with(|| SecretSeen {
            at: now,
            certificate: certificate.0.clone(),
            has_ca,
        });
}
