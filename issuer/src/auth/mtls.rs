//! mTLS client certificates: an identity only if canopy itself issued it.

use canopy::cert::Certificate;
use canopy::spiffe::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use super::{AuthError, AuthMethod, Authenticator, Requester};
use crate::policy::Presented;
use crate::store::StoreError;

/// Why a client certificate is no identity. Messages are safe to return.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    /// Outside its validity window at this request.
    #[error("it is not valid now (valid {not_before} to {not_after})")]
    NotValidNow {
        /// Its notBefore.
        not_before: OffsetDateTime,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },
    /// Not signed directly by one of this issuer's intermediates.
    #[error("it was not issued by one of this issuer's intermediates (a leaf of a mesh CA or of any other CA is no identity here)")]
    NotIssuedHere,
    /// Its serial is not in the store.
    #[error("it is not in this issuer's records")]
    NotRecorded,
    /// The store holds another certificate under its serial.
    #[error("it does not match the certificate recorded under its serial")]
    NotTheRecorded,
    /// Revoked.
    #[error("it has been revoked")]
    Revoked,
    /// No SPIFFE ID URI SAN.
    #[error("it carries no SPIFFE ID URI SAN")]
    NoSpiffeId,
    /// A SPIFFE ID of another trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {trust_domain}")]
    OtherTrustDomain {
        /// Its SPIFFE ID.
        id: SpiffeId,
        /// This issuer's trust domain.
        trust_domain: TrustDomain,
    },
    /// Its SPIFFE ID is on the deny list.
    #[error("SPIFFE ID {id} is on the deny list ({reason})")]
    Denied {
        /// Its SPIFFE ID.
        id: SpiffeId,
        /// Why it was denied.
        reason: String,
    },
}

impl Authenticator {
    /// A client certificate already verified by TLS against our roots. It is an
    /// identity only if canopy itself issued it: signed directly by one of this
    /// issuer's intermediates (not by a mesh CA or any other CA under the root),
    /// recorded, not revoked, not on the deny list, and valid now. The check runs on
    /// every request, so a resumed TLS session is held to it as well.
    pub(super) async fn client_certificate(
        &self,
        cert: &Certificate,
    ) -> Result<Requester, AuthError> {
        let now = crate::clock::now();
        if !cert.is_valid_at(now) {
            return Err(ClientCertError::NotValidNow {
                not_before: cert.not_before(),
                not_after: cert.not_after(),
            }
            .into());
        }
        let (intermediate, _) = self
            .intermediates
            .iter()
            .find(|(_, ca)| {
                cert.issuer_raw() == ca.subject_raw() && cert.verify_signed_by(ca).is_ok()
            })
            .ok_or(ClientCertError::NotIssuedHere)?;
        let serial = cert.serial().to_string();
        let record = match self.store.certificate(&serial).await {
            Ok(record) => record,
            Err(StoreError::NotFound) => return Err(ClientCertError::NotRecorded.into()),
            Err(e) => return Err(e.into()),
        };
        if record.fingerprint != cert.fingerprint_sha256() {
            return Err(ClientCertError::NotTheRecorded.into());
        }
        if record.revoked_at.is_some() {
            return Err(ClientCertError::Revoked.into());
        }
        let id = cert.spiffe_id().ok_or(ClientCertError::NoSpiffeId)?;
        if id.trust_domain() != &self.trust_domain {
            return Err(ClientCertError::OtherTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            }
            .into());
        }
        if let Some(reason) = self.store.denied(&id.to_string()).await? {
            return Err(ClientCertError::Denied { id, reason }.into());
        }
        let cluster = self.cluster_of_intermediate.get(intermediate).cloned();
        let presented = Presented {
            spiffe_id: Some(id.clone()),
            dns_names: cert.dns_names().to_vec(),
            ip_addresses: cert.ip_addresses().to_vec(),
        };
        let mut requester = Requester::service_account(AuthMethod::Mtls, cluster, id);
        requester.renewal_of = Some(presented);
        Ok(requester)
    }
}
