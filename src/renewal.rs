//! When to renew a CA or certificate: pure functions of its validity and "now".

use time::{Duration, OffsetDateTime};

/// The fraction of the lifetime after which canopy renews (2/3, as istiod and cert-manager do).
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;
/// The most the renewal moment is pulled earlier, as a fraction of the lifetime, to spread renewals.
pub const MAX_JITTER_FRACTION: f64 = 0.05;

/// The moment to renew: at 2/3 of the life, earlier by `jitter` (0.0..=1.0) × 5% of the life.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let life = (not_after - not_before).as_seconds_f64();
    let j = jitter.clamp(0.0, 1.0) * MAX_JITTER_FRACTION;
    not_before + Duration::seconds_f64(life * (RENEW_FRACTION - j))
}

/// How much of the lifetime has passed at `now` (0.0 before the start, 1.0 at or after the end).
pub fn life_used(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> f64 {
    let life = (not_after - not_before).as_seconds_f64();
    if life <= 0.0 {
        return 1.0;
    }
    ((now - not_before).as_seconds_f64() / life).clamp(0.0, 1.0)
}

/// Whether `now` is in the last tenth of the lifetime (the point where readiness should fail
/// if renewal keeps failing).
pub fn in_last_tenth(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    life_used(not_before, not_after, now) >= 0.9
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    #[test]
    fn renews_at_two_thirds() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = nb + Duration::days(90);
        assert_eq!(renew_at(nb, na, 0.0), nb + Duration::days(60));
        assert!(renew_at(nb, na, 1.0) < nb + Duration::days(60));
        assert!(in_last_tenth(nb, na, nb + Duration::days(82)));
        assert!(!in_last_tenth(nb, na, nb + Duration::days(80)));
    }

    proptest! {
        #[test]
        fn renewal_is_inside_the_life_and_before_expiry(days in 1i64..4000, jitter in 0.0f64..=1.0) {
            let nb = datetime!(2026-01-01 0:00 UTC);
            let na = nb + Duration::days(days);
            let at = renew_at(nb, na, jitter);
            prop_assert!(at > nb && at < na);
            let used = life_used(nb, na, at);
            prop_assert!((RENEW_FRACTION - MAX_JITTER_FRACTION - 1e-6..=RENEW_FRACTION + 1e-6).contains(&used));
        }
    }
}
