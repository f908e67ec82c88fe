//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::schema::{child, items, list_type, ListType};

/// One path element of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pe {
    Field(String),
    /// Associative-list item, by its key fields as canonical JSON.
    Key(String),
    /// Set-list item, by its JSON value.
    Value(String),
    Index(usize),
}

impl fmt::Display for Pe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pe::Field(s) => write!(f, "f:{s}"),
            Pe::Key(s) => write!(f, "k:{s}"),
            Pe::Value(s) => write!(f, "v:{s}"),
            Pe::Index(i) => write!(f, "i:{i}"),
        }
    }
}

pub(crate) type FieldPath = Vec<Pe>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a request may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource; `exclude_status` when the kind has a status subresource.
    Main {
        exclude_status: bool,
    },
    Status,
}

impl Scope {
    pub fn subresource(&self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }

    fn includes(&self, p: &FieldPath) -> bool {
        let first = match p.first() {
            Some(Pe::Field(f)) => f.as_str(),
            _ => return false,
        };
        if first == "apiVersion" || first == "kind" {
            return false;
        }
        if first == "metadata" {
            if let Some(Pe::Field(m)) = p.get(1) {
                if SERVER_META.contains(&m.as_str()) {
                    return false;
                }
            }
        }
        match self {
            Scope::Main { exclude_status } => !(*exclude_status && first == "status"),
            Scope::Status => first == "status",
        }
    }
}

const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn canonical_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m).to_string()
}

fn collect(
    value: &Value,
    schema: Option<&Value>,
    field: &str,
    prefix: &mut FieldPath,
    out: &mut FieldSet,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Pe::Field(k.clone()));
                collect(v, child(schema, k), k, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(arr) if !arr.is_empty() => match list_type(schema, field) {
            ListType::Map(keys) => {
                let is = items(schema);
                for item in arr {
                    prefix.push(Pe::Key(canonical_key(item, &keys)));
                    out.insert(prefix.clone());
                    if let Value::Object(m) = item {
                        for (k, v) in m {
                            prefix.push(Pe::Field(k.clone()));
                            collect(v, child(is, k), k, prefix, out);
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
            ListType::Set => {
                for item in arr {
                    prefix.push(Pe::Value(item.to_string()));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListType::Atomic => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The owned-field paths of `obj` within `scope`.
pub(crate) fn members(obj: &Value, schema: Option<&Value>, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    collect(obj, schema, "", &mut Vec::new(), &mut out);
    out.retain(|p| scope.includes(p));
    out
}

fn value_is(item: &Value, encoded: &str) -> bool {
    serde_json::from_str::<Value>(encoded).is_ok_and(|v| v == *item)
}

fn key_matches(item: &Value, key_json: &str) -> bool {
    match serde_json::from_str::<Map<String, Value>>(key_json) {
        Ok(m) => m.iter().all(|(k, v)| item.get(k) == Some(v)),
        Err(_) => false,
    }
}

/// The value at a field path.
pub(crate) fn get_at<'a>(obj: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = obj;
    for pe in path {
        cur = match pe {
            Pe::Field(f) => cur.get(f)?,
            Pe::Key(k) => cur.as_array()?.iter().find(|i| key_matches(i, k))?,
            Pe::Value(v) => cur.as_array()?.iter().find(|i| value_is(i, v))?,
            Pe::Index(i) => cur.get(*i)?,
        };
    }
    Some(cur)
}

/// Remove the value at a field path (no-op when absent).
pub(crate) fn remove_at(obj: &mut Value, path: &[Pe]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent_path {
        let next = match pe {
            Pe::Field(f) => cur.get_mut(f),
            Pe::Key(k) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| key_matches(i, k))),
            Pe::Value(v) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| value_is(i, v))),
            Pe::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Pe::Key(k) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !key_matches(i, k));
            }
        }
        Pe::Value(v) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !value_is(i, v));
            }
        }
        Pe::Index(i) => {
            if let Some(a) = cur.as_array_mut() {
                if *i < a.len() {
                    a.remove(*i);
                }
            }
        }
    }
}

#[derive(Default)]
struct Node {
    member: bool,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }
}

/// Serialize a field set in the real `fieldsV1` format.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for pe in p {
            n = n.children.entry(pe.to_string()).or_default();
        }
        n.member = true;
    }
    root.to_json()
}

fn parse_pe(s: &str) -> Option<Pe> {
    let (prefix, rest) = s.split_at_checked(2)?;
    Some(match prefix {
        "f:" => Pe::Field(rest.to_string()),
        "k:" => {
            // canonicalize
            let v: Value = serde_json::from_str(rest).ok()?;
            Pe::Key(v.to_string())
        }
        "v:" => Pe::Value(rest.to_string()),
        "i:" => Pe::Index(rest.parse().ok()?),
        _ => return None,
    })
}

fn from_node(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in m {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        if let Some(pe) = parse_pe(k) {
            prefix.push(pe);
            from_node(c, prefix, out);
            prefix.pop();
        }
    }
}

/// Parse a `fieldsV1` value.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    from_node(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(arr) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    arr.iter()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().into(),
            operation: e["operation"].as_str().unwrap_or_default().into(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
            time: e["time"].as_str().unwrap_or_default().into(),
            subresource: e["subresource"].as_str().unwrap_or_default().into(),
            set: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

pub(crate) fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    let arr: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Inputs shared by ownership operations.
pub(crate) struct Owner<'a> {
    pub manager: &'a str,
    pub scope: Scope,
    pub api_version: &'a str,
    pub schema: Option<&'a Value>,
    pub now: &'a str,
}

/// Record an Update operation (create/replace/non-apply patch): the manager takes the
/// changed fields, fields that disappeared lose their owners.
pub(crate) fn record_update(old: Option<&Value>, new: &mut Value, o: &Owner<'_>) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_members = members(new, o.schema, o.scope);
    let old_members = old
        .map(|x| members(x, o.schema, o.scope))
        .unwrap_or_default();
    let changed: FieldSet = new_members
        .iter()
        .filter(|p| old.and_then(|x| get_at(x, p)) != get_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_members.difference(&new_members).cloned().collect();
    let sub = o.scope.subresource();
    for e in entries.iter_mut() {
        e.set.retain(|p| !removed.contains(p));
        if !e.same_owner(o.manager, "Update", sub) {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(o.manager, "Update", sub))
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = o.now.to_string();
                e.api_version = o.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: o.manager.to_string(),
                operation: "Update".into(),
                api_version: o.api_version.to_string(),
                time: o.now.to_string(),
                subresource: sub.to_string(),
                set: changed,
            }),
        }
    }
    write_entries(new, entries);
}

/// Merge an applied configuration into the live object.
fn merge_apply(live: &mut Value, applied: &Value, schema: Option<&Value>, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge_apply(lv, av, child(schema, k), k),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_type(schema, field) {
            ListType::Map(keys) => {
                let is = items(schema);
                for ai in a {
                    let key = canonical_key(ai, &keys);
                    match l.iter_mut().find(|li| canonical_key(li, &keys) == key) {
                        Some(li) => merge_apply(li, ai, is, ""),
                        None => l.push(ai.clone()),
                    }
                }
            }
            ListType::Set => {
                for ai in a {
                    if !l.contains(ai) {
                        l.push(ai.clone());
                    }
                }
            }
            ListType::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// Restrict an applied configuration to what `scope` may change.
pub(crate) fn restrict(applied: &Value, scope: Scope) -> Value {
    let mut out = applied.clone();
    if let Some(m) = out.as_object_mut() {
        match scope {
            Scope::Main { exclude_status } => {
                if exclude_status {
                    m.remove("status");
                }
            }
            Scope::Status => {
                let status = m.remove("status");
                let meta = m.get("metadata").cloned().unwrap_or(json!({}));
                m.retain(|k, _| k == "apiVersion" || k == "kind");
                let mut md = Map::new();
                for k in ["name", "namespace", "resourceVersion"] {
                    if let Some(v) = meta.get(k) {
                        md.insert(k.into(), v.clone());
                    }
                }
                m.insert("metadata".into(), Value::Object(md));
                if let Some(s) = status {
                    m.insert("status".into(), s);
                }
            }
        }
    }
    out
}

/// Server-side apply of `applied` (already restricted to the scope) onto the existing
/// object `live` (apply never creates here), always
/// forced (the remaining users all apply with `force=true`): fields other managers own
/// and this apply sets move to this manager. Returns the new object with updated
/// managedFields.
pub(crate) fn apply(live: &Value, applied: &Value, o: &Owner<'_>) -> Value {
    let sub = o.scope.subresource();
    let fa = members(applied, o.schema, o.scope);
    let mut entries = read_entries(live);
    for p in &fa {
        if matches!(p.last(), Some(Pe::Key(_))) {
            continue;
        }
        let lv = get_at(live, p);
        if lv.is_none() || lv == get_at(applied, p) {
            continue;
        }
        for e in entries.iter_mut() {
            if !e.same_owner(o.manager, "Apply", sub) {
                e.set.remove(p);
            }
        }
    }
    let mut new = live.clone();
    merge_apply(&mut new, applied, o.schema, "");
    let mine = entries
        .iter()
        .position(|e| e.same_owner(o.manager, "Apply", sub));
    let prev = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let dropped: Vec<FieldPath> = prev.difference(&fa).cloned().collect();
    for p in dropped.iter().rev() {
        let owned_by_other = entries
            .iter()
            .enumerate()
            .any(|(i, e)| Some(i) != mine && e.set.contains(p));
        if !owned_by_other {
            remove_at(&mut new, p);
        }
    }
    match mine {
        Some(i) => {
            if entries[i].set != fa {
                entries[i].time = o.now.into();
            }
            entries[i].set = fa;
            entries[i].api_version = o.api_version.into();
        }
        None => entries.push(Entry {
            manager: o.manager.into(),
            operation: "Apply".into(),
            api_version: o.api_version.into(),
            time: o.now.into(),
            subresource: sub.into(),
            set: fa,
        }),
    }
    write_entries(&mut new, entries);
    new
}
