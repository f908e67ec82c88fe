//! Identity binding through the real cert-manager (issue 17, against real components):
//! a tenant's service account, with its own TokenRequest token, creates CertificateRequests
//! in its namespace; cert-manager's webhook writes `spec.username` from that token, its
//! approver approves, and canopy-issuer decides from who created the request and where.
//! The tenant asking for istiod's identity or another namespace's DNS name gets
//! `Ready=False` `Failed` naming the rule, a forged `spec.username` is replaced by the
//! webhook, and only istio-csr's service account (`trusted_requesters`) is issued another
//! namespace's identity.

use std::path::Path;
use std::process::Command;

use canopy_testsupport::certmanager::{
    base64, install_canopy_cluster_issuer, output_with_stdin, wait_ready_reason, CertManager,
};
use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::{pki, run_ok};
use serde_json::{json, Value};

const TD: &str = "mesh.example";
const ISTIO_CSR: &str = "system:serviceaccount:cert-manager:cert-manager-istio-csr";

/// A CSR as istio-csr or a workload makes it (openssl), with one SAN.
fn csr(work: &Path, name: &str, san: &str) -> String {
    let (key, csr) = (
        work.join(format!("{name}.key")),
        work.join(format!("{name}.csr")),
    );
    canopy_testsupport::openssl_p256_csr(&key, &csr, "/", Some(san));
    std::fs::read_to_string(csr).unwrap()
}

fn request(ns: &str, name: &str, csr_pem: &str, extra: Value) -> String {
    let mut spec = json!({
        "issuerRef": {"group": "pki.canopy.dev", "kind": "ClusterIssuer", "name": "canopy"},
        "duration": "1h0m0s",
        "usages": ["client auth", "server auth"],
        "request": base64(csr_pem.as_bytes()),
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
    .to_string()
}

/// Creates as the holder of `token` (no admin credentials sent along).
fn create_as(cluster: &TestCluster, token: &str, manifest: &str) {
    let mut c = cluster.kubectl_with_token(token);
    c.args(["create", "-f", "-"]);
    let out = output_with_stdin(&mut c, manifest);
    assert!(
        out.status.success(),
        "create as a service account: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn message(cr: &Value) -> String {
    cr["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn tenant_certificate_request_gets_istiods_identity_through_real_cert_manager() {
    let cluster = TestCluster::start("aws");
    let _cert_manager = CertManager::start(&cluster);
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();

    // The tenant's deployer and istio-csr, each a ServiceAccount allowed to create
    // CertificateRequests where it works.
    for ns in ["team-a", "istio-system"] {
        run_ok(cluster.kubectl().args(["create", "namespace", ns]));
    }
    cluster.apply(
        &[
            ("team-a", "deployer", "team-a"),
            ("cert-manager", "cert-manager-istio-csr", "istio-system"),
        ]
        .iter()
        .map(|(sa_ns, sa, ns)| {
            format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {sa_ns}}}\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {sa}-requests, namespace: {ns}}}\n\
                 rules: [{{apiGroups: [cert-manager.io], resources: [certificaterequests], verbs: [create, get, list]}}]\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {sa}-requests, namespace: {ns}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {sa}-requests}}\n\
                 subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {sa_ns}}}]\n---\n"
            )
        })
        .collect::<String>(),
    );
    let tenant = cluster.service_account_token("team-a", "deployer", cluster.issuer(), 600);
    let istio_csr = cluster.service_account_token(
        "cert-manager",
        "cert-manager-istio-csr",
        cluster.issuer(),
        600,
    );

    // canopy-issuer serving this cluster's CertificateRequests.
    let mut yaml = pki::make(work, TD, &["aws"]).config_head(TD, work);
    yaml.push_str(&format!(
        "listen: {{ address: \"127.0.0.1:{}\" }}\n\
         clusters:\n  - name: aws\n    intermediate: aws\n    kubeconfig: {}\n    cert_manager:\n      policy: cert-manager\n      trusted_requesters: [\"{ISTIO_CSR}\"]\n\
         policies:\n  - name: cert-manager\n    spiffe_ids: [\"spiffe://{TD}/ns/*/sa/*\"]\n    dns_names: [\"*.{{namespace}}.svc.cluster.local\", \"*.*.svc.cluster.local\"]\n    max_ttl: 24h\n    profiles: [workload, server]\n",
        canopy_testsupport::free_port(),
        cluster.kubeconfig().display()
    ));
    let config = work.join("issuer.yaml");
    std::fs::write(&config, yaml).unwrap();
    install_canopy_cluster_issuer(&cluster, "canopy");
    let _issuer = canopy_testsupport::Serving::start(&config, &work.join("issuer.log"));
    run_ok(cluster.kubectl().args([
        "wait",
        "--for=condition=Ready",
        "clusterissuers.pki.canopy.dev/canopy",
        "--timeout=60s",
    ]));

    // The attacks: istiod's identity, another namespace's service name.
    for (name, san, rule) in [
        (
            "istiod-id",
            format!("URI:spiffe://{TD}/ns/istio-system/sa/istiod"),
            "spiffe_id_outside_namespace",
        ),
        (
            "other-ns-dns",
            "DNS:api.payments.svc.cluster.local".to_string(),
            "dns_name_outside_namespace",
        ),
    ] {
        create_as(
            &cluster,
            &tenant,
            &request("team-a", name, &csr(work, name, &san), json!({})),
        );
        let cr = wait_ready_reason(&cluster, "team-a", name, "Failed");
        assert_eq!(
            cr["spec"]["username"], "system:serviceaccount:team-a:deployer",
            "{cr}"
        );
        assert!(message(&cr).contains(rule), "{name}: {}", message(&cr));
        assert!(
            cr["status"].get("certificate").is_none(),
            "{name}: nothing issued"
        );
    }
    // Claiming to be istio-csr in the object: the webhook writes the real creator.
    let forged = csr(
        work,
        "forged",
        &format!("URI:spiffe://{TD}/ns/web/sa/frontend"),
    );
    create_as(
        &cluster,
        &tenant,
        &request(
            "team-a",
            "forged",
            &forged,
            json!({"username": ISTIO_CSR, "groups": ["system:masters"]}),
        ),
    );
    let cr = wait_ready_reason(&cluster, "team-a", "forged", "Failed");
    assert_eq!(
        cr["spec"]["username"],
        "system:serviceaccount:team-a:deployer"
    );
    assert!(
        !cr["spec"]["groups"].to_string().contains("system:masters"),
        "{cr}"
    );

    // Its own namespace is fine; istio-csr, trusted, acts for every namespace.
    let own = csr(work, "own", &format!("URI:spiffe://{TD}/ns/team-a/sa/app"));
    create_as(
        &cluster,
        &tenant,
        &request("team-a", "own", &own, json!({})),
    );
    wait_ready_reason(&cluster, "team-a", "own", "Issued");
    let mesh = csr(
        work,
        "mesh",
        &format!("URI:spiffe://{TD}/ns/web/sa/frontend"),
    );
    create_as(
        &cluster,
        &istio_csr,
        &request("istio-system", "istio-csr-web", &mesh, json!({})),
    );
    let cr = wait_ready_reason(&cluster, "istio-system", "istio-csr-web", "Issued");
    assert_eq!(cr["spec"]["username"], ISTIO_CSR);

    // Only those two were issued (the issuer's records; its listener certificate apart).
    let db = work.join("issuer.db");
    let out =
        run_ok(Command::new("sqlite3").arg(&db).arg(
            "SELECT spiffe_id FROM certificates WHERE spiffe_id IS NOT NULL ORDER BY spiffe_id",
        ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("spiffe://{TD}/ns/team-a/sa/app"),
            format!("spiffe://{TD}/ns/web/sa/frontend")
        ]
    );
}
