//! Structural-schema handling for custom resources: validation (`type`, `required`,
//! `enum`, `format: byte|date-time`), defaulting, pruning, and list types for
//! server-side apply and strategic merge patch.

use base64::Engine;
use serde_json::Value;

use crate::status::{render, Cause};

/// How a list merges (x-kubernetes-list-type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListType {
    Atomic,
    Map(Vec<String>),
    Set,
}

/// Schema of a child field, if any.
pub(crate) fn child<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let s = schema?;
    if let Some(p) = s.get("properties").and_then(|p| p.get(field)) {
        return Some(p);
    }
    match s.get("additionalProperties") {
        Some(ap) if ap.is_object() => Some(ap),
        _ => None,
    }
}

/// Schema of list items, if any.
pub(crate) fn items(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items")
}

/// The list type of the array at a node; `field` is the array's field name, used for
/// built-in kinds (no schema) where `conditions` lists are keyed by `type`.
pub(crate) fn list_type(schema: Option<&Value>, field: &str) -> ListType {
    if let Some(s) = schema {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                return ListType::Map(keys);
            }
            Some("set") => return ListType::Set,
            Some(_) => return ListType::Atomic,
            None => {
                if s.get("type").is_some() {
                    return ListType::Atomic;
                }
            }
        }
    }
    match field {
        "conditions" => ListType::Map(vec!["type".into()]),
        _ => ListType::Atomic,
    }
}

/// Strategic-merge-patch merge key for built-in lists (by field name).
pub(crate) fn smp_merge_key(
    schema: Option<&Value>,
    field: &str,
    sample: &[Value],
) -> Option<Vec<String>> {
    if schema.is_some() {
        return match list_type(schema, field) {
            ListType::Map(k) => Some(k),
            _ => None,
        };
    }
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "envFrom" => "name",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ports" => {
            if sample.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    Some(vec![key.to_string()])
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Validate `value` against `schema`, pushing causes with real-looking messages.
pub(crate) fn validate(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        // null for a typed field
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            causes.push(Cause::new(
                path,
                "FieldValueTypeInvalid",
                format!("Invalid value: \"null\": {path} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            causes.push(Cause::new(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: {}: {path} in body must be of type integer,string: {}",
                    render(value),
                    render(value)
                ),
            ));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(ty, value) {
            let actual = match value {
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_f64() => "number",
                Value::Number(_) => "integer",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
                Value::Null => "null",
            };
            causes.push(Cause::new(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array) {
        if !en.contains(value) {
            let supported: Vec<String> = en.iter().map(render).collect();
            causes.push(Cause::new(
                path,
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: {}",
                    render(value),
                    supported.join(", ")
                ),
            ));
        }
    }
    if let (Some(fmt), Some(s)) = (schema.get("format").and_then(Value::as_str), value.as_str()) {
        let ok = match fmt {
            "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
            "date-time" => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }
            _ => true,
        };
        if !ok {
            causes.push(Cause::new(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {path} in body must be of type {fmt}: {}",
                    render(value),
                    render(value)
                ),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        causes.push(Cause::required(join(path, r)));
                    }
                }
            }
            for (k, v) in map {
                if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                    continue;
                }
                if let Some(cs) = child(Some(schema), k) {
                    validate(cs, v, &join(path, k), causes);
                }
            }
        }
        Value::Array(arr) => {
            if let Some(is) = schema.get("items") {
                for (i, v) in arr.iter().enumerate() {
                    validate(is, v, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Apply `default`s for absent properties (recursively into present objects and lists).
pub(crate) fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if !map.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                if let Some(cs) = child(Some(schema), k) {
                    apply_defaults(cs, v);
                }
            }
        }
        Value::Array(arr) => {
            if let Some(is) = schema.get("items") {
                for v in arr {
                    apply_defaults(is, v);
                }
            }
        }
        _ => {}
    }
}

/// Remove fields not declared in the schema; returns their paths (for strict field validation).
pub(crate) fn prune(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                    continue;
                }
                let declared = props.is_some_and(|p| p.contains_key(&k))
                    || additional.is_some_and(|a| a.is_object() || a.as_bool() == Some(true));
                if !declared && !preserve {
                    map.remove(&k);
                    pruned.push(join(path, &k));
                    continue;
                }
                if let (Some(cs), Some(v)) = (child(Some(schema), &k), map.get_mut(&k)) {
                    prune(cs, v, &join(path, &k), pruned);
                }
            }
        }
        Value::Array(arr) => {
            if let Some(is) = schema.get("items") {
                for (i, v) in arr.iter_mut().enumerate() {
                    prune(is, v, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}
