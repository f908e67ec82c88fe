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

use crate::config::{ClusterConfig, Jwks};
use crate::error_code::ErrorCode;
use crate::names::ClusterName;
use crate::policy::Presented;
use crate::store::{Store, StoreError};

/// Prefix of canopy bearer tokens (tells them apart from JWTs at a glance).
pub const TOKEN_PREFIX: &str = "cnpy_";

/// How the requester proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// mTLS client certificate issued by canopy.
    Mtls,
    /// canopy bearer token.
    Token,
    /// Kubernetes service-account JWT.
    Kubernetes,
    /// A cert-manager CertificateRequest (its creator, as cert-manager's webhook wrote it).
    CertManager,
    /// A Kubernetes CertificateSigningRequest (its creator, as the API server wrote it).
    CsrApi,
    /// A Kubernetes PodCertificateRequest (the pod's service account, as the API
    /// server holds it).
    PodCertificate,
    /// A component of this issuer, not a network caller.
    Internal,
}

impl AuthMethod {
    /// Stable name stored with records.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Mtls => "mtls",
            AuthMethod::Token => "token",
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::CertManager => "cert-manager",
            AuthMethod::CsrApi => "csr-api",
            AuthMethod::PodCertificate => "pod-certificate",
            AuthMethod::Internal => "internal",
        }
    }
}

/// Which policies a requester is decided under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyScope {
    /// The one policy a token (or a cluster's controller) is bound to.
    Bound(String),
    /// Every policy whose `identities` match the requester's SPIFFE ID.
    ByIdentity,
}

/// An authenticated requester, parsed once at the edge (authorization.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// How it authenticated.
    pub method: AuthMethod,
    /// Printable identity, recorded with what it gets: a SPIFFE ID, `token:ID`,
    /// `certificaterequest:CLUSTER/NS/NAME#UID`.
    pub name: String,
    /// The policies it is decided under.
    pub scope: PolicyScope,
    /// Its cluster, when known.
    pub cluster: Option<ClusterName>,
    /// Its namespace, when it has one (a request's: where it was created).
    pub namespace: Option<String>,
    /// Whether its names are bound to `namespace` (false for a trusted requester).
    pub bound_to_namespace: bool,
    /// Its Kubernetes service account, when it is one.
    pub service_account: Option<String>,
    /// Its own SPIFFE ID, when it has one.
    pub spiffe_id: Option<SpiffeId>,
    /// Kubernetes user name (`spec.username` of a request).
    pub username: Option<String>,
    /// Kubernetes groups (`spec.groups` of a request).
    pub groups: Vec<String>,
    /// The token it presented, if any.
    pub token_id: Option<String>,
    /// For an mTLS renewal, the names of the certificate presented: the most it gets.
    pub renewal_of: Option<Presented>,
}

impl Requester {
    fn new(method: AuthMethod, name: String, scope: PolicyScope) -> Self {
        Requester {
            method,
            name,
            scope,
            cluster: None,
            namespace: None,
            bound_to_namespace: true,
            service_account: None,
            spiffe_id: None,
            username: None,
            groups: Vec::new(),
            token_id: None,
            renewal_of: None,
        }
    }

    /// A requester inside the issuer, bound to a policy like a token.
    pub fn internal(name: impl Into<String>, policy: impl Into<String>) -> Self {
        Requester::new(
            AuthMethod::Internal,
            name.into(),
            PolicyScope::Bound(policy.into()),
        )
    }

    /// The holder of token `id`, bound to `policy`.
    pub fn token(id: &str, policy: &str) -> Self {
        let mut r = Requester::new(
            AuthMethod::Token,
            format!("token:{id}"),
            PolicyScope::Bound(policy.to_string()),
        );
        r.token_id = Some(id.to_string());
        r
    }

    /// A service account of `cluster` (`spiffe://TD/ns/NS/sa/SA`), decided by identity.
    pub fn service_account(method: AuthMethod, cluster: Option<ClusterName>, id: SpiffeId) -> Self {
        let mut r = Requester::new(method, id.to_string(), PolicyScope::ByIdentity);
        if let Some((ns, sa)) = id.kubernetes_parts() {
            r.namespace = Some(ns.to_string());
            r.service_account = Some(sa.to_string());
        }
        r.cluster = cluster;
        r.spiffe_id = Some(id);
        r
    }

    /// The creator of a Kubernetes request (cert-manager CertificateRequest or CSR),
    /// from what the API server or cert-manager's webhook wrote (`spec.username`,
    /// `spec.groups`). Its names are bound to `namespace` unless it is `trusted`
    /// (a configured `trusted_requesters` entry, such as istio-csr).
    pub fn kubernetes_request(request: KubernetesRequest<'_>, trust_domain: &TrustDomain) -> Self {
        let path = match request.namespace {
            Some(ns) => format!("{ns}/{}", request.name),
            None => request.name.to_string(),
        };
        let mut r = Requester::new(
            request.method,
            format!(
                "{}:{}/{path}#{}",
                request.kind, request.cluster, request.uid
            ),
            PolicyScope::Bound(request.policy.to_string()),
        );
        r.cluster = Some(request.cluster.clone());
        r.username = request.username.map(str::to_string);
        r.groups = request.groups.to_vec();
        let account = request
            .username
            .and_then(|u| u.strip_prefix("system:serviceaccount:"))
            .and_then(|rest| rest.split_once(':'));
        // A CSR is cluster-scoped: a service account's names are bound to its own
        // namespace; a CertificateRequest's to the namespace it was created in.
        let namespace = request
            .namespace
            .map(str::to_string)
            .or_else(|| account.map(|(ns, _)| ns.to_string()));
        if let Some((ns, sa)) = account {
            if namespace.as_deref() == Some(ns) {
                r.service_account = Some(sa.to_string());
                r.spiffe_id = SpiffeId::kubernetes(trust_domain, ns, sa).ok();
            }
        }
        r.namespace = namespace;
        r.bound_to_namespace = !request.trusted;
        r
    }

    /// The pod of a PodCertificateRequest: its namespace and service account as the
    /// API server holds them (the caller checked the request against the pod, its
    /// service account and its node), bound to that namespace and to the policy of
    /// the cluster's pod certificate signer. Its name carries the request's UID.
    pub fn pod_certificate(
        request: PodCertificateRequester<'_>,
        trust_domain: &TrustDomain,
    ) -> Self {
        let mut r = Requester::new(
            AuthMethod::PodCertificate,
            format!(
                "podcertificaterequest:{}/{}/{}#{}",
                request.cluster, request.namespace, request.name, request.uid
            ),
            PolicyScope::Bound(request.policy.to_string()),
        );
        r.cluster = Some(request.cluster.clone());
        r.namespace = Some(request.namespace.to_string());
        r.service_account = Some(request.service_account.to_string());
        r.spiffe_id =
            SpiffeId::kubernetes(trust_domain, request.namespace, request.service_account).ok();
        r.username = Some(format!(
            "system:serviceaccount:{}:{}",
            request.namespace, request.service_account
        ));
        r
    }

    /// The SPIFFE ID of the requester, if it has one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe_id.as_ref()
    }

    /// Key for rate limiting.
    pub fn rate_key(&self) -> String {
        self.name.clone()
    }
}

/// What a Kubernetes request says about its creator (see [`Requester::kubernetes_request`]).
#[derive(Clone, Copy, Debug)]
pub struct KubernetesRequest<'a> {
    /// [`AuthMethod::CertManager`] or [`AuthMethod::CsrApi`].
    pub method: AuthMethod,
    /// `certificaterequest` or `certificatesigningrequest`.
    pub kind: &'a str,
    /// The cluster it was made in.
    pub cluster: &'a ClusterName,
    /// The policy of the cluster's controller.
    pub policy: &'a str,
    /// The request's namespace (CertificateRequest) or none (CSR).
    pub namespace: Option<&'a str>,
    /// Its name.
    pub name: &'a str,
    /// Its UID.
    pub uid: &'a str,
    /// `spec.username`.
    pub username: Option<&'a str>,
    /// `spec.groups`.
    pub groups: &'a [String],
    /// Whether `username` is one of the cluster's `trusted_requesters`.
    pub trusted: bool,
}

/// A PodCertificateRequest whose pod the API server vouched for
/// (see [`Requester::pod_certificate`]).
#[derive(Clone, Copy, Debug)]
pub struct PodCertificateRequester<'a> {
    /// The cluster it was made in.
    pub cluster: &'a ClusterName,
    /// The policy of the cluster's pod certificate signer.
    pub policy: &'a str,
    /// The request's (and the pod's) namespace.
    pub namespace: &'a str,
    /// The pod's service account.
    pub service_account: &'a str,
    /// The request's name.
    pub name: &'a str,
    /// The request's UID.
    pub uid: &'a str,
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
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
    /// Token past its expiry.
    #[error("the token has expired: create a new one with `canopy-issuer token create`")]
    ExpiredToken,
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
    issuer: String,
    max_lifetime: i64,
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
    expires_at: Option<i64>,
    looked_up: Instant,
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
    /// Loads the JWKS of every cluster that has JWT authentication; `intermediates`
    /// (name, certificate) are those whose own leaves are accepted as mTLS identities.
    pub fn new(
        store: Store,
        trust_domain: TrustDomain,
        clusters: &[ClusterConfig],
        intermediates: Vec<(String, Certificate)>,
    ) -> Result<Self, JwksError> {
        let mut verifiers = Vec::new();
        for cluster in clusters {
            let Some(jwt) = &cluster.jwt else { continue };
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
            verifiers.push(ClusterJwt {
                name: cluster.name.clone(),
                audiences: jwt.audiences.clone(),
                issuer: jwt.issuer.clone(),
                max_lifetime: jwt.max_token_lifetime.as_seconds(),
                keys,
            });
        }
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

    async fn token(&self, token: &str, cached: bool) -> Result<Requester, AuthError> {
        let hash = token_hash(token);
        let now = Instant::now();
        let hit = cached.then(|| self.cached_token(&hash, now)).flatten();
        let found = match hit {
            Some(hit) => hit,
            None => {
                let record = self
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .filter(|t| t.revoked_at.is_none())
                    .ok_or(AuthError::UnknownToken)?;
                let found = CachedToken {
                    id: record.id,
                    policy: record.policy,
                    expires_at: record.expires_at,
                    looked_up: now,
                };
                self.cache_token(hash, found.clone());
                found
            }
        };
        if found
            .expires_at
            .is_some_and(|at| at <= crate::clock::now().unix_timestamp())
        {
            return Err(AuthError::ExpiredToken);
        }
        Ok(Requester::token(&found.id, &found.policy))
    }

    fn cached_token(&self, hash: &str, now: Instant) -> Option<CachedToken> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(hash)
            .filter(|t| now.saturating_duration_since(t.looked_up) < TOKEN_CACHE_TTL)
            .cloned()
    }

    fn cache_token(&self, hash: String, token: CachedToken) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(hash, token);
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
                validation.validate_nbf = true;
                validation.set_required_spec_claims(&["exp", "aud", "iss", "iat"]);
                validation.set_issuer(&[&cluster.issuer]);
                match jsonwebtoken::decode::<KubernetesClaims>(jwt, key, &validation) {
                    Ok(data) => {
                        let lifetime = data.claims.exp - data.claims.iat;
                        if lifetime > cluster.max_lifetime {
                            return Err(AuthError::Jwt(format!(
                                "token lifetime {lifetime}s is longer than cluster {}'s maximum {}s: request a shorter-lived projected token",
                                cluster.name, cluster.max_lifetime
                            )));
                        }
                        return self.kubernetes_identity(&cluster.name, data.claims);
                    }
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
        Ok(Requester::service_account(
            AuthMethod::Kubernetes,
            Some(cluster.clone()),
            id,
        ))
    }

    /// A client certificate already verified by TLS against our roots. It is an
    /// identity only if canopy itself issued it: signed directly by one of this
    /// issuer's intermediates (not by a mesh CA or any other CA under the root),
    /// recorded, not revoked, not on the deny list, and valid now. The check runs on
    /// every request, so a resumed TLS session is held to it as well.
    async fn client_certificate(&self, cert: &Certificate) -> Result<Requester, AuthError> {
        let now = crate::clock::now();
        if !cert.is_valid_at(now) {
            return Err(AuthError::ClientCert(format!(
                "it is not valid now (valid {} to {})",
                cert.not_before(),
                cert.not_after()
            )));
        }
        let (intermediate, _) = self
            .intermediates
            .iter()
            .find(|(_, ca)| cert.issuer_raw() == ca.subject_raw() && cert.verify_signed_by(ca).is_ok())
            .ok_or_else(|| {
                AuthError::ClientCert(
                    "it was not issued by one of this issuer's intermediates (a leaf of a mesh CA or of any other CA is no identity here)".into(),
                )
            })?;
        let serial = cert.serial().to_string();
        let record = match self.store.certificate(&serial).await {
            Ok(record) => record,
            Err(StoreError::NotFound) => {
                return Err(AuthError::ClientCert(
                    "it is not in this issuer's records".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if record.fingerprint != cert.fingerprint_sha256() {
            return Err(AuthError::ClientCert(
                "it does not match the certificate recorded under its serial".into(),
            ));
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::ClientCert("it has been revoked".into()));
        }
        let id = cert
            .spiffe_id()
            .ok_or_else(|| AuthError::ClientCert("it carries no SPIFFE ID URI SAN".into()))?;
        if id.trust_domain() != &self.trust_domain {
            return Err(AuthError::ClientCert(format!(
                "SPIFFE ID {id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        if let Some(reason) = self.store.denied(&id.to_string()).await? {
            return Err(AuthError::ClientCert(format!(
                "SPIFFE ID {id} is on the deny list ({reason})"
            )));
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
