//! Authentication: who is asking, as one typed [`Requester`] for every entry point.
//!
//! - an mTLS client certificate: only a leaf signed directly by one of this issuer's
//!   intermediates, recorded in the store with that fingerprint, valid at this request
//!   (not only at the handshake: TLS 1.3 resumption skips it), not revoked and not on the
//!   deny list. Its SPIFFE ID is the identity, the cluster is that of the intermediate
//!   that issued it, and a renewal gets at most its names ([`Presented`]). A leaf
//!   from istiod's mesh CA, or minted with a stolen intermediate key but never recorded,
//!   is no identity;
//! - a bearer token made by `canopy-issuer token create`, stored only as a SHA-256
//!   hash, bound to one policy, with an expiry;
//! - a Kubernetes service-account JWT, verified offline against the JWKS of the cluster
//!   it names, with `iss`, `aud`, `exp`, `iat` required, `nbf` honoured and a maximum
//!   lifetime: the identity is `spiffe://TD/ns/NS/sa/SA`, bound to that namespace;
//! - a cert-manager CertificateRequest or a Kubernetes CSR: the requester is the creator
//!   the API server recorded (`spec.username`/`groups`) and the request's namespace
//!   ([`Requester::kubernetes_request`]); `trusted_requesters` act for any namespace.
//!
//! Signing may take a token from a short-lived in-memory cache instead of the
//! database ([`Authenticator::authenticate_to_sign`]): the store checks the token again
//! in the transaction that records the certificate ([`crate::store::Store::commit`]),
//! so a token revoked a moment ago still gets no certificate, while the hot path does
//!
//! The files: `requester.rs` (the [`Requester`] every path parses its caller into),
//! `token.rs` (bearer tokens and their cache), `jwt.rs` (service-account JWTs against each
//! cluster's JWKS), `mtls.rs` (client certificates canopy issued).

mod jwt;
mod mtls;
mod requester;
mod token;

pub use jwt::{JwksError, JwtError};
pub use mtls::ClientCertError;
pub use requester::{
    AuthMethod, KubernetesRequest, PodCertificateRequester, PolicyScope, Requester,
};
pub use token::{new_token, token_hash, TOKEN_PREFIX};

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use canopy::cert::Certificate;
use canopy::spiffe::TrustDomain;

use crate::config::ClusterConfig;
use crate::error_code::ErrorCode;
use crate::names::ClusterName;
use crate::store::{Store, StoreError};
use jwt::ClusterJwt;
use token::CachedToken;

/// Why a request is not authenticated. Messages are safe to return.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("authentication required: present a client certificate, a canopy token or a Kubernetes service-account token as `Authorization: Bearer ...`")]
    Missing,
    /// The Authorization header is not a bearer credential.
    #[error("the Authorization header must be `Bearer TOKEN`")]
    Malformed,
    /// Token not known (or revoked).
    #[error("unknown or revoked token")]
    UnknownToken,
    /// Token past its expiry.
    #[error("the token has expired: create a new one with `canopy-issuer token create`")]
    ExpiredToken,
    /// JWT refused.
    #[error("service-account token rejected: {0}")]
    Jwt(#[from] JwtError),
    /// Client certificate not usable as an identity.
    #[error("client certificate rejected: {0}")]
    ClientCert(#[from] ClientCertError),
    /// Storage could not be asked.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl AuthError {
    /// Stable code for API errors and metrics.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::Unauthenticated,
            AuthError::Malformed => ErrorCode::BadAuthorization,
            AuthError::UnknownToken => ErrorCode::UnknownToken,
            AuthError::ExpiredToken => ErrorCode::ExpiredToken,
            AuthError::Jwt(_) => ErrorCode::BadJwt,
            AuthError::ClientCert(_) => ErrorCode::BadClientCertificate,
            AuthError::Storage(_) => ErrorCode::StorageUnavailable,
        }
    }
}

/// Turns credentials into a [`Requester`].
pub struct Authenticator {
    store: Store,
    trust_domain: TrustDomain,
    clusters: Vec<ClusterJwt>,
    /// The intermediates whose leaves are identities (name, certificate), and the
    /// cluster each serves.
    intermediates: Vec<(String, Certificate)>,
    cluster_of_intermediate: HashMap<String, ClusterName>,
    /// Live tokens by hash, for signing only (see the module docs).
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("trust_domain", &self.trust_domain)
            .field("jwt_clusters", &self.clusters.len())
            .finish()
    }
}

impl Authenticator {
    /// Loads the JWKS of every cluster that has JWT authentication; `intermediates`
    /// (name, certificate) are those whose own leaves are accepted as mTLS identities.
    pub fn new(
        store: Store,
        trust_domain: TrustDomain,
        clusters: &[ClusterConfig],
        intermediates: Vec<(String, Certificate)>,
    ) -> Result<Self, JwksError> {
        let verifiers = ClusterJwt::load_all(clusters)?;
        let mut cluster_of_intermediate = HashMap::new();
        for cluster in clusters {
            cluster_of_intermediate
                .entry(cluster.intermediate.clone())
                .or_insert_with(|| cluster.name.clone());
        }
        Ok(Authenticator {
            store,
            trust_domain,
            clusters: verifiers,
            intermediates,
            cluster_of_intermediate,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Authenticates a request from its Authorization header and TLS client certificate.
    /// An explicit bearer credential wins over the client certificate.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&Certificate>,
    ) -> Result<Requester, AuthError> {
        self.authenticate_with(authorization, client_cert, false)
            .await
    }

    /// Like [`Self::authenticate`], for a sign request: a token seen live in the last
    /// few seconds is taken from memory. Only for requests whose result is recorded
    /// through [`crate::store::Store::commit`], which refuses a revoked token's
    /// certificate in the same transaction that would record it.
    pub async fn authenticate_to_sign(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&Certificate>,
    ) -> Result<Requester, AuthError> {
        self.authenticate_with(authorization, client_cert, true)
            .await
    }

    async fn authenticate_with(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&Certificate>,
        cached_token: bool,
    ) -> Result<Requester, AuthError> {
        if let Some(header) = authorization {
            let credential = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .ok_or(AuthError::Malformed)?;
            if credential.starts_with(TOKEN_PREFIX) {
                return self.token(credential, cached_token).await;
            }
            if credential.split('.').count() == 3 {
                return self.service_account(credential);
            }
            return Err(AuthError::UnknownToken);
        }
        if let Some(cert) = client_cert {
            return self.client_certificate(cert).await;
        }
        Err(AuthError::Missing)
    }

    /// Verifies a service-account JWT against every cluster's keys.
    fn service_account(&self, jwt: &str) -> Result<Requester, AuthError> {
        Ok(jwt::verify(&self.clusters, &self.trust_domain, jwt)?)
    }
}
