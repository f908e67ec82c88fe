//! Every branch of shared/contracts/cert-manager.md, against a real control plane (etcd,
//! kube-apiserver and cert-manager's webhook); three fault tests on the fake API server.

use std::time::Duration;

use crate::certmanager_harness::*;
use kube_testserver::{Fault, FaultScope};
use serde_json::json;

fn workload_csr(ns: &str, sa: &str) -> KeyedCsr {
    istio_csr(&format!("spiffe://{TD}/ns/{ns}/sa/{sa}"))
}

/// Env with one cluster `aws`, a Ready ClusterIssuer `canopy`, controllers running.
async fn aws() -> (Env, Running) {
    with_issuer(Env::new(&["aws"]).await).await
}

/// [`aws`] on the fake API server.
async fn aws_fake() -> (Env, Running) {
    with_issuer(Env::fake(&["aws"]).await).await
}

async fn with_issuer(env: Env) -> (Env, Running) {
    create_cluster_issuer(&env.cluster("aws").server, "canopy", json!({}));
    let running = env.start("aws").await;
    (env, running)
}

fn create(
    env: &Env,
    ns: &str,
    name: &str,
    csr_pem: &str,
    issuer_ref: serde_json::Value,
    spec: serde_json::Value,
) {
    env.cluster("aws")
        .server
        .create(certificate_request(ns, name, csr_pem, issuer_ref, spec))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_group_or_kind_is_ignored() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    // cert-manager's webhook lets no one approve a request for a kind that is not served
    // (AWSPCAClusterIssuer, clusterissuer); with validation off, one can.
    disable_validation(server, "team-a");
    let csr = workload_csr("team-a", "app");
    let refs = [
        (
            "other-group",
            json!({"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "canopy"}),
        ),
        (
            "no-group",
            json!({"kind": "ClusterIssuer", "name": "canopy"}),
        ),
        (
            "wrong-kind",
            json!({"group": "pki.canopy.dev", "kind": "AWSPCAClusterIssuer", "name": "canopy"}),
        ),
        (
            "lowercase-kind",
            json!({"group": "pki.canopy.dev", "kind": "clusterissuer", "name": "canopy"}),
        ),
    ];
    for (name, r) in &refs {
        create(&env, "team-a", name, &csr.pem, r.clone(), istio_csr_spec());
        approve(server, "team-a", name).await;
    }
    // A request of ours, created last, shows the controller has seen the others.
    create(
        &env,
        "team-a",
        "ours",
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    approve(server, "team-a", "ours").await;
    wait_reason(server, "team-a", "ours", "Issued").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, r) in &refs {
        let cr = get_cr(server, "team-a", name).unwrap();
        match ready(&cr) {
            None => {}
            // cert-manager's own controllers (running on the real control plane) answer
            // requests for cert-manager.io issuers: "ClusterIssuer not found". Never canopy.
            Some(c) if matches!(server, Kube::Real(..)) && r["group"] != "pki.canopy.dev" => {
                assert!(
                    c["message"]
                        .as_str()
                        .unwrap()
                        .contains("clusterissuer.cert-manager.io \"canopy\" not found"),
                    "{name}: {cr}"
                )
            }
            Some(_) => panic!("{name}: {cr}"),
        }
        // Only the test approver wrote status (besides cert-manager's controllers); the
        // controller never did.
        assert_eq!(status_writes(server, "team-a", name), 1, "{name}");
    }
    assert_eq!(env.records().await.len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_kind_means_issuer_and_unapproved_is_left_alone() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    create_issuer(server, "team-a", "local", json!({"intermediate": "aws"}));
    let csr = workload_csr("team-a", "app");
    create(
        &env,
        "team-a",
        "waiting",
        &csr.pem,
        json!({"group": "pki.canopy.dev", "name": "local"}),
        istio_csr_spec(),
    );
    // A request for the same issuer created after it and approved: once it is issued, the
    // controller has run and has seen the unapproved one (the watch delivers in order).
    let witness = workload_csr("team-a", "witness");
    create(
        &env,
        "team-a",
        "witness",
        &witness.pem,
        json!({"group": "pki.canopy.dev", "name": "local"}),
        istio_csr_spec(),
    );
    approve(server, "team-a", "witness").await;
    wait_reason(server, "team-a", "witness", "Issued").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cr = get_cr(server, "team-a", "waiting").unwrap();
    assert!(ready(&cr).is_none(), "unapproved: untouched: {cr}");
    assert_eq!(status_writes(server, "team-a", "waiting"), 0);
    let records = env.records().await;
    assert_eq!(records.len(), 1, "only the approved witness: {records:#?}");
    assert!(
        records[0]
            .requester
            .starts_with("certificaterequest:aws/team-a/witness#"),
        "{records:#?}"
    );

    approve(server, "team-a", "waiting").await;
    let cr = wait_reason(server, "team-a", "waiting", "Issued").await;
    assert!(cr["status"]["certificate"].is_string());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_becomes_denied_with_failure_time() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    let csr = workload_csr("team-a", "app");
    create(
        &env,
        "team-a",
        "nope",
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    set_approval(server, "team-a", "nope", "Denied").await;
    let cr = wait_reason(server, "team-a", "nope", "Denied").await;
    assert_eq!(ready(&cr).unwrap()["status"], "False");
    assert!(cr["status"]["failureTime"].is_string(), "{cr}");
    assert!(cr["status"]["certificate"].is_null());
    let events = wait_event(server, "team-a", |e| {
        e["reason"] == "Denied" && e["type"] == "Warning"
    })
    .await;
    assert!(events
        .iter()
        .any(|e| e["reason"] == "Denied" && e["type"] == "Warning"));
    // Final: a second approver approving later changes nothing (cert-manager's webhook
    // refuses Approved next to Denied).
    let refused = try_set_approval_as(server, "late-approver", "team-a", "nope", "Approved")
        .await
        .unwrap_err();
    assert!(refused.contains("cannot coexist"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ready(&get_cr(server, "team-a", "nope").unwrap()).unwrap()["reason"],
        "Denied"
    );
    assert!(env.records().await.is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_requests_fail_with_failure_time() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    // cert-manager's webhook refuses most of these at creation (a CSR that does not parse,
    // say); canopy must still refuse them where validation is off.
    disable_validation(server, "team-a");
    let good = workload_csr("team-a", "app");
    let mut tampered = good.pem.replace("\r", "");
    // Flip one base64 character inside the CSR body: the signature no longer verifies.
    let idx = tampered.find('\n').unwrap() + 40;
    let c = tampered.as_bytes()[idx];
    tampered.replace_range(idx..idx + 1, if c == b'A' { "B" } else { "A" });
    let cases = [
        ("bad-csr", tampered.clone(), istio_csr_spec(), "CSR"),
        ("not-pem", "hello".to_string(), istio_csr_spec(), "CSR"),
        (
            "is-ca",
            good.pem.clone(),
            json!({"isCA": true, "duration": "1h"}),
            "CA",
        ),
        (
            "code-signing",
            good.pem.clone(),
            json!({"usages": ["code signing"]}),
            "usage",
        ),
        (
            "bad-duration",
            good.pem.clone(),
            json!({"duration": "one hour"}),
            "duration",
        ),
        (
            "policy-denied",
            dns_csr("evil.example.org").pem,
            certificate_spec(),
            "denied by policy",
        ),
        (
            "other-trust-domain",
            istio_csr("spiffe://other.example/ns/a/sa/b").pem,
            istio_csr_spec(),
            "trust domain",
        ),
    ];
    for (name, pem, spec, _) in &cases {
        create(
            &env,
            "team-a",
            name,
            pem,
            cluster_issuer_ref("canopy"),
            spec.clone(),
        );
        approve(server, "team-a", name).await;
    }
    for (name, _, _, needle) in &cases {
        let cr = wait_reason(server, "team-a", name, "Failed").await;
        let c = ready(&cr).unwrap();
        assert_eq!(c["status"], "False");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{name}: {message:?} should mention {needle:?}"
        );
        assert!(
            cr["status"]["failureTime"].is_string(),
            "{name}: failureTime"
        );
        assert!(cr["status"]["certificate"].is_null());
    }
    let events = wait_event(server, "team-a", |e| {
        e["reason"] == "Failed" && e["regarding"]["name"] == "is-ca"
    })
    .await;
    assert!(events
        .iter()
        .any(|e| e["reason"] == "Failed" && e["regarding"]["name"] == "is-ca"));
    assert!(env.records().await.is_empty(), "nothing was signed");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_not_ready_is_pending_then_issued() {
    let env = Env::new(&["aws"]).await;
    let server = &env.cluster("aws").server;
    let running = env.start("aws").await;
    let csr = workload_csr("team-a", "app");
    create(
        &env,
        "team-a",
        "early",
        &csr.pem,
        issuer_ref("later"),
        istio_csr_spec(),
    );
    approve(server, "team-a", "early").await;
    let cr = wait_reason(server, "team-a", "early", "Pending").await;
    assert!(ready(&cr).unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert!(cr["status"]["failureTime"].is_null());

    // An issuer naming an unknown intermediate: not Ready, the request stays Pending.
    create_issuer(server, "team-a", "later", json!({"intermediate": "gcp"}));
    let issuer = eventually("issuer status", Duration::from_secs(10), || {
        let i = server.get(
            "pki.canopy.dev/v1alpha1",
            "issuers",
            Some("team-a"),
            "later",
        )?;
        (i["status"]["conditions"][0]["reason"] == "UnknownIntermediate").then_some(i)
    })
    .await;
    assert_eq!(issuer["status"]["conditions"][0]["status"], "False");
    assert_eq!(issuer["status"]["observedGeneration"], 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cr = get_cr(server, "team-a", "early").unwrap();
    assert_eq!(ready(&cr).unwrap()["reason"], "Pending", "{cr}");
    assert!(env.records().await.is_empty());

    // Fixed: Ready, and the waiting request is issued.
    let client = server.client().await;
    let api: kube::Api<canopy_issuer::certmanager::crd::Issuer> =
        kube::Api::namespaced(client, "team-a");
    api.patch(
        "later",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"intermediate": "aws"}})),
    )
    .await
    .unwrap();
    let cr = wait_reason(server, "team-a", "early", "Issued").await;
    assert!(cr["status"]["ca"].is_string());
    let issuer = server
        .get(
            "pki.canopy.dev/v1alpha1",
            "issuers",
            Some("team-a"),
            "later",
        )
        .unwrap();
    assert_eq!(issuer["status"]["conditions"][0]["status"], "True");
    assert_eq!(issuer["status"]["conditions"][0]["observedGeneration"], 2);
    assert_eq!(issuer["status"]["observedGeneration"], 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_limits_and_max_duration_apply() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    create_issuer(
        server,
        "team-a",
        "narrow",
        json!({"maxDuration": "30m", "allowedSpiffeIds": ["spiffe://mesh.example/ns/team-a/**"]}),
    );
    let ok = workload_csr("team-a", "app");
    create(
        &env,
        "team-a",
        "inside",
        &ok.pem,
        issuer_ref("narrow"),
        istio_csr_spec(),
    );
    let other = workload_csr("istio-system", "istiod");
    create(
        &env,
        "team-a",
        "outside",
        &other.pem,
        issuer_ref("narrow"),
        istio_csr_spec(),
    );
    approve(server, "team-a", "inside").await;
    approve(server, "team-a", "outside").await;
    let cr = wait_reason(server, "team-a", "inside", "Issued").await;
    let leaf =
        canopy::cert::Certificate::parse_pem_all(&b64_pem(&cr["status"]["certificate"])).unwrap();
    let life = leaf[0].not_after() - leaf[0].not_before();
    assert!(life <= time::Duration::minutes(32), "capped to 30m: {life}");
    let cr = wait_reason(server, "team-a", "outside", "Failed").await;
    assert!(ready(&cr).unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("allowedSpiffeIds"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_deleted_before_status_write_is_done() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    let csr = workload_csr("istio-system", "istiod");
    create(
        &env,
        "istio-system",
        "gone",
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    // Signing blocks on the database: the request is deleted meanwhile (as istio-csr does).
    let lock = DbWriteLock::take(&env.db_url()).await;
    approve(server, "istio-system", "gone").await;
    wait_signing(&env.issuer, "istio-system/gone").await;
    let client = server.client().await;
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        "istio-system",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
            "certificaterequests",
        ),
    );
    api.delete("gone", &Default::default()).await.unwrap();
    let writes_before = status_writes(server, "istio-system", "gone");
    lock.release().await;
    // Signed once, the 404 on the status write ends it: no retries.
    wait_records(&env, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_after = status_writes(server, "istio-system", "gone");
    assert_eq!(
        writes_after,
        writes_before + 1,
        "one status write (the 404), then nothing"
    );
    let codes = status_write_codes(server, "istio-system", "gone");
    assert_eq!(codes.iter().filter(|c| **c == 404).count(), 1, "{codes:?}");
    assert_eq!(env.records().await.len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_errors_are_retried() {
    // Fake API server: the real kube-apiserver cannot be made to answer exactly five 500s
    // to status patches, or 503 to every request while it stays up, on demand.
    let (env, running) = aws_fake().await;
    let server = &env.cluster("aws").server;
    let fake = server.fake();
    // Status writes fail five times, then everything fails for a while.
    fake.set_fault_scoped(
        Fault::Error {
            status: 500,
            count: Some(5),
        },
        FaultScope::verb_on("patch", "certificaterequests").subresource("status"),
    );
    let csr = workload_csr("team-a", "app");
    create(
        &env,
        "team-a",
        "flaky",
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    approve(server, "team-a", "flaky").await;
    let cr = wait_reason(server, "team-a", "flaky", "Issued").await;
    assert!(cr["status"]["certificate"].is_string());
    let failed = fake
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/flaky/status") && r.status == 500)
        .count();
    // Five failures (the approver, retrying, may have met one of them) were retried.
    assert_eq!(failed, 5);

    fake.set_fault(Fault::Error {
        status: 503,
        count: None,
    });
    let csr2 = workload_csr("team-a", "app2");
    // Created through the store directly: the API is failing for clients.
    create(
        &env,
        "team-a",
        "outage",
        &csr2.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.set_fault(Fault::None);
    approve(server, "team-a", "outage").await;
    wait_reason(server, "team-a", "outage", "Issued").await;
    assert_eq!(env.records().await.len(), 2, "each signed once");
    running.stop().await;
}

/// Creates an istio-csr style request for `team-a/SA` named `name` in cluster aws, and
/// approves it.
async fn create_approved(env: &Env, name: &str, sa: &str) {
    let csr = workload_csr("team-a", sa);
    create(
        env,
        "team-a",
        name,
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    approve(&env.cluster("aws").server, "team-a", name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_and_slow_answers_converge() {
    // Fake API server: the real kube-apiserver cannot be made to hang the watches opened
    // again after a cut, on demand.
    let (env, running) = aws_fake().await;
    let server = &env.cluster("aws").server;
    let fake = server.fake();
    create_approved(&env, "before", "app").await;
    wait_reason(server, "team-a", "before", "Issued").await;

    // Every watch stream is cut, and the watches opened again hang (a slow API server)
    // while a request arrives; the controllers must come back by themselves.
    fake.set_fault_scoped(
        Fault::Hang { count: None },
        FaultScope {
            verb: Some("watch".into()),
            ..FaultScope::default()
        },
    );
    fake.set_fault(Fault::DropWatches);
    create_approved(&env, "during", "app2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.set_fault(Fault::None);
    wait_reason(server, "team-a", "during", "Issued").await;

    // Cut again with nothing hanging: a request after the reconnect is served too.
    fake.set_fault(Fault::DropWatches);
    create_approved(&env, "after", "app3").await;
    wait_reason(server, "team-a", "after", "Issued").await;
    let watches = fake
        .request_log()
        .iter()
        .filter(|r| {
            r.path.contains("certificaterequests")
                && matches!(r.query_param("watch").as_deref(), Some("true" | "1"))
        })
        .count();
    assert!(watches >= 2, "the controller watched again after the cut");
    assert_eq!(env.records().await.len(), 3, "each signed once");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_sign_and_status_write_does_not_sign_twice() {
    // Fake API server: the real kube-apiserver cannot be made to answer 500 to the status
    // patches of one request, on demand.
    let env = Env::fake(&["aws"]).await;
    let server = &env.cluster("aws").server;
    let fake = server.fake();
    create_cluster_issuer(server, "canopy", json!({}));
    let first = env.start("aws").await;
    let csr = workload_csr("istio-system", "istiod");
    create(
        &env,
        "istio-system",
        "crash",
        &csr.pem,
        cluster_issuer_ref("canopy"),
        istio_csr_spec(),
    );
    let lock = DbWriteLock::take(&env.db_url()).await;
    approve(server, "istio-system", "crash").await;
    wait_signing(&env.issuer, "istio-system/crash").await;
    // The status write after signing will fail; then the process "crashes".
    fake.set_fault_scoped(
        Fault::Error {
            status: 500,
            count: None,
        },
        FaultScope::verb_on("patch", "certificaterequests").subresource("status"),
    );
    lock.release().await;
    let record = wait_records(&env, 1).await.pop().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().await;
    let cr = get_cr(server, "istio-system", "crash").unwrap();
    assert!(ready(&cr).is_none(), "status was not written: {cr}");
    fake.set_fault(Fault::None);

    // A new process (new Issuer over the same database) picks the request up.
    let second = env
        .start_with("aws", env.restarted_issuer().await, settings())
        .await;
    let cr = wait_reason(server, "istio-system", "crash", "Issued").await;
    let leaf =
        canopy::cert::Certificate::parse_pem_all(&b64_pem(&cr["status"]["certificate"])).unwrap();
    assert_eq!(
        leaf[0].serial().to_string(),
        record.serial,
        "the same certificate, not a new one"
    );
    assert_eq!(env.records().await.len(), 1, "signed exactly once");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_csr_api_for_our_signer_names() {
    let (env, running) = aws().await;
    let server = &env.cluster("aws").server;
    create_issuer(server, "team-a", "local", json!({}));
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    };
    let csr_object = |name: &str, signer: &str, pem: &str, annotations: serde_json::Value| {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "request": b64(pem),
                "signerName": signer,
                "usages": ["digital signature", "client auth", "server auth"],
            },
        })
    };
    let w = workload_csr("team-a", "app");
    server
        .create(csr_object(
            "cluster-signed",
            "clusterissuers.pki.canopy.dev/canopy",
            &w.pem,
            json!({"experimental.cert-manager.io/request-duration": "2h"}),
        ))
        .unwrap();
    server
        .create(csr_object(
            "ns-signed",
            "issuers.pki.canopy.dev/team-a.local",
            &workload_csr("team-a", "other").pem,
            json!({}),
        ))
        .unwrap();
    server
        .create(csr_object(
            "wants-ca",
            "clusterissuers.pki.canopy.dev/canopy",
            &w.pem,
            json!({"experimental.cert-manager.io/request-is-ca": "true"}),
        ))
        .unwrap();
    server
        .create(csr_object(
            "not-ours",
            "kubernetes.io/kube-apiserver-client",
            &w.pem,
            json!({}),
        ))
        .unwrap();
    let client = server.client().await;
    let api: kube::Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        kube::Api::all(client);
    for name in ["cluster-signed", "ns-signed", "wants-ca", "not-ours"] {
        let body = json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "Test", "message": "approved",
            "lastTransitionTime": "2025-01-01T00:00:00Z", "lastUpdateTime": "2025-01-01T00:00:00Z"
        }]}});
        api.patch_approval(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(body),
        )
        .await
        .unwrap();
    }
    let get = |name: &str| {
        server.get(
            "certificates.k8s.io/v1",
            "certificatesigningrequests",
            None,
            name,
        )
    };
    for name in ["cluster-signed", "ns-signed"] {
        let csr = eventually(name, Duration::from_secs(20), || {
            get(name).filter(|c| c["status"]["certificate"].is_string())
        })
        .await;
        let chain =
            canopy::cert::Certificate::parse_pem_all(&b64_pem(&csr["status"]["certificate"]))
                .unwrap();
        assert_eq!(chain.len(), 2);
        if name == "cluster-signed" {
            let life = chain[0].not_after() - chain[0].not_before();
            assert!(
                life <= time::Duration::hours(2) + time::Duration::minutes(2),
                "{life}"
            );
            assert!(life > time::Duration::hours(1));
        }
        let approved = csr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Approved");
        assert!(approved, "{name}: Approved survives");
    }
    let failed = eventually("wants-ca failed", Duration::from_secs(20), || {
        get("wants-ca").filter(|c| {
            c["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Failed"))
        })
    })
    .await;
    assert!(failed["status"]["certificate"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get("not-ours").unwrap()["status"]["certificate"].is_null());
    let records = env.records().await;
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .any(|r| r.namespace.as_deref() == Some("team-a")
            && r.requester
                .starts_with("certificatesigningrequest:aws/team-a/ns-signed#")));
    running.stop().await;
}
