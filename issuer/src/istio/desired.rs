//! The reconcile's pure half: read what a cluster's `cacerts` holds (`current`), decide
//! what it should hold (`assess`), and build that Secret from inputs alone (`build`).
//! The only impure step, minting a mesh CA (a fresh key), happens between [`assess()`] and
//! [`build()`], in the sync.

pub mod assess;
pub mod build;
pub mod current;

pub use assess::{
    assess, check_signing, jitter, key_refused, renewal_time, Assessment, Blocked, CaPlan, Target,
};
pub use build::{build, BuildError, Desired, Material};
pub use current::{
    data_hash, Current, Ownership, SecretData, CANOPY, CLUSTER_LABEL, DATA_ANNOTATION, MANAGED_BY,
    MODE_ANNOTATION, SECRET_NAME, SERIAL_ANNOTATION, SINCE_ANNOTATION,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::config::{IstioClusterConfig, RepairPolicy};
    use crate::istio::setup::Signing;
    use canopy::ca::CertificateAuthority;
    use canopy::key::KeyPair;
    use canopy::key::KeyType;
    use canopy::profile::{CaProfile, CaRequest};
    use canopy::spiffe::TrustDomain;
    use std::sync::Arc;
    use time::Duration;

    fn req(profile: CaProfile, cn: &str) -> CaRequest {
        CaRequest {
            trust_domain: Some("mesh.example".parse().unwrap()),
            ..CaRequest::new(profile, cn)
        }
    }

    fn current_of(d: &Desired) -> Current {
        Current {
            resource_version: Some("1".into()),
            type_: Some("Opaque".into()),
            labels: d.labels.clone(),
            annotations: d.annotations.clone(),
            data: d.data.clone(),
        }
    }

    #[test]
    fn decide_build_keep_renew_and_detect_hand_edits() {
        let now = time::macros::datetime!(2026-01-01 0:00 UTC);
        let key = Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap());
        let root = CertificateAuthority::new_root(key, &req(CaProfile::Root, "Root"), now).unwrap();
        let (int, int_key) = root
            .issue_with_new_key(
                &req(CaProfile::Intermediate, "aws"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let signing = Signing::new("aws", vec![int.certificate.clone()], int_key).unwrap();
        let settings = IstioClusterConfig::default();
        let td: TrustDomain = "mesh.example".parse().unwrap();
        let t = Target {
            cluster: "aws",
            settings: &settings,
            signing: &signing,
            sign_root: root.certificate(),
            trust: vec![root.certificate().clone()],
            trust_domain: &td,
        };
        // Nothing there: mint.
        assert!(matches!(assess(&t, None, now).plan, Ok(CaPlan::Mint(_))));
        let (mesh, mesh_key) = signing
            .ca
            .issue_with_new_key(
                &req(CaProfile::MeshCa, "aws mesh CA"),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let d = build(&t, Material::Minted(&mesh, &mesh_key), None, now).unwrap();
        let cur = current_of(&d);
        assert_eq!(cur.ownership(), Ownership::Canopy);
        // Written and unchanged: keep, and the rebuilt Secret is identical (no write).
        let later = now + Duration::days(30);
        assert_eq!(assess(&t, Some(&cur), later).plan, Ok(CaPlan::Keep));
        assert!(build(&t, Material::Keep(&cur), Some(&cur), later)
            .unwrap()
            .matches(&cur));
        // At 2/3 of its life: renew.
        let due = now + Duration::days(61);
        assert!(
            matches!(assess(&t, Some(&cur), due).plan, Ok(CaPlan::Mint(why)) if why.starts_with("renewal due"))
        );
        // A hand edit is detected and, under `report`, left alone.
        let mut edited = cur.clone();
        edited
            .data
            .insert("cert-chain.pem".into(), d.data["ca-cert.pem"].clone());
        assert_eq!(edited.ownership(), Ownership::EditedByHand);
        let report = IstioClusterConfig {
            repair: RepairPolicy::Report,
            ..Default::default()
        };
        let t2 = Target {
            settings: &report,
            trust: t.trust.clone(),
            ..t
        };
        let a = assess(&t2, Some(&edited), later);
        assert!(matches!(a.plan, Err(Blocked::Reported(_))));
        assert!(a.problems.iter().any(|p| p.code == "chain-incomplete"));
    }
}
