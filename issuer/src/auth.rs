//! Authentication: who is asking. Three ways in:
//!
//! - an mTLS client certificate chaining to our roots: the identity is its SPIFFE ID
//!   (a workload renews its own identity);
//! - a bearer token made by `canopy-issuer token create`, stored only as a SHA-256
//!   hash and bound to one policy;
//! - a Kubernetes service-account JWT, verified offline against the cluster's JWKS,
//!   with audience and expiry checked: the identity is `spiffe://TD/ns/NS/sa/SA`.
//!
//! Signing may take a token from a short-lived in-memory cache instead of the
//! database ([`Authenticator::authenticate_to_sign`]): the store checks the token again
//! in the transaction that records the certificate ([`crate::store::Store::commit`]),
//! so a token revoked a moment ago still gets no certificate, while the hot path does
//! not ask the database twice per certificate.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use canopy::cert::Certificate;
use canopy::spiffe::{SpiffeId, TrustDomain};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ClusterConfig, ClusterName};
use crate::store::{Store, StoreError};

/// Prefix of canopy bearer tokens (tells them apart from JWTs at a glance).
pub const TOKEN_PREFIX: &str = "cnpy_";

/// How the requester proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// mTLS client certificate.
    Mtls,
    /// canopy bearer token.
    Token,
    /// Kubernetes service-account JWT.
    Kubernetes,
    /// A component of this issuer (a controller), not a network caller.
    Internal,
}

impl AuthMethod {
    /// Stable name stored with records.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Mtls => "mtls",
            AuthMethod::Token => "token",
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::Internal => "internal",
        }
    }
}

/// Who the requester is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A workload with a SPIFFE ID.
    Spiffe(SpiffeId),
    /// A holder of a token (or an internal caller) bound to a named policy.
    Bound {
        /// Printable name: `token:ID`, `controller:NAME`.
        name: String,
        /// Policy it is bound to.
        policy: String,
    },
}

/// An authenticated requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// Who.
    pub identity: Identity,
    /// How it authenticated.
    pub method: AuthMethod,
    /// The cluster it belongs to, when known (service-account JWTs).
    pub cluster: Option<ClusterName>,
    /// Its Kubernetes namespace, when known.
    pub namespace: Option<String>,
}

impl Requester {
    /// A requester inside the issuer (e.g. the cert-manager controller of a cluster),
    /// bound to a policy like a token.
    pub fn internal(name: impl Into<String>, policy: impl Into<String>) -> Self {
        Requester {
            identity: Identity::Bound {
                name: name.into(),
                policy: policy.into(),
            },
            method: AuthMethod::Internal,
            cluster: None,
            namespace: None,
        }
    }

    /// The SPIFFE ID of the requester, if it has one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        match &self.identity {
            Identity::Spiffe(id) => Some(id),
            Identity::Bound { .. } => None,
        }
    }

    /// Key for rate limiting.
    pub fn rate_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Identity::Spiffe(id) => write!(f, "{id}"),
            Identity::Bound { name, .. } => f.write_str(name),
        }
    }
}

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
    /// JWT refused.
    #[error("service-account token rejected: {0}")]
    Jwt(String),
    /// Client certificate not usable as an identity.
    #[error("client certificate rejected: {0}")]
    ClientCert(String),
    /// Storage could not be asked.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl AuthError {
    /// Stable code for API errors and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Malformed => "bad_authorization",
            AuthError::UnknownToken => "unknown_token",
            AuthError::Jwt(_) => "bad_jwt",
            AuthError::ClientCert(_) => "bad_client_certificate",
            AuthError::Storage(_) => "storage_unavailable",
        }
    }
}

/// A new token: `cnpy_ID.SECRET`. Returns (token, record id, hash).
pub fn new_token() -> (String, String, String) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = format!(
        "{TOKEN_PREFIX}{id}.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)
    );
    let hash = token_hash(&token);
    (token, id, hash)
}

/// SHA-256 of a token, lowercase hex: what is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One cluster's service-account token verifier.
struct ClusterJwt {
    name: ClusterName,
    audiences: Vec<String>,
    issuer: Option<String>,
    keys: Vec<(Option<String>, DecodingKey, Vec<Algorithm>)>,
}

/// Why JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster}: JWKS: {reason}")]
pub struct JwksError {
    cluster: String,
    reason: String,
}

/// How long a token found live in the database is taken as live before signing
/// without asking again (the commit asks again anyway).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens cached at most; past this the cache starts over.
const TOKEN_CACHE_MAX: usize = 4096;

/// A token found live in the database: its id and policy, and when it was looked up.
#[derive(Clone, Debug)]
struct CachedToken {
    id: String,
    policy: String,
    looked_up: Instant,
}

/// Turns credentials into a [`Requester`].
pub struct Authenticator {
    store: Store,
    trust_domain: TrustDomain,
    clusters: Vec<ClusterJwt>,
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

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Option<KubernetesInfo>,
}

#[derive(Deserialize)]
struct KubernetesInfo {
    namespace: String,
    serviceaccount: NamedRef,
}

#[derive(Deserialize)]
struct NamedRef {
    name: String,
}

fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys have no place in a public JWKS.
        AlgorithmParameters::OctetKey(_) => vec![],
    }
}

impl Authenticator {
    /// Loads the JWKS of every cluster that has JWT authentication.
    pub fn new(
        store: Store,
        trust_domain: TrustDomain,
        clusters: &[ClusterConfig],
    ) -> Result<Self, JwksError> {
        let mut verifiers = Vec::new();
        for cluster in clusters {
            let Some(jwt) = &cluster.jwt else { continue };
            let err = |reason: String| JwksError {
                cluster: cluster.name.to_string(),
                reason,
            };
            let value = match (&jwt.jwks, &jwt.jwks_file) {
                (Some(v), _) => v.clone(),
                (None, Some(path)) => read_json(path).map_err(err)?,
                (None, None) => return Err(err("no JWKS configured".into())),
            };
            let set: JwkSet =
                serde_json::from_value(value).map_err(|e| err(format!("not a JWK set: {e}")))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let algs = algorithms_for(jwk);
                if algs.is_empty() {
                    continue;
                }
                let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("bad key: {e}")))?;
                keys.push((jwk.common.key_id.clone(), key, algs));
            }
            if keys.is_empty() {
                return Err(err(
                    "no usable public key (RSA, EC P-256/P-384, Ed25519)".into()
                ));
            }
            verifiers.push(ClusterJwt {
                name: cluster.name.clone(),
                audiences: jwt.audiences.clone(),
                issuer: jwt.issuer.clone(),
                keys,
            });
        }
        Ok(Authenticator {
            store,
            trust_domain,
            clusters: verifiers,
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

    async fn token(&self, token: &str, cached: bool) -> Result<Requester, AuthError> {
        let hash = token_hash(token);
        let now = Instant::now();
        let hit = cached.then(|| self.cached_token(&hash, now)).flatten();
        let (id, policy) = match hit {
            Some(hit) => hit,
            None => {
                let record = self
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .filter(|t| t.revoked_at.is_none())
                    .ok_or(AuthError::UnknownToken)?;
                self.cache_token(hash, &record.id, &record.policy, now);
                (record.id, record.policy)
            }
        };
        Ok(Requester {
            identity: Identity::Bound {
                name: format!("token:{id}"),
                policy,
            },
            method: AuthMethod::Token,
            cluster: None,
            namespace: None,
        })
    }

    fn cached_token(&self, hash: &str, now: Instant) -> Option<(String, String)> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(hash)
            .filter(|t| now.saturating_duration_since(t.looked_up) < TOKEN_CACHE_TTL)
            .map(|t| (t.id.clone(), t.policy.clone()))
    }

    fn cache_token(&self, hash: String, id: &str, policy: &str, now: Instant) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(
            hash,
            CachedToken {
                id: id.to_string(),
                policy: policy.to_string(),
                looked_up: now,
            },
        );
    }

    /// Verifies a service-account JWT against every cluster's keys.
    fn service_account(&self, jwt: &str) -> Result<Requester, AuthError> {
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|_| AuthError::Jwt("not a well-formed JWT".into()))?;
        if self.clusters.is_empty() {
            return Err(AuthError::Jwt(
                "no cluster is configured for service-account tokens".into(),
            ));
        }
        for cluster in &self.clusters {
            for (kid, key, algs) in &cluster.keys {
                if header.kid.is_some() && kid.is_some() && header.kid != *kid {
                    continue;
                }
                if !algs.contains(&header.alg) {
                    continue;
                }
                let mut validation = Validation::new(header.alg);
                validation.leeway = 30;
                validation.set_audience(&cluster.audiences);
                validation.set_required_spec_claims(&["exp", "aud"]);
                if let Some(iss) = &cluster.issuer {
                    validation.set_issuer(&[iss]);
                }
                match jsonwebtoken::decode::<KubernetesClaims>(jwt, key, &validation) {
                    Ok(data) => return self.kubernetes_identity(&cluster.name, data.claims),
                    Err(e) => {
                        use jsonwebtoken::errors::ErrorKind as K;
                        let reason = match e.kind() {
                            K::InvalidSignature => continue,
                            K::ExpiredSignature => "token has expired".to_string(),
                            K::InvalidAudience => format!(
                                "audience is not accepted by cluster {} (expected {})",
                                cluster.name,
                                cluster.audiences.join(" or ")
                            ),
                            K::InvalidIssuer => format!("issuer is not cluster {}'s", cluster.name),
                            K::ImmatureSignature => "token is not valid yet".to_string(),
                            K::MissingRequiredClaim(c) => format!("claim {c:?} is missing"),
                            _ => "token could not be verified".to_string(),
                        };
                        // A valid signature with a bad claim is the most useful answer.
                        return Err(AuthError::Jwt(reason));
                    }
                }
            }
        }
        Err(AuthError::Jwt(
            "signature does not verify with any configured cluster's keys".into(),
        ))
    }

    fn kubernetes_identity(
        &self,
        cluster: &ClusterName,
        claims: KubernetesClaims,
    ) -> Result<Requester, AuthError> {
        let (namespace, account) = match (&claims.kubernetes, &claims.sub) {
            (Some(k), _) => (k.namespace.clone(), k.serviceaccount.name.clone()),
            (None, Some(sub)) => {
                let rest = sub
                    .strip_prefix("system:serviceaccount:")
                    .ok_or_else(|| AuthError::Jwt("not a service-account token".into()))?;
                let (ns, sa) = rest
                    .split_once(':')
                    .ok_or_else(|| AuthError::Jwt("malformed service-account subject".into()))?;
                (ns.to_string(), sa.to_string())
            }
            (None, None) => return Err(AuthError::Jwt("not a service-account token".into())),
        };
        let id = SpiffeId::kubernetes(&self.trust_domain, &namespace, &account)
            .map_err(|e| AuthError::Jwt(format!("service account name: {e}")))?;
        Ok(Requester {
            identity: Identity::Spiffe(id),
            method: AuthMethod::Kubernetes,
            cluster: Some(cluster.clone()),
            namespace: Some(namespace),
        })
    }

    /// A client certificate already verified by TLS against our roots.
    async fn client_certificate(&self, cert: &Certificate) -> Result<Requester, AuthError> {
        let id = cert
            .spiffe_id()
            .ok_or_else(|| AuthError::ClientCert("it carries no SPIFFE ID URI SAN".into()))?;
        if id.trust_domain() != &self.trust_domain {
            return Err(AuthError::ClientCert(format!(
                "SPIFFE ID {id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        if self.store.is_revoked(&cert.serial().to_string()).await? {
            return Err(AuthError::ClientCert("it has been revoked".into()));
        }
        let namespace = id.kubernetes_parts().map(|(ns, _)| ns.to_string());
        Ok(Requester {
            identity: Identity::Spiffe(id),
            method: AuthMethod::Mtls,
            cluster: None,
            namespace,
        })
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, id, hash) = new_token();
        let (b, _, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.contains(&id));
        assert_eq!(hash, token_hash(&a));
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a));
    }
}
