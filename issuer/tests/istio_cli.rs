//! The bootstrap Job's command as users run it: `canopy-issuer cacerts sync --once` and
//! `canopy-issuer status`, the real binary against two real control planes.

use std::process::Command;

use crate::istio_common::*;

fn issuer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canopy-issuer"))
        .args(args)
        .output()
        .expect("run canopy-issuer")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_writes_every_cluster_is_idempotent_and_reports_failures() {
    let mut mesh = Mesh::start().await;
    let yaml = mesh
        .config_yaml()
        .replace("context: aws }", "context: aws, istio: {} }")
        .replace(
            "context: azure }",
            "context: azure, istio: { workload_ttl: 1h } }",
        );
    let config = mesh.path().join("issuer.yaml");
    std::fs::write(&config, yaml).unwrap();
    let config = config.to_str().unwrap();

    let out = issuer(&["cacerts", "sync", "--once", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    for c in ["aws", "azure"] {
        let files = mesh.files(c);
        openssl_check_secret(&mesh.path().join(format!("check-{c}")), &files, mesh.t0);
    }
    let (rv_aws, rv_azure) = (mesh.rv("aws"), mesh.rv("azure"));

    // Re-running (as a pre-upgrade hook does) writes nothing.
    let out = issuer(&[
        "cacerts", "sync", "--once", "--output", "json", "--config", config,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clusters"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        (mesh.rv("aws"), mesh.rv("azure")),
        (rv_aws.clone(), rv_azure)
    );

    let out = issuer(&["status", "--json", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status.to_string().contains("aws") && status.to_string().contains("azure"));

    // azure's API server is down: non-zero exit naming azure; aws untouched.
    mesh.azure.real_mut().stop();
    let out = issuer(&["cacerts", "sync", "--once", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("cluster azure"), "{msg}");
    assert!(!msg.contains("cluster aws"), "{msg}");
    assert_eq!(mesh.rv("aws"), rv_aws);

    // A config without istio settings is a clear error.
    let plain = mesh.path().join("plain.yaml");
    std::fs::write(&plain, mesh.config_yaml()).unwrap();
    let out = issuer(&[
        "cacerts",
        "sync",
        "--once",
        "--config",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no cluster in the config has `istio` settings"),
        "{}",
        text(&out)
    );
}
