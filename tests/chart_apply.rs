//! The chart's rendered manifests, hooks included, applied with the real `kubectl apply`
//! to the test API server (crate kube-testserver), then read back from it.

#[path = "chart/helm.rs"]
mod helm;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kube_testserver::TestApiServer;
use serde_json::Value;

const KUBECTL: &str = "kubectl";

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn new(server: &TestApiServer, dir: &Path) -> Kubectl {
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, "chart").unwrap();
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        Kubectl { kubeconfig, home }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .expect("kubectl timed out")
            .unwrap_or_else(|e| panic!("cannot run kubectl (tests/run.sh requires it): {e}"))
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

/// Where each kind lives in the API, for reading objects back.
fn resource_of(o: &Value) -> (String, String) {
    let plural = match o["kind"].as_str().unwrap() {
        "ServiceAccount" => "serviceaccounts",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "Deployment" => "deployments",
        "Job" => "jobs",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "NetworkPolicy" => "networkpolicies",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "ServiceMonitor" => "servicemonitors",
        "CustomResourceDefinition" => "customresourcedefinitions",
        other => panic!("no resource for kind {other}"),
    };
    (
        o["apiVersion"].as_str().unwrap().to_string(),
        plural.to_string(),
    )
}

/// `spec`, `rules`, `data`... of `sent` are in `stored` as sent.
fn stored_as_sent(sent: &Value, stored: &Value) {
    for key in [
        "spec",
        "rules",
        "roleRef",
        "subjects",
        "data",
        "automountServiceAccountToken",
    ] {
        if !sent[key].is_null() {
            let want = &sent[key];
            let got = project(want, &stored[key]);
            assert_eq!(&got, want, "{} .{key} differs after apply", helm::id(sent));
        }
    }
    for (k, v) in sent["metadata"]["labels"].as_object().into_iter().flatten() {
        assert_eq!(
            &stored["metadata"]["labels"][k],
            v,
            "{} label {k}",
            helm::id(sent)
        );
    }
}

/// `got` restricted to the fields present in `sent` (the server adds defaults such as clusterIP).
fn project(sent: &Value, got: &Value) -> Value {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => Value::Object(
            g.iter()
                .filter_map(|(k, v)| s.get(k).map(|sv| (k.clone(), project(sv, v))))
                .collect(),
        ),
        (Value::Array(s), Value::Array(g)) if s.len() == g.len() => {
            Value::Array(s.iter().zip(g).map(|(sv, gv)| project(sv, gv)).collect())
        }
        _ => got.clone(),
    }
}

async fn apply_chart(values: &[&Path], namespaces: &[&str]) {
    let dir = canopy_testsupport::tempdir();
    let server = TestApiServer::start("chart").await;
    let k = Kubectl::new(&server, dir.path());

    for ns in namespaces {
        k.ok(&["create", "namespace", ns]).await;
    }
    // CRDs first, as Helm installs crds/ before templates.
    let mut crd_files = vec![helm::root().join("tests/chart/servicemonitor-crd.yaml")];
    if let Ok(entries) = std::fs::read_dir(helm::chart().join("crds")) {
        crd_files.extend(entries.map(|e| e.unwrap().path()));
    }
    for file in &crd_files {
        k.ok(&["apply", "-f", file.to_str().unwrap()]).await;
    }
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=30s",
    ])
    .await;

    let manifest = helm::template_text(values);
    let objects = helm::parse_stream(&manifest);
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, &manifest).unwrap();

    let out = k.ok(&["apply", "-f", file.to_str().unwrap()]).await;
    let created = out.lines().filter(|l| l.ends_with(" created")).count();
    assert_eq!(created, objects.len(), "kubectl apply output:\n{out}");

    for o in &objects {
        let (api_version, plural) = resource_of(o);
        let stored = server
            .get(
                &api_version,
                &plural,
                o["metadata"]["namespace"].as_str(),
                o["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap_or_else(|| panic!("{} is not on the server after apply", helm::id(o)));
        stored_as_sent(o, &stored);
    }

    // Applying the same manifests again changes nothing.
    let out = k.ok(&["apply", "-f", file.to_str().unwrap()]).await;
    // kubectl's three-way patch always repeats a PodDisruptionBudget's selector (its patch
    // strategy is `replace`), so kubectl says "configured" for it even when nothing changed.
    let pdbs = helm::of_kind(&objects, "PodDisruptionBudget").len();
    let unchanged = out.lines().filter(|l| l.ends_with(" unchanged")).count();
    let configured = out
        .lines()
        .filter(|l| l.starts_with("poddisruptionbudget.policy/") && l.ends_with(" configured"))
        .count();
    assert_eq!(
        (unchanged, configured),
        (objects.len() - pdbs, pdbs),
        "second kubectl apply output:\n{out}"
    );

    // kubectl reads them back too.
    let deployment = k
        .ok(&[
            "get",
            "deployment",
            &helm::fullname(),
            "-n",
            helm::NAMESPACE,
            "-o",
            "json",
        ])
        .await;
    let deployment: Value = serde_json::from_str(&deployment).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["name"],
        "issuer"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn default_values_apply_with_kubectl() {
    apply_chart(&[], &["canopy", "istio-system"]).await;
}

#[tokio::test]
async fn two_cluster_example_applies_with_kubectl() {
    apply_chart(
        &[&helm::two_clusters()],
        &["canopy", "istio-system", "cert-manager", "payments"],
    )
    .await;
}

#[tokio::test]
async fn apply_fails_when_a_namespace_is_missing() {
    // The check above is real: the same manifests without istio-system are refused.
    let dir = canopy_testsupport::tempdir();
    let server = TestApiServer::start("chart").await;
    let k = Kubectl::new(&server, dir.path());
    k.ok(&["create", "namespace", "canopy"]).await;
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, helm::template_text(&[])).unwrap();
    let out = k.run(&["apply", "-f", file.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("istio-system"), "{err}");
    server.shutdown().await;
}
