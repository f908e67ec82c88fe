//! Attacks through cert-manager (issue 17): who created a CertificateRequest, as
//! cert-manager's webhook records it in `spec.username`, and the namespace it was
//! created in decide what it gets; only the cluster's `trusted_requesters`
//! (istio-csr) act for other namespaces. Before identity binding the chart's blanket
//! approval meant any request for our issuer was Issued.

mod certmanager_harness;

use certmanager_harness::*;
use kube_testserver::User;
use serde_json::json;

fn tenant() -> User {
    User {
        username: "system:serviceaccount:team-a:deployer".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_certificate_request_gets_istiods_identity() {
    let env = Env::new(&["aws"]).await;
    let server = &env.cluster("aws").server;
    create_cluster_issuer(server, "canopy", json!({}));
    let running = env.start("aws").await;
    let cases = [
        // (name, SPIFFE ID or DNS name, expected reason, message must mention)
        (
            "istiod-id",
            format!("spiffe://{TD}/ns/istio-system/sa/istiod"),
            "spiffe_id_outside_namespace",
        ),
        (
            "other-ns-dns",
            "api.web.example.com".to_string(),
            "dns_name_outside_namespace",
        ),
    ];
    for (name, asked, rule) in &cases {
        let csr = if asked.starts_with("spiffe://") {
            istio_csr(asked)
        } else {
            dns_csr(asked)
        };
        server
            .create_as(
                &tenant(),
                certificate_request(
                    "team-a",
                    name,
                    &csr.pem,
                    cluster_issuer_ref("canopy"),
                    istio_csr_spec(),
                ),
            )
            .unwrap();
        approve(server, "team-a", name).await;
        let cr = wait_reason(server, "team-a", name, "Failed").await;
        let message = ready(&cr).unwrap()["message"].as_str().unwrap().to_string();
        assert!(message.contains(rule), "{name}: {message}");
        assert!(
            cr["status"].get("certificate").is_none(),
            "{name}: nothing issued"
        );
    }
    // The webhook's record cannot be forged: a username written by the creator is
    // replaced, so claiming to be istio-csr gets nothing.
    let csr = istio_csr(&format!("spiffe://{TD}/ns/web/sa/frontend"));
    server
        .create_as(
            &tenant(),
            certificate_request(
                "team-a",
                "forged",
                &csr.pem,
                cluster_issuer_ref("canopy"),
                json!({"duration": "1h0m0s", "username": ISTIO_CSR_USER}),
            ),
        )
        .unwrap();
    approve(server, "team-a", "forged").await;
    let cr = wait_reason(server, "team-a", "forged", "Failed").await;
    assert_eq!(cr["spec"]["username"], tenant().username);

    // The tenant's own namespace is fine; istio-csr, trusted, acts for every namespace.
    let own = istio_csr(&format!("spiffe://{TD}/ns/team-a/sa/app"));
    server
        .create_as(
            &tenant(),
            certificate_request(
                "team-a",
                "own",
                &own.pem,
                cluster_issuer_ref("canopy"),
                istio_csr_spec(),
            ),
        )
        .unwrap();
    approve(server, "team-a", "own").await;
    wait_reason(server, "team-a", "own", "Issued").await;
    let mesh = istio_csr(&format!("spiffe://{TD}/ns/web/sa/frontend"));
    server
        .create_as(
            &istio_csr_user(),
            certificate_request(
                "istio-system",
                "istio-csr-web",
                &mesh.pem,
                cluster_issuer_ref("canopy"),
                istio_csr_spec(),
            ),
        )
        .unwrap();
    approve(server, "istio-system", "istio-csr-web").await;
    wait_reason(server, "istio-system", "istio-csr-web", "Issued").await;
    let records = env.records().await;
    assert_eq!(records.len(), 2, "own and istio-csr only: {records:#?}");
    running.stop().await;
}
