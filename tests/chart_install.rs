//! `helm install`, `helm upgrade` and `helm uninstall` of the chart with the real `helm`
//! (tests/helm) into a real control plane (canopy_testsupport::cluster::TestCluster:
//! embedded etcd and kube-apiserver v1.37.2), which validates and stores every object:
//! the CRDs from crds/, RBAC, the Deployment, the hooks. Then read back with kubectl.
//!
//! No kubelet runs there, so pods never start: the releases are installed and upgraded
//! with `--no-hooks` (the pre-install bootstrap Job would never complete, and Helm waits
//! for hook Jobs), and the hook objects Helm recorded in the release are sent to the same
//! API server with `kubectl apply --dry-run=server` instead (validation and admission,
//! nothing stored).

use crate::helm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::run_ok;
use serde_json::Value;

/// `helm ARGS... --kubeconfig <the cluster's admin kubeconfig>`.
fn helm_on(cluster: &TestCluster, args: &[&str]) -> Output {
    helm::command()
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .env("KUBECACHEDIR", cluster.dir().join("helm-kube-cache"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"))
}

/// Requires that the API server sent no warning (deprecated fields, APIs...): client-go
/// prints them as `Warning: ...` on stderr.
fn no_warnings(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Warning:"),
        "{what}: the API server warned:\n{stderr}"
    );
}

/// Runs `helm ARGS...` on the cluster; requires success and no API warning; returns stdout.
fn helm_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let out = helm_on(cluster, args);
    no_warnings(&format!("helm {args:?}"), &out);
    helm::ok(args, out)
}

fn kubectl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    run_ok(cluster.kubectl().args(args))
}

/// [`kubectl_ok`], and no API warning either.
fn kubectl_clean(cluster: &TestCluster, args: &[&str]) -> String {
    let out = canopy_testsupport::run(cluster.kubectl().args(args));
    no_warnings(&format!("kubectl {args:?}"), &out);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ids(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(helm::id).collect()
}

/// `got` restricted to the fields present in `sent` (the server adds defaults).
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

/// What the server stored for each object of the manifest `file`, in the file's order.
fn stored(cluster: &TestCluster, file: &Path) -> Vec<Value> {
    let list = kubectl_ok(
        cluster,
        &[
            "get",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    match list["kind"].as_str() {
        Some("List") => list["items"].as_array().unwrap().clone(),
        _ => vec![list],
    }
}

/// Each object Helm sent is on the server as sent (spec, rules, data... and labels),
/// owned by the release, with `helm` as its field manager.
fn check_stored(cluster: &TestCluster, file: &Path, sent: &[Value], revision: &str) {
    let got = stored(cluster, file);
    assert_eq!(ids(&got), ids(sent), "objects on the server");
    for o in sent {
        let s = got
            .iter()
            .find(|g| helm::id(g) == helm::id(o))
            .unwrap_or_else(|| panic!("{} is not on the server", helm::id(o)));
        let what = helm::id(o);
        for key in [
            "spec",
            "rules",
            "roleRef",
            "subjects",
            "data",
            "automountServiceAccountToken",
        ] {
            if !o[key].is_null() {
                assert_eq!(&project(&o[key], &s[key]), &o[key], "{what} .{key}");
            }
        }
        for (k, v) in o["metadata"]["labels"].as_object().into_iter().flatten() {
            assert_eq!(&s["metadata"]["labels"][k], v, "{what} label {k}");
        }
        let annotations = &s["metadata"]["annotations"];
        assert_eq!(
            annotations["meta.helm.sh/release-name"],
            helm::RELEASE,
            "{what}"
        );
        assert_eq!(
            annotations["meta.helm.sh/release-namespace"],
            helm::NAMESPACE,
            "{what}"
        );
        assert_eq!(
            s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        let managers: BTreeSet<&str> = s["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(managers, BTreeSet::from(["helm"]), "{what} field managers");
    }
    let status: Value = serde_json::from_str(&helm_ok(
        cluster,
        &["status", helm::RELEASE, "-n", helm::NAMESPACE, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");
    assert_eq!(status["version"].to_string(), revision, "{status}");
    // Helm keeps each revision in a Secret of the release namespace.
    kubectl_ok(
        cluster,
        &[
            "get",
            "secret",
            "-n",
            helm::NAMESPACE,
            &format!("sh.helm.release.v1.{}.v{revision}", helm::RELEASE),
        ],
    );
}

/// Installs the chart with `values` into a fresh cluster (namespaces: the release's made
/// by Helm, `namespaces` made first, as the chart's README asks), checks it server-side,
/// upgrades it, then uninstalls it.
fn install_upgrade_uninstall(name: &str, values: &[&Path], namespaces: &[&str]) {
    let cluster = TestCluster::start(name);
    let dir = canopy_testsupport::tempdir();
    for ns in namespaces {
        kubectl_ok(&cluster, &["create", "namespace", ns]);
    }
    // The Prometheus Operator's CRD, for the optional ServiceMonitor (the chart does not ship it).
    let monitor_crd = helm::root().join("tests/chart/servicemonitor-crd.yaml");
    kubectl_ok(&cluster, &["apply", "-f", monitor_crd.to_str().unwrap()]);
    kubectl_ok(
        &cluster,
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "--timeout=30s",
        ],
    );

    let chart = helm::chart().display().to_string();
    let values_args = helm::values_args(values);
    let release_args = |verb: &'static str, extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            verb,
            helm::RELEASE,
            &chart,
            "--namespace",
            helm::NAMESPACE,
            "--no-hooks",
            "--timeout",
            "2m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(values_args.iter().cloned());
        a.extend(extra.iter().cloned());
        a
    };
    let run = |args: &[String]| -> String {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm_ok(&cluster, &args)
    };

    // What `helm template` renders offline, without the hooks: what the install must create.
    let rendered = helm::template(values);
    let is_hook = |o: &&Value| o["metadata"]["annotations"]["helm.sh/hook"].is_string();
    let expected: Vec<Value> = rendered.iter().filter(|o| !is_hook(o)).cloned().collect();
    let expected_hooks: Vec<Value> = rendered.iter().filter(is_hook).cloned().collect();

    // install
    let out = run(&release_args(
        "install",
        &["--create-namespace".to_string()],
    ));
    assert!(out.contains("STATUS: deployed"), "{out}");
    for crd in ["issuers.pki.canopy.dev", "clusterissuers.pki.canopy.dev"] {
        kubectl_ok(
            &cluster,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=30s",
            ],
        );
    }
    let manifest_args = ["get", "manifest", helm::RELEASE, "-n", helm::NAMESPACE];
    let manifest = helm_ok(&cluster, &manifest_args);
    let sent = helm::parse_stream(&manifest);
    assert_eq!(ids(&sent), ids(&expected), "what helm install created");
    let manifest_file = write(dir.path(), "manifest.yaml", &manifest);
    check_stored(&cluster, &manifest_file, &sent, "1");

    // The hooks (skipped above) pass the same server's validation and admission.
    let hooks = helm_ok(
        &cluster,
        &["get", "hooks", helm::RELEASE, "-n", helm::NAMESPACE],
    );
    assert_eq!(ids(&helm::parse_stream(&hooks)), ids(&expected_hooks));
    let hooks_file = write(dir.path(), "hooks.yaml", &hooks);
    let out = kubectl_clean(
        &cluster,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            hooks_file.to_str().unwrap(),
        ],
    );
    let accepted = out
        .lines()
        .filter(|l| l.ends_with(" created (server dry run)"))
        .count();
    assert_eq!(accepted, expected_hooks.len(), "kubectl output:\n{out}");

    // upgrade: a changed pod template and log level reach the server as a new revision.
    let upgrade = helm::values_file(
        dir.path(),
        "upgrade.yaml",
        "podAnnotations: {canopy.dev/upgraded: \"yes\"}\nlogLevel: debug\n",
    );
    let out = run(&release_args(
        "upgrade",
        &["-f".to_string(), upgrade.display().to_string()],
    ));
    assert!(out.contains("STATUS: deployed"), "{out}");
    let manifest = helm_ok(&cluster, &manifest_args);
    let sent = helm::parse_stream(&manifest);
    assert_eq!(ids(&sent), ids(&expected), "what helm upgrade kept");
    let manifest_file = write(dir.path(), "manifest-2.yaml", &manifest);
    check_stored(&cluster, &manifest_file, &sent, "2");
    let deployment: Value = serde_json::from_str(&kubectl_ok(
        &cluster,
        &[
            "get",
            "deployment",
            &helm::fullname(),
            "-n",
            helm::NAMESPACE,
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["canopy.dev/upgraded"],
        "yes"
    );
    assert_eq!(deployment["metadata"]["generation"], 2, "{deployment}");

    // uninstall: every object of the release is gone; the CRDs stay (Helm never deletes crds/).
    let out = helm_ok(
        &cluster,
        &["uninstall", helm::RELEASE, "-n", helm::NAMESPACE],
    );
    assert!(out.contains("uninstalled"), "{out}");
    let left = kubectl_ok(
        &cluster,
        &[
            "get",
            "-f",
            manifest_file.to_str().unwrap(),
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert_eq!(left.trim(), "", "objects left after helm uninstall");
    let releases = helm_ok(&cluster, &["list", "--all-namespaces", "-o", "json"]);
    assert_eq!(releases.trim(), "[]", "releases left after helm uninstall");
    let secrets = kubectl_ok(
        &cluster,
        &["get", "secrets", "-A", "-l", "owner=helm", "-o", "name"],
    );
    assert_eq!(
        secrets.trim(),
        "",
        "release Secrets left after helm uninstall"
    );
    kubectl_ok(
        &cluster,
        &[
            "get",
            "crd",
            "issuers.pki.canopy.dev",
            "clusterissuers.pki.canopy.dev",
        ],
    );
}

#[test]
fn default_values_install_upgrade_and_uninstall() {
    install_upgrade_uninstall("helm-defaults", &[], &["istio-system"]);
}

#[test]
fn two_cluster_example_installs_upgrades_and_uninstalls() {
    install_upgrade_uninstall(
        "helm-two-clusters",
        &[&helm::two_clusters()],
        &["istio-system", "cert-manager", "payments"],
    );
}

#[test]
fn install_fails_when_istios_namespace_is_missing() {
    // The checks above are real: without istio-system the API server refuses the chart's
    // objects there (the bootstrap Job's Role and RoleBinding for `cacerts`), and helm
    // reports it and leaves a failed release, not a half-installed one it calls deployed.
    let cluster = TestCluster::start("chart-missing-ns");
    let chart = helm::chart().display().to_string();
    let out = helm_on(
        &cluster,
        &[
            "install",
            helm::RELEASE,
            &chart,
            "--namespace",
            helm::NAMESPACE,
            "--create-namespace",
            "--no-hooks",
            "--timeout",
            "1m",
        ],
    );
    assert!(!out.status.success(), "installed without istio-system");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("istio-system"), "{err}");
    let status = helm_on(
        &cluster,
        &["status", helm::RELEASE, "--namespace", helm::NAMESPACE],
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!text.contains("STATUS: deployed"), "{text}");
}
