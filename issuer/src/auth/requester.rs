//! The requester: who is asking, one typed value whatever the entry point
//! (shared/contracts/authorization.md), and how it proved it.

use std::fmt;

use canopy::spiffe::{SpiffeId, TrustDomain};

use crate::names::ClusterName;
use crate::policy::Presented;

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
