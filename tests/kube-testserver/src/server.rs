//! HTTPS serving, authentication, routing, faults and the request log. Only resource
//! paths are served (no discovery, OpenAPI or health endpoints: kube-rs clients with
//! typed or given resources do not ask for them).

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::patch::PatchType;
use crate::status::ApiError;
use crate::store::{Store, WriteCtx};
use crate::watch::{self as watches, WatchParams};
use crate::{Fault, FaultScope, RequestRecord};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A streaming (chunked) body fed by a watch task.
struct WatchBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// The active fault and what it applies to.
pub(crate) struct FaultState {
    pub fault: Fault,
    pub scope: FaultScope,
}

/// State shared by all connections of one server.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub token: String,
    pub fault: Mutex<FaultState>,
    /// Bumped on every `set_fault`, releasing hung requests.
    pub fault_gen: watch::Sender<u64>,
    /// Bumped to close all open watch streams.
    pub drop_watches: watch::Sender<u64>,
    pub shutdown: watch::Sender<bool>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub bookmark_interval: Duration,
}

fn full(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

fn error(e: &ApiError) -> Response<Body> {
    full(e.code, &e.to_status())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parsed query parameters.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

/// A request addressed to a resource.
struct ResourceReq {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: String,
}

/// The resource a path addresses: `/api/v1/...` or `/apis/GROUP/VERSION/...`, then
/// `[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]]`.
fn route(path: &str) -> Option<ResourceReq> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return None;
    }
    Some(ResourceReq {
        group,
        version,
        namespace,
        plural: rest[0].to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

fn not_found_generic() -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = Some(json!({}));
    e
}

fn verb_of(method: &Method, r: &ResourceReq, q: &Query) -> &'static str {
    match (method.as_str(), r.name.is_some()) {
        ("GET", false) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) if q.flag("watch") => "watch",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        _ => "unknown",
    }
}

fn field_manager(q: &Query, user_agent: &str) -> String {
    match q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => {
            let prefix = user_agent.split('/').next().unwrap_or("").trim();
            if prefix.is_empty() {
                "unknown".into()
            } else {
                prefix.chars().take(128).collect()
            }
        }
    }
}

/// Wait out an active fault matching this request; returns an error to answer with.
async fn fault_gate(shared: &Arc<Shared>, verb: &str, r: &ResourceReq) -> Option<ApiError> {
    let mut gen_rx = shared.fault_gen.subscribe();
    let hang = {
        let mut f = shared.fault.lock().expect("fault lock");
        if !f.scope.matches(verb, &r.plural, &r.sub) {
            return None;
        }
        let (count, result) = match &mut f.fault {
            Fault::None | Fault::DropWatches => return None,
            Fault::Error { status, count } => {
                let status = *status;
                (
                    count,
                    Some(ApiError::from_code(
                        status,
                        format!("injected fault: HTTP {status}"),
                    )),
                )
            }
            Fault::Hang { count } => (count, None),
        };
        if let Some(n) = count {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.fault = Fault::None;
            }
        }
        match result {
            Some(e) => return Some(e),
            None => true,
        }
    };
    if hang {
        gen_rx.mark_unchanged();
        let mut shutdown = shared.shutdown.subscribe();
        tokio::select! {
            _ = gen_rx.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
    None
}

fn parse_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if !ct.is_empty() && !ct.contains("json") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("only JSON bodies are served here; got {ct}"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// Serve one HTTP request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let auth = header("authorization");
    let mut record = RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        status: 0,
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let resp = if auth.strip_prefix("Bearer ") != Some(shared.token.as_str()) {
        error(&ApiError::new(401, "Unauthorized", "Unauthorized"))
    } else {
        match route(&path) {
            None => error(&not_found_generic()),
            Some(r) => {
                let q = Query::parse(&query);
                match resource(&shared, &method, r, &q, &content_type, &user_agent, &body).await {
                    Ok(resp) => resp,
                    Err(e) => error(&e),
                }
            }
        }
    };
    record.status = resp.status().as_u16();
    shared.log.lock().expect("log lock").push(record);
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    r: ResourceReq,
    q: &Query,
    ct: &str,
    ua: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let rt = {
        let store = shared.store.lock().expect("store");
        store
            .registry
            .lookup(&r.group, &r.version, &r.plural)
            .cloned()
    };
    let rt = rt.ok_or_else(not_found_generic)?;
    if !r.sub.is_empty() && !rt.has_sub(&r.sub) {
        return Err(not_found_generic());
    }
    if r.namespace.is_some() && !rt.namespaced {
        return Err(not_found_generic());
    }
    let verb = verb_of(method, &r, q);
    if rt.namespaced && r.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(not_found_generic());
    }
    if !r.sub.is_empty() && !matches!(verb, "get" | "update" | "patch") {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if let Some(e) = fault_gate(shared, verb, &r).await {
        return Err(e);
    }
    let ns = r.namespace.clone().unwrap_or_default();
    let ctx = WriteCtx {
        rt: rt.clone(),
        version: r.version.clone(),
        namespace: r.namespace.clone(),
        manager: field_manager(q, ua),
    };
    let present = |v: Value| Store::present(&rt, &r.version, v);
    let name = r.name.clone().unwrap_or_default();
    match verb {
        "get" => {
            let store = shared.store.lock().expect("store");
            Ok(full(200, &present(store.get(&rt, &ns, &name)?)))
        }
        // The whole list at once: kube-rs asks for pages of 500, and there are fewer.
        "list" => {
            let store = shared.store.lock().expect("store");
            let items: Vec<Value> = store
                .list(&rt, r.namespace.as_deref())
                .into_iter()
                .map(present)
                .collect();
            Ok(full(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(&r.version),
                    "metadata": {"resourceVersion": store.current_rv().to_string()},
                    "items": items,
                }),
            ))
        }
        "watch" => {
            let params = WatchParams {
                rt: rt.clone(),
                version: r.version.clone(),
                namespace: r.namespace.clone(),
                resource_version: q.get("resourceVersion").map(String::from),
                bookmarks: q.flag("allowWatchBookmarks"),
                timeout: q
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs),
            };
            let rx = watches::start(shared, params)?;
            Ok(Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-cache, private")
                .body(WatchBody(rx).boxed())
                .expect("response"))
        }
        "create" => {
            let obj = parse_body(ct, body)?;
            let mut store = shared.store.lock().expect("store");
            let created = store.create(&ctx, obj)?;
            Ok(full(201, &present(created)))
        }
        "update" => {
            let obj = parse_body(ct, body)?;
            let mut store = shared.store.lock().expect("store");
            let updated = store.replace(&ctx, &name, &r.sub, obj)?;
            Ok(full(200, &present(updated)))
        }
        "patch" => {
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("only merge patches and server-side apply are served here; got {ct}"),
                )
            })?;
            if pt == PatchType::Apply && !q.flag("force") {
                return Err(ApiError::bad_request(
                    "this test server only serves forced applies (force=true)",
                ));
            }
            let mut store = shared.store.lock().expect("store");
            let existed = store.get_raw(&rt, &ns, &name).is_some();
            let patched = store.patch(&ctx, &name, &r.sub, pt, body)?;
            Ok(full(if existed { 200 } else { 201 }, &present(patched)))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}
