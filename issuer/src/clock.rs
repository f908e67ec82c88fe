//! The issuer's one reading of the wall clock (clippy.toml's `disallowed-methods` keeps
//! every other reading out): the rest of the code asks here or is handed the time.

use time::OffsetDateTime;

/// Now, in whole seconds: certificates carry whole seconds, so a plan made with
/// sub-second precision would not match the certificate signed from it.
#[allow(clippy::disallowed_methods)]
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Now, to the nanosecond: for durations and the audit log's milliseconds.
#[allow(clippy::disallowed_methods)]
pub fn now_precise() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Now, as the Kubernetes types' timestamp (Lease times, status conditions).
#[allow(clippy::disallowed_methods)]
pub fn timestamp() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
