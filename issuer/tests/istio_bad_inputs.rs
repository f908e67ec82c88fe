//! Inputs canopy must refuse per cluster, writing nothing there: an Ed25519 or RSA-1024
//! intermediate, an expired intermediate.

use crate::istio_common::*;
use canopy::key::KeyType;
use canopy::ttl::Ttl;
use canopy_issuer::istio::{self, IstioClusterConfig, Mode, Outcome};
use time::Duration;

fn intermediate_mode_for_azure(c: &str) -> IstioClusterConfig {
    IstioClusterConfig {
        mode: if c == "azure" {
            Mode::Intermediate
        } else {
            Mode::Subca
        },
        ..Default::default()
    }
}

fn failed_with(report: &istio::Report, cluster: &str, needle: &str) {
    match &report.cluster(cluster).unwrap().outcome {
        Outcome::Failed(m) => assert!(
            m.to_lowercase().contains(&needle.to_lowercase()),
            "{m:?} should mention {needle:?}"
        ),
        other => panic!("{cluster}: expected a failure, got {other:?}\n{report}"),
    }
    assert_eq!(report.exit_code(), 1);
    let text = report.to_string();
    assert!(
        text.contains(&format!("cluster {cluster} (istio-system/cacerts): FAILED")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_intermediate_is_refused_and_nothing_is_written() {
    let mesh = Mesh::start().await;
    let mark = mesh.mark("azure");
    new_intermediate(
        mesh.path(),
        &mesh.root_a,
        "azure",
        KeyType::Ed25519,
        None,
        mesh.t0,
    );
    for settings in [
        intermediate_mode_for_azure as fn(&str) -> IstioClusterConfig,
        |_: &str| IstioClusterConfig::default(),
    ] {
        let setup = mesh.setup_with(&fast(), settings);
        let report = istio::sync_once(setup, mesh.store.clone(), mesh.t0).await;
        failed_with(&report, "azure", "Ed25519");
        assert!(report.cluster("aws").unwrap().outcome.is_ok(), "{report}");
        assert!(mesh.secret("azure").is_none());
        let writes = mesh.writes_since("azure", mark);
        assert!(writes.is_empty(), "{writes:?}");
    }
    assert!(mesh.recorded_mesh_cas("azure").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_1024_intermediate_made_with_openssl_is_refused() {
    let mesh = Mesh::start().await;
    let mark = mesh.mark("azure");
    let d = mesh.path();
    let run = |args: &[&str]| {
        let out = canopy_testsupport::openssl()
            .current_dir(d)
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
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        "azure-key.pem",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "azure-key.pem",
        "-subj",
        "/CN=azure",
        "-out",
        "azure.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "azure.csr",
        "-CA",
        "root-a.pem",
        "-CAkey",
        "root-a-key.pem",
        "-CAcreateserial",
        "-days",
        "365",
        "-sha256",
        "-extfile",
        "ext.cnf",
        "-out",
        "azure.pem",
    ]);
    let setup = mesh.setup_with(&fast(), intermediate_mode_for_azure);
    let report = istio::sync_once(setup, mesh.store.clone(), mesh.t0).await;
    failed_with(&report, "azure", "rsa1024");
    failed_with(&report, "azure", "RSA >= 2048");
    assert!(report.cluster("aws").unwrap().outcome.is_ok(), "{report}");
    assert!(mesh.secret("azure").is_none());
    let writes = mesh.writes_since("azure", mark);
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_intermediate_is_refused_and_the_secret_left_as_is() {
    let mesh = Mesh::start().await;
    // azure's intermediate lives 10 days: the first mesh CA is cut to it, with a warning.
    new_intermediate(
        mesh.path(),
        &mesh.root_a,
        "azure",
        KeyType::EcdsaP256,
        Some(Ttl::days(10)),
        mesh.t0,
    );
    let first = istio::sync_once(mesh.setup(), mesh.store.clone(), mesh.t0).await;
    assert_eq!(first.exit_code(), 0, "{first}");
    let azure = first.cluster("azure").unwrap();
    assert!(
        azure
            .warnings
            .iter()
            .any(|w| w.contains("cut to intermediate azure")),
        "{first}"
    );
    let rv = mesh.rv("azure");
    let mark = mesh.mark("azure");

    let later = mesh.t0 + Duration::days(11);
    let report = istio::sync_once(mesh.setup(), mesh.store.clone(), later).await;
    failed_with(&report, "azure", "expired");
    assert!(report.cluster("aws").unwrap().outcome.is_ok(), "{report}");
    assert_eq!(mesh.rv("azure"), rv);
    let writes = mesh.writes_since("azure", mark);
    assert!(writes.is_empty(), "{writes:?}");
    // Both modes refuse it.
    let setup = mesh.setup_with(&fast(), intermediate_mode_for_azure);
    let report = istio::sync_once(setup, mesh.store.clone(), later).await;
    failed_with(&report, "azure", "expired");
    assert_eq!(mesh.rv("azure"), rv);
}
