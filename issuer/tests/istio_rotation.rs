//! A full A → B root rotation across two clusters with a controlled clock: at every pass, a
//! leaf from each cluster (and every earlier leaf still alive) verifies against the other
//! cluster's root-cert.pem, checked with openssl.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::istio_common::*;
use canopy::cert::Certificate;
use canopy::key::KeyType;
use canopy_issuer::istio::{self, IstioClusterConfig, IstioConfig, Outcome, RotationConfig};
use time::{Duration, OffsetDateTime};

fn openssl_style(fp: &str) -> String {
    fp.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn roots_in(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    Certificate::parse_pem_all(&text(files, "root-cert.pem"))
        .unwrap()
        .iter()
        .map(|c| c.subject_cn().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_root_rotation_keeps_every_leaf_trusted_in_both_clusters() {
    let mut mesh = Mesh::start().await;
    let t0 = mesh.t0;
    // Before: one root, both clusters under it.
    let r = istio::sync_once(mesh.setup(), mesh.store.clone(), t0).await;
    assert!(r.all_ok(), "{r}");

    // Root B and one intermediate per cloud under it; both roots configured, rotation on.
    let root_b = new_root(mesh.path(), "b", t0);
    for name in ["aws-b", "azure-b"] {
        new_intermediate(mesh.path(), &root_b, name, KeyType::EcdsaP256, None, t0);
    }
    mesh.roots.push("root-b.pem".into());
    mesh.intermediates
        .extend(["aws-b".to_string(), "azure-b".to_string()]);
    let istio_config = IstioConfig {
        rotation: Some(RotationConfig {
            old_root: openssl_style(mesh.root_a.certificate().fingerprint_sha256()),
            new_root: root_b.certificate().fingerprint_sha256().to_string(),
            intermediates: BTreeMap::from([
                ("aws".to_string(), "aws-b".to_string()),
                ("azure".to_string(), "azure-b".to_string()),
            ]),
        }),
        ..fast()
    };
    let setup = mesh.setup_with(&istio_config, |_| IstioClusterConfig::default());

    let mut leaves: Vec<(String, PathBuf, OffsetDateTime)> = Vec::new();
    let mut phases = Vec::new();
    let mut trust = Vec::new();
    let mut both_roots_bytes: Option<Vec<u8>> = None;
    let schedule = [1i64, 2, 3, 20, 28, 29];
    for (step, hours) in schedule.into_iter().enumerate() {
        let now = t0 + Duration::hours(hours);
        let r = istio::sync_once(setup.clone(), mesh.store.clone(), now).await;
        assert!(r.all_ok(), "step {step}: {r}");
        phases.push(
            r.to_json()["rotation"]["phase"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let files: BTreeMap<&str, _> = ["aws", "azure"].map(|c| (c, mesh.files(c))).into();
        trust.push((roots_in(&files["aws"]), roots_in(&files["azure"])));
        if roots_in(&files["aws"]).len() == 2 {
            match &both_roots_bytes {
                None => both_roots_bytes = Some(files["aws"]["root-cert.pem"].clone()),
                Some(b) => assert_eq!(
                    b, &files["aws"]["root-cert.pem"],
                    "root-cert.pem must stay byte-stable"
                ),
            }
        }
        for c in ["aws", "azure"] {
            openssl_check_secret(&mesh.path().join(format!("s{step}-{c}")), &files[c], now);
            let leaf = leaf_from(&mesh.path().join(format!("l{step}-{c}")), &files[c], now);
            leaves.push((c.to_string(), leaf, now));
        }
        // Every leaf still alive (24h workload TTL), from either cluster, verifies against
        // every cluster's root-cert.pem.
        for (from, leaf, issued) in &leaves {
            if *issued + Duration::hours(24) <= now {
                continue;
            }
            for c in ["aws", "azure"] {
                leaf_verifies(leaf, &files[c]["root-cert.pem"], &mesh.path().join("scratch"), now).unwrap_or_else(|e| {
                    panic!("step {step}: a leaf from {from} issued at {issued} is not trusted in {c}: {e}\n{r}")
                });
            }
        }
        // Status agrees with what was written.
        if step == 1 {
            let s = istio::status(setup.clone(), now).await;
            let j = s.to_json();
            assert_eq!(j["rotation"]["phase"], "moving", "{j}");
            assert_eq!(j["clusters"][0]["rotation"], "moved", "{j}");
            assert_eq!(j["clusters"][1]["rotation"], "trusts-both", "{j}");
            assert_eq!(j["clusters"][0]["roots"].as_array().unwrap().len(), 2);
            assert!(
                s.to_string()
                    .contains("2/3 moving mesh CAs to the new root (1/2 moved)"),
                "{s}"
            );
            let chain = Certificate::parse_pem_all(&text(&files["aws"], "cert-chain.pem")).unwrap();
            assert_eq!(chain[1].subject_cn(), Some("aws-b"));
        }
        if step == 3 {
            for c in ["aws", "azure"] {
                assert_eq!(
                    r.cluster(c).unwrap().outcome,
                    Outcome::Unchanged,
                    "draining writes nothing: {r}"
                );
            }
        }
    }
    let ab = (
        vec!["Root a".to_string(), "Root b".to_string()],
        vec!["Root a".to_string(), "Root b".to_string()],
    );
    let b = (vec!["Root b".to_string()], vec!["Root b".to_string()]);
    assert_eq!(
        trust,
        vec![ab.clone(), ab.clone(), ab.clone(), ab, b.clone(), b]
    );
    assert_eq!(
        phases,
        ["moving", "moving", "draining", "draining", "complete", "complete"]
    );
    // Each cluster got exactly one mesh CA under B.
    for c in ["aws", "azure"] {
        assert_eq!(mesh.recorded_mesh_cas(c).await.len(), 2, "{c}");
    }
}
