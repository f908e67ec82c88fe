//! `cacerts sync` against two real control planes (aws, azure): what is written, checked
//! independently with openssl; idempotency; renewal; expiry alarm and readiness.

use std::sync::Arc;

use crate::istio_common::*;
use canopy_issuer::audit::verify::{verify, VerifyOptions};
use canopy_issuer::istio::{self, Controller, IstioMetrics, Outcome};
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_both_clusters_and_openssl_verifies_across_clusters() {
    let mesh = Mesh::start().await;
    let marks = [mesh.mark("aws"), mesh.mark("azure")];
    let report = istio::sync_once(mesh.setup(), mesh.store.clone(), mesh.t0).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    for c in ["aws", "azure"] {
        assert!(
            matches!(report.cluster(c).unwrap().outcome, Outcome::Created(_)),
            "{report}"
        );
    }
    let now = mesh.t0;
    let (aws, azure) = (mesh.files("aws"), mesh.files("azure"));
    openssl_check_secret(&mesh.path().join("check-aws"), &aws, now);
    openssl_check_secret(&mesh.path().join("check-azure"), &azure, now);

    // A leaf signed by each mesh CA verifies against the OTHER cluster's root-cert.pem.
    let aws_leaf = leaf_from(&mesh.path().join("leaf-aws"), &aws, now);
    let azure_leaf = leaf_from(&mesh.path().join("leaf-azure"), &azure, now);
    leaf_verifies(
        &aws_leaf,
        &azure["root-cert.pem"],
        &mesh.path().join("x1"),
        now,
    )
    .unwrap();
    leaf_verifies(
        &azure_leaf,
        &aws["root-cert.pem"],
        &mesh.path().join("x2"),
        now,
    )
    .unwrap();

    // Shape of the Secret: Opaque, managed by canopy, annotated with the CA's serial and notAfter.
    for (c, mark) in ["aws", "azure"].into_iter().zip(marks) {
        let s = mesh.secret(c).unwrap();
        assert_eq!(s["type"], "Opaque");
        assert_eq!(
            s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "canopy"
        );
        assert_eq!(s["metadata"]["labels"]["canopy.dev/cluster"], c);
        let serial = s["metadata"]["annotations"]["canopy.dev/ca-serial"]
            .as_str()
            .unwrap();
        assert_eq!(report.cluster(c).unwrap().minted.as_deref(), Some(serial));
        assert!(s["metadata"]["annotations"]["canopy.dev/ca-not-after"].is_string());
        // Mesh CA: pathlen 0, signed by the cluster's intermediate, 90 days; cert-chain has 3 certs.
        let files = mesh.files(c);
        let chain =
            canopy::cert::Certificate::parse_pem_all(&text(&files, "cert-chain.pem")).unwrap();
        assert_eq!(chain.len(), 3, "mesh CA, intermediate, root");
        assert_eq!(chain[0].path_len(), Some(0));
        // Name-constrained to the trust domain and istiod's names (checked by openssl).
        assert!(chain[0].has_name_constraints());
        let ca_pem = mesh.path().join(format!("nc-{c}.pem"));
        std::fs::write(&ca_pem, text(&files, "ca-cert.pem")).unwrap();
        let out = canopy_testsupport::run(
            canopy_testsupport::openssl()
                .args(["x509", "-noout", "-ext", "nameConstraints", "-in"])
                .arg(&ca_pem),
        );
        let nc = String::from_utf8_lossy(&out.stdout);
        assert!(
            nc.contains("critical")
                && nc.contains("URI:mesh.example")
                && nc.contains("DNS:.istio-system.svc"),
            "{nc}"
        );
        assert_eq!(chain[1].subject_cn(), Some(c));
        let life = chain[0].not_after() - chain[0].not_before();
        assert!(life >= Duration::days(90), "{life}");
        // Recorded in the store, and the audit chain holds.
        assert_eq!(mesh.recorded_mesh_cas(c).await, vec![serial.to_string()]);
        // The create was a POST; nothing was deleted.
        let log = mesh.server(c).requests_since(mark);
        assert!(
            log.iter()
                .any(|(verb, res, code)| verb == "create" && res == "secrets" && *code == 201),
            "{log:?}"
        );
        assert!(!log.iter().any(|(verb, _, _)| verb == "delete"), "{log:?}");
    }
    let audit = verify(&mesh.store, &VerifyOptions::default()).await;
    assert!(audit.ok, "{:?}", audit.problems);
    assert!(audit.entries >= 4, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_writes_nothing() {
    let mesh = Mesh::start().await;
    let setup = mesh.setup();
    let first = istio::sync_once(setup.clone(), mesh.store.clone(), mesh.t0).await;
    assert_eq!(first.exit_code(), 0, "{first}");
    let rv = (mesh.rv("aws"), mesh.rv("azure"));
    let marks = [mesh.mark("aws"), mesh.mark("azure")];
    // Later, but long before renewal, with a fresh setup (as a re-run Job would).
    let again = istio::sync_once(
        mesh.setup(),
        mesh.store.clone(),
        mesh.t0 + Duration::days(10),
    )
    .await;
    assert_eq!(again.exit_code(), 0, "{again}");
    for (c, mark) in ["aws", "azure"].into_iter().zip(marks) {
        assert_eq!(
            again.cluster(c).unwrap().outcome,
            Outcome::Unchanged,
            "{again}"
        );
        let writes = mesh.writes_since(c, mark);
        assert!(writes.is_empty(), "{writes:?}");
        let read = mesh.server(c).requests_since(mark);
        assert!(
            read.iter()
                .any(|(verb, res, _)| verb == "get" && res == "secrets"),
            "it did read: {read:?}"
        );
    }
    assert_eq!((mesh.rv("aws"), mesh.rv("azure")), rv);
    assert_eq!(mesh.recorded_mesh_cas("aws").await.len(), 1);
    // And status agrees: nothing to do, no problems.
    let status = istio::status(mesh.setup(), mesh.t0 + Duration::days(10)).await;
    assert!(status.all_ok(), "{status}");
    let json = status.to_json();
    assert_eq!(json["clusters"][0]["cluster"], "aws");
    assert_eq!(json["clusters"][0]["outcome"]["result"], "unchanged");
    assert_eq!(json["clusters"][0]["roots"].as_array().unwrap().len(), 1);
    assert!(json["clusters"][1]["ca"]["serial"].is_string());
    let writes = mesh.writes_since("aws", marks[0]);
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_at_two_thirds_updates_in_place_and_keeps_root_cert_bytes() {
    let mesh = Mesh::start().await;
    let setup = mesh.setup();
    istio::sync_once(setup.clone(), mesh.store.clone(), mesh.t0).await;
    let before = mesh.files("aws");
    let old_serial =
        mesh.secret("aws").unwrap()["metadata"]["annotations"]["canopy.dev/ca-serial"].clone();
    // Day 55: before 2/3 (60 days minus at most 5% jitter = 55.5 days): nothing.
    let r = istio::sync_once(
        setup.clone(),
        mesh.store.clone(),
        mesh.t0 + Duration::days(55),
    )
    .await;
    assert_eq!(r.cluster("aws").unwrap().outcome, Outcome::Unchanged, "{r}");
    // Day 61: renewed in place.
    let rv = mesh.rv("aws");
    let mark = mesh.mark("aws");
    let at = mesh.t0 + Duration::days(61);
    let r = istio::sync_once(setup.clone(), mesh.store.clone(), at).await;
    let c = r.cluster("aws").unwrap();
    assert!(
        matches!(&c.outcome, Outcome::Updated(why) if why.contains("renewal due")),
        "{r}"
    );
    let after = mesh.files("aws");
    assert_ne!(mesh.rv("aws"), rv);
    assert_ne!(
        mesh.secret("aws").unwrap()["metadata"]["annotations"]["canopy.dev/ca-serial"],
        old_serial
    );
    assert_ne!(after["ca-cert.pem"], before["ca-cert.pem"]);
    assert_eq!(
        after["root-cert.pem"], before["root-cert.pem"],
        "root-cert.pem must stay byte-identical"
    );
    let writes: Vec<(String, String)> = mesh
        .aws
        .requests_since(mark)
        .into_iter()
        .filter(|(verb, _, _)| !["get", "list", "watch"].contains(&verb.as_str()))
        .map(|(verb, res, _)| (verb, res))
        .collect();
    assert_eq!(
        writes,
        vec![("update".to_string(), "secrets".to_string())],
        "one in-place update, no delete"
    );
    openssl_check_secret(&mesh.path().join("renewed"), &after, at);
    assert_eq!(mesh.recorded_mesh_cas("aws").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_alarm_metric_event_and_readiness() {
    let mesh = Mesh::start().await;
    let aws = mesh.aws.real();
    let mut registry = prometheus_client::registry::Registry::with_prefix("canopy");
    let metrics = Arc::new(IstioMetrics::register(&mut registry));
    let controller = Controller::new(mesh.setup(), mesh.store.clone(), Some(metrics.clone()));
    let health = controller.health();
    let r = controller.tick(mesh.t0).await;
    assert!(r.all_ok(), "{r}");
    assert!(health.readiness(mesh.t0).is_ok());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("canopy_mesh_ca_expiry_seconds{cluster=\"aws\"}"))
        .unwrap_or_else(|| panic!("no gauge in\n{text}"));
    let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((secs - 90 * 86400).abs() < 600, "{line}");
    // The next pass is due at aws's or azure's renewal time, not later.
    let next = controller.next_pass(&r, mesh.t0);
    assert!(next <= mesh.t0 + Duration::minutes(1));

    // Day 82 (last tenth of 90 days) and aws refuses every update of cacerts (an
    // admission policy denies it): no renewal.
    freeze_cacerts(aws);
    let late = mesh.t0 + Duration::days(82);
    let r = controller.tick(late).await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Failed(_)),
        "{r}"
    );
    assert!(r.cluster("azure").unwrap().outcome.is_ok(), "{r}");
    let not_ready = health.readiness(late).unwrap_err();
    assert_eq!(not_ready.len(), 1, "{not_ready:?}");
    assert!(not_ready[0].contains("cluster aws"), "{not_ready:?}");
    let events = mesh.aws.events();
    let warning = events
        .iter()
        .find(|e| e["reason"] == "MeshCAExpiring")
        .unwrap_or_else(|| panic!("no MeshCAExpiring event in {events:?}"));
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["involvedObject"]["name"], "cacerts");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("canopy_cacerts_sync_failures_total{cluster=\"aws\"} 1"),
        "{text}"
    );

    // The API server admits updates again: renewed, ready again.
    unfreeze_cacerts(aws);
    let r = controller.tick(late + Duration::minutes(1)).await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Updated(_)),
        "{r}"
    );
    assert!(health.readiness(late + Duration::minutes(1)).is_ok());
    assert!(health.last().unwrap().all_ok());
}
