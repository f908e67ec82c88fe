//! The issuer's one reading of the wall clock.

use time::OffsetDateTime;

/// Now, in whole seconds: certificates carry whole seconds, so a plan made with
/// sub-second precision would not match the certificate signed from it.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}
