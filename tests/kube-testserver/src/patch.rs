//! JSON merge patch, strategic merge patch (simplified) and JSON patch.

use serde_json::Value;

use crate::schema::{child, items, smp_merge_key};
use crate::status::ApiError;

/// The patch content types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        Some(match base {
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/json-patch+json" => PatchType::Json,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Apply a non-apply patch to `target` (the current object).
pub(crate) fn apply_patch(
    pt: PatchType,
    target: &Value,
    body: &[u8],
    schema: Option<&Value>,
) -> Result<Value, ApiError> {
    let mut out = target.clone();
    match pt {
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: patch must be a JSON object",
                ));
            }
            if pt == PatchType::Merge {
                json_patch::merge(&mut out, &patch);
            } else {
                strategic_merge(&mut out, &patch, schema, "");
            }
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut out, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => return Err(ApiError::internal("apply is not a plain patch")),
    }
    Ok(out)
}

/// Strategic merge patch: a merge patch where lists with a known merge key merge by
/// key (items with `$patch: delete` are removed), other lists are replaced, and
/// `$`-directives are honoured where simple (`$patch: replace|delete`) or dropped.
pub(crate) fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    schema: Option<&Value>,
    field: &str,
) {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(Value::as_str) {
                Some("replace") => {
                    let mut clean = patch.clone();
                    strip_directives(&mut clean);
                    *target = clean;
                    return;
                }
                Some("delete") => {
                    *target = Value::Object(Default::default());
                    return;
                }
                _ => {}
            }
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) => strategic_merge(tv, pv, child(schema, k), k),
                    None => {
                        let mut v = Value::Null;
                        strategic_merge(&mut v, pv, child(schema, k), k);
                        t.insert(k.clone(), v);
                    }
                }
            }
        }
        Value::Array(pa) => {
            let keys = smp_merge_key(schema, field, pa);
            match (keys, target.as_array_mut()) {
                (Some(keys), Some(ta)) => {
                    let is = items(schema);
                    for pi in pa {
                        let matches = |ti: &Value| keys.iter().all(|k| ti.get(k) == pi.get(k));
                        let delete = pi.get("$patch").and_then(Value::as_str) == Some("delete");
                        if delete {
                            ta.retain(|ti| !matches(ti));
                            continue;
                        }
                        match ta.iter_mut().find(|ti| matches(ti)) {
                            Some(ti) => strategic_merge(ti, pi, is, ""),
                            None => {
                                let mut v = pi.clone();
                                strip_directives(&mut v);
                                ta.push(v);
                            }
                        }
                    }
                }
                _ => {
                    let mut v = patch.clone();
                    strip_directives(&mut v);
                    *target = v;
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for x in m.values_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => {
            a.retain(|x| x.get("$patch").and_then(Value::as_str) != Some("delete"));
            for x in a {
                strip_directives(x);
            }
        }
        _ => {}
    }
}
