//! The real Helm engine, run by tests/chart/render.sh (Helm v4's Go SDK from the PyPI
//! package helm-python-sdk, installed into a venv under target/ on first use), and the
//! rendered objects it produces. Included by the tests/chart_*.rs test files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs `render.sh ARGS...` (lint, template, notes) from the workspace root.
pub fn helm(args: &[&str]) -> Output {
    Command::new(root().join("tests/chart/render.sh"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run tests/chart/render.sh (needs bash and python3)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and requires success; returns stdout.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "render.sh {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and requires failure; returns stdout + stderr.
pub fn helm_fails(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        !out.status.success(),
        "render.sh {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn values_args(values: &[&Path]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["-f".to_string(), v.display().to_string()])
        .collect()
}

/// `helm template` of the chart with these values files (in order), hooks included.
pub fn template_text(values: &[&Path]) -> String {
    let chart = chart().display().to_string();
    let mut args = vec![
        "template".to_string(),
        chart,
        "--name".into(),
        RELEASE.into(),
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
