//! Finding the certificate already signed for a request, so that a retry after a
//! crash (signed and recorded, status not written) hands back the same certificate
//! instead of signing a second one.
//!
//! The record's `requester` names the request with its UID (see
//! [`super::requester_for`]), and the store has an index on `requester`: one query.
//! It runs only for requests we touched before (they carry our `Ready` condition),
//! not on the first attempt.

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

/// A recorded certificate as status wants it: (leaf + intermediates PEM, roots PEM).
pub(crate) fn chain_of(issuer: &Issuer, record: &CertificateRecord) -> Option<(String, String)> {
    let leaf = Certificate::from_der(record.der.clone()).ok()?;
    let inter = issuer.authorities().get(&record.intermediate)?;
    let mut chain = leaf.to_pem();
    chain.push_str(&inter.chain_pem);
    Some((chain, issuer.authorities().roots_pem.to_string()))
}
