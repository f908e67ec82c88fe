//! The CRDs shipped in the Helm chart are generated from the Rust types; this
//! fails when they drift apart, and says how to regenerate them.

use std::path::PathBuf;

use canopy_issuer::certmanager::{crd_files, write_crds};

fn chart_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/canopy-issuer/crds")
}

#[test]
fn chart_crds_match_the_rust_types() {
    let dir = chart_crds();
    if std::env::var_os("CANOPY_WRITE_CRDS").is_some() {
        write_crds(&dir).expect("write the CRDs");
    }
    for (name, want) in crd_files() {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with issuer/src/certmanager/crd.rs.\n\
             Regenerate it: CANOPY_WRITE_CRDS=1 cargo test -p canopy-issuer --test issuer certmanager_crds::\n\
             (or: canopy-issuer crds --out charts/canopy-issuer/crds)",
            path.display()
        );
    }
}

#[test]
fn crds_are_valid_kubernetes_objects() {
    for (name, yaml) in crd_files() {
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(crd["kind"], "CustomResourceDefinition", "{name}");
        assert_eq!(crd["spec"]["group"], "pki.canopy.dev");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "{name}: /status"
        );
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len()
                >= 3
        );
        let props = &version["schema"]["openAPIV3Schema"]["properties"];
        for field in [
            "intermediate",
            "profile",
            "maxDuration",
            "allowedSpiffeIds",
            "allowedDnsNames",
        ] {
            assert!(
                props["spec"]["properties"][field].is_object(),
                "{name}: spec.{field}"
            );
        }
        assert!(props["status"]["properties"]["observedGeneration"].is_object());
    }
}
