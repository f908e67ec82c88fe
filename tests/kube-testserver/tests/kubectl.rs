//! The real kubectl against the test API server.

use kube_testserver::{TestApiServer, CERT_MANAGER_CRDS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const KUBECTL: &str = "/usr/bin/kubectl";

const CSR_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KZmFrZQotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K";

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("kubectl timed out")
            .expect("run kubectl")
    }

    /// Run and require success; returns stdout.
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

fn kubectl_available() -> bool {
    if Path::new(KUBECTL).exists() {
        true
    } else {
        eprintln!("SKIPPED: {KUBECTL} is not installed; the kubectl tests did not run");
        false
    }
}

fn setup(server: &TestApiServer, dir: &Path) -> Kubectl {
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, "aws").unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    Kubectl { kubeconfig, home }
}

fn certificate_request_yaml(dir: &Path) -> PathBuf {
    let path = dir.join("cr.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: x\n  namespace: team\nspec:\n  request: {CSR_B64}\n  issuerRef:\n    name: canopy\n    kind: Issuer\n    group: pki.canopy.dev\n  usages:\n  - client auth\n  - server auth\n  duration: 1h\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn kubectl_cert_manager_flow() {
    if !kubectl_available() {
        return;
    }
    let server = TestApiServer::start("aws").await;
    let dir = tempfile::tempdir().unwrap();
    let k = setup(&server, dir.path());
    let crds = dir.path().join("crds.yaml");
    std::fs::write(&crds, CERT_MANAGER_CRDS).unwrap();

    let out = k.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(
        out.contains("certificaterequests.cert-manager.io created"),
        "{out}"
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/certificaterequests.cert-manager.io",
        "--timeout=20s",
    ])
    .await;
    k.ok(&["create", "namespace", "team"]).await;

    let cr = certificate_request_yaml(dir.path());
    let out = k.ok(&["apply", "-f", cr.to_str().unwrap()]).await;
    assert!(
        out.contains("certificaterequest.cert-manager.io/x created"),
        "{out}"
    );
    let yaml = k
        .ok(&["get", "certificaterequest", "x", "-n", "team", "-o", "yaml"])
        .await;
    let obj: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(obj["kind"], "CertificateRequest");
    assert_eq!(obj["spec"]["issuerRef"]["group"], "pki.canopy.dev");
    assert_eq!(obj["spec"]["request"], CSR_B64);
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // re-applying the same file changes nothing
    let out = k.ok(&["apply", "-f", cr.to_str().unwrap()]).await;
    assert!(out.contains("unchanged"), "{out}");
    let again = server
        .get(
            "cert-manager.io/v1",
            "certificaterequests",
            Some("team"),
            "x",
        )
        .unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], json!(rv));

    // short names and list output
    let out = k.ok(&["get", "cr", "-n", "team"]).await;
    assert!(out.contains('x'), "{out}");

    // a malformed CertificateRequest is rejected by the CRD schema
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: bad\n  namespace: team\nspec:\n  issuerRef:\n    name: canopy\n  usages: [nonsense]\n").unwrap();
    let out = k.run(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.request: Required value"), "{err}");

    // kubectl wait started before the status change returns once it happens (watch)
    let waiter = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "certificaterequest/x",
            "-n",
            "team",
            "--timeout=20s",
        ])
        .output();
    let waiter = tokio::spawn(waiter);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiter.is_finished(),
        "kubectl wait returned before the condition was set"
    );
    k.ok(&[
        "patch", "certificaterequest", "x", "-n", "team", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Issued","message":"issued"}]}}"#,
    ])
    .await;
    let out = tokio::time::timeout(Duration::from_secs(25), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    // and a wait afterwards succeeds at once
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "certificaterequest/x",
        "-n",
        "team",
        "--timeout=20s",
    ])
    .await;
    let status_patches: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/x/status"))
        .collect();
    assert_eq!(status_patches.len(), 1);
    assert_eq!(
        status_patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

#[tokio::test]
async fn kubectl_secrets_and_namespaces() {
    if !kubectl_available() {
        return;
    }
    let server = TestApiServer::start("azure").await;
    let dir = tempfile::tempdir().unwrap();
    let k = setup(&server, dir.path());

    k.ok(&["create", "namespace", "istio-system"]).await;
    let out = k.run(&["create", "namespace", "istio-system"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"));

    k.ok(&[
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        "--from-literal=root-cert.pem=abc",
    ])
    .await;
    let s = server
        .get("v1", "secrets", Some("istio-system"), "cacerts")
        .unwrap();
    assert_eq!(s["data"]["root-cert.pem"], "YWJj");
    assert_eq!(s["type"], "Opaque");

    let out = k.ok(&["get", "secrets", "-A"]).await;
    assert!(
        out.contains("cacerts") && out.contains("istio-system"),
        "{out}"
    );
    let json_out = k
        .ok(&[
            "get",
            "secret",
            "cacerts",
            "-n",
            "istio-system",
            "-o",
            "json",
        ])
        .await;
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["metadata"]["name"], "cacerts");

    // apply a Secret (strategic merge patch on the second apply)
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: istio-system\nstringData:\n  a: one\n").unwrap();
    k.ok(&["apply", "-f", f.to_str().unwrap()]).await;
    std::fs::write(&f, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: istio-system\n  labels: {x: \"yes\"}\nstringData:\n  a: two\n").unwrap();
    let out = k.ok(&["apply", "-f", f.to_str().unwrap()]).await;
    assert!(out.contains("configured"), "{out}");
    let s = server
        .get("v1", "secrets", Some("istio-system"), "applied")
        .unwrap();
    assert_eq!(s["data"]["a"], "dHdv");
    assert_eq!(s["metadata"]["labels"]["x"], "yes");

    // server-side apply through kubectl
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: istio-system\ndata:\n  k: v\n").unwrap();
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=canopy-test",
        "-f",
        f.to_str().unwrap(),
    ])
    .await;
    let c = server
        .get("v1", "configmaps", Some("istio-system"), "ssa")
        .unwrap();
    assert_eq!(c["metadata"]["managedFields"][0]["manager"], "canopy-test");

    k.ok(&["delete", "secret", "cacerts", "-n", "istio-system"])
        .await;
    assert!(server
        .get("v1", "secrets", Some("istio-system"), "cacerts")
        .is_none());
    let out = k
        .run(&["get", "secret", "cacerts", "-n", "istio-system"])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    // deleting a namespace removes its objects
    k.ok(&["delete", "namespace", "istio-system"]).await;
    assert!(server
        .list("v1", "secrets", Some("istio-system"))
        .is_empty());
    let out = k.ok(&["get", "ns", "-o", "name"]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["namespace/default", "namespace/kube-system"]
    );
}
