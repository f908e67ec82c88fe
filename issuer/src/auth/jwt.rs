//! Kubernetes service-account JWTs: each cluster's JWKS loaded once at start, a token
//! verified offline against the keys of the cluster that signed it, with `iss`, `aud`,
//! `exp`, `iat` required, `nbf` honoured and a maximum lifetime. The identity is
//! `spiffe://TD/ns/NS/sa/SA`, bound to that namespace.

use std::path::Path;

use canopy::spiffe::{SpiffeError, SpiffeId, TrustDomain};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

use super::{AuthMethod, Requester};
use crate::config::{ClusterConfig, Jwks};
use crate::names::ClusterName;

/// Why a service-account JWT is refused. Messages are safe to return.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64 parts with a JSON header.
    #[error("not a well-formed JWT")]
    Malformed,
    /// No cluster has JWT authentication.
    #[error("no cluster is configured for service-account tokens")]
    NoCluster,
    /// `exp - iat` over the cluster's maximum.
    #[error("token lifetime {lifetime}s is longer than cluster {cluster}'s maximum {max}s: request a shorter-lived projected token")]
    TooLong {
        /// `exp - iat`, seconds.
        lifetime: i64,
        /// The cluster whose key signed it.
        cluster: ClusterName,
        /// That cluster's maximum, seconds.
        max: i64,
    },
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// `aud` is none of the cluster's audiences.
    #[error("audience is not accepted by cluster {cluster} (expected {})", .expected.join(" or "))]
    Audience {
        /// The cluster whose key signed it.
        cluster: ClusterName,
        /// Its audiences.
        expected: Vec<String>,
    },
    /// `iss` is not the cluster's issuer.
    #[error("issuer is not cluster {0}'s")]
    Issuer(ClusterName),
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// A required claim is absent.
    #[error("claim {0:?} is missing")]
    MissingClaim(String),
    /// Any other verification failure.
    #[error("token could not be verified")]
    Unverifiable,
    /// Not a service account's token.
    #[error("not a service-account token")]
    NotServiceAccount,
    /// `sub` is not `system:serviceaccount:NS:SA`.
    #[error("malformed service-account subject")]
    MalformedSubject,
    /// The namespace or service account makes no SPIFFE ID.
    #[error("service account name: {0}")]
    ServiceAccountName(SpiffeError),
    /// No configured key verifies the signature.
    #[error("signature does not verify with any configured cluster's keys")]
    UnknownSigner,
}

/// Why JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster}: JWKS: {reason}")]
pub struct JwksError {
    cluster: String,
    reason: String,
}

/// One cluster's service-account token verifier.
pub(super) struct ClusterJwt {
    name: ClusterName,
    audiences: Vec<String>,
    issuer: String,
    max_lifetime: i64,
    keys: Vec<(Option<String>, DecodingKey, Vec<Algorithm>)>,
}

impl ClusterJwt {
    /// The verifiers of every cluster that has JWT authentication.
    pub(super) fn load_all(clusters: &[ClusterConfig]) -> Result<Vec<ClusterJwt>, JwksError> {
        let mut verifiers = Vec::new();
        for cluster in clusters {
            verifiers.extend(ClusterJwt::load(cluster)?);
        }
        Ok(verifiers)
    }

    /// The verifier of `cluster`, if it has JWT authentication.
    fn load(cluster: &ClusterConfig) -> Result<Option<ClusterJwt>, JwksError> {
        let Some(jwt) = &cluster.jwt else {
            return Ok(None);
        };
        let err = |reason: String| JwksError {
            cluster: cluster.name.to_string(),
            reason,
        };
        let value = match &jwt.jwks {
            Jwks::Inline(v) => v.clone(),
            Jwks::File(path) => read_json(path).map_err(err)?,
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
        Ok(Some(ClusterJwt {
            name: cluster.name.clone(),
            audiences: jwt.audiences.clone(),
            issuer: jwt.issuer.clone(),
            max_lifetime: jwt.max_token_lifetime.as_seconds(),
            keys,
        }))
    }

    /// The token's claims if one of this cluster's keys signed it: `None` when none of
    /// them did, an error when one did but a claim is refused.
    fn verify(&self, header: &Header, jwt: &str) -> Option<Result<KubernetesClaims, JwtError>> {
        for (kid, key, algs) in &self.keys {
            if header.kid.is_some() && kid.is_some() && header.kid != *kid {
                continue;
            }
            if !algs.contains(&header.alg) {
                continue;
            }
            let mut validation = Validation::new(header.alg);
            validation.leeway = 30;
            validation.set_audience(&self.audiences);
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "aud", "iss", "iat"]);
            validation.set_issuer(&[&self.issuer]);
            match jsonwebtoken::decode::<KubernetesClaims>(jwt, key, &validation) {
                Ok(data) => {
                    let lifetime = data.claims.exp - data.claims.iat;
                    if lifetime > self.max_lifetime {
                        return Some(Err(JwtError::TooLong {
                            lifetime,
                            cluster: self.name.clone(),
                            max: self.max_lifetime,
                        }));
                    }
                    return Some(Ok(data.claims));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    let refused = match e.kind() {
                        K::InvalidSignature => continue,
                        K::ExpiredSignature => JwtError::Expired,
                        K::InvalidAudience => JwtError::Audience {
                            cluster: self.name.clone(),
                            expected: self.audiences.clone(),
                        },
                        K::InvalidIssuer => JwtError::Issuer(self.name.clone()),
                        K::ImmatureSignature => JwtError::NotYetValid,
                        K::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
                        _ => JwtError::Unverifiable,
                    };
                    // A valid signature with a bad claim is the most useful answer.
                    return Some(Err(refused));
                }
            }
        }
        None
    }
}

/// Verifies a service-account JWT against every cluster's keys; the requester is the
/// service account, in the cluster whose key signed the token.
pub(super) fn verify(
    clusters: &[ClusterJwt],
    trust_domain: &TrustDomain,
    jwt: &str,
) -> Result<Requester, JwtError> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| JwtError::Malformed)?;
    if clusters.is_empty() {
        return Err(JwtError::NoCluster);
    }
    for cluster in clusters {
        if let Some(claims) = cluster.verify(&header, jwt) {
            return kubernetes_identity(trust_domain, &cluster.name, claims?);
        }
    }
    Err(JwtError::UnknownSigner)
}

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    sub: Option<String>,
    exp: i64,
    iat: i64,
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

fn kubernetes_identity(
    trust_domain: &TrustDomain,
    cluster: &ClusterName,
    claims: KubernetesClaims,
) -> Result<Requester, JwtError> {
    let (namespace, account) = match (&claims.kubernetes, &claims.sub) {
        (Some(k), _) => (k.namespace.clone(), k.serviceaccount.name.clone()),
        (None, Some(sub)) => {
            let rest = sub
                .strip_prefix("system:serviceaccount:")
                .ok_or(JwtError::NotServiceAccount)?;
            let (ns, sa) = rest.split_once(':').ok_or(JwtError::MalformedSubject)?;
            (ns.to_string(), sa.to_string())
        }
        (None, None) => return Err(JwtError::NotServiceAccount),
    };
    let id = SpiffeId::kubernetes(trust_domain, &namespace, &account)
        .map_err(JwtError::ServiceAccountName)?;
    Ok(Requester::service_account(
        AuthMethod::Kubernetes,
        Some(cluster.clone()),
        id,
    ))
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

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}
