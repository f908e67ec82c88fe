//! Two replicas on one PostgreSQL: concurrent issuing without duplicate serials,
//! and a revocation on one shows in the other's CRL.

use std::collections::HashSet;

use crate::common::*;
use serde_json::json;

#[test]
fn two_replicas_share_one_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = PgDb::create();
    let issuer = Configured::new(dir, &db.url, "  burst: 100000\n  rate_per_second: 100000");
    let (config_s, token) = (issuer.config.as_str(), issuer.token.clone());
    let (a, client_a) = issuer.serve(dir);
    let (_b, client_b) = issuer.serve(dir);
    let clients = [client_a, client_b];

    // 8 threads, alternating replicas, 25 signs each.
    let per_thread = 25;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = clients[i % 2].clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let mut serials = Vec::new();
                for n in 0..per_thread {
                    let c = csr(Some(&format!("spiffe://{TD}/ns/load/sa/w{i}-{n}")), &[]);
                    let r = client.post_json(
                        "/v1/sign",
                        Some(&token),
                        &json!({"csr": c.pem, "ttl": "1h"}),
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                    serials.push(r.json()["serial"].as_str().unwrap().to_string());
                }
                serials
            })
        })
        .collect();
    let serials: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let unique: HashSet<&String> = serials.iter().collect();
    assert_eq!(unique.len(), serials.len(), "duplicate serial returned");
    let (ok, n) = psql(&db.name, "SELECT COUNT(*), COUNT(DISTINCT serial) FROM certificates WHERE spiffe_id LIKE '%/ns/load/%'");
    assert!(ok, "{n}");
    assert_eq!(
        n.trim(),
        format!("{0}|{0}", serials.len()),
        "every certificate stored once"
    );

    // Revoke on A; B's CRL (built from the shared database) lists it at once.
    let victim = &serials[7];
    let r = clients[0].post_json(
        "/v1/revoke",
        Some(&token),
        &json!({"serial": victim, "reason": "key-compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let crl = clients[1].get("/v1/crl/aws", &[("Accept", "application/x-pem-file")]);
    assert_eq!(crl.status, 200);
    std::fs::write(dir.join("b.crl"), crl.text()).unwrap();
    let (ok, text) = openssl(dir, &["crl", "-in", "b.crl", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(
        text.to_uppercase().contains(&victim.to_uppercase()),
        "revoked serial {victim} missing from replica B's CRL:\n{text}"
    );
    // and the audit chain written by both replicas verifies
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", config_s]);
    assert!(ok, "{out}{err}");
    assert!(a.log().lines().all(|l| !l.contains("ERROR")), "{}", a.log());
}
