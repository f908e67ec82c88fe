//! The real kubectl against the test control plane and the running controller: apply
//! the chart's CRDs, a ClusterIssuer and a CertificateRequest, approve it, and
//! `kubectl wait --for=condition=Ready` succeeds once the controller issued it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::certmanager_harness::*;
use base64::Engine;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(90), c.output())
            .await
            .expect("kubectl timed out")
            .expect("run kubectl")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn chart_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/canopy-issuer/crds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_and_wait_for_ready() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    let env = Env::with_crds(&["aws"], false).await;
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl {
        kubeconfig: kubeconfig_path(&env, "aws"),
        home,
    };

    let out = k.ok(&["apply", "-f", chart_crds().to_str().unwrap()]).await;
    assert!(out.contains("issuers.pki.canopy.dev created"), "{out}");
    assert!(
        out.contains("clusterissuers.pki.canopy.dev created"),
        "{out}"
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/issuers.pki.canopy.dev",
        "crd/clusterissuers.pki.canopy.dev",
        "--timeout=20s",
    ])
    .await;

    let running = env.start("aws").await;
    let dir = env.dir.path();
    let issuer = dir.join("issuer.yaml.k8s");
    std::fs::write(
        &issuer,
        "apiVersion: pki.canopy.dev/v1alpha1\nkind: ClusterIssuer\nmetadata:\n  name: canopy\nspec:\n  intermediate: aws\n  maxDuration: 24h\n",
    )
    .unwrap();
    k.ok(&["apply", "-f", issuer.to_str().unwrap()]).await;
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "clusterissuer.pki.canopy.dev/canopy",
        "--timeout=30s",
    ])
    .await;
    // The test server renders tables without printer columns; check the CRD declares them.
    let columns = k
        .ok(&[
            "get",
            "crd",
            "clusterissuers.pki.canopy.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])
        .await;
    assert_eq!(columns.trim(), "Ready Reason Intermediate Age");
    let ready = k
        .ok(&[
            "get",
            "clusterissuer.pki.canopy.dev",
            "canopy",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .await;
    assert_eq!(ready.trim(), "True");

    let csr = istio_csr(&format!("spiffe://{TD}/ns/team-a/sa/app"));
    let request = base64::engine::general_purpose::STANDARD.encode(csr.pem.as_bytes());
    let cr = dir.join("cr.yaml");
    std::fs::write(
        &cr,
        format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: app-1\n  namespace: team-a\nspec:\n  request: {request}\n  issuerRef:\n    group: pki.canopy.dev\n    kind: ClusterIssuer\n    name: canopy\n  duration: 1h0m0s\n  isCA: false\n  usages:\n  - client auth\n  - server auth\n"
        ),
    )
    .unwrap();
    let out = k.ok(&["apply", "-f", cr.to_str().unwrap()]).await;
    assert!(
        out.contains("certificaterequest.cert-manager.io/app-1 created"),
        "{out}"
    );

    // Not approved yet: waiting for Ready times out.
    let out = k
        .run(&[
            "wait",
            "--for=condition=Ready",
            "certificaterequest/app-1",
            "-n",
            "team-a",
            "--timeout=2s",
        ])
        .await;
    assert!(!out.status.success(), "must not be Ready before approval");

    let approval = r#"{"status":{"conditions":[{"type":"Approved","status":"True","reason":"kubectl","message":"approved with kubectl","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#;
    k.ok(&[
        "patch",
        "certificaterequest",
        "app-1",
        "-n",
        "team-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        approval,
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "certificaterequest/app-1",
        "-n",
        "team-a",
        "--timeout=30s",
    ])
    .await;
    let reason = k
        .ok(&[
            "get",
            "certificaterequest",
            "app-1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ])
        .await;
    assert_eq!(reason.trim(), "Issued");
    let ca = k
        .ok(&[
            "get",
            "certificaterequest",
            "app-1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.status.ca}",
        ])
        .await;
    assert!(b64_pem(&serde_json::json!(ca.trim())).contains("BEGIN CERTIFICATE"));
    // events.k8s.io/v1 (a real API server also serves them as core/v1 events). The Event
    // trails the status write by a moment: wait for it before asking kubectl.
    wait_event(&env.cluster("aws").server, "team-a", |e| {
        e["reason"] == "Issued"
    })
    .await;
    let events = k
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(events.contains("Issued"), "{events}");
    running.stop().await;
}
