//! Two replicas of the controllers of one cluster: one leads (holds the Lease), the
//! other waits; when the leader dies, the other takes over within a lease period;
//! every request is signed once.

use std::time::{Duration, Instant};

use crate::certmanager_harness::*;
use canopy_issuer::certmanager::Settings;
use canopy_issuer::leader::LeaseSettings;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(2);

fn replica(identity: &str) -> Settings {
    let mut s = settings();
    s.instance = identity.to_string();
    s.lease = Some(LeaseSettings {
        namespace: "canopy".into(),
        name: "canopy-issuer-aws".into(),
        identity: identity.into(),
        lease_duration: LEASE,
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_takeover_when_it_dies() {
    let env = Env::new(&["aws"]).await;
    let server = &env.cluster("aws").server;
    create_cluster_issuer(server, "canopy", json!({}));
    let a = env
        .start_with("aws", env.issuer.clone(), replica("replica-a"))
        .await;
    let b = env
        .start_with("aws", env.restarted_issuer().await, replica("replica-b"))
        .await;

    eventually("a leader", Duration::from_secs(10), || {
        (a.is_leader() || b.is_leader()).then_some(())
    })
    .await;
    // Stable: exactly one leads, over several renewals.
    for _ in 0..10 {
        assert!(a.is_leader() ^ b.is_leader(), "exactly one leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, standby, leader_id, standby_id) = if a.is_leader() {
        (a, b, "replica-a", "replica-b")
    } else {
        (b, a, "replica-b", "replica-a")
    };
    let lease = server
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some("canopy"),
            "canopy-issuer-aws",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], leader_id);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
    assert!(lease["spec"]["renewTime"].is_string() && lease["spec"]["acquireTime"].is_string());
    let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap();

    let one = istio_csr(&format!("spiffe://{TD}/ns/team-a/sa/one"));
    server
        .create(certificate_request(
            "team-a",
            "one",
            &one.pem,
            cluster_issuer_ref("canopy"),
            istio_csr_spec(),
        ))
        .unwrap();
    approve(server, "team-a", "one").await;
    wait_reason(server, "team-a", "one", "Issued").await;

    // The leader dies without releasing the Lease.
    let died = Instant::now();
    leader.kill().await;
    eventually(
        "the standby to take over",
        LEASE + Duration::from_secs(3),
        || standby.is_leader().then_some(()),
    )
    .await;
    let took = died.elapsed();
    assert!(
        took <= LEASE + Duration::from_millis(600),
        "takeover within a lease period (+ one retry), took {took:?}"
    );
    let lease = server
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some("canopy"),
            "canopy-issuer-aws",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], standby_id);
    assert_eq!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap(),
        transitions + 1
    );

    let two = istio_csr(&format!("spiffe://{TD}/ns/team-a/sa/two"));
    server
        .create(certificate_request(
            "team-a",
            "two",
            &two.pem,
            cluster_issuer_ref("canopy"),
            istio_csr_spec(),
        ))
        .unwrap();
    approve(server, "team-a", "two").await;
    wait_reason(server, "team-a", "two", "Issued").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.records().await.len(), 2, "each request signed once");

    // A graceful stop releases the Lease at once.
    standby.stop().await;
    let lease = server
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some("canopy"),
            "canopy-issuer-aws",
        )
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_never_reconciles() {
    let env = Env::new(&["aws"]).await;
    let server = &env.cluster("aws").server;
    create_cluster_issuer(server, "canopy", json!({}));
    // Someone else holds a live Lease.
    server
        .create(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "canopy-issuer-aws", "namespace": "canopy"},
            "spec": {
                "holderIdentity": "elsewhere",
                "leaseDurationSeconds": 3600,
                "renewTime": canopy_now(),
                "acquireTime": canopy_now(),
                "leaseTransitions": 0,
            },
        }))
        .unwrap();
    let standby = env
        .start_with("aws", env.issuer.clone(), replica("replica-a"))
        .await;
    let csr = istio_csr(&format!("spiffe://{TD}/ns/team-a/sa/app"));
    server
        .create(certificate_request(
            "team-a",
            "app",
            &csr.pem,
            cluster_issuer_ref("canopy"),
            istio_csr_spec(),
        ))
        .unwrap();
    let mark = server.real().audit_mark();
    approve(server, "team-a", "app").await;
    // The standby is running, not stuck before its loop: it keeps trying the Lease (every
    // 200 ms) after the request was approved; ten tries span about two seconds.
    eventually(
        "ten Lease tries by the standby",
        Duration::from_secs(30),
        || {
            let tries = tokio::task::block_in_place(|| server.real().audit_since(mark))
                .iter()
                .filter(|e| {
                    e.resource == "leases"
                        && e.namespace == "canopy"
                        && e.name == "canopy-issuer-aws"
                })
                .count();
            (tries >= 10).then_some(())
        },
    )
    .await;
    assert!(!standby.is_leader());
    assert!(ready(&get_cr(server, "team-a", "app").unwrap()).is_none());
    assert!(env.records().await.is_empty());
    standby.stop().await;
}

fn canopy_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}
