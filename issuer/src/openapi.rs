//! The OpenAPI 3 description of the API, served at `/v1/openapi.json`, generated from
//! [`ROUTE_TABLE`] (which the router is built from), the request and answer types
//! (`schemars`) and [`ErrorCode`]. Only prose and the shapes the API does not own (the
//! SPIFFE bundle, the Istio report) are written here.

use std::collections::BTreeMap;

use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::api::{
    CertificatePage, CertificateView, Chain, Endpoint, ErrorBody, Health, ListQuery, RevokeBody,
    Revoked, Roots, Route, SignBody, Signed, ROUTE_TABLE,
};
use crate::error_code::ErrorCode;

const DESCRIPTION: &str = "Signs short-lived workload certificates under one SPIFFE trust \
domain. Keys stay with the requester: send a CSR. Any route may answer 429 \
peer_rate_limited (too many requests from one client address, counted before \
authentication) with Retry-After; a client over the connection caps is closed at accept.";

/// The two directions of the schemas: what clients send is read as serde deserializes
/// it, what the API answers as serde serializes it.
struct Schemas {
    requests: SchemaGenerator,
    answers: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let with = |contract: Contract| {
            SchemaSettings::openapi3()
                .with(|s| s.contract = contract)
                .into_generator()
        };
        Schemas {
            requests: with(Contract::Deserialize),
            answers: with(Contract::Serialize),
        }
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    fn answer<T: JsonSchema>(&mut self) -> Value {
        self.answers.subschema_for::<T>().to_value()
    }

    fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.requests.take_definitions(true);
        all.extend(self.answers.take_definitions(true));
        all
    }
}

/// The document.
pub fn document() -> Value {
    let mut schemas = Schemas::new();
    let mut paths = Map::new();
    for route in &ROUTE_TABLE {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.as_str()] = operation(route, &mut schemas);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "canopy issuer API", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A canopy token (cnpy_...) or a Kubernetes service-account JWT"},
                "mtls": {"type": "mutualTLS", "description": "A client certificate issued under this trust domain"}
            },
            "schemas": schemas.into_components(),
        }
    })
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let mut op = json!({"summary": summary(route.endpoint)});
    if route.secured {
        op["security"] = json!([{"bearer": []}, {"mtls": []}]);
    }
    let parameters = parameters(route, schemas);
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = request_body(route.endpoint, schemas) {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    let mut responses = Map::new();
    responses.insert("200".into(), success(route.endpoint, schemas));
    let error = schemas.answer::<ErrorBody>();
    for (status, codes) in errors_by_status(route) {
        responses.insert(status.to_string(), error_response(status, &codes, &error));
    }
    op["responses"] = Value::Object(responses);
    op
}

fn summary(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Sign => "Sign a CSR",
        Endpoint::Roots => "Trust anchors (PEM with Accept: application/x-pem-file)",
        Endpoint::Chain => "An intermediate and the certificates above it, without the root",
        Endpoint::Bundle => "SPIFFE trust bundle (JWK Set with x509-svid keys)",
        Endpoint::Crl => "CRL of an intermediate, built from storage on request (DER; PEM with Accept: application/x-pem-file)",
        Endpoint::Revoke => "Revoke a certificate (its holder, or a policy with revoke: true)",
        Endpoint::Certificates => "List issued certificates (policy with list: true)",
        Endpoint::Certificate => "One issued certificate (its holder, or a policy with list: true)",
        Endpoint::Status => "Istio cacerts per cluster: roots trusted, mesh CA serial and expiry, rotation phase, problems (policy with list: true)",
        Endpoint::OpenApi => "This document",
        Endpoint::Healthz => "Liveness",
        Endpoint::Readyz => "Readiness: storage reachable, intermediates loaded and not expired",
        Endpoint::Metrics => "Prometheus metrics (OpenMetrics text)",
    }
}

/// The `{name}`s of the path, and for the list the fields of [`ListQuery`].
fn parameters(route: &Route, schemas: &mut Schemas) -> Vec<Value> {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if route.endpoint == Endpoint::Certificates {
        let query = schemas.requests.clone().into_root_schema_for::<ListQuery>();
        let fields = query.get("properties").and_then(Value::as_object);
        for (name, schema) in fields.into_iter().flatten() {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            parameters.push(
                json!({"name": name, "in": "query", "schema": schema, "description": description}),
            );
        }
    }
    parameters
}

fn request_body(endpoint: Endpoint, schemas: &mut Schemas) -> Option<Value> {
    match endpoint {
        Endpoint::Sign => Some(schemas.request::<SignBody>()),
        Endpoint::Revoke => Some(schemas.request::<RevokeBody>()),
        _ => None,
    }
}

/// The 200 answer: JSON of the route's answer type, or another media type.
fn success(endpoint: Endpoint, schemas: &mut Schemas) -> Value {
    let pem = json!({"schema": {"type": "string"}});
    let (description, content) = match endpoint {
        Endpoint::Sign => ("Signed and durably recorded. With Accept: application/x-pem-file, the chain (leaf first, no root) as PEM",
            json!({"application/json": {"schema": schemas.answer::<Signed>()}, "application/x-pem-file": pem})),
        Endpoint::Roots => ("Roots", json!({"application/json": {"schema": schemas.answer::<Roots>()}, "application/x-pem-file": pem})),
        Endpoint::Chain => ("Chain", json!({"application/json": {"schema": schemas.answer::<Chain>()}, "application/x-pem-file": pem})),
        Endpoint::Bundle => ("Bundle", json!({"application/json": {"schema": {"type": "object", "properties": {
            "keys": {"type": "array", "items": {"type": "object"}}, "spiffe_sequence": {"type": "integer"}, "spiffe_refresh_hint": {"type": "integer"}}}}})),
        Endpoint::Crl => ("CRL", json!({"application/pkix-crl": {"schema": {"type": "string", "format": "binary"}}, "application/x-pem-file": pem})),
        Endpoint::Revoke => ("Revoked", json!({"application/json": {"schema": schemas.answer::<Revoked>()}})),
        Endpoint::Certificates => ("A page", json!({"application/json": {"schema": schemas.answer::<CertificatePage>()}})),
        Endpoint::Certificate => ("The record", json!({"application/json": {"schema": schemas.answer::<CertificateView>()}})),
        Endpoint::Status => ("Status of every cluster from the last sync pass", json!({"application/json": {"schema": {"type": "object"}}})),
        Endpoint::OpenApi => ("OpenAPI document", json!({"application/json": {"schema": {"type": "object"}}})),
        Endpoint::Healthz => ("Alive", json!({"application/json": {"schema": schemas.answer::<Health>()}})),
        Endpoint::Readyz => ("Ready", json!({"application/json": {"schema": schemas.answer::<Health>()}})),
        Endpoint::Metrics => ("Metrics", json!({"application/openmetrics-text": {"schema": {"type": "string"}}})),
    };
    json!({"description": description, "content": content})
}

/// The route's error codes grouped by the status they are answered with.
fn errors_by_status(route: &Route) -> BTreeMap<u16, Vec<ErrorCode>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in route.all_errors() {
        let codes = by_status.entry(route.status(code).as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
}

/// An error answer: the [`ErrorBody`] schema with `code` narrowed to `codes`, and each
/// code's meaning in the description.
fn error_response(status: u16, codes: &[ErrorCode], error: &Value) -> Value {
    let lines: Vec<String> = codes
        .iter()
        .map(|c| format!("`{c}`: {}", c.meaning()))
        .collect();
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let schema = json!({"allOf": [error, {"type": "object", "properties": {"code": {"type": "string", "enum": names}}}]});
    let mut response = json!({
        "description": lines.join("; "),
        "content": {"application/json": {"schema": schema}},
    });
    if status == 429 || status == 503 {
        response["headers"] = json!({"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}});
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::api::NO_ROUTE;

    /// The codes the document lists for `method path` at `status`.
    fn documented(doc: &Value, route: &Route, status: u16) -> Vec<String> {
        let response =
            &doc["paths"][route.path][route.method.as_str()]["responses"][status.to_string()];
        response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// The router is built from `ROUTE_TABLE`; each route is in the document with every
    /// code it answers with at its status, nothing is documented that is not routed,
    /// and every `ErrorCode` is answered by some route (or is the router's fallback).
    #[test]
    fn every_route_is_documented_with_its_error_codes_and_nothing_else() {
        let doc = document();
        let mut answered: HashSet<ErrorCode> = HashSet::from([NO_ROUTE]);
        for route in &ROUTE_TABLE {
            let (method, path) = (route.method.as_str(), route.path);
            assert!(
                doc["paths"][path][method]["responses"]["200"].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
            for code in route.all_errors() {
                let status = route.status(code).as_u16();
                assert!(
                    documented(&doc, route, status).contains(&code.to_string()),
                    "{method} {path}: {status} {code} is not documented"
                );
                answered.insert(code);
            }
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ROUTE_TABLE
                        .iter()
                        .any(|r| r.path == path && r.method.as_str() == method),
                    "{method} {path} is documented but not routed"
                );
            }
        }
        for code in ErrorCode::ALL {
            assert!(answered.contains(code), "no route answers {code}");
        }
        let listed = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(listed.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn bodies_and_answers_are_generated_from_their_types() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let sign = &schemas["SignRequest"];
        assert_eq!(sign["required"], json!(["csr"]));
        assert_eq!(sign["additionalProperties"], json!(false));
        assert_eq!(schemas["RevokeRequest"]["required"], json!(["serial"]));
        for (name, field) in [
            ("SignResponse", "ttl_capped"),
            ("CertificateRecord", "fingerprint_sha256"),
            ("CertificatePage", "next_cursor"),
            ("RevokeResponse", "already_revoked"),
            ("Error", "code"),
        ] {
            assert!(
                schemas[name]["properties"][field].is_object(),
                "{name}.{field}"
            );
        }
        let list = &doc["paths"]["/v1/certificates"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"cursor") && names.contains(&"expires_before"),
            "{names:?}"
        );
    }
}
