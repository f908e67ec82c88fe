//! Decoding of `application/vnd.kubernetes.protobuf` request bodies for the few
//! built-in kinds kubectl's typed clients send that way (`kubectl create namespace`,
//! `kubectl create secret`, `kubectl create configmap`, `kubectl create serviceaccount`).
//! Responses are always JSON (kubectl accepts both).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::status::ApiError;

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn fields(b: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (no, wt) = (key >> 3, key & 7);
        let w = match wt {
            0 => Wire::Varint(varint(b, &mut pos)?),
            1 => {
                pos += 8;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let s = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Wire::Bytes(s)
            }
            5 => {
                pos += 4;
                Wire::Fixed
            }
            _ => return None,
        };
        out.push((no, w));
    }
    (pos == b.len()).then_some(out)
}

fn s(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A map entry message (key = 1, value = 2).
fn entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut k = String::new();
    let mut v = if bytes_value { b64(&[]) } else { json!("") };
    for (no, w) in fields(b)? {
        if let Wire::Bytes(x) = w {
            match no {
                1 => k = String::from_utf8_lossy(x).into_owned(),
                2 => v = if bytes_value { b64(x) } else { s(x) },
                _ => {}
            }
        }
    }
    Some((k, v))
}

fn push(m: &mut Map<String, Value>, key: &str, v: Value) {
    match m.get_mut(key).and_then(Value::as_array_mut) {
        Some(a) => a.push(v),
        None => {
            m.insert(key.into(), Value::Array(vec![v]));
        }
    }
}

fn map_insert(m: &mut Map<String, Value>, key: &str, e: Option<(String, Value)>) {
    if let Some((k, v)) = e {
        let inner = m.entry(key.to_string()).or_insert_with(|| json!({}));
        inner[k] = v;
    }
}

/// Field layout of a message: (number, json name, kind).
type Layout = &'static [(u64, &'static str, Kind)];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    RepStr,
    MapStr,
    MapBytes,
    Msg(Layout),
    RepMsg(Layout),
}

const OWNER_REF: Layout = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];
const OBJECT_META: Layout = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (11, "labels", Kind::MapStr),
    (12, "annotations", Kind::MapStr),
    (13, "ownerReferences", Kind::RepMsg(OWNER_REF)),
    (14, "finalizers", Kind::RepStr),
];
const SECRET: Layout = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::MapBytes),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::MapStr),
    (5, "immutable", Kind::Bool),
];
const CONFIG_MAP: Layout = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::MapStr),
    (3, "binaryData", Kind::MapBytes),
    (4, "immutable", Kind::Bool),
];
const NS_SPEC: Layout = &[(1, "finalizers", Kind::RepStr)];
const NS_STATUS: Layout = &[(1, "phase", Kind::Str)];
const NAMESPACE: Layout = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(NS_SPEC)),
    (3, "status", Kind::Msg(NS_STATUS)),
];
const OBJECT_REF: Layout = &[
    (1, "kind", Kind::Str),
    (2, "namespace", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
];
const LOCAL_REF: Layout = &[(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: Layout = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "secrets", Kind::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Kind::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", Kind::Bool),
];

fn decode(b: &[u8], layout: Layout) -> Option<Value> {
    let mut m = Map::new();
    for (no, w) in fields(b)? {
        let Some((_, name, kind)) = layout.iter().find(|(n, _, _)| *n == no) else {
            continue;
        };
        match (kind, w) {
            (Kind::Str, Wire::Bytes(x)) if !x.is_empty() => {
                m.insert(name.to_string(), s(x));
            }
            (Kind::Int, Wire::Varint(v)) => {
                m.insert(name.to_string(), json!(v));
            }
            (Kind::Bool, Wire::Varint(v)) => {
                m.insert(name.to_string(), json!(v != 0));
            }
            (Kind::RepStr, Wire::Bytes(x)) => push(&mut m, name, s(x)),
            (Kind::MapStr, Wire::Bytes(x)) => map_insert(&mut m, name, entry(x, false)),
            (Kind::MapBytes, Wire::Bytes(x)) => map_insert(&mut m, name, entry(x, true)),
            (Kind::Msg(l), Wire::Bytes(x)) => {
                m.insert(name.to_string(), decode(x, l)?);
            }
            (Kind::RepMsg(l), Wire::Bytes(x)) => push(&mut m, name, decode(x, l)?),
            _ => {}
        }
    }
    Some(Value::Object(m))
}

/// Decode a protobuf-encoded built-in object (with its `k8s\0` runtime.Unknown envelope) to JSON.
pub(crate) fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = |why: &str| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({why})"),
        )
    };
    let inner = body
        .strip_prefix(b"k8s\x00")
        .ok_or_else(|| unsupported("missing protobuf magic"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (no, w) in fields(inner).ok_or_else(|| unsupported("malformed envelope"))? {
        match (no, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, w) in fields(tm).ok_or_else(|| unsupported("malformed type meta"))? {
                    if let Wire::Bytes(x) = w {
                        match n {
                            1 => api_version = String::from_utf8_lossy(x).into_owned(),
                            2 => kind = String::from_utf8_lossy(x).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let layout = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => {
            return Err(unsupported(&format!(
                "protobuf is not supported for {api_version}/{kind}"
            )))
        }
    };
    let mut v = decode(raw, layout).ok_or_else(|| unsupported("malformed object"))?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}
