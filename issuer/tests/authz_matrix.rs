//! Authorization matrix: every route × every kind of identity, against the real binary.
//! The table below is the whole expected answer; a cell that answers differently fails,
//! and a route added to the API without a row here fails too.
//!
//! The subject of every operation is the workload `spiffe://TD/ns/default/sa/web`.

use crate::common::*;
use serde_json::json;

/// Identity kinds, in the column order of [`MATRIX`].
#[derive(Clone, Copy, Debug)]
enum Who {
    /// No credentials at all.
    Nobody,
    /// A token bound to a policy that does not cover the subject (`narrow`: ns/narrow only).
    TokenOtherPolicy,
    /// A token bound to the policy that covers it (`dev`: sign, revoke, list).
    TokenRightPolicy,
    /// mTLS with a valid certificate of another workload (ns/other/sa/web).
    MtlsOtherId,
    /// mTLS with the subject's own certificate.
    MtlsOwnId,
    /// A service-account JWT of another namespace (ns/other, sa/web).
    JwtOtherNamespace,
    /// A service-account JWT of the subject itself (ns/default, sa/web).
    JwtOwnNamespace,
}

const WHO: [Who; 7] = [
    Who::Nobody,
    Who::TokenOtherPolicy,
    Who::TokenRightPolicy,
    Who::MtlsOtherId,
    Who::MtlsOwnId,
    Who::JwtOtherNamespace,
    Who::JwtOwnNamespace,
];

/// (method, route as in `api::ROUTES`, expected status per identity in [`WHO`] order).
/// 401 = not authenticated, 403 = authenticated but not allowed; anything else means
/// the request passed authorization (`/v1/status` answers 503 here because no cluster
/// has Istio settings — past the policy check).
#[rustfmt::skip]
const MATRIX: &[(&str, &str, [u16; 7])] = &[
    //                                         none tokOth tokOK mtlsOth mtlsOwn jwtOth jwtOwn
    ("post", "/v1/sign",                      [401, 403,   200,  403,    200,    403,   200]),
    ("post", "/v1/revoke",                    [401, 403,   200,  403,    200,    403,   200]),
    ("get",  "/v1/certificates",              [401, 403,   200,  403,    403,    403,   403]),
    ("get",  "/v1/certificates/{serial}",     [401, 403,   200,  403,    200,    403,   200]),
    ("get",  "/v1/status",                    [401, 403,   503,  403,    403,    403,   403]),
    ("get",  "/v1/roots",                     [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/v1/chain/{intermediate}",      [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/v1/bundle",                    [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/v1/crl/{intermediate}",        [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/v1/openapi.json",              [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/healthz",                      [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/readyz",                       [200, 200,   200,  200,    200,    200,   200]),
    ("get",  "/metrics",                      [200, 200,   200,  200,    200,    200,   200]),
];

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    anonymous: Client,
    dev_token: String,
    narrow_token: String,
    issuer: Configured,
    mtls_own: Client,
    mtls_other: Client,
}

fn subject() -> String {
    format!("spiffe://{TD}/ns/default/sa/web")
}

/// Signs a certificate for `id` with the dev token: (chain PEM, key PEM, serial).
fn issue(client: &Client, token: &str, id: &str) -> (String, String, String) {
    let c = csr(Some(id), &[]);
    let r = client.post_json("/v1/sign", Some(token), &json!({"csr": c.pem}));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    (
        j["chain"].as_str().unwrap().to_string(),
        c.key_pem,
        j["serial"].as_str().unwrap().to_string(),
    )
}

fn setup() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let issuer = Configured::new(
        &dir,
        "sqlite:authz.db",
        "  burst: 10000\n  rate_per_second: 10000",
    );
    let dev_token = issuer.token.clone();
    let narrow_token = issuer.create_token("narrow");
    let (server, anonymous) = issuer.serve(&dir);
    let root = issuer.root.clone();
    let own = issue(&anonymous, &dev_token, &subject());
    let other = issue(
        &anonymous,
        &dev_token,
        &format!("spiffe://{TD}/ns/other/sa/web"),
    );
    let mtls_own = Client::new(server.addr, &root, Some((&own.0, &own.1)));
    let mtls_other = Client::new(server.addr, &root, Some((&other.0, &other.1)));
    Env {
        _dir: tmp,
        server,
        anonymous,
        dev_token,
        narrow_token,
        issuer,
        mtls_own,
        mtls_other,
    }
}

impl Env {
    /// The client and Authorization header of an identity kind.
    fn as_who(&self, who: Who) -> (&Client, Option<String>) {
        let bearer = |t: &str| Some(format!("Bearer {t}"));
        match who {
            Who::Nobody => (&self.anonymous, None),
            Who::TokenOtherPolicy => (&self.anonymous, bearer(&self.narrow_token)),
            Who::TokenRightPolicy => (&self.anonymous, bearer(&self.dev_token)),
            Who::MtlsOtherId => (&self.mtls_other, None),
            Who::MtlsOwnId => (&self.mtls_own, None),
            Who::JwtOtherNamespace => (
                &self.anonymous,
                bearer(&self.issuer.sa_token("canopy-issuer", "other", "web", 3600)),
            ),
            Who::JwtOwnNamespace => (
                &self.anonymous,
                bearer(
                    &self
                        .issuer
                        .sa_token("canopy-issuer", "default", "web", 3600),
                ),
            ),
        }
    }
}

#[test]
fn every_route_times_every_identity_kind() {
    let env = setup();
    // Every route of the API has a row.
    for (method, route) in canopy_issuer::api::ROUTES {
        assert!(
            MATRIX.iter().any(|(m, r, _)| m == method && r == route),
            "route {method} {route} has no row in the authorization matrix"
        );
    }
    assert_eq!(MATRIX.len(), canopy_issuer::api::ROUTES.len());

    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, route, expected) in MATRIX {
        for (who, want) in WHO.iter().zip(expected) {
            // A fresh record of the subject for revoke and read, so cells do not interact.
            let target = issue(&env.anonymous, &env.dev_token, &subject()).2;
            let path = route
                .replace("{intermediate}", "aws")
                .replace("{serial}", &target);
            let (client, auth) = env.as_who(*who);
            let mut headers = vec![];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            let body = match *route {
                "/v1/sign" => Some(json!({"csr": csr(Some(&subject()), &[]).pem}).to_string()),
                "/v1/revoke" => Some(json!({"serial": target}).to_string()),
                _ => None,
            };
            if body.is_some() {
                headers.push(("Content-Type", "application/json"));
            }
            let r = client.request(
                &method.to_ascii_uppercase(),
                &path,
                &headers,
                body.as_deref().map(str::as_bytes),
            );
            cells += 1;
            if r.status != *want {
                failures.push(format!(
                    "{method} {route} as {who:?}: expected {want}, got {} {}",
                    r.status,
                    r.text().chars().take(200).collect::<String>()
                ));
            }
            // A refusal is a JSON error with a stable code, never an empty or HTML page.
            if r.status == 401 || r.status == 403 {
                assert!(!r.code().is_empty(), "{method} {route} as {who:?}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ from the matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("authorization matrix: {cells} cells as expected");
    drop(env.server);
}
