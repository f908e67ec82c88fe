//! In-memory object store: objects as JSON, the global resourceVersion, watch history,
//! and the write pipeline shared by create, replace, merge patch and apply.

use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

use crate::apply::{self, Owner, Scope};
use crate::patch::{self, PatchType};
use crate::registry::{crd_to_type, Registry, ResourceType};
use crate::status::ApiError;

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
}

/// The per-request parameters of a write.
pub(crate) struct WriteCtx {
    pub rt: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub manager: String,
}

/// The user every request authenticates as (the kubeconfig's token is the admin's).
const ADMIN: &str = "kubernetes-admin";

type Key = (String, String);

pub(crate) struct Store {
    pub registry: Registry,
    objects: BTreeMap<Key, BTreeMap<Key, Value>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
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
        Scope::Status => {}
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
            };
            s.create(&ctx, json!({"metadata": {"name": ns}}))
                .expect("bootstrap namespace");
        }
        s
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// History events after `rv`, or None if `rv` is too old.
    pub fn history_after(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
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

    /// Objects of a type, optionally in one namespace, in (ns, name) order.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        self.bucket(rt)
            .map(|b| {
                b.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn emit(&mut self, rt: &ResourceType, etype: &'static str, object: Value) {
        let ev = Arc::new(Event {
            rv: self.rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            etype,
            object,
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
            _ => Scope::Main {
                exclude_status: ctx.rt.has_status(),
            },
        }
    }

    fn check_object(body: &Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        Ok(())
    }

    /// Kind-specific server behaviour: a Secret's type defaults to Opaque; a CRD's kind is
    /// served at once.
    fn admit(&mut self, ctx: &WriteCtx, obj: &mut Value) {
        match (ctx.rt.group.as_str(), ctx.rt.plural.as_str()) {
            ("", "secrets") if obj.get("type").is_none_or(|t| t.as_str() == Some("")) => {
                obj["type"] = json!("Opaque");
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                self.registry.register(crd_to_type(obj));
            }
            _ => {}
        }
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
        Self::check_object(&new)?;
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        let now = now_rfc3339();
        match &old {
            None => {
                self.check_namespace(ctx)?;
                if new["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request("metadata.name is required"));
                }
                let meta = new["metadata"].as_object_mut().expect("metadata");
                if rt.namespaced {
                    let ns = ctx.namespace.clone().unwrap_or_default();
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
                if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
                    if !rv.is_empty()
                        && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
                    {
                        return Err(ApiError::stale(&rt.group, &rt.plural, &name));
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
        self.admit(ctx, &mut new);
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
        self.emit(&rt, etype, new.clone());
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

    /// PATCH of an existing object: a merge patch, or a (forced) server-side apply.
    pub fn patch(
        &mut self,
        ctx: &WriteCtx,
        name: &str,
        sub: &str,
        pt: PatchType,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let scope = Self::scope(ctx, sub);
        let old = self
            .get_raw(&ctx.rt, &Self::ns_key(ctx), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name))?;
        if pt == PatchType::Merge {
            let new = patch::merge_patch(&old, body)?;
            return self.commit(ctx, Some(old), new, scope, false);
        }
        let applied: Value = serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        Self::check_object(&applied)?;
        let mut applied = apply::restrict(&applied, scope);
        applied["metadata"]["name"] = json!(name);
        let schema = ctx.rt.schema(&ctx.version).cloned();
        let now = now_rfc3339();
        let api_version = ctx.rt.api_version(&ctx.version);
        let owner = Owner {
            manager: &ctx.manager,
            scope,
            api_version: &api_version,
            schema: schema.as_ref(),
            now: &now,
        };
        let merged = apply::apply(&old, &applied, &owner);
        self.commit(ctx, Some(old), merged, scope, true)
    }
}

/// Strip a JSON object down to what a watch BOOKMARK carries.
pub(crate) fn bookmark(rt: &ResourceType, version: &str, rv: u64) -> Value {
    json!({"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": {"resourceVersion": rv.to_string()}})
}

/// On create, the real API server writes `spec.username`/`spec.groups` of a
/// CertificateSigningRequest, and cert-manager's webhook those of a
/// CertificateRequest, from the creator's credentials; whatever the creator put there
/// is overwritten, so nobody can claim to be somebody else. Every request here is the
/// admin's (the remaining users create as admin).
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
        spec.insert("username".into(), json!(ADMIN));
        spec.insert(
            "groups".into(),
            json!(["system:masters", "system:authenticated"]),
        );
        spec.insert("uid".into(), json!(format!("uid-{ADMIN}")));
    }
}
