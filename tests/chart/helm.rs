//! The real `helm` CLI (Helm v4, built from its Go module helm.sh/helm/v4 by
//! tests/helm/build.sh once per test process), and the rendered objects it produces.
//! Included by the tests/chart_*.rs test files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Release name and namespace every test renders with.
pub const RELEASE: &str = "canopy";
/// Namespace of the release.
pub const NAMESPACE: &str = "canopy";

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The chart folder.
pub fn chart() -> PathBuf {
    root().join("charts/canopy-issuer")
}

/// The two-cluster example values file.
pub fn two_clusters() -> PathBuf {
    chart().join("examples/two-clusters.yaml")
}

/// Path to `helm`, built with tests/helm/build.sh once per test process (a no-op of a
/// second or two when the Go build cache is warm; the first build takes minutes).
pub fn helm_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| canopy_testsupport::built_by(&root().join("tests/helm/build.sh"), &[]))
        .clone()
}

/// A `helm` command that sees none of the caller's Helm or kube settings: its config,
/// cache and data homes are under target/helm/home, no HELM_* variable is passed on, and
/// KUBECONFIG names a file that does not exist (pass `--kubeconfig` to reach a cluster).
pub fn command() -> Command {
    let bin = helm_bin();
    let home = bin.parent().expect("helm's folder").join("home");
    let mut c = Command::new(&bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HELM_") {
            c.env_remove(key);
        }
    }
    c.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", home.join("no-kubeconfig"))
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .current_dir(root())
        .stdin(Stdio::null());
    c
}

/// Runs `helm ARGS...` (offline, see [`command`]) from the workspace root.
pub fn helm(args: &[&str]) -> Output {
    command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm_bin().display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Requires success of a finished `helm` run; returns stdout.
pub fn ok(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "helm {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and requires success; returns stdout.
pub fn helm_ok(args: &[&str]) -> String {
    ok(args, helm(args))
}

/// Runs and requires failure; returns stdout + stderr.
pub fn helm_fails(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        !out.status.success(),
        "helm {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `-f FILE` for each values file, in order.
pub fn values_args(values: &[&Path]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["-f".to_string(), v.display().to_string()])
        .collect()
}

/// `helm template RELEASE CHART --namespace NAMESPACE -f ...` of the chart with these
/// values files (in order): every object, hooks included, NOTES and crds/ left out.
pub fn template_text(values: &[&Path]) -> String {
    let mut args = vec![
        "template".to_string(),
        RELEASE.into(),
        chart().display().to_string(),
        "--namespace".into(),
        NAMESPACE.into(),
    ];
    args.extend(values_args(values));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm_ok(&args)
}

/// Every rendered object, as JSON.
pub fn template(values: &[&Path]) -> Vec<Value> {
    parse_stream(&template_text(values))
}

/// `helm install RELEASE CHART --namespace NAMESPACE --dry-run=client -o json` and then
/// `extra`: Helm's whole install action, offline (no cluster is asked anything).
pub fn dry_run_install(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        RELEASE,
        &chart().display().to_string(),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The NOTES.txt of a client-side dry-run install ([`dry_run_install`]) with `extra` args.
pub fn notes(extra: &[&str]) -> String {
    let args = dry_run_install(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = helm_ok(&args);
    let release: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("helm {args:?}: not a JSON release ({e}):\n{out}"));
    release["info"]["notes"]
        .as_str()
        .unwrap_or_else(|| panic!("helm {args:?}: the release has no info.notes:\n{out}"))
        .to_string()
}

/// A multi-document YAML stream as JSON values, empty documents dropped.
pub fn parse_stream(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            serde_json::to_value(v).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Values in a temp file (for one-off overrides).
pub fn values_file(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write values file");
    path
}

/// `kind/namespace/name` of an object.
pub fn id(o: &Value) -> String {
    format!(
        "{}/{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The objects of one kind.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
    found[0]
}

/// Full name of the release's objects.
pub fn fullname() -> String {
    format!("{RELEASE}-canopy-issuer")
}
