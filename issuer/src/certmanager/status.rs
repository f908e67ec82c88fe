//! Writing status: only through the `/status` subresource, with server-side apply
//! under our field manager (forced), carrying only the fields we own. A 404 means
//! the object was deleted meanwhile (istio-csr deletes its requests as soon as it
//! has read them): nothing left to do.

use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Our field manager.
pub const FIELD_MANAGER: &str = "canopy-issuer";

/// What became of a status write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Applied.
    Applied,
    /// The object is gone.
    Gone,
}

/// Now, as Kubernetes writes times (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    crate::clock::timestamp()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A condition, keeping `lastTransitionTime` when `status` did not change.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    previous: Option<(&str, Option<&str>)>,
    observed_generation: Option<i64>,
) -> Value {
    let ltt = match previous {
        Some((prev_status, Some(ltt))) if prev_status == status => ltt.to_string(),
        _ => now_rfc3339(),
    };
    let mut c = json!({
        "type": type_,
        "status": status,
        "reason": reason,
        // The API server limits messages to 32 KiB; keep them readable.
        "message": truncate(message, 4096),
        "lastTransitionTime": ltt,
    });
    if let Some(g) = observed_generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Applies `status` to the `/status` subresource of `obj`.
pub async fn apply_status<K>(api: &Api<K>, obj: &K, status: Value) -> Result<Written, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut metadata = json!({ "name": name });
    if let Some(ns) = &obj.meta().namespace {
        metadata["namespace"] = json!(ns);
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(Written::Applied),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Gone),
        Err(e) => Err(e),
    }
}
