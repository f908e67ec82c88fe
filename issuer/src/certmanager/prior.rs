//! Finding the certificate already signed for a request, so that a retry after a
//! crash (signed and recorded, status not written) hands back the same certificate
//! instead of signing a second one.
//!
//! The record's `requester` names the request with its UID (see
//! [`super::Context::requester`]), and the store has an index on `requester`: one
//! query. The one reconcile ([`super::reconcile`]) asks before every signing, for
//! every kind.

use canopy::cert::Certificate;

use crate::store::{CertificateFilter, CertificateRecord, Store, StoreError};
use crate::Issuer;

/// The unexpired certificate recorded for `requester`, if any.
pub(crate) async fn find(
    store: &Store,
    requester: &str,
    spiffe_id: Option<&str>,
    now: i64,
) -> Result<Option<CertificateRecord>, StoreError> {
    let filter = CertificateFilter {
        requester: Some(requester.to_string()),
        spiffe_id: spiffe_id.map(str::to_string),
        expires_after: Some(now),
        revoked: Some(false),
        ..CertificateFilter::default()
    };
    let (page, _) = store.certificates(&filter, None, 1).await?;
    Ok(page.into_iter().next())
}

/// A certificate signed for a request on an earlier pass.
pub(crate) struct Earlier {
    /// Its record.
    pub(crate) record: CertificateRecord,
    /// The leaf.
    pub(crate) leaf: Certificate,
    /// The intermediates that signed it, PEM.
    pub(crate) intermediates_pem: String,
    /// The roots, PEM.
    pub(crate) roots_pem: String,
}

/// A recorded certificate with its chain, if its intermediate is still loaded.
pub(crate) fn signed_before(issuer: &Issuer, record: CertificateRecord) -> Option<Earlier> {
    let leaf = Certificate::from_der(record.der.clone()).ok()?;
    let inter = issuer.authorities().get(&record.intermediate)?;
    Some(Earlier {
        leaf,
        intermediates_pem: inter.chain_pem.to_string(),
        roots_pem: issuer.authorities().roots_pem.to_string(),
        record,
    })
}
