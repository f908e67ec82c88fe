//! HTTPS serving, authentication, routing, faults and the request log.

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::discovery;
use crate::patch::PatchType;
use crate::status::{success_status, ApiError};
use crate::store::{Selectors, Store, User, WriteCtx};
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
    /// Further bearer tokens and the users they authenticate (the admin token is `token`).
    pub users: Mutex<HashMap<String, User>>,
    pub fault: Mutex<FaultState>,
    /// Bumped on every `set_fault`, releasing hung requests.
    pub fault_gen: watch::Sender<u64>,
    /// Bumped to close all open watch streams.
    pub drop_watches: watch::Sender<u64>,
    pub shutdown: watch::Sender<bool>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub bookmark_interval: Duration,
    pub addr: SocketAddr,
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

enum Route {
    Version,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList(String, String),
    Resource(ResourceReq),
    Health,
    OpenApiV2,
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["healthz"] | ["livez"] | ["readyz"] => return Route::Health,
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::GroupList,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return Route::ResourceList(group, version);
    }
    let ns_sub = |s: &str| group.is_empty() && (s == "status" || s == "finalize");
    let (namespace, rest) =
        if rest[0] == "namespaces" && rest.len() >= 3 && !(rest.len() == 3 && ns_sub(rest[2])) {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
    if rest.len() > 3 {
        return Route::NotFound;
    }
    Route::Resource(ResourceReq {
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
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
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
    if ct.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if ct.contains("protobuf") {
        crate::protobuf::decode_object(body)
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
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
        content_type: if content_type.is_empty() {
            None
        } else {
            Some(content_type.clone())
        },
        user_agent: user_agent.clone(),
        status: 0,
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let user = match auth.strip_prefix("Bearer ") {
        Some(t) if t == shared.token => Some(User::admin()),
        Some(t) => shared.users.lock().expect("users").get(t).cloned(),
        None => None,
    };
    let resp = match user {
        None => error(&ApiError::new(401, "Unauthorized", "Unauthorized")),
        Some(user) => {
            serve(
                &shared,
                &method,
                &path,
                &Query::parse(&query),
                &content_type,
                &user_agent,
                &body,
                &user,
            )
            .await
        }
    };
    record.status = resp.status().as_u16();
    shared.log.lock().expect("log lock").push(record);
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    ct: &str,
    ua: &str,
    body: &[u8],
    user: &User,
) -> Response<Body> {
    let get_only = |v: Option<Value>| -> Response<Body> {
        if method != Method::GET {
            return error(&ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        match v {
            Some(v) => full(200, &v),
            None => error(&not_found_generic()),
        }
    };
    match route(path) {
        Route::Version => get_only(Some(discovery::version())),
        Route::Health => Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"ok")).boxed())
            .expect("response"),
        Route::CoreVersions => get_only(Some(discovery::core_versions(&shared.addr.to_string()))),
        Route::GroupList => {
            let reg = shared.store.lock().expect("store").registry.clone();
            get_only(Some(discovery::group_list(&reg)))
        }
        Route::Group(g) => {
            let reg = shared.store.lock().expect("store").registry.clone();
            get_only(discovery::group(&reg, &g))
        }
        Route::ResourceList(g, v) => {
            let reg = shared.store.lock().expect("store").registry.clone();
            get_only(discovery::resource_list(&reg, &g, &v))
        }
        // An empty (but valid) protobuf OpenAPI v2 document: kubectl then finds no
        // schemas, skips client-side validation and falls back to built-in patch metadata.
        Route::OpenApiV2 => Response::builder()
            .status(200)
            .header(
                "content-type",
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
            .body(Full::new(Bytes::new()).boxed())
            .expect("response"),
        Route::NotFound => error(&not_found_generic()),
        Route::Resource(r) => match resource(shared, method, r, q, ct, ua, body, user).await {
            Ok(resp) => resp,
            Err(e) => error(&e),
        },
    }
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
    user: &User,
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
        dry_run: q.get("dryRun") == Some("All"),
        strict: q.get("fieldValidation") == Some("Strict"),
        user: user.clone(),
    };
    let present = |v: Value| Store::present(&rt, &r.version, v);
    let name = r.name.clone().unwrap_or_default();
    match verb {
        "get" => {
            let store = shared.store.lock().expect("store");
            Ok(full(200, &present(store.get(&rt, &ns, &name)?)))
        }
        "list" => {
            let sel = Selectors::parse(q.get("labelSelector"), q.get("fieldSelector"))?;
            let store = shared.store.lock().expect("store");
            let mut items = store.list(&rt, r.namespace.as_deref(), &sel);
            let mut meta = json!({"resourceVersion": store.current_rv().to_string()});
            if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
                let after =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                items.retain(|o| {
                    format!(
                        "{}/{}",
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or("")
                    ) > after
                });
            }
            if let Some(limit) = q
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
            {
                if items.len() > limit {
                    let remaining = items.len() - limit;
                    items.truncate(limit);
                    let last = items.last().expect("item");
                    let key = format!(
                        "{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or(""),
                        last["metadata"]["name"].as_str().unwrap_or("")
                    );
                    meta["continue"] = json!(base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        key
                    ));
                    meta["remainingItemCount"] = json!(remaining);
                }
            }
            let items: Vec<Value> = items.into_iter().map(present).collect();
            Ok(full(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(&r.version),
                    "metadata": meta,
                    "items": items,
                }),
            ))
        }
        "watch" => {
            let mut field_sel = q.get("fieldSelector").map(String::from);
            if let Some(n) = &r.name {
                field_sel = Some(format!("metadata.name={n}"));
            }
            let params = WatchParams {
                rt: rt.clone(),
                version: r.version.clone(),
                namespace: r.namespace.clone(),
                selectors: Selectors::parse(q.get("labelSelector"), field_sel.as_deref())?,
                resource_version: q.get("resourceVersion").map(String::from),
                bookmarks: q.flag("allowWatchBookmarks"),
                timeout: q
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs),
                send_initial_events: q.flag("sendInitialEvents"),
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
                ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct}"))
            })?;
            if pt == PatchType::Apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![crate::status::Cause::required("fieldManager")],
                ));
            }
            if pt != PatchType::Apply && q.flag("force") {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![crate::status::Cause::new(
                        "force",
                        "FieldValueForbidden",
                        "Forbidden: may not be specified for non-apply patch",
                    )],
                ));
            }
            let mut store = shared.store.lock().expect("store");
            let existed = store.get_raw(&rt, &ns, &name).is_some();
            let patched = store.patch(&ctx, &name, &r.sub, pt, body, q.flag("force"))?;
            Ok(full(if existed { 200 } else { 201 }, &present(patched)))
        }
        "delete" => {
            let opts = parse_body("application/json", body).unwrap_or(Value::Null);
            let mut ctx = ctx;
            if opts["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "All"))
            {
                ctx.dry_run = true;
            }
            let mut store = shared.store.lock().expect("store");
            let gone = store.delete(&ctx, &name, &opts["preconditions"])?;
            if rt.crd {
                Ok(full(200, &present(gone)))
            } else {
                let uid = gone["metadata"]["uid"].as_str().unwrap_or("").to_string();
                Ok(full(
                    200,
                    &success_status(&rt.group, &rt.plural, &name, &uid),
                ))
            }
        }
        "deletecollection" => {
            let sel = Selectors::parse(q.get("labelSelector"), q.get("fieldSelector"))?;
            let mut store = shared.store.lock().expect("store");
            let victims = store.list(&rt, r.namespace.as_deref(), &sel);
            let mut items = Vec::new();
            for v in victims {
                let mut c = WriteCtx {
                    rt: rt.clone(),
                    version: r.version.clone(),
                    namespace: v["metadata"]["namespace"].as_str().map(String::from),
                    manager: ctx.manager.clone(),
                    dry_run: ctx.dry_run,
                    strict: false,
                    user: ctx.user.clone(),
                };
                if !rt.namespaced {
                    c.namespace = None;
                }
                let n = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                items.push(present(store.delete(&c, &n, &Value::Null)?));
            }
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
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}
