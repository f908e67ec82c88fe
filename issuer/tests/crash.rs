//! SIGKILL during a burst of requests loses no certificate a client received.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::*;
use serde_json::json;

fn burst_then_kill(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pg = (backend == Backend::Postgres).then(PgDb::create);
    let url = pg
        .as_ref()
        .map(|d| d.url.clone())
        .unwrap_or_else(|| "sqlite:crash.db".into());
    let issuer = Configured::new(dir, &url, "  burst: 100000\n  rate_per_second: 100000");
    let (config_s, token) = (issuer.config.as_str(), issuer.token.clone());
    let (mut server, client) = issuer.serve(dir);

    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // CSRs made up front so the burst is all signing.
    let csrs: Vec<String> = (0..400)
        .map(|i| csr(Some(&format!("spiffe://{TD}/ns/crash/sa/w{i}")), &[]).pem)
        .collect();
    let csrs = Arc::new(csrs);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (client, token, received, stop, csrs) = (
                client.clone(),
                token.clone(),
                received.clone(),
                stop.clone(),
                csrs.clone(),
            );
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) && i < csrs.len() {
                    if let Ok(r) = client.try_request(
                        "POST",
                        "/v1/sign",
                        &[
                            ("Authorization", &format!("Bearer {token}")),
                            ("Content-Type", "application/json"),
                        ],
                        Some(json!({"csr": csrs[i]}).to_string().as_bytes()),
                    ) {
                        if r.status == 200 {
                            received
                                .lock()
                                .unwrap()
                                .push(r.json()["serial"].as_str().unwrap().to_string());
                        }
                    }
                    i += 8;
                }
            })
        })
        .collect();
    wait_for(
        60,
        || received.lock().unwrap().len() >= 40,
        "40 certificates before the kill",
    );
    server.kill(); // SIGKILL mid-burst
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 40);

    // Restart on the same storage: every certificate a client got is there.
    let (_server, client) = issuer.serve(dir);
    let auth = format!("Bearer {token}");
    for serial in &received {
        let r = client.get(
            &format!("/v1/certificates/{serial}"),
            &[("Authorization", auth.as_str())],
        );
        assert_eq!(
            r.status, 200,
            "certificate {serial} was returned to a client but is not in storage after SIGKILL"
        );
        assert_eq!(r.json()["serial"], serial.as_str());
    }
    let (ok, out, err) = run_bin(&["audit", "verify", "--config", config_s]);
    assert!(ok, "audit log after SIGKILL: {out}{err}");
    drop(pg);
}

#[test]
fn sigkill_during_burst_loses_no_returned_certificate_sqlite() {
    burst_then_kill(Backend::Sqlite);
}

#[test]
fn sigkill_during_burst_loses_no_returned_certificate_postgres() {
    burst_then_kill(Backend::Postgres);
}
