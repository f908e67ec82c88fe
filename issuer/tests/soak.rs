//! Soak: sustained signing by 8 concurrent clients (a new TLS connection per request, so
//! connection churn is soaked too) for CANOPY_SOAK_SECONDS (default 20; 300 for the
//! documented long run). The issuer's RSS and open file descriptors are sampled from
//! /proc and must stay flat after warm-up; latency percentiles are printed, never asserted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn sustained_signing_keeps_memory_and_descriptors_flat() {
    let seconds: u64 = std::env::var("CANOPY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let clients = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issuer = Configured::new(
        dir,
        "sqlite:soak.db",
        // Every client is 127.0.0.1: lift the per-peer limit along with the per-identity one.
        "  burst: 1000000\n  rate_per_second: 1000000\n  peer_burst: 1000000\n  peer_rate_per_second: 1000000",
    );
    let token = issuer.token.clone();
    let (mut server, client) = issuer.serve(dir);
    let pid = server.child.id();
    // CSRs made up front: the clients spend their time on the issuer, not on keygen.
    let csrs: Arc<Vec<String>> = Arc::new(
        (0..64)
            .map(|i| csr(Some(&format!("spiffe://{TD}/ns/soak/sa/w{i}")), &[]).pem)
            .collect(),
    );

    let before_fds = open_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (client, token, csrs) = (client.clone(), token.clone(), csrs.clone());
            let (stop, latencies, failures) = (stop.clone(), latencies.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"csr": csrs[i % csrs.len()], "ttl": "1h"});
                    let t0 = Instant::now();
                    match client.try_request(
                        "POST",
                        "/v1/sign",
                        &[
                            ("Authorization", &format!("Bearer {token}")),
                            ("Content-Type", "application/json"),
                        ],
                        Some(body.to_string().as_bytes()),
                    ) {
                        Ok(r) if r.status == 200 => latencies.lock().unwrap().push(t0.elapsed()),
                        Ok(r) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.text()))
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    i += clients;
                }
            })
        })
        .collect();

    // Samples every second: (elapsed s, RSS KiB, fds).
    let started = Instant::now();
    let warm_up = Duration::from_secs((seconds / 4).max(5));
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        assert!(server.alive(), "issuer died under load:\n{}", server.log());
        samples.push((started.elapsed().as_secs(), rss_kib(pid), open_fds(pid)));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let idle_fds = open_fds(pid);
    let idle_rss = rss_kib(pid);

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let failures = failures.lock().unwrap();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (base_rss, base_fds) = samples
        .iter()
        .find(|(t, _, _)| *t >= warm_up.as_secs())
        .map(|(_, r, f)| (*r, *f))
        .unwrap_or((samples[0].1, samples[0].2));
    let max_rss = samples
        .iter()
        .filter(|(t, _, _)| *t >= warm_up.as_secs())
        .map(|s| s.1)
        .max()
        .unwrap();
    let max_fds = samples.iter().map(|s| s.2).max().unwrap();
    eprintln!(
        "soak: {} signed in {:.1?} by {clients} clients ({:.0}/s), {} failed; latency p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        elapsed,
        lat.len() as f64 / elapsed.as_secs_f64(),
        failures.len(),
        pct(0.50),
        pct(0.99),
        lat.last().unwrap()
    );
    eprintln!(
        "soak: RSS after warm-up {base_rss} KiB, max {max_rss} KiB, idle {idle_rss} KiB; fds before {before_fds}, after warm-up {base_fds}, max {max_fds}, idle {idle_fds}"
    );
    eprintln!("soak samples (s, RSS KiB, fds): {samples:?}");

    assert!(
        lat.len() > 100,
        "too few certificates to judge: {}",
        lat.len()
    );
    assert!(
        failures.len() * 100 <= lat.len(),
        "more than 1% of requests failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        max_rss * 2 < base_rss * 3 + 2 * 16 * 1024,
        "RSS grew more than 50% (+16 MiB) after warm-up: {base_rss} -> {max_rss} KiB"
    );
    // 8 clients hold at most a handful of connections each moment; the pool is 10.
    assert!(max_fds < 200, "open descriptors reached {max_fds}");
    assert!(
        idle_fds <= before_fds + 16,
        "descriptors not released after the load: {before_fds} before, {idle_fds} after"
    );
    // Still serving.
    assert_eq!(client.get("/healthz", &[]).status, 200);
}
