//! A `cacerts` canopy did not write (made with openssl and `kubectl create secret`), and one
//! edited by hand after canopy wrote it: reported or repaired as the repair policy says.

use crate::istio_common::*;
use base64::Engine;
use canopy_issuer::istio::{self, IstioClusterConfig, Outcome, RepairPolicy};

fn policy(p: RepairPolicy) -> impl Fn(&str) -> IstioClusterConfig {
    move |_| IstioClusterConfig {
        repair: p,
        ..Default::default()
    }
}

/// A mesh CA made by hand with openssl under the aws intermediate, in `dir/hand/`.
fn openssl_mesh_ca(mesh: &Mesh) -> std::path::PathBuf {
    let d = mesh.path().join("hand");
    std::fs::create_dir_all(&d).unwrap();
    let run = |args: &[&str]| {
        let out = canopy_testsupport::openssl()
            .current_dir(&d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ca-key.pem",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "ca-key.pem",
        "-subj",
        "/O=Istio/CN=Intermediate CA",
        "-out",
        "ca.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let dir = mesh.path().display().to_string();
    run(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        &format!("{dir}/aws.pem"),
        "-CAkey",
        &format!("{dir}/aws-key.pem"),
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "ext.cnf",
        "-out",
        "ca-cert.pem",
    ]);
    std::fs::copy(mesh.path().join("root-a.pem"), d.join("root-cert.pem")).unwrap();
    d
}

fn kubectl_create_cacerts(mesh: &Mesh, d: &std::path::Path) {
    let f = |n: &str| format!("--from-file={}", d.join(n).display());
    kubectl(
        mesh,
        "aws",
        &[
            "create",
            "secret",
            "generic",
            "cacerts",
            &f("ca-cert.pem"),
            &f("ca-key.pem"),
            &f("cert-chain.pem"),
            &f("root-cert.pem"),
        ],
    );
}

fn codes(r: &istio::Report, c: &str) -> Vec<&'static str> {
    r.cluster(c)
        .unwrap()
        .problems
        .iter()
        .map(|p| p.code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handmade_cacerts_with_the_chain_mistake_is_reported_and_replaced_only_when_told() {
    let mesh = Mesh::start().await;
    let d = openssl_mesh_ca(&mesh);
    // openssl does not backdate notBefore: look a minute later.
    let at = canopy_issuer::clock::now() + time::Duration::minutes(1);
    // The classic mistake: cert-chain.pem holds only the CA certificate.
    std::fs::copy(d.join("ca-cert.pem"), d.join("cert-chain.pem")).unwrap();
    kubectl_create_cacerts(&mesh, &d);
    let rv = mesh.rv("aws");
    let mark = mesh.mark("aws");

    for p in [RepairPolicy::Adopt, RepairPolicy::Report] {
        let r = istio::sync_once(mesh.setup_with(&fast(), policy(p)), mesh.store.clone(), at).await;
        assert!(
            matches!(r.cluster("aws").unwrap().outcome, Outcome::Reported(_)),
            "{r}"
        );
        assert!(codes(&r, "aws").contains(&"chain-incomplete"), "{r}");
        assert!(codes(&r, "aws").contains(&"chain-unverified"), "{r}");
        assert_eq!(r.exit_code(), 1);
        assert!(
            r.to_string()
                .contains("cluster aws (istio-system/cacerts): REPORTED"),
            "{r}"
        );
        assert!(r.cluster("azure").unwrap().outcome.is_ok());
        assert_eq!(mesh.rv("aws"), rv);
        let writes = mesh.writes_since("aws", mark);
        assert!(writes.is_empty(), "{writes:?}");
    }
    // status shows the same, as text and JSON.
    let status = istio::status(mesh.setup(), at).await;
    let json = status.to_json();
    let problems: Vec<&str> = json["clusters"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(problems.contains(&"chain-incomplete"), "{json}");
    assert_eq!(json["clusters"][0]["ownership"], "foreign");
    assert!(
        status.to_string().contains("problem: chain-incomplete"),
        "{status}"
    );

    // Told to replace: now valid, checked with openssl; the hand-made CA was fine to keep.
    let r = istio::sync_once(
        mesh.setup_with(&fast(), policy(RepairPolicy::Replace)),
        mesh.store.clone(),
        at,
    )
    .await;
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Updated(_)),
        "{r}"
    );
    assert_eq!(r.exit_code(), 0, "{r}");
    let files = mesh.files("aws");
    openssl_check_secret(&mesh.path().join("replaced"), &files, at);
    assert_eq!(
        files["ca-cert.pem"],
        std::fs::read(d.join("ca-cert.pem")).unwrap()
    );
    let s = mesh.secret("aws").unwrap();
    assert_eq!(
        s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "canopy"
    );
    let r = istio::sync_once(mesh.setup(), mesh.store.clone(), at).await;
    assert_eq!(r.cluster("aws").unwrap().outcome, Outcome::Unchanged, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_handmade_cacerts_is_adopted_and_its_ca_kept() {
    let mesh = Mesh::start().await;
    let d = openssl_mesh_ca(&mesh);
    // openssl does not backdate notBefore: look a minute later.
    let at = canopy_issuer::clock::now() + time::Duration::minutes(1);
    let chain = [
        std::fs::read_to_string(d.join("ca-cert.pem")).unwrap(),
        std::fs::read_to_string(mesh.path().join("aws.pem")).unwrap(),
        std::fs::read_to_string(mesh.path().join("root-a.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("cert-chain.pem"), chain).unwrap();
    kubectl_create_cacerts(&mesh, &d);
    let r = istio::sync_once(mesh.setup(), mesh.store.clone(), at).await;
    let c = r.cluster("aws").unwrap();
    assert!(
        matches!(&c.outcome, Outcome::Updated(why) if why.contains("adopted")),
        "{r}"
    );
    assert!(c.problems.is_empty(), "{r}");
    assert!(c.minted.is_none(), "the hand-made CA is kept until renewal");
    let files = mesh.files("aws");
    assert_eq!(
        files["ca-cert.pem"],
        std::fs::read(d.join("ca-cert.pem")).unwrap()
    );
    openssl_check_secret(&mesh.path().join("adopted"), &files, at);
    let r = istio::sync_once(mesh.setup(), mesh.store.clone(), at).await;
    assert_eq!(r.cluster("aws").unwrap().outcome, Outcome::Unchanged, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_a_managed_secret_is_reported_or_repaired_per_policy() {
    let mesh = Mesh::start().await;
    istio::sync_once(mesh.setup(), mesh.store.clone(), mesh.t0).await;
    let good = mesh.files("aws");
    let serial =
        mesh.secret("aws").unwrap()["metadata"]["annotations"]["canopy.dev/ca-serial"].clone();
    // Someone "fixes" the chain by hand, leaving only the CA certificate in it.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&good["ca-cert.pem"]);
    kubectl(
        &mesh,
        "aws",
        &[
            "patch",
            "secret",
            "cacerts",
            "--type",
            "merge",
            "-p",
            &format!("{{\"data\":{{\"cert-chain.pem\":\"{b64}\"}}}}"),
        ],
    );
    let rv = mesh.rv("aws");
    let mark = mesh.mark("aws");

    for p in [RepairPolicy::Report, RepairPolicy::Adopt] {
        let r = istio::sync_once(
            mesh.setup_with(&fast(), policy(p)),
            mesh.store.clone(),
            mesh.t0,
        )
        .await;
        let c = r.cluster("aws").unwrap();
        assert!(
            matches!(&c.outcome, Outcome::Reported(m) if m.contains("edited by hand")),
            "{r}"
        );
        assert!(codes(&r, "aws").contains(&"chain-incomplete"), "{r}");
        assert_eq!(mesh.rv("aws"), rv);
        let writes = mesh.writes_since("aws", mark);
        assert!(writes.is_empty(), "{writes:?}");
    }
    let r = istio::sync_once(
        mesh.setup_with(&fast(), policy(RepairPolicy::Replace)),
        mesh.store.clone(),
        mesh.t0,
    )
    .await;
    let c = r.cluster("aws").unwrap();
    assert!(
        matches!(&c.outcome, Outcome::Updated(why) if why.contains("repaired")),
        "{r}"
    );
    assert!(
        mesh.files("aws") == good,
        "the same files as before the edit"
    );
    assert_eq!(
        mesh.secret("aws").unwrap()["metadata"]["annotations"]["canopy.dev/ca-serial"],
        serial
    );
    openssl_check_secret(&mesh.path().join("repaired"), &mesh.files("aws"), mesh.t0);

    // An added tls.crt (istiod would switch layouts) is also a hand edit: removed on repair.
    kubectl(
        &mesh,
        "aws",
        &[
            "patch",
            "secret",
            "cacerts",
            "--type",
            "merge",
            "-p",
            "{\"data\":{\"tls.crt\":\"eA==\"}}",
        ],
    );
    let r = istio::sync_once(mesh.setup(), mesh.store.clone(), mesh.t0).await;
    assert!(codes(&r, "aws").contains(&"forbidden-key"), "{r}");
    assert!(
        matches!(r.cluster("aws").unwrap().outcome, Outcome::Reported(_)),
        "{r}"
    );
    let r = istio::sync_once(
        mesh.setup_with(&fast(), policy(RepairPolicy::Replace)),
        mesh.store.clone(),
        mesh.t0,
    )
    .await;
    assert!(r.all_ok(), "{r}");
    assert!(
        mesh.files("aws") == good,
        "tls.crt removed, the rest as before"
    );
}
