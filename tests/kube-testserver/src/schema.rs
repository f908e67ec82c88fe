//! What server-side apply needs from a custom resource's structural schema: the
//! schemas of child fields and list items, and how a list merges
//! (`x-kubernetes-list-type`), so that two managers' status conditions merge by `type`.
//! No validation, defaulting or pruning: the remaining users write valid objects.

use serde_json::Value;

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
