//! Two replicas of canopy-issuer against a real kube-apiserver with real cert-manager:
//! one holds the cluster's Lease and signs, the other waits; when the leader is killed
//! (SIGKILL, nothing released) the other takes the Lease once it expires and signs what
//! comes next; every request is signed once.

use std::path::Path;
use std::time::Duration;

use canopy_testsupport::certmanager::{
    base64, install_canopy_cluster_issuer, wait_ready_reason, wait_ready_reason_within, wait_until,
    CertManager,
};
use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::{free_port, pki, run, run_ok, Serving};

const TD: &str = "mesh.example";

fn holder(cluster: &TestCluster) -> Result<String, String> {
    let out = run(cluster.kubectl().args([
        "-n",
        "canopy",
        "get",
        "lease",
        "canopy-issuer-aws",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn request(cluster: &TestCluster, work: &Path, name: &str) {
    let (key, csr) = (
        work.join(format!("{name}.key")),
        work.join(format!("{name}.csr")),
    );
    let id = format!("spiffe://{TD}/ns/shop/sa/{name}");
    canopy_testsupport::openssl_p256_csr(&key, &csr, "/", Some(&format!("URI:{id}")));
    let manifest = [
        "apiVersion: cert-manager.io/v1".to_string(),
        "kind: CertificateRequest".into(),
        format!("metadata: {{name: {name}, namespace: shop}}"),
        "spec:".into(),
        "  issuerRef: {group: pki.canopy.dev, kind: ClusterIssuer, name: canopy}".into(),
        "  duration: 1h".into(),
        "  usages: [client auth, server auth]".into(),
        format!("  request: {}", base64(&std::fs::read(csr).unwrap())),
    ]
    .join("\n");
    cluster.apply(&manifest);
}

/// Writes `work/NAME.yaml`: an issuer (on a free port, the config head `head`) whose
/// cert-manager controller serves `cluster` under the policy `cert-manager`, with `lease`
/// in its `cert_manager:` block if given.
fn issuer_config(
    cluster: &TestCluster,
    work: &Path,
    head: &str,
    name: &str,
    lease: Option<&str>,
) -> std::path::PathBuf {
    let file = work.join(format!("{name}.yaml"));
    let lease = lease.map(|l| format!("      {l}\n")).unwrap_or_default();
    std::fs::write(
        &file,
        format!(
            "{head}listen: {{ address: \"127.0.0.1:{}\" }}\n\
             clusters:\n  - name: aws\n    intermediate: aws\n    kubeconfig: {}\n    cert_manager:\n      policy: cert-manager\n{lease}\
             policies:\n  - name: cert-manager\n    spiffe_ids: [\"spiffe://{TD}/ns/{{namespace}}/sa/*\"]\n    max_ttl: 24h\n",
            free_port(),
            cluster.kubeconfig().display()
        ),
    )
    .unwrap();
    file
}

/// The SPIFFE IDs of every certificate in the issuer's SQLite store in `work`, sorted.
fn signed_ids(work: &Path) -> Vec<String> {
    let out = run_ok(
        std::process::Command::new("sqlite3")
            .arg(work.join("issuer.db"))
            .arg(
                "SELECT spiffe_id FROM certificates WHERE spiffe_id IS NOT NULL ORDER BY spiffe_id",
            ),
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn two_replicas_one_leader_and_takeover_when_it_is_killed() {
    let cluster = TestCluster::start("aws");
    let _cert_manager = CertManager::start(&cluster);
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    for ns in ["canopy", "shop"] {
        run_ok(cluster.kubectl().args(["create", "namespace", ns]));
    }
    let head = pki::make(work, TD, &["aws"]).config_head(TD, work);
    let lease = "lease: { namespace: canopy, duration: 3s }";
    let config = |replica: &str| issuer_config(&cluster, work, &head, replica, Some(lease));
    install_canopy_cluster_issuer(&cluster, "canopy");

    let a = Serving::start_as(&config("a"), &work.join("a.log"), Some("replica-a"));
    wait_until("replica-a leads", Duration::from_secs(30), || {
        holder(&cluster).and_then(|h| h.starts_with("replica-a").then_some(()).ok_or(h))
    });
    let _b = Serving::start_as(&config("b"), &work.join("b.log"), Some("replica-b"));
    request(&cluster, work, "first");
    wait_ready_reason(&cluster, "shop", "first", "Issued");
    assert!(
        holder(&cluster).unwrap().starts_with("replica-a"),
        "a still leads"
    );

    // The leader dies without releasing the Lease: b takes it once it expires.
    drop(a);
    wait_until("replica-b takes over", Duration::from_secs(30), || {
        holder(&cluster).and_then(|h| h.starts_with("replica-b").then_some(()).ok_or(h))
    });
    request(&cluster, work, "second");
    wait_ready_reason(&cluster, "shop", "second", "Issued");

    // Each request signed once, in the one store both replicas share.
    assert_eq!(
        signed_ids(work),
        [
            format!("spiffe://{TD}/ns/shop/sa/first"),
            format!("spiffe://{TD}/ns/shop/sa/second")
        ]
    );
}

/// The API server restarts (SIGTERM: it ends every watch, then comes back on the same
/// address and data) while canopy's cert-manager controller and cert-manager watch it:
/// requests made before and after the restart are both Issued, each signed once.
#[test]
fn watches_cut_by_an_api_server_restart_resume() {
    let mut cluster = TestCluster::start("aws");
    let cert_manager = CertManager::start(&cluster);
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    for ns in ["canopy", "shop"] {
        run_ok(cluster.kubectl().args(["create", "namespace", ns]));
    }
    let head = pki::make(work, TD, &["aws"]).config_head(TD, work);
    let config = issuer_config(&cluster, work, &head, "issuer", None);
    install_canopy_cluster_issuer(&cluster, "canopy");
    let _issuer = Serving::start(&config, &work.join("issuer.log"));
    request(&cluster, work, "before");
    wait_ready_reason(&cluster, "shop", "before", "Issued");

    let started = std::time::Instant::now();
    cluster.restart();
    eprintln!("API server restarted in {:?}", started.elapsed());
    request(&cluster, work, "after");
    // Just after the restart, a call of the API server to cert-manager's webhook was
    // once seen to hang until the request's 60 s deadline; canopy then writes the status
    // again (its retry), so allow for one such deadline.
    wait_ready_reason_within(
        &cluster,
        "shop",
        "after",
        "Issued",
        Duration::from_secs(180),
    );
    drop(cert_manager);

    assert_eq!(
        signed_ids(work),
        [
            format!("spiffe://{TD}/ns/shop/sa/after"),
            format!("spiffe://{TD}/ns/shop/sa/before")
        ]
    );
}
