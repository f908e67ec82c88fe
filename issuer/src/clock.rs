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

/// `t` in Unix milliseconds (the audit log's and the store leases' unit).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(now_precise())
}

/// Now, as the Kubernetes types' timestamp (Lease times, status conditions).
#[allow(clippy::disallowed_methods)]
pub fn timestamp() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
