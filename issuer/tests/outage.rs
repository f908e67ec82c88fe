//! Readiness and retryable errors: storage going away answers 503 (and comes back),
//! an expired intermediate makes the issuer not ready and refuses to sign with it.

use std::sync::Arc;

use crate::common::*;
use canopy::ca::CertificateAuthority;
use canopy::key::{KeyPair, KeyType};
use canopy::profile::{CaProfile, CaRequest};
use canopy::spiffe::TrustDomain;
use canopy::ttl::Ttl;
use serde_json::json;
use time::{Duration, OffsetDateTime};

#[test]
fn storage_outage_answers_503_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = PgDb::create();
    let issuer = Configured::new(dir, &db.url, "  burst: 1000");
    let (config_s, token) = (issuer.config.as_str(), issuer.token.clone());
    let (_server, client) = issuer.serve(dir);
    let c = csr(Some(&format!("spiffe://{TD}/ns/default/sa/web")), &[]);
    assert_eq!(
        client
            .post_json("/v1/sign", Some(&token), &json!({"csr": c.pem}))
            .status,
        200
    );

    // Take the database away: no new connections, existing ones killed.
    let (ok, out) = psql(
        "postgres",
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name),
    );
    assert!(ok, "{out}");
    let (ok, out) = psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ),
    );
    assert!(ok, "{out}");
    let r = client.post_json("/v1/sign", Some(&token), &json!({"csr": c.pem}));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "storage_unavailable");
    assert!(r.header("retry-after").is_some());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        !message.contains("postgres") && !message.contains(&db.name),
        "{message}"
    );
    let ready = client.get("/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(
        client.get("/healthz", &[]).status,
        200,
        "alive while storage is down"
    );

    // Storage back: so is the issuer.
    let (ok, out) = psql(
        "postgres",
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name),
    );
    assert!(ok, "{out}");
    wait_for(
        30,
        || client.get("/readyz", &[]).status == 200,
        "ready again",
    );
    let r = client.post_json("/v1/sign", Some(&token), &json!({"csr": c.pem}));
    assert_eq!(r.status, 200, "{}", r.text());
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", config_s]);
    assert!(ok, "{out}{err}");
}

#[test]
fn expired_intermediate_is_not_ready_and_does_not_sign() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let td: TrustDomain = TD.parse().unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let long_ago = now - Duration::days(30);
    let root_key = Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap());
    let root = CertificateAuthority::new_root(
        root_key,
        &CaRequest {
            trust_domain: Some(td.clone()),
            ttl: Some(Ttl::years(10)),
            ..CaRequest::new(CaProfile::Root, "test root")
        },
        long_ago,
    )
    .unwrap();
    std::fs::write(dir.join("root.pem"), root.certificate().to_pem()).unwrap();
    for (name, ttl) in [("fresh", Ttl::years(1)), ("old", Ttl::days(2))] {
        let (issued, key) = root
            .issue_with_new_key(
                &CaRequest {
                    trust_domain: Some(td.clone()),
                    ttl: Some(ttl),
                    ..CaRequest::new(CaProfile::Intermediate, format!("test {name}"))
                },
                KeyType::EcdsaP256,
                long_ago,
            )
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), issued.certificate.to_pem()).unwrap();
        std::fs::write(
            dir.join(format!("{name}-key.pem")),
            key.to_unencrypted_pem().as_str(),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("issuer.yaml"),
        format!(
            r#"trust_domain: {TD}
listen: {{ address: "127.0.0.1:0", intermediate: fresh }}
storage: {{ url: "sqlite:x.db" }}
roots: [root.pem]
intermediates:
  - {{ name: fresh, cert: fresh.pem, key: fresh-key.pem }}
  - {{ name: old, cert: old.pem, key: old-key.pem }}
policies:
  - {{ name: p, spiffe_ids: ["spiffe://{TD}/**"] }}
"#
        ),
    )
    .unwrap();
    let config = dir.join("issuer.yaml");
    let config_s = config.to_str().unwrap();
    let (ok, out, err) = run_bin(&["token", "create", "--policy", "p", "--config", config_s]);
    assert!(ok, "{err}");
    let token = out.trim().to_string();
    let server = Server::start(&["serve", "--config", config_s], dir);
    let client = Client::new(server.addr, &root.certificate().to_pem(), None);
    let ready = client.get("/readyz", &[]);
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["message"].as_str().unwrap().contains("old"),
        "{}",
        ready.text()
    );
    let c = csr(Some(&format!("spiffe://{TD}/ns/a/sa/b")), &[]);
    let r = client.post_json(
        "/v1/sign",
        Some(&token),
        &json!({"csr": c.pem, "intermediate": "old"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "intermediate_expired");
    let r = client.post_json(
        "/v1/sign",
        Some(&token),
        &json!({"csr": c.pem, "intermediate": "fresh"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = client.get("/metrics", &[]).text();
    let line = m
        .lines()
        .find(|l| l.starts_with("canopy_intermediate_expiry_seconds{intermediate=\"old\"}"))
        .unwrap();
    assert!(
        line.split(' ').nth(1).unwrap().starts_with('-'),
        "negative seconds to expiry: {line}"
    );
}
