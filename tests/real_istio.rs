//! istiod's view of the `cacerts` canopy writes, in two real control planes (aws, azure):
//! `canopy-issuer cacerts sync` writes the Secret through the real kube-apiserver, then
//! istiod's own CA code (tests/istiod: istio.io/istio/security/pkg/pki/ca, loading the
//! Secret as istiod mounts it) builds its plugged-in CA and signs a workload CSR the way
//! istio-agent asks. What it signs in one cloud verifies with the other cloud's
//! `root-cert.pem`, in OpenSSL and in Go's crypto/x509.

use std::path::{Path, PathBuf};

use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::{cmd, istiod, openssl_verify, pki, run_ok, x509check};
use serde_json::Value;

const TD: &str = "mesh.example";

/// A root with one intermediate per cluster (pkictl) and an issuer config naming the
/// clusters with `istio:` settings.
fn pki_and_config(work: &Path, clusters: &[&TestCluster]) -> PathBuf {
    let names: Vec<&str> = clusters.iter().map(|c| c.name()).collect();
    let mut yaml = pki::make(work, TD, &names).config_head(TD, work);
    yaml.push_str("clusters:\n");
    for c in clusters {
        yaml.push_str(&format!(
            "  - {{ name: {n}, intermediate: {n}, kubeconfig: {}, istio: {{ mode: subca }} }}\n",
            c.kubeconfig().display(),
            n = c.name()
        ));
        run_ok(c.kubectl().args(["create", "namespace", "istio-system"]));
    }
    let config = work.join("issuer.yaml");
    std::fs::write(&config, yaml).unwrap();
    config
}

fn secret(c: &TestCluster) -> Value {
    let out = run_ok(c.kubectl().args([
        "-n",
        "istio-system",
        "get",
        "secret",
        "cacerts",
        "-o",
        "json",
    ]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn istiod_signs_with_the_cacerts_canopy_wrote_and_its_workloads_verify_across_clouds() {
    let (aws, azure) = std::thread::scope(|s| {
        let a = s.spawn(|| TestCluster::start("aws"));
        let z = s.spawn(|| TestCluster::start("azure"));
        (a.join().unwrap(), z.join().unwrap())
    });
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let config = pki_and_config(work, &[&aws, &azure]);
    let out = run_ok(
        cmd("canopy-issuer")
            .args(["cacerts", "sync", "--once", "--config"])
            .arg(&config),
    );
    assert!(
        out.contains("cluster aws") && out.contains("cluster azure"),
        "{out}"
    );

    // A second run finds both Secrets valid and writes nothing (same resourceVersion).
    let versions = |c: &TestCluster| secret(c)["metadata"]["resourceVersion"].clone();
    let before = (versions(&aws), versions(&azure));
    let again = run_ok(
        cmd("canopy-issuer")
            .args(["cacerts", "sync", "--once", "--config"])
            .arg(&config),
    );
    assert_eq!(
        again.matches("up to date, nothing written").count(),
        2,
        "{again}"
    );
    assert_eq!((versions(&aws), versions(&azure)), before);

    let mut signed = Vec::new();
    for (c, ns, sa) in [(&aws, "frontend", "web"), (&azure, "backend", "api")] {
        // What the API server holds: an Opaque Secret with istiod's four files and not
        // the "istio-generated" key (with it istiod would take the Secret for its own
        // self-signed CA and ignore the mesh CA).
        let s = secret(c);
        assert_eq!(s["type"], "Opaque");
        let mut keys: Vec<&str> = s["data"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "ca-cert.pem",
                "ca-key.pem",
                "cert-chain.pem",
                "root-cert.pem"
            ]
        );

        let id = format!("spiffe://{TD}/ns/{ns}/sa/{sa}");
        let got = istiod::sign(
            c,
            "istio-system",
            &id,
            &work.join(format!("istiod-{}", c.name())),
        )
        .unwrap_or_else(|e| panic!("istiod of {} does not take canopy's cacerts: {e}", c.name()));
        assert_eq!(got.summary["format"], "istiod", "{}", got.summary);
        assert_eq!(
            got.summary["signing_ca"],
            format!("CN={} mesh CA", c.name())
        );
        assert_eq!(got.summary["leaf_uris"], serde_json::json!([id]));
        assert_eq!(
            got.summary["chain_length"], 4,
            "the leaf, then cert-chain.pem: mesh CA, intermediate, root"
        );
        signed.push(got);
    }
    // Each cloud's workload verifies with the other cloud's root-cert.pem.
    for (leaf, other) in [(&signed[0], &signed[1]), (&signed[1], &signed[0])] {
        let o = openssl_verify(&other.root, Some(&leaf.chain), &leaf.chain);
        assert!(
            o.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        x509check::verify(&other.root, &[], &leaf.chain)
            .unwrap_or_else(|e| panic!("Go crypto/x509: {e}"));
    }
    // A Secret istiod cannot use: a cert-chain.pem that does not reach the root is
    // refused by istiod itself, as it would refuse to start.
    let broken = work.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let s = secret(&aws);
    let mut data = s["data"].as_object().unwrap().clone();
    data["cert-chain.pem"] = data["ca-cert.pem"].clone();
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "handmade"},
        "type": "Opaque", "data": data,
    });
    run_ok(aws.kubectl().args(["create", "namespace", "handmade"]));
    let file = broken.join("secret.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    run_ok(aws.kubectl().arg("apply").arg("-f").arg(&file));
    let err =
        istiod::sign(&aws, "handmade", "spiffe://mesh.example/ns/a/sa/b", &broken).unwrap_err();
    assert!(err.contains("failed to create an istiod CA"), "{err}");
}
