//! Certificate revocation lists: one per intermediate, from the revocations in the
//! database, signed again only when they change or the list comes near its nextUpdate.

use std::collections::HashMap;
use std::sync::Arc;

use canopy::crl::{Crl, RevocationReason, RevokedEntry};
use canopy::serial::Serial;
use time::OffsetDateTime;

use super::{IssueError, Issuer};

impl Issuer {
    /// The CRL of an intermediate. Signed again only when its revocations changed or
    /// its nextUpdate comes near; otherwise the cached one is served (a revocation on
    /// any replica shows at once, since the list is read from the database).
    pub async fn crl(&self, intermediate: &str) -> Result<Arc<Crl>, IssueError> {
        let now = crate::clock::now();
        let inter = self.authorities.get(intermediate).ok_or_else(|| {
            IssueError::NotFound(format!("unknown intermediate {intermediate:?}"))
        })?;
        let revoked = self
            .store
            .revoked(intermediate, now.unix_timestamp())
            .await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial: Serial = r
                .serial
                .parse()
                .map_err(|_| IssueError::Internal("stored serial is malformed".into()))?;
            entries.push(RevokedEntry {
                serial,
                revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                    .map_err(|_| IssueError::Internal("stored time is malformed".into()))?,
                reason: r
                    .reason
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(RevocationReason::Unspecified),
            });
        }
        if let Some(crl) = self.crls.get(intermediate, &entries, now) {
            return Ok(crl);
        }
        // Milliseconds since the epoch: increases across restarts and replicas.
        let number = u64::try_from(crate::clock::unix_ms(now)).unwrap_or_default();
        let this_update = now - time::Duration::seconds(60);
        let next_update = now + CRL_VALIDITY;
        let crl = Arc::new(
            inter
                .ca
                .sign_crl(&entries, number, this_update, next_update)
                .map_err(|e| IssueError::Internal(e.to_string()))?,
        );
        self.metrics.crl_signed();
        self.crls
            .put(intermediate, entries, next_update, crl.clone());
        Ok(crl)
    }
}

/// How long a CRL is valid (its nextUpdate).
const CRL_VALIDITY: time::Duration = time::Duration::hours(1);
/// A cached CRL is signed again this long before its nextUpdate.
const CRL_REFRESH_BEFORE: time::Duration = time::Duration::minutes(15);

/// The last CRL signed per intermediate and the entries it lists.
#[derive(Debug, Default)]
pub(super) struct CrlCache {
    by_intermediate: std::sync::Mutex<HashMap<String, CachedCrl>>,
}

#[derive(Debug)]
struct CachedCrl {
    entries: Vec<RevokedEntry>,
    next_update: OffsetDateTime,
    crl: Arc<Crl>,
}

impl CrlCache {
    fn get(
        &self,
        intermediate: &str,
        entries: &[RevokedEntry],
        now: OffsetDateTime,
    ) -> Option<Arc<Crl>> {
        let cache = self
            .by_intermediate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache
            .get(intermediate)
            .filter(|c| c.entries == entries && now < c.next_update - CRL_REFRESH_BEFORE)
            .map(|c| c.crl.clone())
    }

    fn put(
        &self,
        intermediate: &str,
        entries: Vec<RevokedEntry>,
        next_update: OffsetDateTime,
        crl: Arc<Crl>,
    ) {
        let mut cache = self
            .by_intermediate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.insert(
            intermediate.to_string(),
            CachedCrl {
                entries,
                next_update,
                crl,
            },
        );
    }
}
