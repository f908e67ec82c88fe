//! The stable error codes of the API: one enum, its wire string, its HTTP status and
//! a line a client can read. Every error the API returns carries one, metrics count
//! refusals by it, and the OpenAPI document lists them from here.

use axum::http::StatusCode;
use serde::Serialize;

/// Defines [`ErrorCode`] with, for each code, its wire string, its status and its meaning.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = ($wire:literal, $status:ident, $meaning:literal),)*) => {
        /// A stable error code: the `code` of an API error body and a metrics label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order they are declared.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string (also the `Display` form and the metrics label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }

            /// The HTTP status an API error with this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// What the code means, in one line for a client.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    // Transport and request shape.
    /// A route the API does not serve.
    NotFound = ("not_found", NOT_FOUND, "no such route or record"),
    /// A method the route does not take.
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "the route does not take this method"),
    /// Body over `limits.body_bytes`.
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE, "the request body is over the limit"),
    /// Body without `Content-Type: application/json`.
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "send JSON with Content-Type: application/json"),
    /// Body that could not be read, or another malformed request.
    BadRequest = ("bad_request", BAD_REQUEST, "the request could not be read or is malformed"),
    /// Body that is not JSON or not the expected shape.
    BadJson = ("bad_json", BAD_REQUEST, "the body is not valid JSON of the expected shape"),
    /// Query string that does not parse.
    BadQuery = ("bad_query", BAD_REQUEST, "a query parameter is missing, unknown or malformed"),
    /// List cursor not handed out by this API.
    BadCursor = ("bad_cursor", BAD_REQUEST, "the cursor is not one this API returned"),
    /// Serial that is not hex.
    BadSerial = ("bad_serial", BAD_REQUEST, "the serial is not a hex certificate serial"),
    /// Revocation reason not in RFC 5280's list.
    BadReason = ("bad_reason", BAD_REQUEST, "the revocation reason is not one RFC 5280 names"),
    /// SPIFFE ID that does not parse.
    BadSpiffeId = ("bad_spiffe_id", BAD_REQUEST, "the SPIFFE ID does not parse"),
    // Signing input.
    /// CSR that is not PEM or does not parse.
    BadCsr = ("bad_csr", BAD_REQUEST, "the CSR is not PEM or does not parse"),
    /// CSR over the size limit.
    CsrTooLarge = ("csr_too_large", BAD_REQUEST, "the CSR is larger than allowed"),
    /// CSR whose signature does not verify.
    BadCsrSignature = ("bad_csr_signature", BAD_REQUEST, "the CSR's signature does not verify (no proof of possession)"),
    /// CSR with an unusable public key.
    BadCsrKey = ("bad_csr_key", BAD_REQUEST, "the CSR's public key is not usable"),
    /// URI SAN that is not a SPIFFE ID.
    BadUriSan = ("bad_uri_san", BAD_REQUEST, "a URI SAN in the CSR is not a SPIFFE ID"),
    /// More than one SPIFFE ID in the CSR.
    TooManySpiffeIds = ("too_many_spiffe_ids", BAD_REQUEST, "the CSR carries more than one SPIFFE ID"),
    /// A SAN kind canopy does not issue (e-mail).
    BadSan = ("bad_san", BAD_REQUEST, "the CSR carries a SAN kind canopy does not issue (e-mail)"),
    /// Profile name that is not known.
    BadProfile = ("bad_profile", BAD_REQUEST, "the profile is not workload, server or client"),
    /// TTL that does not parse.
    BadTtl = ("bad_ttl", BAD_REQUEST, "the ttl does not parse (like 1h or 30m)"),
    /// DNS name that is not a valid name.
    BadDnsName = ("bad_dns_name", BAD_REQUEST, "a DNS name in the CSR is not a valid name"),
    /// Intermediate this issuer does not hold (404 on the chain and CRL routes).
    UnknownIntermediate = ("unknown_intermediate", BAD_REQUEST, "no intermediate of that name (400 when signing, 404 on /v1/chain and /v1/crl)"),
    // Authentication.
    /// No credential.
    Unauthenticated = ("unauthenticated", UNAUTHORIZED, "no credential: send a bearer token or a client certificate"),
    /// Authorization header that does not parse.
    BadAuthorization = ("bad_authorization", UNAUTHORIZED, "the Authorization header is not a bearer credential"),
    /// Token unknown or revoked.
    UnknownToken = ("unknown_token", UNAUTHORIZED, "the token is unknown or revoked"),
    /// Token past its expiry.
    ExpiredToken = ("expired_token", UNAUTHORIZED, "the token has expired"),
    /// Kubernetes JWT that does not verify.
    BadJwt = ("bad_jwt", UNAUTHORIZED, "the service-account JWT does not verify"),
    /// Client certificate that is not an identity here.
    BadClientCertificate = ("bad_client_certificate", UNAUTHORIZED, "the client certificate is not an identity of this trust domain"),
    // Policy.
    /// No policy applies to the requester.
    NoPolicy = ("no_policy", FORBIDDEN, "no policy applies to the requester"),
    /// A CA certificate was asked for.
    CaNotAllowed = ("ca_not_allowed", FORBIDDEN, "CA certificates are never issued to requesters"),
    /// Lifetime under the minimum.
    TtlTooShort = ("ttl_too_short", FORBIDDEN, "the ttl is below the minimum"),
    /// The policy is limited to other clusters.
    ClusterNotAllowed = ("cluster_not_allowed", FORBIDDEN, "the policy is limited to other clusters"),
    /// The policy does not allow the profile.
    ProfileNotAllowed = ("profile_not_allowed", FORBIDDEN, "the policy does not allow this profile"),
    /// Another cluster's intermediate.
    IntermediateNotAllowed = ("intermediate_not_allowed", FORBIDDEN, "the policy does not allow this intermediate"),
    /// Key type refused.
    KeyTypeNotAllowed = ("key_type_not_allowed", FORBIDDEN, "the key type is not allowed"),
    /// SPIFFE ID outside the trust domain or the policy.
    SpiffeIdNotAllowed = ("spiffe_id_not_allowed", FORBIDDEN, "the SPIFFE ID is outside the trust domain or the policy"),
    /// SPIFFE ID of another namespace.
    SpiffeIdOutsideNamespace = ("spiffe_id_outside_namespace", FORBIDDEN, "the SPIFFE ID is in another namespace than the requester's"),
    /// DNS name outside the policy.
    DnsNameNotAllowed = ("dns_name_not_allowed", FORBIDDEN, "a DNS name is outside the policy"),
    /// DNS name not under the requester's namespace.
    DnsNameOutsideNamespace = ("dns_name_outside_namespace", FORBIDDEN, "a DNS name is not under the requester's namespace"),
    /// Wildcard without `wildcards: true`.
    WildcardNotAllowed = ("wildcard_not_allowed", FORBIDDEN, "wildcard DNS names need a policy with wildcards: true"),
    /// IP address outside the policy.
    IpAddressNotAllowed = ("ip_address_not_allowed", FORBIDDEN, "an IP address is outside the policy"),
    /// One of the issuer's own serving names.
    ReservedName = ("reserved_name", FORBIDDEN, "the name is one the issuer serves under"),
    /// An mTLS renewal asking for more than the presented certificate.
    RenewalWidens = ("renewal_widens", FORBIDDEN, "an mTLS renewal may not ask for more than the presented certificate"),
    /// SPIFFE ID on the deny list.
    IdentityDenied = ("identity_denied", FORBIDDEN, "the SPIFFE ID is on the deny list"),
    /// Revocation by someone who may not.
    RevokeNotAllowed = ("revoke_not_allowed", FORBIDDEN, "only the holder or a policy with revoke: true may revoke (operators to deny renewal)"),
    /// Listing without `list: true`.
    ListNotAllowed = ("list_not_allowed", FORBIDDEN, "reading certificate records needs a policy with list: true"),
    // Load and availability.
    /// Too many requests from one identity.
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "too many requests from this identity; see Retry-After"),
    /// Too many requests from one client address, before authentication.
    PeerRateLimited = ("peer_rate_limited", TOO_MANY_REQUESTS, "too many requests from this client address; see Retry-After"),
    /// The budget of buffered request bodies is in use.
    Busy = ("busy", SERVICE_UNAVAILABLE, "the issuer holds as many request bodies as it may; see Retry-After"),
    /// Storage unreachable.
    StorageUnavailable = ("storage_unavailable", SERVICE_UNAVAILABLE, "storage is unavailable; see Retry-After"),
    /// The intermediate has expired and cannot sign.
    IntermediateExpired = ("intermediate_expired", SERVICE_UNAVAILABLE, "the intermediate has expired and must be renewed"),
    /// The intermediate's key is on a token that cannot be reached now.
    SignerUnavailable = ("signer_unavailable", SERVICE_UNAVAILABLE, "the intermediate's key (on a PKCS#11 token) cannot be reached now; see Retry-After"),
    /// Not ready: storage, intermediates or the Istio sync.
    NotReady = ("not_ready", SERVICE_UNAVAILABLE, "not ready: storage, an intermediate or the Istio sync"),
    /// A bug or broken CA material; nothing was issued.
    Internal = ("internal", INTERNAL_SERVER_ERROR, "internal error; nothing was issued"),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every code as an `enum`, with each one's meaning in `x-enum-descriptions`.
impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let meanings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.meaning()).collect();
        schemars::json_schema!({
            "type": "string",
            "description": "Stable error code",
            "enum": codes,
            "x-enum-descriptions": meanings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_string_is_the_serde_name_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.to_string())
            );
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    /// No error code is written as a string literal outside this file: each is a
    /// variant, so a typo does not compile and the OpenAPI document lists them all.
    #[test]
    fn no_error_code_is_a_string_literal_elsewhere() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() && !path.ends_with("istio") {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            // Istio problem codes (kebab-case, in /v1/status) are another vocabulary.
            let elsewhere = path.ends_with("error_code.rs") || path.ends_with("istio");
            if elsewhere || path.extension().is_some_and(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for pattern in [
                "ApiError::new(StatusCode",
                "ApiError::bad(\"",
                "code: \"",
                ".deny(\"",
                ".fail(\"",
            ] {
                if text.contains(pattern) {
                    found.push(format!("{}: {pattern}", path.display()));
                }
            }
        }
        assert!(found.is_empty(), "string error codes: {found:?}");
    }
}
