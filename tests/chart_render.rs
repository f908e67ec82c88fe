//! The Helm chart (charts/canopy-issuer) through the real Helm engine: lint, template,
//! schema rejections, every rendered object read back into its typed Kubernetes struct,
//! the issuer config accepted by the real `canopy-issuer`, and RBAC exactly as
//! shared/contracts/cert-manager.md lists it.

use crate::helm;

use std::collections::BTreeSet;
use std::path::Path;

use helm::{find, fullname, of_kind, template, values_file, NAMESPACE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Values that switch on what the defaults and the example leave off.
const EVERYTHING: &str = r#"
roots: {existingConfigMap: "", existingSecret: canopy-roots, keys: [root-1.pem, root-2.pem]}
listen:
  tls: {existingSecret: canopy-listener-tls}
  extraServerNames: [canopy.example.com]
  serverIps: [10.0.0.10]
storage:
  sqlite: {existingClaim: canopy-data}
certManager:
  csrApi: {enabled: true}
  issuerNamespaces: [team-a, team-b]
podDisruptionBudget: {enabled: true, maxUnavailable: 1}
serviceMonitor: {enabled: true}
imagePullSecrets: [regcred]
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
"#;

/// Values without any in-cluster controller: the issuer only serves remote clusters.
const REMOTE_ONLY: &str = r#"
clusters:
  - name: aks-prod
    intermediate: default
    kubeconfigSecret: {name: canopy-kubeconfig-aks}
"#;

// ---------------------------------------------------------------------------------------
// lint and template

#[test]
fn lint_passes_with_default_and_two_cluster_values() {
    let chart = helm::chart().display().to_string();
    let example = helm::two_clusters().display().to_string();
    let out = helm::helm_ok(&["lint", &chart, "--strict"]);
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    let out = helm::helm_ok(&["lint", &chart, "--strict", "-f", &example]);
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
}

#[test]
fn lint_fails_on_a_broken_template() {
    let dir = canopy_testsupport::tempdir();
    let copy = dir.path().join("canopy-issuer");
    copy_dir(&helm::chart(), &copy);
    let service = copy.join("templates/service.yaml");
    let broken = std::fs::read_to_string(&service).unwrap()
        + "\n  {{ .Values.service.port | nosuchfunction }}\n";
    std::fs::write(&service, broken).unwrap();
    let out = helm::helm_fails(&["lint", copy.to_str().unwrap()]);
    assert!(out.contains("nosuchfunction"), "{out}");
    helm::helm_fails(&["template", copy.to_str().unwrap()]);
}

#[test]
fn template_renders_the_expected_objects() {
    let defaults: BTreeSet<String> = template(&[]).iter().map(helm::id).collect();
    let f = fullname();
    let b = format!("{f}-bootstrap");
    let expected: BTreeSet<String> = [
        format!("ServiceAccount/canopy/{f}"),
        format!("ConfigMap/canopy/{f}"),
        format!("Deployment/canopy/{f}"),
        format!("Service/canopy/{f}"),
        format!("NetworkPolicy/canopy/{f}"),
        format!("ClusterRole//{f}-controller"),
        format!("ClusterRoleBinding//{f}-controller"),
        format!("ClusterRole//{f}-cert-manager-approver"),
        format!("ClusterRoleBinding//{f}-cert-manager-approver"),
        format!("Role/canopy/{f}-secrets"),
        format!("RoleBinding/canopy/{f}-secrets"),
        format!("Role/canopy/{f}-leader-election"),
        format!("RoleBinding/canopy/{f}-leader-election"),
        format!("Role/istio-system/{f}-cacerts"),
        format!("RoleBinding/istio-system/{f}-cacerts"),
        format!("ServiceAccount/canopy/{b}"),
        format!("ConfigMap/canopy/{b}"),
        format!("Role/istio-system/{b}"),
        format!("RoleBinding/istio-system/{b}"),
        format!("Job/canopy/{b}"),
    ]
    .into_iter()
    .collect();
    assert_eq!(defaults, expected);

    let example: BTreeSet<String> = template(&[&helm::two_clusters()])
        .iter()
        .map(helm::id)
        .collect();
    let mut expected_example = expected.clone();
    expected_example.extend([
        format!("PodDisruptionBudget/canopy/{f}"),
        format!("ServiceMonitor/canopy/{f}"),
        format!("Role/cert-manager/{f}-secrets"),
        format!("RoleBinding/cert-manager/{f}-secrets"),
        format!("Role/payments/{f}-secrets"),
        format!("RoleBinding/payments/{f}-secrets"),
    ]);
    expected_example.remove(&format!("Role/canopy/{f}-secrets"));
    expected_example.remove(&format!("RoleBinding/canopy/{f}-secrets"));
    assert_eq!(example, expected_example);
}

#[test]
fn notes_render_through_a_client_side_install() {
    let example = helm::two_clusters().display().to_string();
    // `helm install canopy CHART --namespace canopy --dry-run=client`: NOTES.txt of the release.
    let notes = helm::notes(&[]);
    assert!(
        notes.contains("kubectl -n canopy create configmap canopy-roots"),
        "{notes}"
    );
    assert!(notes.contains("SQLite on an emptyDir"), "{notes}");
    assert!(notes.contains("no policies are configured"), "{notes}");
    let notes = helm::notes(&["-f", &example]);
    for line in [
        "Secret canopy-intermediate-aws",
        "Secret canopy-intermediate-azure",
        "Secret canopy-postgres",
        "Secret canopy-kubeconfig-aks",
        "ConfigMap canopy-jwks-aks",
        "rollout status deployment/canopy-canopy-issuer",
        "istio-system/cacerts",
    ] {
        assert!(notes.contains(line), "NOTES lack {line:?}:\n{notes}");
    }
    assert!(!notes.contains("emptyDir"), "{notes}");
}

#[test]
fn schema_rejects_bad_values() {
    let dir = canopy_testsupport::tempdir();
    let chart = helm::chart().display().to_string();
    let cases: &[(&str, &str)] = &[
        ("replicaCount: \"two\"", "/replicaCount': got string, want integer"),
        ("replicaCount: 0", "/replicaCount': minimum"),
        ("replicaCount: 2", "/replicaCount': maximum"),
        ("storage: {type: mysql}", "/storage/type': value must be one of"),
        ("storage: {type: postgres}", "/storage/postgres/existingSecret': minLength"),
        ("trustDomain: Mesh.Example", "/trustDomain'"),
        ("intermediates: []", "/intermediates': minItems"),
        ("intermediates: [{name: aws}]", "missing property 'existingSecret'"),
        ("intermediates: [{name: AWS, existingSecret: x}]", "/intermediates/0/name'"),
        ("roots: {existingConfigMap: a, existingSecret: b}", "/roots': 'oneOf' failed"),
        ("roots: {existingConfigMap: \"\"}", "/roots': 'oneOf' failed"),
        ("clusters: [{name: x, intermediate: default}]", "/clusters/0': 'oneOf' failed"),
        (
            "clusters: [{name: x, intermediate: default, inCluster: true, kubeconfigSecret: {name: k}}]",
            "/clusters/0': 'oneOf' failed",
        ),
        ("clusters: [{name: Prod, intermediate: default, inCluster: true}]", "/clusters/0/name'"),
        (
            "clusters: [{name: x, intermediate: default, inCluster: true, jwt: {audiences: []}}]",
            "/clusters/0/jwt",
        ),
        ("service: {port: 70000}", "/service/port': maximum"),
        ("service: {type: Ingress}", "/service/type'"),
        ("image: {pullPolicy: Sometimes}", "/image/pullPolicy'"),
        ("certManager: {approver: {serviceAccount: {namespace: Cert_Manager}}}",
            "/certManager/approver/serviceAccount/namespace'",
        ),
        ("podDisruptionBudget: {enabled: yes-please}", "/podDisruptionBudget/enabled'"),
        ("replicas: 2", "additional properties 'replicas' not allowed"),
        ("storage: {type: sqlite, url: \"sqlite:x\"}", "additional properties 'url' not allowed"),
        ("limits: {body_bytes: 100}", "/limits/body_bytes': minimum"),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let file = values_file(dir.path(), &format!("bad-{i}.yaml"), yaml);
        let file = file.to_str().unwrap();
        let out = helm::helm_fails(&["template", &chart, "-f", file]);
        assert!(
            out.contains("values don't meet the specifications of the schema"),
            "{yaml}: not a schema error:\n{out}"
        );
        assert!(
            out.contains(expected),
            "{yaml}: expected {expected:?} in:\n{out}"
        );
        // `helm lint` reads the same schema, and so does an install (client-side dry run).
        helm::helm_fails(&["lint", &chart, "-f", file]);
        if i == 0 {
            let install = helm::dry_run_install(&["-f", file]);
            let install: Vec<&str> = install.iter().map(String::as_str).collect();
            let out = helm::helm_fails(&install);
            assert!(out.contains(expected), "install of {yaml}: {out}");
        }
    }
}

#[test]
fn templates_reject_names_that_refer_to_nothing() {
    let dir = canopy_testsupport::tempdir();
    let chart = helm::chart().display().to_string();
    let cases: &[(&str, &str)] = &[
        (
            "clusters: [{name: x, intermediate: gcp, inCluster: true}]",
            "clusters[x].intermediate \"gcp\": no intermediate has this name",
        ),
        ("defaultIntermediate: gcp", "defaultIntermediate \"gcp\""),
        (
            "clusters: [{name: a, intermediate: default, inCluster: true}, {name: b, intermediate: default, inCluster: true}]",
            "at most one cluster may set inCluster",
        ),
        (
            "intermediates: [{name: a, existingSecret: x}, {name: a, existingSecret: z}]\nclusters: []",
            "intermediates: duplicate name \"a\"",
        ),
        (
            "clusters: [{name: x, intermediate: default, inCluster: true, istio: {namespace: mesh}}]",
            "clusters[x].istio.namespace \"mesh\" differs from istio.namespace \"istio-system\"",
        ),
        (
            // Without `iss`, any token signed by the cluster's keys would pass.
            "clusters: [{name: x, intermediate: default, inCluster: true, jwt: {audiences: [canopy], jwks: {keys: []}}}]",
            "issuer",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let file = values_file(dir.path(), &format!("bad-{i}.yaml"), yaml);
        let out = helm::helm_fails(&["template", &chart, "-f", file.to_str().unwrap()]);
        assert!(
            out.contains(expected),
            "{yaml}: expected {expected:?} in:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// typed objects

/// Reads `object` into `T` and writes it back: a field `T` does not know (a typo, a field
/// at the wrong level) is dropped on the way and shows up as a difference.
fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T =
        serde_json::from_value(object.clone()).map_err(|e| format!("{}: {e}", helm::id(object)))?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    diff("", object, &back, &mut diffs);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: not kept by the typed struct: {}",
            helm::id(object),
            diffs.join(", ")
        ))
    }
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                diff(
                    &format!("{path}.{k}"),
                    v,
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k} (added)"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

/// The ServiceMonitor fields the chart writes, and no others (no typed struct exists in k8s-openapi).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    scheme: String,
    path: String,
    interval: String,
    scrape_timeout: String,
    tls_config: Value,
}

fn check_typed(objects: &[Value]) {
    let mut errors = Vec::new();
    for o in objects {
        let result = match (
            o["apiVersion"].as_str().unwrap_or(""),
            o["kind"].as_str().unwrap_or(""),
        ) {
            ("apps/v1", "Deployment") => round_trip::<Deployment>(o),
            ("v1", "Service") => round_trip::<Service>(o),
            ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(o),
            ("v1", "ConfigMap") => round_trip::<ConfigMap>(o),
            ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(o),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(o),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(o),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                round_trip::<ClusterRoleBinding>(o)
            }
            ("batch/v1", "Job") => round_trip::<Job>(o),
            ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(o),
            ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(o),
            ("monitoring.coreos.com/v1", "ServiceMonitor") => round_trip::<ServiceMonitor>(o),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                round_trip::<CustomResourceDefinition>(o)
            }
            (v, k) => Err(format!("{}: no typed struct for {v} {k}", helm::id(o))),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_rendered_object_deserializes_into_its_typed_struct() {
    let dir = canopy_testsupport::tempdir();
    let everything = values_file(dir.path(), "everything.yaml", EVERYTHING);
    let remote = values_file(dir.path(), "remote.yaml", REMOTE_ONLY);
    for values in [
        vec![],
        vec![helm::two_clusters()],
        vec![everything],
        vec![remote],
    ] {
        let refs: Vec<&Path> = values.iter().map(|p| p.as_path()).collect();
        let objects = template(&refs);
        assert!(
            objects.len() >= 10,
            "{values:?}: only {} objects",
            objects.len()
        );
        check_typed(&objects);
    }
}

#[test]
fn the_typed_check_catches_a_misplaced_field() {
    let objects = template(&[]);
    let mut deployment = find(&objects, "Deployment", &fullname()).clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = json!(true);
    let err = round_trip::<Deployment>(&deployment).unwrap_err();
    assert!(err.contains("readOnlyRootFilesystem"), "{err}");
}

#[test]
fn crds_in_the_chart_are_custom_resource_definitions() {
    let crds = helm::chart().join("crds");
    let Ok(entries) = std::fs::read_dir(&crds) else {
        eprintln!(
            "SKIPPED: {} does not exist yet (generated by the issuer's CRD task)",
            crds.display()
        );
        return;
    };
    let mut kinds = BTreeSet::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let docs = helm::parse_stream(&std::fs::read_to_string(&path).unwrap());
        for crd in &docs {
            round_trip::<CustomResourceDefinition>(crd)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if crd["spec"]["group"] == "pki.canopy.dev" {
                kinds.insert(
                    crd["spec"]["names"]["kind"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["ClusterIssuer".to_string(), "Issuer".to_string()])
    );
    // Helm loads the same CRDs from crds/ (what `helm install` creates before the templates).
    let chart = helm::chart().display().to_string();
    let with_crds = helm::parse_stream(&helm::helm_ok(&["template", &chart, "--include-crds"]));
    let from_helm: BTreeSet<String> = of_kind(&with_crds, "CustomResourceDefinition")
        .into_iter()
        .map(|c| c["spec"]["names"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(from_helm, kinds);
}

// ---------------------------------------------------------------------------------------
// the issuer config

fn config_of(objects: &[Value], name: &str) -> (String, serde_yaml::Value) {
    let cm = find(objects, "ConfigMap", name);
    let text = cm["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml")
        .to_string();
    let yaml = serde_yaml::from_str(&text).expect("config.yaml is YAML");
    (text, yaml)
}

/// The real `canopy-issuer migrate --config` parses and validates the rendered config
/// (only the database is swapped for a temp SQLite file: the files it names exist only in the pod).
fn issuer_accepts(config: &serde_yaml::Value, dir: &Path) {
    let mut config = config.clone();
    config["storage"]["url"] = format!("sqlite://{}/canopy.db", dir.display()).into();
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let out = canopy_testsupport::run_ok(
        canopy_testsupport::cmd("canopy-issuer")
            .arg("migrate")
            .arg("--config")
            .arg(&path),
    );
    assert!(out.contains("database is up to date"), "{out}");
}

/// Every file the config names is mounted in the pod, from a volume that provides that key.
fn files_are_mounted(config: &serde_yaml::Value, pod: &Value, what: &str) {
    let spec: PodSpec = serde_json::from_value(pod.clone()).unwrap();
    let container = &spec.containers[0];
    let mut files: Vec<String> = Vec::new();
    let s = |v: &serde_yaml::Value| v.as_str().map(str::to_string);
    files.extend(config["roots"].as_sequence().unwrap().iter().filter_map(s));
    for i in config["intermediates"].as_sequence().unwrap() {
        files.extend(
            ["cert", "key", "passphrase_file"]
                .iter()
                .filter_map(|k| s(&i[*k])),
        );
    }
    for c in config["clusters"].as_sequence().unwrap() {
        files.extend(s(&c["kubeconfig"]));
        files.extend(s(&c["jwt"]["jwks_file"]));
    }
    if let Some(tls) = config["listen"].get("tls") {
        files.extend(["cert", "key"].iter().filter_map(|k| s(&tls[*k])));
    }
    assert!(!files.is_empty());
    for file in files {
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| Path::new(&file).parent() == Some(Path::new(&m.mount_path)))
            .unwrap_or_else(|| panic!("{what}: no mount for {file}"));
        let key = Path::new(&file).file_name().unwrap().to_str().unwrap();
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        let items = volume
            .secret
            .as_ref()
            .and_then(|s| s.items.clone())
            .or_else(|| volume.config_map.as_ref().and_then(|c| c.items.clone()));
        if let Some(items) = items {
            assert!(
                items.iter().any(|i| i.path == key),
                "{what}: volume {} lacks {key}",
                volume.name
            );
        }
    }
    // SQLite lives on the data volume; a read-only root filesystem allows nothing else.
    if let Some(file) = config["storage"]["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("sqlite://"))
    {
        let dir = Path::new(file).parent().unwrap();
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| Path::new(&m.mount_path) == dir && m.name == "data"),
            "{what}: SQLite dir {} is not on the data volume",
            dir.display()
        );
    }
}

#[test]
fn the_issuer_accepts_the_rendered_config() {
    let dir = canopy_testsupport::tempdir();
    let everything = values_file(dir.path(), "everything.yaml", EVERYTHING);
    let remote = values_file(dir.path(), "remote.yaml", REMOTE_ONLY);
    for (i, values) in [
        vec![],
        vec![helm::two_clusters()],
        vec![everything],
        vec![remote],
    ]
    .into_iter()
    .enumerate()
    {
        let refs: Vec<&Path> = values.iter().map(|p| p.as_path()).collect();
        let objects = template(&refs);
        let (text, config) = config_of(&objects, &fullname());
        assert!(
            !text.contains("PRIVATE KEY"),
            "key material in the ConfigMap"
        );
        let run = dir.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&run).unwrap();
        issuer_accepts(&config, &run);

        let deployment = find(&objects, "Deployment", &fullname());
        files_are_mounted(
            &config,
            &deployment["spec"]["template"]["spec"],
            "Deployment",
        );
        // The bootstrap Job runs before the release's ConfigMap exists: it has its own, the same.
        let bootstrap = format!("{}-bootstrap", fullname());
        let (job_text, _) = config_of(&objects, &bootstrap);
        assert_eq!(job_text, text, "bootstrap config differs from the issuer's");
        let job = find(&objects, "Job", &bootstrap);
        files_are_mounted(&config, &job["spec"]["template"]["spec"], "Job");
    }
}

#[test]
fn two_cluster_config_names_both_clusters_and_intermediates() {
    let objects = template(&[&helm::two_clusters()]);
    let (_, config) = config_of(&objects, &fullname());
    assert_eq!(config["trust_domain"].as_str(), Some("mesh.example"));
    let names = |key: &str| -> Vec<String> {
        config[key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("clusters"), ["eks-prod", "aks-prod"]);
    assert_eq!(names("intermediates"), ["aws", "azure"]);
    assert_eq!(config["clusters"][0]["in_cluster"].as_bool(), Some(true));
    assert_eq!(
        config["clusters"][1]["kubeconfig"].as_str(),
        Some("/etc/canopy/clusters/aks-prod/kubeconfig")
    );
    assert_eq!(
        config["clusters"][1]["intermediate"].as_str(),
        Some("azure")
    );
    // istio-csr acts for every namespace; the JWTs of each cluster name their issuer.
    for c in 0..2 {
        assert_eq!(
            config["clusters"][c]["cert_manager"]["trusted_requesters"][0].as_str(),
            Some("system:serviceaccount:cert-manager:cert-manager-istio-csr"),
            "{c}"
        );
    }
    assert_eq!(
        config["clusters"][1]["jwt"]["issuer"].as_str(),
        Some("https://westeurope.oic.prod-aks.azure.com/TENANT/CLUSTER/")
    );
    // The PostgreSQL URL never appears in the ConfigMap: it comes from its Secret.
    assert!(!config["storage"]["url"].as_str().unwrap().contains('@'));
    let deployment = find(&objects, "Deployment", &fullname());
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let url = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CANOPY_STORAGE_URL")
        .expect("CANOPY_STORAGE_URL");
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({"name": "canopy-postgres", "key": "url"})
    );
}

#[test]
fn istio_settings_pass_through_to_the_config() {
    let dir = canopy_testsupport::tempdir();
    let values = values_file(
        dir.path(),
        "istio.yaml",
        r#"
clusters:
  - {name: here, intermediate: default, inCluster: true, istio: {}}
  - name: there
    intermediate: default
    kubeconfigSecret: {name: k}
    istio: {mode: intermediate, namespace: mesh, workload_ttl: 12h}
  - {name: elsewhere, intermediate: default, kubeconfigSecret: {name: k2}}
istio:
  config: {resync: 30s}
"#,
    );
    let objects = template(&[&values]);
    let (_, config) = config_of(&objects, &fullname());
    let clusters = config["clusters"].as_sequence().unwrap();
    assert_eq!(
        clusters[0]["istio"],
        serde_yaml::from_str::<serde_yaml::Value>("{}").unwrap()
    );
    assert_eq!(clusters[1]["istio"]["mode"].as_str(), Some("intermediate"));
    assert_eq!(clusters[1]["istio"]["workload_ttl"].as_str(), Some("12h"));
    assert!(clusters[2].get("istio").is_none());
    assert_eq!(config["istio"]["resync"].as_str(), Some("30s"));
    // The defaults set neither.
    let (_, config) = config_of(&template(&[]), &fullname());
    assert!(config.get("istio").is_none());
    assert!(config["clusters"][0].get("istio").is_none());
}

#[test]
fn pod_certificates_are_switched_on_per_cluster_with_sign_on_their_signer_names_only() {
    let dir = canopy_testsupport::tempdir();
    let values = values_file(
        dir.path(),
        "pods.yaml",
        r#"
clusters:
  - {name: here, intermediate: default, inCluster: true, podCertificates: {policy: pods, signerNames: [canopy.dev/spiffe, pki.example.com/mesh]}}
  - {name: there, intermediate: default, kubeconfigSecret: {name: k}, podCertificates: {policy: pods}}
  - {name: elsewhere, intermediate: default, kubeconfigSecret: {name: k2}}
policies:
  - {name: pods, spiffe_ids: ["spiffe://cluster.local/ns/{namespace}/sa/{sa}"]}
"#,
    );
    let objects = template(&[&values]);
    let (_, config) = config_of(&objects, &fullname());
    let clusters = config["clusters"].as_sequence().unwrap();
    let pc = &clusters[0]["pod_certificates"];
    assert_eq!(pc["policy"].as_str(), Some("pods"));
    assert_eq!(pc["lease"]["namespace"].as_str(), Some(NAMESPACE));
    assert_eq!(
        clusters[1]["pod_certificates"]["signer_names"][0].as_str(),
        Some("canopy.dev/spiffe")
    );
    assert!(clusters[2].get("pod_certificates").is_none());
    let role: ClusterRole = serde_json::from_value(
        find(
            &objects,
            "ClusterRole",
            &format!("{}-pod-certificates", fullname()),
        )
        .clone(),
    )
    .unwrap();
    let rules = role.rules.unwrap();
    let sign = rules
        .iter()
        .find(|r| r.verbs.contains(&"sign".to_string()))
        .unwrap();
    assert_eq!(
        sign.resource_names.as_deref(),
        Some(
            &[
                "canopy.dev/spiffe".to_string(),
                "pki.example.com/mesh".to_string()
            ][..]
        )
    );
    assert!(rules.iter().any(
        |r| r.resources.as_deref() == Some(&["podcertificaterequests/status".to_string()][..])
    ));
    find(&objects, "Role", &format!("{}-leader-election", fullname()));
    // Off by default, and a signer name the API server would refuse fails the schema.
    assert!(of_kind(&template(&[]), "ClusterRole")
        .iter()
        .all(|r| r["metadata"]["name"] != format!("{}-pod-certificates", fullname())));
    let bad = values_file(
        dir.path(),
        "bad.yaml",
        "clusters:\n  - {name: here, intermediate: default, inCluster: true, podCertificates: {policy: pods, signerNames: [spiffe]}}\n",
    );
    let chart = helm::chart().display().to_string();
    let out = helm::helm_fails(&["template", "t", &chart, "-f", &bad.display().to_string()]);
    assert!(out.contains("signerNames"), "{out}");
}

// ---------------------------------------------------------------------------------------
// the pod

#[test]
fn the_issuer_pod_is_locked_down() {
    let dir = canopy_testsupport::tempdir();
    let remote = values_file(dir.path(), "remote.yaml", REMOTE_ONLY);
    for (values, in_cluster) in [
        (vec![], true),
        (vec![helm::two_clusters()], true),
        (vec![remote], false),
    ] {
        let refs: Vec<&Path> = values.iter().map(|p| p.as_path()).collect();
        let objects = template(&refs);
        let deployment: Deployment =
            serde_json::from_value(find(&objects, "Deployment", &fullname()).clone()).unwrap();
        let pod = deployment.spec.template.spec.unwrap();
        assert_eq!(
            pod.automount_service_account_token,
            Some(in_cluster),
            "{values:?}"
        );
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        for (probe, path) in [
            (c.liveness_probe.clone(), "/healthz"),
            (c.readiness_probe.clone(), "/readyz"),
        ] {
            let get = probe.unwrap().http_get.unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }
        let volumes = pod.volumes.unwrap();
        let tmp = volumes.iter().find(|v| v.name == "tmp").unwrap();
        assert!(tmp.empty_dir.is_some());
        assert!(c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "tmp" && m.mount_path == "/tmp"));
        // Secrets are referenced, never inlined.
        for v in &volumes {
            if let Some(secret) = &v.secret {
                assert!(secret.secret_name.is_some());
            }
        }
        assert!(c.resources.is_some());
        let sa: ServiceAccount =
            serde_json::from_value(find(&objects, "ServiceAccount", &fullname()).clone()).unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false));
        // Without an in-cluster controller there is nothing for RBAC to grant.
        assert_eq!(
            !of_kind(&objects, "ClusterRoleBinding")
                .iter()
                .any(|b| b["metadata"]["name"] == format!("{}-controller", fullname())),
            !in_cluster
        );
    }
}

#[test]
fn the_bootstrap_job_runs_before_everything_as_a_hook() {
    let objects = template(&[&helm::two_clusters()]);
    let bootstrap = format!("{}-bootstrap", fullname());
    let hooks: Vec<&Value> = objects
        .iter()
        .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_string())
        .collect();
    let kinds: BTreeSet<&str> = hooks.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Job"])
    );
    let weight = |o: &Value| -> i64 {
        o["metadata"]["annotations"]["helm.sh/hook-weight"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let job = find(&objects, "Job", &bootstrap);
    for h in &hooks {
        let a = &h["metadata"]["annotations"];
        assert_eq!(
            a["helm.sh/hook"],
            "pre-install,pre-upgrade",
            "{}",
            helm::id(h)
        );
        assert_eq!(
            a["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded",
            "{}",
            helm::id(h)
        );
        assert_eq!(h["metadata"]["name"], bootstrap.as_str());
        if h["kind"] != "Job" {
            assert!(
                weight(h) < weight(job),
                "{} must exist before the Job",
                helm::id(h)
            );
        }
    }
    let job: Job = serde_json::from_value(job.clone()).unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(bootstrap.as_str())
    );
    assert_eq!(pod.automount_service_account_token, Some(true));
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "cacerts",
            "sync",
            "--once",
            "--config",
            "/etc/canopy/config/config.yaml"
        ]
    );
    let config = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "config")
        .unwrap();
    assert_eq!(config.config_map.unwrap().name, bootstrap);
    let role = find(&objects, "Role", &bootstrap);
    assert_eq!(role["metadata"]["namespace"], "istio-system");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "patch"]}])
    );

    // Off with istio.
    let dir = canopy_testsupport::tempdir();
    let off = values_file(dir.path(), "off.yaml", "istio: {enabled: false}");
    let objects = template(&[&off]);
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_string()));
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["namespace"] == "istio-system"));
}

// ---------------------------------------------------------------------------------------
// RBAC, exactly as the contract lists it

fn rules(o: &Value) -> Value {
    o["rules"].clone()
}

#[test]
fn cert_manager_may_approve_exactly_our_signers() {
    let dir = canopy_testsupport::tempdir();
    let custom = values_file(
        dir.path(),
        "custom.yaml",
        "certManager: {approver: {serviceAccount: {name: cm, namespace: security}}}",
    );
    for (values, sa, ns) in [
        (vec![], "cert-manager", "cert-manager"),
        (vec![custom], "cm", "security"),
    ] {
        let refs: Vec<&Path> = values.iter().map(|p| p.as_path()).collect();
        let objects = template(&refs);
        let name = format!("{}-cert-manager-approver", fullname());
        let role = find(&objects, "ClusterRole", &name);
        assert_eq!(
            rules(role),
            json!([{
                "apiGroups": ["cert-manager.io"],
                "resources": ["signers"],
                "verbs": ["approve"],
                "resourceNames": ["issuers.pki.canopy.dev/*", "clusterissuers.pki.canopy.dev/*"],
            }])
        );
        let binding = find(&objects, "ClusterRoleBinding", &name);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
        );
    }
}

#[test]
fn the_controller_gets_exactly_the_contract_rbac() {
    let objects = template(&[&helm::two_clusters()]);
    let f = fullname();
    let subject = json!([{"kind": "ServiceAccount", "name": f, "namespace": NAMESPACE}]);
    let controller = find(&objects, "ClusterRole", &format!("{f}-controller"));
    assert_eq!(
        rules(controller),
        json!([
            {"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests/status"], "verbs": ["patch"]},
            {"apiGroups": ["pki.canopy.dev"], "resources": ["issuers", "clusterissuers"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["pki.canopy.dev"], "resources": ["issuers/status", "clusterissuers/status"], "verbs": ["patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/status"], "verbs": ["update", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["sign"],
             "resourceNames": ["issuers.pki.canopy.dev/*", "clusterissuers.pki.canopy.dev/*"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    assert_eq!(
        find(&objects, "ClusterRoleBinding", &format!("{f}-controller"))["subjects"],
        subject
    );
    // Secrets: no ClusterRole grants them; Roles only in the cluster resource namespace and the Issuers' namespaces.
    for role in of_kind(&objects, "ClusterRole") {
        assert!(
            !role["rules"].to_string().contains("secrets"),
            "{}",
            helm::id(role)
        );
    }
    let secret_roles: BTreeSet<&str> = of_kind(&objects, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == format!("{f}-secrets"))
        .map(|r| {
            assert_eq!(rules(r), json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]));
            r["metadata"]["namespace"].as_str().unwrap()
        })
        .collect();
    assert_eq!(secret_roles, BTreeSet::from(["cert-manager", "payments"]));
    let lease = find(&objects, "Role", &format!("{f}-leader-election"));
    assert_eq!(lease["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        rules(lease),
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
    );
    let cacerts = find(&objects, "Role", &format!("{f}-cacerts"));
    assert_eq!(cacerts["metadata"]["namespace"], "istio-system");
    assert_eq!(
        rules(cacerts),
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "patch"]}])
    );
    for binding in of_kind(&objects, "RoleBinding")
        .into_iter()
        .filter(|b| b["metadata"]["annotations"].is_null())
    {
        assert_eq!(binding["subjects"], subject, "{}", helm::id(binding));
        assert_eq!(binding["roleRef"]["name"], binding["metadata"]["name"]);
    }

    // Defaults: no CSR API rules.
    let objects = template(&[]);
    let controller = find(&objects, "ClusterRole", &format!("{f}-controller"));
    assert!(!rules(controller)
        .to_string()
        .contains("certificates.k8s.io"));
}

// ---------------------------------------------------------------------------------------
// network, disruption, monitoring

#[test]
fn network_policy_opens_only_the_api_dns_database_and_api_servers() {
    let objects = template(&[&helm::two_clusters()]);
    let np: NetworkPolicy =
        serde_json::from_value(find(&objects, "NetworkPolicy", &fullname()).clone()).unwrap();
    let spec = np.spec.unwrap();
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let ports = serde_json::to_value(&ingress[0].ports).unwrap();
    assert_eq!(ports, json!([{"port": "https", "protocol": "TCP"}]));
    let egress = serde_json::to_value(spec.egress.unwrap()).unwrap();
    let ports: Vec<Value> = egress
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ports"].clone())
        .collect();
    assert_eq!(
        ports,
        [
            json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]),
            json!([{"port": 443, "protocol": "TCP"}]),
            json!([{"port": 5432, "protocol": "TCP"}]),
        ]
    );
    assert_eq!(
        egress[1]["to"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "20.50.0.0/16"}}])
    );
    assert_eq!(
        egress[2]["to"],
        json!([{"ipBlock": {"cidr": "10.0.64.0/20"}}])
    );
    // SQLite: no database egress.
    let objects = template(&[]);
    let np = find(&objects, "NetworkPolicy", &fullname());
    assert_eq!(np["spec"]["egress"].as_array().unwrap().len(), 2);
}

#[test]
fn pdb_and_service_monitor_are_optional() {
    let objects = template(&[]);
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());
    assert!(of_kind(&objects, "ServiceMonitor").is_empty());
    let objects = template(&[&helm::two_clusters()]);
    let pdb = find(&objects, "PodDisruptionBudget", &fullname());
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let deployment = find(&objects, "Deployment", &fullname());
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);
    let sm = find(&objects, "ServiceMonitor", &fullname());
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["configMap"],
        json!({"name": "canopy-roots", "key": "root-cert.pem"})
    );
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn every_object_carries_the_standard_labels() {
    let objects = template(&[&helm::two_clusters()]);
    for o in &objects {
        let labels = &o["metadata"]["labels"];
        for key in [
            "helm.sh/chart",
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/component",
        ] {
            assert!(labels[key].is_string(), "{} lacks label {key}", helm::id(o));
        }
        assert_eq!(labels["helm.sh/chart"], "canopy-issuer-0.1.0");
        assert_eq!(labels["app.kubernetes.io/instance"], helm::RELEASE);
    }
}

#[test]
fn values_yaml_documents_every_field() {
    let text = std::fs::read_to_string(helm::chart().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // (indent, documented) of the keys above the current line.
    let mut ancestors: Vec<(usize, bool)> = Vec::new();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        while ancestors.last().is_some_and(|(d, _)| *d >= indent) {
            ancestors.pop();
        }
        let inside_documented_value = ancestors.iter().any(|(_, doc)| *doc);
        if trimmed.starts_with('-') || !trimmed.contains(':') {
            ancestors.push((indent, inside_documented_value));
            continue;
        }
        let mut documented = false;
        let mut j = i;
        while j > 0 && lines[j - 1].trim_start().starts_with('#') {
            j -= 1;
            documented |= lines[j].trim_start().starts_with("# --");
        }
        let value = trimmed.split_once(':').unwrap().1.trim();
        let section = value.is_empty()
            && lines
                .get(i + 1)
                .is_some_and(|n| n.len() - n.trim_start().len() > indent);
        if !documented && !section && !inside_documented_value {
            undocumented.push(format!("line {}: {}", i + 1, trimmed));
        }
        ancestors.push((indent, documented || inside_documented_value));
    }
    assert!(
        undocumented.is_empty(),
        "values without a `# --` comment:\n{}",
        undocumented.join("\n")
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
