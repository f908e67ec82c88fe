//! Watch streams (what kube-rs's watcher needs to list, watch and resume after a
//! dropped stream): replay from history, live events, bookmarks, 410 Gone, timeouts.

use hyper::body::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use crate::registry::ResourceType;
use crate::server::Shared;
use crate::status::ApiError;
use crate::store::{bookmark, Event, Store};

/// A parsed watch request.
pub(crate) struct WatchParams {
    pub rt: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn in_scope(p: &WatchParams, obj: &Value) -> bool {
    match &p.namespace {
        Some(ns) => obj["metadata"]["namespace"].as_str() == Some(ns.as_str()),
        None => true,
    }
}

/// The watch event a change produces for this watcher, if any.
fn translate(p: &WatchParams, ev: &Event) -> Option<Value> {
    if ev.group != p.rt.group || ev.plural != p.rt.plural || !in_scope(p, &ev.object) {
        return None;
    }
    Some(json!({
        "type": ev.etype,
        "object": Store::present(&p.rt, &p.version, ev.object.clone()),
    }))
}

fn gone(rv: &str, current: u64) -> Value {
    let err = ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {rv} ({current})"),
    );
    json!({"type": "ERROR", "object": err.to_status()})
}

/// Start a watch; returns the stream of newline-delimited JSON events.
pub(crate) fn start(
    shared: &Arc<Shared>,
    p: WatchParams,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut initial: Vec<Bytes> = Vec::new();
    let (events, mut last_rv, finished) = {
        let store = shared.store.lock().expect("store lock");
        let rv = p.resource_version.clone().unwrap_or_default();
        let mut finished = false;
        if rv.is_empty() || rv == "0" {
            for obj in store.list(&p.rt, p.namespace.as_deref()) {
                initial.push(line(&json!({
                    "type": "ADDED",
                    "object": Store::present(&p.rt, &p.version, obj),
                })));
            }
        } else {
            let from: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
            match store.history_after(from) {
                Some(evs) => {
                    for ev in evs {
                        if let Some(v) = translate(&p, &ev) {
                            initial.push(line(&v));
                        }
                    }
                }
                None => {
                    initial.push(line(&gone(&rv, store.current_rv())));
                    finished = true;
                }
            }
        }
        (store.events.subscribe(), store.current_rv(), finished)
    };
    let mut drop_rx = shared.drop_watches.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let mut events = events;
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if finished {
            return;
        }
        let deadline = p
            .timeout
            .map(|t| tokio::time::Instant::now() + t)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600 * 24));
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if let Some(v) = translate(&p, &ev) {
                            if tx.send(line(&v)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(line(&gone(&last_rv.to_string(), last_rv))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if p.bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": bookmark(&p.rt, &p.version, last_rv)});
                    if tx.send(line(&bm)).await.is_err() {
                        return;
                    }
                }
                _ = drop_rx.changed() => return,
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}
