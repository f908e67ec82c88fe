//! canopy as a signer of Kubernetes CertificateSigningRequests (certificates.k8s.io/v1)
//! against the real kube-apiserver: the API server records the creator in spec.username
//! (here a ServiceAccount with its own token), an admin approves with `kubectl
//! certificate approve`, canopy signs what that service account is entitled to and the
//! API server accepts the chain in status.certificate; a request for another namespace's
//! identity gets the Failed condition and no certificate.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use canopy_testsupport::certmanager::{
    base64, install_canopy_cluster_issuer, output_with_stdin, wait_until,
};
use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::{free_port, openssl_verify, pki, run_ok, Serving};
use serde_json::{json, Value};

const TD: &str = "mesh.example";
const SIGNER: &str = "clusterissuers.pki.canopy.dev/mesh";

fn create_csr(cluster: &TestCluster, token: &str, work: &Path, name: &str, id: &str) {
    let (key, csr) = (
        work.join(format!("{name}.key")),
        work.join(format!("{name}.csr")),
    );
    canopy_testsupport::openssl_p256_csr(&key, &csr, "/", Some(&format!("URI:{id}")));
    let manifest = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "signerName": SIGNER,
            "request": base64(&std::fs::read(&csr).unwrap()),
            "usages": ["digital signature", "client auth", "server auth"],
            "expirationSeconds": 3600,
        },
    });
    let mut c = cluster.kubectl_with_token(token);
    c.args(["create", "-f", "-"]);
    let out = output_with_stdin(&mut c, &manifest.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(cluster.kubectl().args(["certificate", "approve", name]));
}

fn csr(cluster: &TestCluster, name: &str) -> Value {
    serde_json::from_str(&run_ok(
        cluster.kubectl().args(["get", "csr", name, "-o", "json"]),
    ))
    .unwrap()
}

#[test]
fn a_service_accounts_csr_is_signed_for_its_own_identity_only() {
    let cluster = TestCluster::start("aws");
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    run_ok(cluster.kubectl().args(["create", "namespace", "shop"]));
    run_ok(
        cluster
            .kubectl()
            .args(["-n", "shop", "create", "serviceaccount", "web"]),
    );
    run_ok(cluster.kubectl().args([
        "create",
        "clusterrole",
        "csr-creator",
        "--verb=create,get",
        "--resource=certificatesigningrequests.certificates.k8s.io",
    ]));
    run_ok(cluster.kubectl().args([
        "create",
        "clusterrolebinding",
        "web-csr",
        "--clusterrole=csr-creator",
        "--serviceaccount=shop:web",
    ]));
    let token = cluster.service_account_token("shop", "web", cluster.issuer(), 600);

    let pki = pki::make(work, TD, &["aws"]);
    let config = work.join("issuer.yaml");
    std::fs::write(
        &config,
        format!(
            "{}listen: {{ address: \"127.0.0.1:{}\" }}\n\
             clusters:\n  - name: aws\n    intermediate: aws\n    kubeconfig: {}\n    cert_manager: {{ policy: kubernetes }}\n\
             policies:\n  - name: kubernetes\n    spiffe_ids: [\"spiffe://{TD}/ns/{{namespace}}/sa/{{sa}}\"]\n    max_ttl: 24h\n",
            pki.config_head(TD, work),
            free_port(),
            cluster.kubeconfig().display()
        ),
    )
    .unwrap();
    install_canopy_cluster_issuer(&cluster, "mesh");
    let _issuer = Serving::start(&config, &work.join("issuer.log"));

    // Its own identity: signed, and the API server took the chain.
    let own = format!("spiffe://{TD}/ns/shop/sa/web");
    create_csr(&cluster, &token, work, "web", &own);
    let got = wait_until("the CSR is signed", Duration::from_secs(60), || {
        let c = csr(&cluster, "web");
        if c["status"]["certificate"].is_string() {
            Ok(c)
        } else {
            Err(c["status"].to_string())
        }
    });
    assert_eq!(got["spec"]["username"], "system:serviceaccount:shop:web");
    let chain = work.join("web.pem");
    std::fs::write(
        &chain,
        base64::engine::general_purpose::STANDARD
            .decode(got["status"]["certificate"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let o = openssl_verify(&pki.root_cert, Some(&chain), &chain);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let text = run_ok(
        canopy_testsupport::openssl()
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&chain),
    );
    assert!(text.contains(&own), "{text}");

    // Another namespace's identity: Failed, no certificate.
    create_csr(
        &cluster,
        &token,
        work,
        "payments",
        &format!("spiffe://{TD}/ns/payments/sa/api"),
    );
    let failed = wait_until("the CSR fails", Duration::from_secs(60), || {
        let c = csr(&cluster, "payments");
        let f = c["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == "Failed").cloned());
        f.ok_or_else(|| c["status"].to_string())
    });
    assert!(
        failed["message"].as_str().unwrap().contains("spiffe_id"),
        "{failed}"
    );
    assert!(csr(&cluster, "payments")["status"]
        .get("certificate")
        .is_none());
}
