//! In-memory object store: objects as JSON, the global resourceVersion, watch history,
//! and the write pipeline shared by create/replace/patch/apply.

use base64::Engine;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

use crate::apply::{self, Owner, Scope};
use crate::patch::{self, PatchType};
use crate::registry::{crd_to_type, Registry, ResourceType};
use crate::schema;
use crate::status::{ApiError, Cause};

/// How many watch events are kept for resuming watches.
const HISTORY: usize = 5000;

/// One change, as seen by watches.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub etype: &'static str,
    pub object: Value,
    /// The object before a MODIFIED change (for selector transitions).
    pub old: Option<Value>,
}

/// The per-request parameters of a write.
pub(crate) struct WriteCtx {
    pub rt: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub manager: String,
    pub dry_run: bool,
    pub strict: bool,
    /// Who writes: stamped into the requests whose creator the real components record.
    pub user: User,
}

/// An authenticated caller of the test API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User name, as the real API server reports it.
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl User {
    /// The kubeconfig's user: a cluster admin.
    pub fn admin() -> User {
        User {
            username: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }
}

type Key = (String, String);

pub(crate) struct Store {
    pub registry: Registry,
    objects: BTreeMap<Key, BTreeMap<Key, Value>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Watches from a resourceVersion below this answer 410 Gone.
    pub floor: u64,
    pub events: broadcast::Sender<Arc<Event>>,
}

pub(crate) fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = rand::rng();
    (0..5)
        .map(|_| ALPHA[r.random_range(0..ALPHA.len())] as char)
        .collect()
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (the rule for most object names).
pub(crate) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// A parsed label + field selector.
#[derive(Debug, Default, Clone)]
pub(crate) struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

impl Selectors {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, ApiError> {
        let mut sel = Selectors::default();
        for term in split_top(label.unwrap_or("")) {
            let bad = || ApiError::bad_request(format!("unable to parse requirement: {term:?}"));
            let req = if let Some((k, v)) = term.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), parse_set(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                LabelReq::In(k.trim().into(), parse_set(v).ok_or_else(bad)?)
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::NotExists(k.trim().into())
            } else if term.contains(' ') || term.contains('(') {
                return Err(bad());
            } else {
                LabelReq::Exists(term.clone())
            };
            sel.labels.push(req);
        }
        for term in split_top(field.unwrap_or("")) {
            let (k, v, neg) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            sel.fields.push((k.trim().into(), v.trim().into(), neg));
        }
        Ok(sel)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, want, neg)| {
                let mut cur = obj;
                for part in path.split('.') {
                    cur = &cur[part];
                }
                let got = match cur {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (got == *want) != *neg
            })
    }
}

/// Strip everything but what identifies a scope-restricted write.
fn set_status_from(target: &mut Value, source: &Value, scope: Scope) {
    match scope {
        Scope::Main { exclude_status } => {
            if exclude_status {
                match source.get("status") {
                    Some(s) => target["status"] = s.clone(),
                    None => {
                        if let Some(m) = target.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        Scope::Status | Scope::Approval => {}
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        let mut s = Store {
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            floor: 0,
            events,
        };
        for ns in ["default", "kube-system"] {
            let rt = s
                .registry
                .lookup("", "v1", "namespaces")
                .cloned()
                .expect("ns");
            let ctx = WriteCtx {
                rt,
                version: "v1".into(),
                namespace: None,
                manager: "kube-apiserver".into(),
                dry_run: false,
                strict: false,
                user: User::admin(),
            };
            s.create(&ctx, json!({"metadata": {"name": ns}}))
                .expect("bootstrap namespace");
        }
        s
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Make every resourceVersion seen so far too old for watches (like an etcd compaction).
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    /// History events after `rv`, or None if `rv` is too old.
    pub fn history_after(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.floor {
            return None;
        }
        if let Some(first) = self.history.front() {
            if rv + 1 < first.rv {
                return None;
            }
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn bucket(&self, rt: &ResourceType) -> Option<&BTreeMap<Key, Value>> {
        self.objects.get(&(rt.group.clone(), rt.plural.clone()))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".to_string()))
            .is_some_and(|b| b.contains_key(&(String::new(), ns.to_string())))
    }

    /// Set the apiVersion for the version a client asked for.
    pub fn present(rt: &ResourceType, version: &str, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(rt.api_version(version));
        obj["kind"] = json!(rt.kind);
        obj
    }

    pub fn get_raw(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.bucket(rt)?.get(&(ns.to_string(), name.to_string()))
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_raw(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Objects of a type, optionally in one namespace, matching selectors, in (ns, name) order.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        self.bucket(rt)
            .map(|b| {
                b.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .filter(|(_, o)| sel.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn emit(&mut self, rt: &ResourceType, etype: &'static str, object: Value, old: Option<Value>) {
        let ev = Arc::new(Event {
            rv: self.rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            etype,
            object,
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let _ = self.events.send(ev);
    }

    fn check_namespace(&self, ctx: &WriteCtx) -> Result<(), ApiError> {
        if let Some(ns) = &ctx.namespace {
            if ctx.rt.namespaced && !self.namespace_exists(ns) {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
        }
        Ok(())
    }

    fn scope(ctx: &WriteCtx, sub: &str) -> Scope {
        match sub {
            "status" => Scope::Status,
            "approval" => Scope::Approval,
            _ => Scope::Main {
                exclude_status: ctx.rt.has_status(),
            },
        }
    }

    fn check_type_meta(ctx: &WriteCtx, body: &Value) -> Result<(), ApiError> {
        let rt = &ctx.rt;
        if let Some(k) = body.get("kind").and_then(Value::as_str) {
            if !k.is_empty() && k != rt.kind {
                return Err(ApiError::bad_request(format!(
                    "{k} in version \"{}\" cannot be handled as a {}: the kind in the data does not match the expected kind {}",
                    ctx.version, rt.kind, rt.kind
                )));
            }
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            let ok = rt.versions.iter().any(|v| rt.api_version(v) == av);
            if !av.is_empty() && !ok {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version(&ctx.version)
                )));
            }
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        Ok(())
    }

    /// Kind-specific server behaviour, defaulting and validation. `name` is for messages.
    fn admit(
        &mut self,
        ctx: &WriteCtx,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let rt = &ctx.rt;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "secrets") => {
                if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                    if let Some(sd) = sd.as_object() {
                        for (k, v) in sd {
                            let enc = base64::engine::general_purpose::STANDARD
                                .encode(v.as_str().unwrap_or_default());
                            obj["data"][k] = json!(enc);
                        }
                    }
                }
                if obj.get("type").is_none_or(|t| t.as_str() == Some("")) {
                    obj["type"] = json!("Opaque");
                }
                if let Some(old) = old {
                    if old.get("immutable") == Some(&json!(true))
                        && (old.get("data") != obj.get("data")
                            || old.get("type") != obj.get("type"))
                    {
                        return Err(ApiError::invalid(
                            "",
                            "Secret",
                            &name,
                            vec![Cause::new(
                                "data",
                                "FieldValueForbidden",
                                "Forbidden: field is immutable when `immutable` is set",
                            )],
                        ));
                    }
                }
            }
            ("", "namespaces") => {
                if obj["status"]["phase"].is_null() {
                    obj["status"] = json!({"phase": "Active"});
                }
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let new_rt = crd_to_type(obj)?;
                let now = now_rfc3339();
                let ltt = |t: &str| -> String {
                    old.and_then(|o| o["status"]["conditions"].as_array())
                        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                        .and_then(|c| c["lastTransitionTime"].as_str())
                        .map(String::from)
                        .unwrap_or_else(|| now.clone())
                };
                let mut accepted = obj["spec"]["names"].clone();
                if accepted["singular"].is_null() {
                    accepted["singular"] = json!(new_rt.singular);
                }
                if accepted["listKind"].is_null() {
                    accepted["listKind"] = json!(format!("{}List", new_rt.kind));
                }
                let storage: Vec<Value> = obj["spec"]["versions"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| v["storage"] == json!(true))
                            .map(|v| v["name"].clone())
                            .collect()
                    })
                    .unwrap_or_default();
                if obj["spec"]["conversion"].is_null() {
                    obj["spec"]["conversion"] = json!({"strategy": "None"});
                }
                obj["status"] = json!({
                    "acceptedNames": accepted,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": ltt("NamesAccepted")},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": ltt("Established")},
                    ],
                    "storedVersions": storage,
                });
                if !ctx.dry_run {
                    self.registry.register(new_rt);
                }
            }
            _ => {}
        }
        if rt.crd {
            if let Some(schema) = rt.schema(&ctx.version).cloned() {
                let mut pruned = Vec::new();
                schema::prune(&schema, obj, "", &mut pruned);
                if ctx.strict && !pruned.is_empty() {
                    let list: Vec<String> = pruned
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                schema::apply_defaults(&schema, obj);
                let mut causes = Vec::new();
                schema::validate(&schema, obj, "", &mut causes);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
                }
            }
        }
        Ok(())
    }

    fn validate_name(ctx: &WriteCtx, name: &str) -> Result<(), ApiError> {
        let rt = &ctx.rt;
        let label_only = rt.group.is_empty() && rt.plural == "namespaces";
        let ok = if label_only {
            is_label(name)
        } else {
            is_subdomain(name)
        };
        if ok {
            return Ok(());
        }
        let msg = if label_only {
            DNS1123_LABEL_MSG
        } else {
            DNS1123_SUBDOMAIN_MSG
        };
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            name,
            vec![Cause::invalid("metadata.name", &json!(name), msg)],
        ))
    }

    /// Write `new` (already merged/patched) after the shared pipeline. `old` is the
    /// current object for updates. `ownership_done` is set for apply (managedFields
    /// already computed).
    fn commit(
        &mut self,
        ctx: &WriteCtx,
        old: Option<Value>,
        mut new: Value,
        scope: Scope,
        ownership_done: bool,
    ) -> Result<Value, ApiError> {
        let rt = ctx.rt.clone();
        Self::check_type_meta(ctx, &new)?;
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let now = now_rfc3339();
        match &old {
            None => {
                self.check_namespace(ctx)?;
                let meta = new["metadata"].as_object_mut().expect("metadata");
                let mut name = meta
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if name.is_empty() {
                    let gen = meta
                        .get("generateName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if gen.is_empty() {
                        return Err(ApiError::invalid(
                            &rt.group,
                            &rt.kind,
                            "",
                            vec![Cause::new(
                                "metadata.name",
                                "FieldValueRequired",
                                "Required value: name or generateName is required",
                            )],
                        ));
                    }
                    name = format!("{gen}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                Self::validate_name(ctx, &name)?;
                let meta = new["metadata"].as_object_mut().expect("metadata");
                if rt.namespaced {
                    let ns = ctx.namespace.clone().unwrap_or_default();
                    match meta.get("namespace").and_then(Value::as_str) {
                        Some(b) if !b.is_empty() && b != ns => {
                            return Err(ApiError::bad_request(
                                "the namespace of the provided object does not match the namespace sent on the request",
                            ))
                        }
                        _ => {}
                    }
                    meta.insert("namespace".into(), json!(ns));
                } else {
                    meta.remove("namespace");
                }
                meta.insert("uid".into(), json!(new_uid()));
                meta.insert("creationTimestamp".into(), json!(now));
                meta.remove("resourceVersion");
                meta.remove("deletionTimestamp");
                if rt.tracks_generation() {
                    meta.insert("generation".into(), json!(1));
                } else {
                    meta.remove("generation");
                }
                if scope
                    != (Scope::Main {
                        exclude_status: false,
                    })
                {
                    // a create ignores status for kinds with a status subresource
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
                if !ownership_done {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                }
            }
            Some(old) => {
                let name = old["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                match new["metadata"]["name"].as_str() {
                    Some(n) if !n.is_empty() && n != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => {}
                }
                if rt.namespaced {
                    match new["metadata"]["namespace"].as_str() {
                        Some(b) if !b.is_empty() && Some(b) != ctx.namespace.as_deref() => {
                            return Err(ApiError::bad_request(
                                "the namespace of the provided object does not match the namespace sent on the request",
                            ))
                        }
                        _ => {}
                    }
                }
                if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
                    if !rv.is_empty()
                        && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                    {
                        return Err(ApiError::stale(&rt.group, &rt.plural, &name));
                    }
                }
                if let Some(uid) = new["metadata"]["uid"].as_str() {
                    if !uid.is_empty() && uid != old["metadata"]["uid"].as_str().unwrap_or("") {
                        return Err(ApiError::conflict(&rt.group, &rt.plural, &name, &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            old["metadata"]["uid"].as_str().unwrap_or("")
                        )));
                    }
                }
                match scope {
                    Scope::Main { .. } => {
                        for k in [
                            "name",
                            "namespace",
                            "uid",
                            "creationTimestamp",
                            "generation",
                        ] {
                            match old["metadata"].get(k) {
                                Some(v) => new["metadata"][k] = v.clone(),
                                None => {
                                    if let Some(m) = new["metadata"].as_object_mut() {
                                        m.remove(k);
                                    }
                                }
                            }
                        }
                        set_status_from(&mut new, old, scope);
                    }
                    Scope::Status => {
                        let mut merged = old.clone();
                        match new.get("status") {
                            Some(s) => merged["status"] = s.clone(),
                            None => {
                                if let Some(m) = merged.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                        }
                        if ownership_done {
                            merged["metadata"]["managedFields"] =
                                new["metadata"]["managedFields"].clone();
                        }
                        new = merged;
                    }
                    Scope::Approval => {
                        let mut merged = old.clone();
                        merged["status"]["conditions"] = new["status"]["conditions"].clone();
                        if ownership_done {
                            merged["metadata"]["managedFields"] =
                                new["metadata"]["managedFields"].clone();
                        }
                        new = merged;
                    }
                }
                if !ownership_done {
                    new["metadata"]["managedFields"] = old["metadata"]
                        .get("managedFields")
                        .cloned()
                        .unwrap_or(Value::Null);
                    if new["metadata"]["managedFields"].is_null() {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove("managedFields");
                        }
                    }
                }
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            }
        }
        // stored objects always carry the storage apiVersion
        new["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
        new["kind"] = json!(rt.kind);
        self.admit(ctx, &mut new, old.as_ref())?;
        let schema = rt.schema(&ctx.version).cloned();
        if !ownership_done {
            let owner = Owner {
                manager: &ctx.manager,
                scope,
                api_version: &rt.api_version(&ctx.version),
                schema: schema.as_ref(),
                now: &now,
            };
            apply::record_update(old.as_ref(), &mut new, &owner);
        }
        if let Some(old) = &old {
            if rt.tracks_generation() {
                let strip = |o: &Value| {
                    let mut c = o.clone();
                    if let Some(m) = c.as_object_mut() {
                        m.remove("metadata");
                        if rt.has_status() {
                            m.remove("status");
                        }
                    }
                    c
                };
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let g = if strip(old) != strip(&new) { g + 1 } else { g };
                new["metadata"]["generation"] = json!(g);
            }
            if *old == new {
                return Ok(new);
            }
        }
        if ctx.dry_run {
            return Ok(new);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ns = new["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.objects
            .entry((rt.group.clone(), rt.plural.clone()))
            .or_default()
            .insert((ns, name), new.clone());
        let etype = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(&rt, etype, new.clone(), old);
        Ok(new)
    }

    fn ns_key(ctx: &WriteCtx) -> String {
        if ctx.rt.namespaced {
            ctx.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }

    /// POST.
    pub fn create(&mut self, ctx: &WriteCtx, mut body: Value) -> Result<Value, ApiError> {
        stamp_creator(ctx, &mut body);
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !name.is_empty() && self.get_raw(&ctx.rt, &Self::ns_key(ctx), &name).is_some() {
            Self::check_type_meta(ctx, &body)?;
            return Err(ApiError::already_exists(
                &ctx.rt.group,
                &ctx.rt.plural,
                &name,
            ));
        }
        self.commit(ctx, None, body, Self::scope(ctx, ""), false)
    }

    /// PUT (main resource or a subresource).
    pub fn replace(
        &mut self,
        ctx: &WriteCtx,
        name: &str,
        sub: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let old = self.get(&ctx.rt, &Self::ns_key(ctx), name)?;
        self.commit(ctx, Some(old), body, Self::scope(ctx, sub), false)
    }

    /// PATCH of any type, incl. server-side apply.
    pub fn patch(
        &mut self,
        ctx: &WriteCtx,
        name: &str,
        sub: &str,
        pt: PatchType,
        body: &[u8],
        force: bool,
    ) -> Result<Value, ApiError> {
        let scope = Self::scope(ctx, sub);
        let existing = self.get_raw(&ctx.rt, &Self::ns_key(ctx), name).cloned();
        let schema = ctx.rt.schema(&ctx.version).cloned();
        if pt != PatchType::Apply {
            let old =
                existing.ok_or_else(|| ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name))?;
            let new = patch::apply_patch(pt, &old, body, schema.as_ref())?;
            return self.commit(ctx, Some(old), new, scope, false);
        }
        let applied: Value = serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request("apply body must be an object"));
        }
        Self::check_type_meta(ctx, &applied)?;
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set in an apply configuration",
            ));
        }
        if let Some(n) = applied["metadata"]["name"].as_str() {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let mut applied = apply::restrict(&applied, scope);
        applied["metadata"]["name"] = json!(name);
        if existing.is_none()
            && scope
                != (Scope::Main {
                    exclude_status: ctx.rt.has_status(),
                })
        {
            return Err(ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name));
        }
        // A resourceVersion in the apply body is a precondition.
        if let (Some(live), Some(rv)) = (&existing, applied["metadata"]["resourceVersion"].as_str())
        {
            if !rv.is_empty() && Some(rv) != live["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::stale(&ctx.rt.group, &ctx.rt.plural, name));
            }
        }
        let now = now_rfc3339();
        let api_version = ctx.rt.api_version(&ctx.version);
        let owner = Owner {
            manager: &ctx.manager,
            scope,
            api_version: &api_version,
            schema: schema.as_ref(),
            now: &now,
        };
        let merged = apply::apply(
            existing.as_ref(),
            &applied,
            force,
            &owner,
            (&ctx.rt.group, &ctx.rt.plural, name),
        )?;
        self.commit(ctx, existing, merged, scope, true)
    }

    /// DELETE; returns the deleted object.
    pub fn delete(
        &mut self,
        ctx: &WriteCtx,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let rt = ctx.rt.clone();
        let key = (Self::ns_key(ctx), name.to_string());
        let old = self.get(&rt, &key.0, name)?;
        if let Some(uid) = preconditions["uid"].as_str() {
            if uid != old["metadata"]["uid"].as_str().unwrap_or("") {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return Err(ApiError::conflict(&rt.group, &rt.plural, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                )));
            }
        }
        if ctx.dry_run {
            return Ok(old);
        }
        self.remove_object(&rt, &key);
        // cascades: a namespace takes its objects, a CRD its kind and custom resources
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let types: Vec<ResourceType> = self
                .registry
                .all()
                .iter()
                .filter(|t| t.namespaced)
                .cloned()
                .collect();
            for t in types {
                let keys: Vec<Key> = self
                    .bucket(&t)
                    .map(|b| b.keys().filter(|(ns, _)| ns == name).cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove_object(&t, &k);
                }
            }
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let group = old["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = old["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(t) = self.registry.lookup_any_version(&group, &plural).cloned() {
                let keys: Vec<Key> = self
                    .bucket(&t)
                    .map(|b| b.keys().cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove_object(&t, &k);
                }
            }
            self.registry.unregister(&group, &plural);
        }
        let mut gone = old;
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        Ok(gone)
    }

    fn remove_object(&mut self, rt: &ResourceType, key: &Key) {
        let removed = self
            .objects
            .get_mut(&(rt.group.clone(), rt.plural.clone()))
            .and_then(|b| b.remove(key));
        if let Some(mut obj) = removed {
            self.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.emit(rt, "DELETED", obj, None);
        }
    }
}

/// Strip a JSON object down to what a watch BOOKMARK carries.
pub(crate) fn bookmark(rt: &ResourceType, version: &str, rv: u64, initial_end: bool) -> Value {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if initial_end {
        meta.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": meta})
}

/// On create, the real API server writes `spec.username`/`spec.groups` of a
/// CertificateSigningRequest, and cert-manager's webhook those of a
/// CertificateRequest, from the creator's credentials; whatever the creator put there
/// is overwritten, so nobody can claim to be somebody else.
fn stamp_creator(ctx: &WriteCtx, body: &mut Value) {
    let stamped = matches!(
        (ctx.rt.group.as_str(), ctx.rt.plural.as_str()),
        ("cert-manager.io", "certificaterequests")
            | ("certificates.k8s.io", "certificatesigningrequests")
    );
    if !stamped {
        return;
    }
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("username".into(), json!(ctx.user.username));
        spec.insert("groups".into(), json!(ctx.user.groups));
        spec.insert("uid".into(), json!(format!("uid-{}", ctx.user.username)));
    }
}
