//! The OpenAPI 3 description of the API, served at `/v1/openapi.json`. Written by
//! hand; a test checks it names exactly the routes the router serves.

use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => "Bad input (malformed CSR, bad SAN, unknown intermediate, bad TTL...)",
            "401" => "Not authenticated (missing, unknown or expired credentials)",
            "403" => "Denied by policy; the message says why",
            "404" => "Not found",
            "413" => "Request body over the limit",
            "429" => "Rate limited, per identity (rate_limited) or per client address before authentication (peer_rate_limited); see Retry-After",
            "503" => "Storage unavailable, not ready, or the budget for buffered request bodies in use (busy); retry (see Retry-After)",
            _ => "Error",
        };
        map.insert(
            (*code).to_string(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(map)
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}})
}

/// The document.
pub fn document() -> Value {
    let secured = json!([{"bearer": []}, {"mtls": []}]);
    let intermediate_param = json!({"name": "intermediate", "in": "path", "required": true, "schema": {"type": "string"}, "example": "aws"});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "canopy issuer API",
            "version": "1",
            "description": "Signs short-lived workload certificates under one SPIFFE trust domain. Keys stay with the requester: send a CSR. Any route may answer 429 peer_rate_limited (too many requests from one client address, counted before authentication) with Retry-After; a client over the connection caps is closed at accept."
        },
        "paths": {
            "/v1/sign": {"post": {
                "summary": "Sign a CSR",
                "security": secured,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignRequest"}}}},
                "responses": with(json!({"200": {"description": "Signed and durably recorded. With Accept: application/x-pem-file, the chain (leaf first, no root) as PEM", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SignResponse"}},
                    "application/x-pem-file": {"schema": {"type": "string"}}}}}),
                                  error_responses(&["400", "401", "403", "413", "429", "503"]))
            }},
            "/v1/roots": {"get": {
                "summary": "Trust anchors (PEM with Accept: application/x-pem-file)",
                "responses": {"200": {"description": "Roots", "content": {"application/json": {"schema": {"type": "object", "properties": {"roots": {"type": "string", "description": "PEM"}}}}, "application/x-pem-file": {"schema": {"type": "string"}}}}}
            }},
            "/v1/chain/{intermediate}": {"get": {
                "summary": "An intermediate and the certificates above it, without the root",
                "parameters": [intermediate_param],
                "responses": with(json!({"200": {"description": "Chain", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"intermediate": {"type": "string"}, "chain": {"type": "string"}, "not_after": {"type": "string", "format": "date-time"}}}},
                    "application/x-pem-file": {"schema": {"type": "string"}}}}}),
                    error_responses(&["404"]))
            }},
            "/v1/bundle": {"get": {
                "summary": "SPIFFE trust bundle (JWK Set with x509-svid keys)",
                "responses": json_ok("Bundle", json!({"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object"}}, "spiffe_sequence": {"type": "integer"}, "spiffe_refresh_hint": {"type": "integer"}}}))
            }},
            "/v1/crl/{intermediate}": {"get": {
                "summary": "CRL of an intermediate, built from storage on request (DER; PEM with Accept: application/x-pem-file)",
                "parameters": [intermediate_param],
                "responses": with(json!({"200": {"description": "CRL", "content": {
                    "application/pkix-crl": {"schema": {"type": "string", "format": "binary"}},
                    "application/x-pem-file": {"schema": {"type": "string"}}}}}),
                    error_responses(&["404", "503"]))
            }},
            "/v1/revoke": {"post": {
                "summary": "Revoke a certificate (its holder, or a policy with revoke: true)",
                "security": secured,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RevokeRequest"}}}},
                "responses": with(json_ok("Revoked", json!({"type": "object", "properties": {
                    "serial": {"type": "string"}, "revoked_at": {"type": "string", "format": "date-time"},
                    "reason": {"type": "string"}, "already_revoked": {"type": "boolean"}}})),
                    error_responses(&["400", "401", "403", "404", "413", "429", "503"]))
            }},
            "/v1/certificates": {"get": {
                "summary": "List issued certificates (policy with list: true)",
                "security": secured,
                "parameters": [
                    {"name": "spiffe_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "serial", "in": "query", "schema": {"type": "string"}},
                    {"name": "expires_before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "expires_after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "revoked", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"}
                ],
                "responses": with(json_ok("A page", json!({"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/CertificateRecord"}},
                    "next_cursor": {"type": "string", "nullable": true}}})),
                    error_responses(&["400", "401", "403", "429", "503"]))
            }},
            "/v1/certificates/{serial}": {"get": {
                "summary": "One issued certificate (its holder, or a policy with list: true)",
                "security": secured,
                "parameters": [{"name": "serial", "in": "path", "required": true, "schema": {"type": "string"}, "description": "hex"}],
                "responses": with(json_ok("The record", json!({"$ref": "#/components/schemas/CertificateRecord"})),
                                  error_responses(&["400", "401", "403", "404", "429", "503"]))
            }},
            "/v1/status": {"get": {
                "summary": "Istio cacerts per cluster: roots trusted, mesh CA serial and expiry, rotation phase, problems (policy with list: true)",
                "security": secured,
                "responses": with(json_ok("Status of every cluster from the last sync pass", json!({"type": "object"})),
                                  error_responses(&["401", "403", "429", "503"]))
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": json_ok("OpenAPI document", json!({"type": "object"}))
            }},
            "/healthz": {"get": {
                "summary": "Liveness",
                "responses": json_ok("Alive", json!({"type": "object", "properties": {"status": {"type": "string"}}}))
            }},
            "/readyz": {"get": {
                "summary": "Readiness: storage reachable, intermediates loaded and not expired",
                "responses": with(json_ok("Ready", json!({"type": "object", "properties": {"status": {"type": "string"}}})),
                                  error_responses(&["503"]))
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (OpenMetrics text)",
                "responses": {"200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A canopy token (cnpy_...) or a Kubernetes service-account JWT"},
                "mtls": {"type": "mutualTLS", "description": "A client certificate issued under this trust domain"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "description": "Stable error code", "example": "spiffe_id_not_allowed"},
                    "message": {"type": "string"}}},
                "SignRequest": {"type": "object", "required": ["csr"], "additionalProperties": false, "properties": {
                    "csr": {"type": "string", "description": "PKCS#10 CSR, PEM"},
                    "profile": {"type": "string", "enum": ["workload", "server", "client"], "default": "workload"},
                    "ttl": {"type": "string", "example": "1h", "description": "Requested lifetime; capped by policy; minimum 10m"},
                    "intermediate": {"type": "string", "example": "aws"}}},
                "SignResponse": {"type": "object", "properties": {
                    "certificate": {"type": "string", "description": "Leaf, PEM"},
                    "chain": {"type": "string", "description": "Leaf first, then intermediates; no root (PEM)"},
                    "roots": {"type": "string", "description": "Trust anchors, PEM"},
                    "serial": {"type": "string"},
                    "not_after": {"type": "string", "format": "date-time"},
                    "spiffe_id": {"type": "string", "nullable": true},
                    "profile": {"type": "string"},
                    "intermediate": {"type": "string"},
                    "ttl_capped": {"type": "boolean"}}},
                "RevokeRequest": {"type": "object", "required": ["serial"], "additionalProperties": false, "properties": {
                    "serial": {"type": "string"},
                    "reason": {"type": "string", "enum": ["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded", "cessation-of-operation"]}}},
                "CertificateRecord": {"type": "object", "properties": {
                    "serial": {"type": "string"}, "spiffe_id": {"type": "string", "nullable": true},
                    "subject": {"type": "string"}, "dns_names": {"type": "array", "items": {"type": "string"}},
                    "ip_addresses": {"type": "array", "items": {"type": "string"}},
                    "not_before": {"type": "string", "format": "date-time"}, "not_after": {"type": "string", "format": "date-time"},
                    "issued_at": {"type": "string", "format": "date-time"}, "requester": {"type": "string"},
                    "auth_method": {"type": "string"}, "intermediate": {"type": "string"},
                    "cluster": {"type": "string", "nullable": true}, "namespace": {"type": "string", "nullable": true},
                    "profile": {"type": "string"}, "fingerprint_sha256": {"type": "string"},
                    "revoked": {"type": "boolean"}, "revoked_at": {"type": "string", "nullable": true},
                    "revocation_reason": {"type": "string", "nullable": true}, "certificate": {"type": "string"}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ROUTES;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ROUTES.contains(&(method.as_str(), path.as_str())),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
}
