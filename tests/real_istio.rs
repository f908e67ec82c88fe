//! istiod's view of the `cacerts` canopy writes, in two real control planes (aws, azure):
//! `canopy-issuer cacerts sync` writes the Secret through the real kube-apiserver, then
//! istiod's own CA code (tests/istiod: istio.io/istio/security/pkg/pki/ca, loading the
//! Secret as istiod mounts it) builds its plugged-in CA and signs a workload CSR the way
//! istio-agent asks. What it signs in one cloud verifies with the other cloud's
//! `root-cert.pem`, in OpenSSL and in Go's crypto/x509.

use std::path::{Path, PathBuf};

use canopy_testsupport::certmanager::wait_until;
use canopy_testsupport::cluster::{ClusterOptions, TestCluster};
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

/// Serial numbers of the mesh CAs recorded for `cluster` in the issuer's SQLite store.
fn recorded_mesh_cas(work: &Path, cluster: &str) -> Vec<String> {
    let out = run_ok(
        std::process::Command::new("sqlite3")
            .arg(work.join("issuer.db"))
            .arg(format!(
                "SELECT serial FROM certificates WHERE profile = 'mesh-ca' AND cluster = '{cluster}' ORDER BY serial"
            )),
    );
    out.lines().map(str::to_string).collect()
}

fn lease_holder(c: &TestCluster) -> Result<String, String> {
    let out = canopy_testsupport::run(c.kubectl().args([
        "-n",
        "canopy",
        "get",
        "lease",
        "canopy-issuer-istio",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    match String::from_utf8_lossy(&out.stdout).into_owned() {
        h if out.status.success() && !h.is_empty() => Ok(h),
        h => Err(format!("{h}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

fn cacerts_exists(c: &TestCluster) -> Result<(), String> {
    let out = canopy_testsupport::run(c.kubectl().args([
        "-n",
        "istio-system",
        "get",
        "secret",
        "cacerts",
    ]));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Two `serve` replicas started together against two real clusters, sharing one store,
/// each with its own Kubernetes user so the audit log tells them apart: only the holder of
/// `istio.lease` syncs `cacerts` (the standby reads no Secret at all), so each cluster gets
/// one mesh CA. Without the Lease every replica ran the sync, and two passes at once each
/// minted a mesh CA. When the holder is killed, the other replica takes the Lease and
/// keeps the Secrets valid: it re-creates a deleted one and leaves the valid one alone;
/// stopped with SIGTERM, it releases the Lease.
#[test]
fn two_replicas_sync_cacerts_from_the_lease_holder_only_and_the_standby_takes_over() {
    let options = || {
        ClusterOptions::default()
            .audit()
            .user("replica-a", &["system:masters"])
            .user("replica-b", &["system:masters"])
    };
    let (aws, azure) = std::thread::scope(|s| {
        let a = s.spawn(|| TestCluster::start_with("aws", options()));
        let z = s.spawn(|| TestCluster::start_with("azure", options()));
        (a.join().unwrap(), z.join().unwrap())
    });
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let base = std::fs::read_to_string(pki_and_config(work, &[&aws, &azure])).unwrap();
    run_ok(aws.kubectl().args(["create", "namespace", "canopy"]));
    let config = |replica: &str| {
        // The same config, but each replica reaches both clusters as its own user.
        let mut yaml = base.clone();
        for c in [&aws, &azure] {
            yaml = yaml.replace(
                &c.kubeconfig().display().to_string(),
                &c.kubeconfig_for(replica).display().to_string(),
            );
        }
        let file = work.join(format!("{replica}.yaml"));
        std::fs::write(
            &file,
            format!(
                "{yaml}listen: {{ address: \"127.0.0.1:{}\" }}\n\
                 istio: {{ resync: 5s, lease: {{ cluster: aws, namespace: canopy, duration: 3s }} }}\n",
                canopy_testsupport::free_port()
            ),
        )
        .unwrap();
        file
    };
    let (config_a, config_b) = (config("replica-a"), config("replica-b"));
    let mut replicas =
        [("replica-a", &config_a), ("replica-b", &config_b)].map(|(name, config)| {
            Some(canopy_testsupport::Serving::start_as(
                config,
                &work.join(format!("{name}.log")),
                Some(name),
            ))
        });

    let wait = std::time::Duration::from_secs(60);
    for c in [&aws, &azure] {
        wait_until("cacerts written", wait, || cacerts_exists(c));
    }
    // Two more passes of the holder (each reads both Secrets, every 5 s): a replica that
    // syncs on its own, on the same period, reads a Secret in that window too.
    let mark = aws.audit_mark();
    let secret_reads = |user: &str| {
        aws.audit_since(mark)
            .into_iter()
            .filter(|e| e.user == user && e.resource == "secrets" && e.name == "cacerts")
            .count()
    };
    let leader = wait_until("two passes of one replica", wait, || {
        ["replica-a", "replica-b"]
            .into_iter()
            .find(|r| secret_reads(r) >= 2)
            .ok_or_else(|| "no replica has read cacerts twice".to_string())
    });
    let standby = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    // Both replicas run (a replica that failed to start would pass for a quiet standby).
    for (r, name) in replicas.iter_mut().zip(["replica-a", "replica-b"]) {
        let status = r.as_mut().and_then(|r| r.exited());
        let log = std::fs::read_to_string(work.join(format!("{name}.log"))).unwrap_or_default();
        assert!(status.is_none(), "{name} exited ({status:?}): {log}");
    }
    assert_eq!(
        secret_reads(standby),
        0,
        "the standby {standby} reads no cacerts"
    );
    assert!(lease_holder(&aws).unwrap().starts_with(leader));
    let azure_version = secret(&azure)["metadata"]["resourceVersion"].clone();
    for c in ["aws", "azure"] {
        assert_eq!(
            recorded_mesh_cas(work, c).len(),
            1,
            "{c}: one mesh CA, minted by the Lease holder alone"
        );
    }

    // The holder dies (SIGKILL) without releasing the Lease.
    drop(replicas[usize::from(leader == "replica-b")].take());
    wait_until("the standby takes the Lease", wait, || {
        lease_holder(&aws).and_then(|h| {
            h.starts_with(standby).then_some(()).ok_or_else(|| {
                let log = std::fs::read_to_string(work.join(format!("{standby}.log")));
                format!("held by {h}; {standby}'s log:\n{}", log.unwrap_or_default())
            })
        })
    });
    // The new holder syncs: a deleted Secret comes back with a new mesh CA, the valid one
    // in azure is left as it is.
    run_ok(
        aws.kubectl()
            .args(["-n", "istio-system", "delete", "secret", "cacerts"]),
    );
    wait_until("cacerts re-created by the new holder", wait, || {
        cacerts_exists(&aws)
    });
    assert_eq!(recorded_mesh_cas(work, "aws").len(), 2);
    assert_eq!(recorded_mesh_cas(work, "azure").len(), 1);
    assert_eq!(secret(&azure)["metadata"]["resourceVersion"], azure_version);

    // Stopped as Kubernetes stops a pod (SIGTERM), the holder ends its sync and gives the
    // Lease up at once, for the next replica not to wait out a lease period.
    let holder = replicas[usize::from(standby == "replica-b")]
        .as_mut()
        .unwrap();
    let status = holder.stop();
    let log = std::fs::read_to_string(work.join(format!("{standby}.log"))).unwrap_or_default();
    assert!(status.success(), "{standby} exited with {status}: {log}");
    assert!(log.contains("istio cacerts controller stopped"), "{log}");
    let released = lease_holder(&aws);
    assert!(released.is_err(), "the Lease is still held: {released:?}");
}
