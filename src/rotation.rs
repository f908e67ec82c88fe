//! Root rotation across clusters (A → B), as pure functions.
//!
//! Each cluster's mesh CA chains to one root and each cluster's `root-cert.pem` trusts a set
//! of roots. A rotation must keep one property at every step: a leaf issued in any cluster
//! (alive for up to one workload TTL) verifies against every cluster's trusted roots. So:
//!
//! 1. every cluster trusts both roots (old first, then new);
//! 2. once every cluster is seen trusting the new root, clusters move their mesh CA to the
//!    new root one at a time (one move per pass, in the order given);
//! 3. once every cluster signs under the new root and one workload TTL has passed since the
//!    last move (so no leaf under the old root is alive), the old root is dropped everywhere.
//!
//! Decisions are made from what was observed at the start of a pass; the caller then writes
//! each cluster. Nothing here reads a clock: `now` is passed in.

use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// A configured rotation: roots named by their SHA-256 fingerprints (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The root being retired (A).
    pub old_root: String,
    /// The root taking over (B).
    pub new_root: String,
    /// The longest workload certificate lifetime in the mesh: how long leaves issued under the
    /// old root stay alive after the last cluster moved.
    pub workload_ttl: Duration,
}

/// What one cluster holds now, as read from its `cacerts` Secret.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observed {
    /// Fingerprints of the roots in `root-cert.pem` (empty when the Secret is absent or unreadable).
    pub trusts: Vec<String>,
    /// Fingerprint of the root the mesh CA chains to, if it verifies.
    pub signs_under: Option<String>,
    /// When the current mesh CA was first published (None when unknown).
    pub since: Option<OffsetDateTime>,
}

/// Which of the two roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Root {
    /// The root being retired.
    Old,
    /// The root taking over.
    New,
}

/// What to write into one cluster in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Roots for `root-cert.pem`, in this order.
    pub trust: Vec<Root>,
    /// The root the mesh CA must chain to.
    pub sign_under: Root,
}

/// Where one cluster stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterPhase {
    /// Does not trust the new root yet.
    TrustsOldOnly,
    /// Trusts both roots; its mesh CA still chains to the old one.
    TrustsBoth,
    /// Its mesh CA chains to the new root; still trusts the old one.
    Moved,
    /// Trusts and signs under the new root only.
    Done,
    /// Holds nothing usable (no Secret, or a CA under neither root).
    Unknown,
}

/// Where the whole mesh stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum MeshPhase {
    /// Phase 1: adding the new root to every cluster's `root-cert.pem`.
    AddingNewRoot {
        /// Clusters not yet seen trusting the new root.
        pending: Vec<String>,
    },
    /// Phase 2: moving mesh CAs to the new root, one cluster at a time.
    Moving {
        /// Clusters already moved.
        moved: usize,
        /// All clusters.
        total: usize,
    },
    /// Phase 3a: every cluster moved; waiting for leaves under the old root to expire.
    Draining {
        /// When the old root may be dropped.
        until: OffsetDateTime,
    },
    /// Phase 3b: dropping the old root.
    RemovingOldRoot {
        /// Clusters still trusting the old root.
        pending: Vec<String>,
    },
    /// Nothing trusts or signs under the old root any more.
    Complete,
}

impl Rotation {
    fn is_old(&self, fp: &str) -> bool {
        fp == self.old_root
    }
    fn is_new(&self, fp: &str) -> bool {
        fp == self.new_root
    }

    fn trusts_new(&self, o: &Observed) -> bool {
        o.trusts.iter().any(|f| self.is_new(f))
    }

    fn moved(&self, o: &Observed) -> bool {
        o.signs_under.as_deref().is_some_and(|f| self.is_new(f))
    }

    /// The moment the old root may be dropped, if every cluster has moved.
    pub fn drain_until(&self, clusters: &[Observed]) -> Option<OffsetDateTime> {
        if clusters.is_empty() || !clusters.iter().all(|o| self.moved(o)) {
            return None;
        }
        // A moved cluster whose move time is unknown blocks the drop: no guess is safe.
        let last = clusters
            .iter()
            .map(|o| o.since)
            .collect::<Option<Vec<_>>>()?;
        last.into_iter().max().map(|t| t + self.workload_ttl)
    }

    /// The phase of one cluster.
    pub fn cluster_phase(&self, o: &Observed) -> ClusterPhase {
        let old = o.trusts.iter().any(|f| self.is_old(f));
        let new = self.trusts_new(o);
        match (o.signs_under.as_deref(), old, new) {
            (Some(s), _, true) if self.is_new(s) && !old => ClusterPhase::Done,
            (Some(s), _, true) if self.is_new(s) => ClusterPhase::Moved,
            (Some(s), true, true) if self.is_old(s) => ClusterPhase::TrustsBoth,
            (Some(s), true, false) if self.is_old(s) => ClusterPhase::TrustsOldOnly,
            _ => ClusterPhase::Unknown,
        }
    }

    /// The phase of the mesh, from every cluster's observed state (in configured order).
    pub fn mesh_phase(
        &self,
        names: &[&str],
        clusters: &[Observed],
        now: OffsetDateTime,
    ) -> MeshPhase {
        let named = || names.iter().zip(clusters);
        let pending_new: Vec<String> = named()
            .filter(|(_, o)| !self.trusts_new(o))
            .map(|(n, _)| n.to_string())
            .collect();
        let moved = clusters.iter().filter(|o| self.moved(o)).count();
        if moved < clusters.len() || clusters.is_empty() {
            if !pending_new.is_empty() {
                return MeshPhase::AddingNewRoot {
                    pending: pending_new,
                };
            }
            return MeshPhase::Moving {
                moved,
                total: clusters.len(),
            };
        }
        let pending_old: Vec<String> = named()
            .filter(|(_, o)| o.trusts.iter().any(|f| self.is_old(f)))
            .map(|(n, _)| n.to_string())
            .collect();
        if pending_old.is_empty() && pending_new.is_empty() {
            return MeshPhase::Complete;
        }
        match self.drain_until(clusters) {
            Some(until) if now < until => MeshPhase::Draining { until },
            None => MeshPhase::Draining {
                until: OffsetDateTime::UNIX_EPOCH,
            },
            _ => MeshPhase::RemovingOldRoot {
                pending: pending_old,
            },
        }
    }

    /// What each cluster (in configured order) should hold after this pass.
    pub fn decide(&self, clusters: &[Observed], now: OffsetDateTime) -> Vec<Decision> {
        let all_trust_new = !clusters.is_empty() && clusters.iter().all(|o| self.trusts_new(o));
        let drop_old = self.drain_until(clusters).is_some_and(|until| now >= until);
        // The one cluster that moves in this pass: the first not yet moved, and only once
        // every cluster is seen trusting the new root.
        let mover = if all_trust_new {
            clusters.iter().position(|o| !self.moved(o))
        } else {
            None
        };
        clusters
            .iter()
            .enumerate()
            .map(|(i, o)| Decision {
                trust: if drop_old {
                    vec![Root::New]
                } else {
                    vec![Root::Old, Root::New]
                },
                sign_under: if self.moved(o) || mover == Some(i) {
                    Root::New
                } else {
                    Root::Old
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const A: &str = "aaaa";
    const B: &str = "bbbb";

    fn rot() -> Rotation {
        Rotation {
            old_root: A.into(),
            new_root: B.into(),
            workload_ttl: Duration::hours(24),
        }
    }

    fn fp(r: Root) -> String {
        match r {
            Root::Old => A.into(),
            Root::New => B.into(),
        }
    }

    fn start(n: usize, at: OffsetDateTime) -> Vec<Observed> {
        (0..n)
            .map(|_| Observed {
                trusts: vec![A.into()],
                signs_under: Some(A.into()),
                since: Some(at),
            })
            .collect()
    }

    /// Applies a decision as the issuer's write would.
    fn apply(o: &mut Observed, d: &Decision, now: OffsetDateTime) {
        o.trusts = d.trust.iter().copied().map(fp).collect();
        let signs = fp(d.sign_under);
        if o.signs_under.as_deref() != Some(signs.as_str()) {
            o.signs_under = Some(signs);
            o.since = Some(now);
        }
    }

    #[test]
    fn a_full_rotation_walks_the_phases_in_order() {
        let r = rot();
        let names = ["aws", "azure"];
        let mut now = datetime!(2026-01-01 0:00 UTC);
        let mut s = start(2, now);
        assert_eq!(
            r.mesh_phase(&names, &s, now),
            MeshPhase::AddingNewRoot {
                pending: vec!["aws".into(), "azure".into()]
            }
        );
        assert_eq!(r.cluster_phase(&s[0]), ClusterPhase::TrustsOldOnly);
        let mut seen = Vec::new();
        for _ in 0..10 {
            let d = r.decide(&s, now);
            for (o, d) in s.iter_mut().zip(&d) {
                apply(o, d, now);
            }
            seen.push(r.mesh_phase(&names, &s, now));
            now += Duration::hours(13);
        }
        assert_eq!(r.cluster_phase(&s[0]), ClusterPhase::Done);
        assert_eq!(*seen.last().unwrap(), MeshPhase::Complete);
        assert_eq!(seen[0], MeshPhase::Moving { moved: 0, total: 2 });
        assert_eq!(seen[1], MeshPhase::Moving { moved: 1, total: 2 });
        assert!(matches!(seen[2], MeshPhase::Draining { .. }), "{seen:?}");
    }

    #[test]
    fn nothing_moves_while_a_cluster_is_unseen() {
        let r = rot();
        let now = datetime!(2026-01-01 0:00 UTC);
        let mut s = start(2, now);
        s[0].trusts = vec![A.into(), B.into()];
        s[1] = Observed::default();
        let d = r.decide(&s, now);
        assert!(d.iter().all(|d| d.sign_under == Root::Old));
        assert!(d.iter().all(|d| d.trust == vec![Root::Old, Root::New]));
    }

    #[test]
    fn old_root_stays_while_a_move_time_is_unknown() {
        let r = rot();
        let now = datetime!(2026-01-01 0:00 UTC);
        let s = vec![Observed {
            trusts: vec![A.into(), B.into()],
            signs_under: Some(B.into()),
            since: None,
        }];
        assert_eq!(r.decide(&s, now + Duration::days(400))[0].trust.len(), 2);
    }

    proptest! {
        /// Any interleaving of passes (some writes failing) and clock steps keeps every live
        /// leaf verifiable in every cluster, and a rotation with working clusters finishes.
        #[test]
        fn every_live_leaf_stays_trusted_everywhere(
            n in 1usize..5,
            steps in proptest::collection::vec((proptest::collection::vec(any::<bool>(), 4), 0i64..40), 1..40),
        ) {
            let r = rot();
            let mut now = datetime!(2026-01-01 0:00 UTC);
            let mut s = start(n, now);
            // Per cluster: when it last signed under the old root (leaves alive until + ttl).
            let mut last_old: Vec<Option<OffsetDateTime>> = vec![Some(now); n];
            let check = |s: &[Observed], last_old: &[Option<OffsetDateTime>], now: OffsetDateTime| {
                for (x, o) in s.iter().enumerate() {
                    let live_old = last_old[x].is_some_and(|t| t + r.workload_ttl > now)
                        || o.signs_under.as_deref() == Some(A);
                    for y in s {
                        if live_old {
                            prop_assert!(y.trusts.iter().any(|f| f == A), "old leaf of {x} untrusted");
                        }
                        if o.signs_under.as_deref() == Some(B) {
                            prop_assert!(y.trusts.iter().any(|f| f == B), "new leaf of {x} untrusted");
                        }
                    }
                }
                Ok(())
            };
            for (ok, hours) in steps {
                let d = r.decide(&s, now);
                for (i, (o, d)) in s.iter_mut().zip(&d).enumerate() {
                    if ok[i % ok.len()] {
                        if o.signs_under.as_deref() == Some(A) && d.sign_under == Root::New {
                            last_old[i] = Some(now);
                        }
                        apply(o, d, now);
                    }
                }
                check(&s, &last_old, now)?;
                now += Duration::hours(hours);
                check(&s, &last_old, now)?;
            }
            // With every write succeeding, the rotation completes.
            for _ in 0..(2 * n + 4) {
                let d = r.decide(&s, now);
                for (o, d) in s.iter_mut().zip(&d) {
                    apply(o, d, now);
                }
                now += Duration::hours(25);
            }
            let names: Vec<&str> = (0..n).map(|_| "c").collect();
            prop_assert_eq!(r.mesh_phase(&names, &s, now), MeshPhase::Complete);
        }
    }
}
