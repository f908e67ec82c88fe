//! The attack: istiod's mesh CA key (`cacerts/ca-key.pem`) is unencrypted by necessity.
//! Whoever steals it signs, with plain `openssl x509 -req`, a serverAuth certificate for
//! the issuer's own name, or a SPIFFE ID of another trust domain, and every client that
//! trusts the root accepts it. A mesh CA that carries name constraints (URIs in the
//! trust domain, DNS names under istiod's service names) makes those certificates fail
//! in all three verifiers a mesh meets: Go's crypto/x509 (istiod, cert-manager), OpenSSL
//! and webpki (rustls). The same leaves under an unconstrained CA, the shape canopy made
//! before, verify everywhere: that is the attack succeeding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use canopy::constraints::NameConstraints;
use canopy::{
    CaProfile, CaRequest, Certificate, CertificateAuthority, KeyPair, KeyType, LeafProfile,
    LeafRequest,
};
use canopy_testsupport::{openssl, openssl_verify, run, x509check};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

const ISSUER_NAME: &str = "canopy-issuer.canopy.svc";

fn req(profile: CaProfile, cn: &str) -> CaRequest {
    CaRequest {
        trust_domain: Some("mesh.example".parse().unwrap()),
        ..CaRequest::new(profile, cn)
    }
}

struct Pki {
    dir: PathBuf,
    root: PathBuf,
    /// The intermediate, untrusted, for chain building.
    intermediate: PathBuf,
}

/// A sub-CA under the intermediate, written as `NAME.pem` and `NAME-key.pem` (as it
/// would sit in `cacerts`).
fn sub_ca(pki: &Pki, int: &CertificateAuthority, name: &str, r: &CaRequest) -> PathBuf {
    let (issued, key) = int
        .issue_with_new_key(r, KeyType::EcdsaP256, OffsetDateTime::now_utc())
        .unwrap();
    let cert = pki.dir.join(format!("{name}.pem"));
    std::fs::write(&cert, issued.certificate.to_pem()).unwrap();
    std::fs::write(
        pki.dir.join(format!("{name}-key.pem")),
        key.to_unencrypted_pem().as_bytes(),
    )
    .unwrap();
    cert
}

/// What the thief does with the stolen key: a leaf with `san` (openssl extension
/// syntax), signed by `ca` with openssl.
fn stolen_key_leaf(pki: &Pki, ca: &Path, name: &str, san: &str) -> PathBuf {
    let d = &pki.dir;
    let key = d.join(format!("{name}.key"));
    let csr = d.join(format!("{name}.csr"));
    canopy_testsupport::openssl_p256_csr(&key, &csr, "/CN=x", None);
    let ext = d.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,{san}\n"),
    )
    .unwrap();
    let ca_key = ca.with_file_name(format!(
        "{}-key.pem",
        ca.file_stem().unwrap().to_str().unwrap()
    ));
    let leaf = d.join(format!("{name}.pem"));
    let out = run(openssl()
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-set_serial")
        .arg("0x4242")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&leaf));
    assert!(out.status.success(), "openssl x509 -req: {out:?}");
    leaf
}

fn setup() -> (tempfile::TempDir, Pki, CertificateAuthority) {
    let tmp = canopy_testsupport::tempdir();
    let dir = tmp.path().to_path_buf();
    let now = OffsetDateTime::now_utc();
    let root = CertificateAuthority::new_root(
        Arc::new(KeyPair::generate(KeyType::EcdsaP256).unwrap()),
        &req(CaProfile::Root, "Root"),
        now,
    )
    .unwrap();
    let (int, int_key) = root
        .issue_with_new_key(
            &req(CaProfile::Intermediate, "aws"),
            KeyType::EcdsaP256,
            now,
        )
        .unwrap();
    let int_ca = CertificateAuthority::new(
        int.certificate.clone(),
        vec![root.certificate().clone()],
        Arc::new(int_key),
    )
    .unwrap();
    let pki = Pki {
        root: dir.join("root.pem"),
        intermediate: dir.join("aws.pem"),
        dir,
    };
    std::fs::write(&pki.root, root.certificate().to_pem()).unwrap();
    std::fs::write(&pki.intermediate, int.certificate.to_pem()).unwrap();
    (tmp, pki, int_ca)
}

/// The verdicts of Go, OpenSSL and webpki on `leaf` under `ca`: true = accepted.
#[derive(Debug, PartialEq, Eq)]
struct Verdicts {
    go: bool,
    openssl: bool,
    webpki: bool,
}

fn verdicts(pki: &Pki, ca: &Path, leaf: &Path) -> Verdicts {
    let untrusted = pki.dir.join("untrusted.pem");
    std::fs::write(
        &untrusted,
        std::fs::read_to_string(ca).unwrap() + &std::fs::read_to_string(&pki.intermediate).unwrap(),
    )
    .unwrap();
    Verdicts {
        go: x509check::verify(&pki.root, &[ca, &pki.intermediate], leaf).is_ok(),
        openssl: openssl_verify(&pki.root, Some(&untrusted), leaf)
            .status
            .success(),
        webpki: webpki_ok(pki, ca, leaf),
    }
}

fn webpki_ok(pki: &Pki, ca: &Path, leaf: &Path) -> bool {
    let der = |p: &Path| {
        CertificateDer::from(
            Certificate::from_pem(&std::fs::read_to_string(p).unwrap())
                .unwrap()
                .der()
                .to_vec(),
        )
    };
    let root = der(&pki.root);
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let inter = [der(ca), der(&pki.intermediate)];
    let leaf = der(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .is_ok()
}

const ALL: Verdicts = Verdicts {
    go: true,
    openssl: true,
    webpki: true,
};
const NONE: Verdicts = Verdicts {
    go: false,
    openssl: false,
    webpki: false,
};

#[test]
fn stolen_mesh_ca_key_mints_the_issuers_name_and_foreign_identities() {
    let (_tmp, pki, int) = setup();
    // The shape canopy minted before: a pathlen-0 CA with no name constraints.
    let mut old = req(CaProfile::Intermediate, "aws mesh CA (unconstrained)");
    old.path_len = Some(0);
    let unconstrained = sub_ca(&pki, &int, "old-mesh", &old);
    // Today's mesh CA: the profile's default constraints.
    let mesh = sub_ca(&pki, &int, "mesh", &req(CaProfile::MeshCa, "aws mesh CA"));
    let mesh_cert = Certificate::from_pem(&std::fs::read_to_string(&mesh).unwrap()).unwrap();
    assert!(mesh_cert.has_name_constraints());
    let text = run(openssl()
        .args(["x509", "-noout", "-ext", "nameConstraints", "-in"])
        .arg(&mesh));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("critical")
            && text.contains("URI:mesh.example")
            && text.contains("DNS:.istio-system.svc"),
        "{text}"
    );

    let attacks = [
        ("issuer-name", format!("DNS:{ISSUER_NAME}")),
        (
            "foreign-spiffe",
            "URI:spiffe://other.example/ns/payments/sa/api".to_string(),
        ),
        ("public-name", "DNS:login.bank.example".to_string()),
    ];
    for (name, san) in &attacks {
        let before = stolen_key_leaf(&pki, &unconstrained, &format!("old-{name}"), san);
        assert_eq!(
            verdicts(&pki, &unconstrained, &before),
            ALL,
            "{name}: the attack on the old shape"
        );
        let now = stolen_key_leaf(&pki, &mesh, name, san);
        assert_eq!(
            verdicts(&pki, &mesh, &now),
            NONE,
            "{name} under the constrained mesh CA"
        );
    }

    // What istiod legitimately signs still verifies: its own serving name everywhere,
    // workload SPIFFE IDs in Go and OpenSSL (istiod, Envoy). webpki fails closed on every
    // URI constraint (rustls-webpki >= 0.103.12, rustls/webpki#514), hence
    // `mesh_ca_uri_constraint: false` for meshes whose peers verify with rustls.
    let istiod = stolen_key_leaf(&pki, &mesh, "istiod", "DNS:istiod.istio-system.svc");
    assert_eq!(verdicts(&pki, &mesh, &istiod), ALL, "istiod's serving name");
    let workload = stolen_key_leaf(
        &pki,
        &mesh,
        "workload",
        "URI:spiffe://mesh.example/ns/shop/sa/web",
    );
    assert_eq!(
        verdicts(&pki, &mesh, &workload),
        Verdicts {
            go: true,
            openssl: true,
            webpki: false
        },
        "a workload SPIFFE ID"
    );
}

#[test]
fn dns_only_constraints_keep_the_issuers_name_out_and_let_rustls_peers_verify_workloads() {
    let (_tmp, pki, int) = setup();
    let mut r = req(CaProfile::MeshCa, "aws mesh CA (DNS constraints only)");
    r.name_constraints = Some(NameConstraints {
        permitted_uri_hosts: vec![],
        permitted_dns: NameConstraints::istiod_dns("istio-system"),
    });
    let mesh = sub_ca(&pki, &int, "mesh-dns", &r);
    let issuer = stolen_key_leaf(&pki, &mesh, "issuer-name", &format!("DNS:{ISSUER_NAME}"));
    assert_eq!(verdicts(&pki, &mesh, &issuer), NONE);
    let workload = stolen_key_leaf(
        &pki,
        &mesh,
        "workload",
        "URI:spiffe://mesh.example/ns/shop/sa/web",
    );
    assert_eq!(verdicts(&pki, &mesh, &workload), ALL);
}

/// A `LeafRequest` has no name-constraints field: the type keeps them off leaves.
#[test]
fn leaves_carry_no_name_constraints() {
    let (_tmp, _pki, int) = setup();
    let r = LeafRequest {
        spiffe_id: Some("spiffe://mesh.example/ns/a/sa/b".parse().unwrap()),
        ..LeafRequest::new(LeafProfile::Workload)
    };
    let (issued, _) = int
        .issue_with_new_key(&r, KeyType::EcdsaP256, OffsetDateTime::now_utc())
        .unwrap();
    assert!(!issued.certificate.has_name_constraints());
}
