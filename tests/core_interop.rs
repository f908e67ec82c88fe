//! The core library against `openssl` as an independent implementation: keys each side
//! writes open on the other, CSRs openssl makes verify here, certificates and CRLs we make
//! verify in openssl with -x509_strict.

use std::sync::Arc;

use canopy::ca::CertificateAuthority;
use canopy::cert::Certificate;
use canopy::crl::{RevocationReason, RevokedEntry};
use canopy::csr::{Csr, CsrError};
use canopy::key::{KeyError, KeyPair, KeyType, Passphrase};
use canopy::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest};
use canopy::spiffe::SpiffeId;
use canopy_testsupport::{openssl, openssl_verify, passphrase_file, run, run_ok, tempdir};
use time::OffsetDateTime;

const PASS: &str = "interop passphrase 123";

fn ca_req(profile: CaProfile, cn: &str) -> CaRequest {
    CaRequest {
        organization: Some("Acme".into()),
        trust_domain: Some("mesh.example".parse().unwrap()),
        ..CaRequest::new(profile, cn)
    }
}

#[test]
fn openssl_opens_our_encrypted_keys_and_we_open_its() {
    let dir = tempdir();
    let pass_file = passphrase_file(dir.path(), "pass", PASS);
    let pass = Passphrase::new(PASS).unwrap();
    for kt in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::RSA2048,
        KeyType::Ed25519,
    ] {
        let key = KeyPair::generate(kt).unwrap();
        let path = dir.path().join(format!("{kt}.pem"));
        std::fs::write(&path, key.to_encrypted_pem(&pass).unwrap().as_bytes()).unwrap();
        let pub_pem = run_ok(
            openssl()
                .args(["pkey", "-pubout", "-in"])
                .arg(&path)
                .arg("-passin")
                .arg(format!("file:{}", pass_file.display())),
        );
        let der = pem::parse(pub_pem).unwrap();
        assert_eq!(der.contents(), key.public_key_spki().as_slice(), "{kt}");
        let wrong = passphrase_file(dir.path(), "wrong", "not the passphrase");
        let out = run(openssl()
            .args(["pkey", "-noout", "-in"])
            .arg(&path)
            .arg("-passin")
            .arg(format!("file:{}", wrong.display())));
        assert!(
            !out.status.success(),
            "openssl must refuse a wrong passphrase"
        );
    }

    // Keys openssl writes: encrypted PKCS#8 (genpkey -aes256), SEC1 EC, PKCS#1 RSA.
    let enc = dir.path().join("openssl-enc.pem");
    run_ok(
        openssl()
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-aes256",
                "-out",
            ])
            .arg(&enc)
            .arg("-pass")
            .arg(format!("file:{}", pass_file.display())),
    );
    let text = std::fs::read_to_string(&enc).unwrap();
    assert!(text.contains("ENCRYPTED PRIVATE KEY"));
    assert_eq!(
        KeyPair::from_encrypted_pem(&text, &pass)
            .unwrap()
            .key_type(),
        KeyType::EcdsaP256
    );
    assert!(matches!(
        KeyPair::from_encrypted_pem(&text, &Passphrase::new("nope nope nope").unwrap()),
        Err(KeyError::WrongPassphrase)
    ));

    let sec1 = run_ok(openssl().args(["ecparam", "-name", "secp384r1", "-genkey"]));
    assert!(sec1.contains("EC PARAMETERS") && sec1.contains("EC PRIVATE KEY"));
    assert_eq!(
        KeyPair::from_pem(&sec1).unwrap().key_type(),
        KeyType::EcdsaP384
    );

    let rsa = dir.path().join("rsa.pem");
    run_ok(
        openssl()
            .args(["genrsa", "-traditional", "-out"])
            .arg(&rsa)
            .arg("2048"),
    );
    let rsa_text = std::fs::read_to_string(&rsa).unwrap();
    assert!(rsa_text.contains("RSA PRIVATE KEY"));
    assert_eq!(
        KeyPair::from_pem(&rsa_text).unwrap().key_type(),
        KeyType::RSA2048
    );

    let legacy = run_ok(
        openssl()
            .args(["genrsa", "-traditional", "-aes256", "-passout"])
            .arg(format!("file:{}", pass_file.display()))
            .arg("2048"),
    );
    assert!(matches!(
        KeyPair::from_pem_with(&legacy, Some(&pass)),
        Err(KeyError::LegacyEncryption)
    ));
}

#[test]
fn csrs_from_openssl_verify_and_tampered_ones_do_not() {
    let dir = tempdir();
    let key = dir.path().join("k.pem");
    let csr_path = dir.path().join("c.csr");
    run_ok(
        openssl()
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=web",
            ])
            .args([
                "-addext",
                "subjectAltName=URI:spiffe://mesh.example/ns/a/sa/web,DNS:web.a.svc",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr_path),
    );
    let text = std::fs::read_to_string(&csr_path).unwrap();
    let csr = Csr::from_pem(&text).unwrap();
    assert_eq!(csr.subject_cn(), Some("web"));
    assert_eq!(csr.uris(), ["spiffe://mesh.example/ns/a/sa/web"]);
    assert_eq!(csr.dns_names(), ["web.a.svc"]);
    assert!(csr.requests_ca());

    // Flip one bit of the signature (the last bytes of the DER).
    let mut der = pem::parse(&text).unwrap().into_contents();
    let n = der.len();
    der[n - 3] ^= 0x01;
    assert_eq!(Csr::from_der(&der).unwrap_err(), CsrError::BadSignature);
    // And one byte of the signed body (the CN).
    let mut der = pem::parse(&text).unwrap().into_contents();
    let pos = der.windows(3).position(|w| w == b"web").unwrap();
    der[pos] = b'x';
    assert_eq!(Csr::from_der(&der).unwrap_err(), CsrError::BadSignature);
    assert_eq!(Csr::from_pem("not a csr").unwrap_err(), CsrError::NotPem);
    assert_eq!(
        Csr::from_pem(&"A".repeat(40_000)).unwrap_err(),
        CsrError::TooLarge
    );
    assert!(matches!(
        Csr::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]),
        Err(CsrError::Malformed(_))
    ));
}

#[test]
fn certificates_and_crls_pass_openssl_strict_checks() {
    let dir = tempdir();
    let now = OffsetDateTime::now_utc();
    let root = CertificateAuthority::new_root(
        Arc::new(KeyPair::generate(KeyType::EcdsaP384).unwrap()),
        &ca_req(CaProfile::Root, "Acme Root CA"),
        now,
    )
    .unwrap();
    let mut leaves = Vec::new();
    for cloud in ["aws", "azure"] {
        let (int, key) = root
            .issue_with_new_key(
                &ca_req(CaProfile::Intermediate, cloud),
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let int = CertificateAuthority::new(int.certificate, vec![], Arc::new(key)).unwrap();
        let leaf_key = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let req = LeafRequest {
            spiffe_id: Some(
                SpiffeId::kubernetes(&"mesh.example".parse().unwrap(), cloud, "web").unwrap(),
            ),
            trust_domain: Some("mesh.example".parse().unwrap()),
            dns_names: vec![format!("web.{cloud}.svc").parse().unwrap()],
            ..LeafRequest::new(LeafProfile::Workload)
        };
        let leaf = int.issue(&req, &leaf_key.public_key_spki(), now).unwrap();
        leaves.push((cloud, leaf, int));
    }
    let root_path = dir.path().join("root.pem");
    std::fs::write(&root_path, root.certificate().to_pem()).unwrap();
    for (cloud, leaf, _) in &leaves {
        let leaf_path = dir.path().join(format!("{cloud}-leaf.pem"));
        let chain_path = dir.path().join(format!("{cloud}-chain.pem"));
        std::fs::write(&leaf_path, leaf.certificate.to_pem()).unwrap();
        std::fs::write(&chain_path, Certificate::pem_of(&leaf.chain[1..])).unwrap();
        let out = openssl_verify(&root_path, Some(&chain_path), &leaf_path);
        assert!(
            out.status.success(),
            "{cloud}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Purpose checks: a workload is both a TLS server and a TLS client.
        for purpose in ["sslserver", "sslclient"] {
            let out = run(openssl()
                .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
                .arg(&root_path)
                .arg("-untrusted")
                .arg(&chain_path)
                .arg(&leaf_path));
            assert!(
                out.status.success(),
                "{cloud} {purpose}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // A leaf under aws does not verify with azure's intermediate as the only path.
    let (_, _, azure_int) = &leaves[1];
    let wrong_chain = dir.path().join("wrong-chain.pem");
    std::fs::write(&wrong_chain, azure_int.certificate().to_pem()).unwrap();
    let leaf_path = dir.path().join("aws-leaf.pem");
    assert!(!openssl_verify(&root_path, Some(&wrong_chain), &leaf_path)
        .status
        .success());

    // A root-signed CRL revoking the aws intermediate.
    let (_, _, aws_int) = &leaves[0];
    let crl = root
        .sign_crl(
            &[RevokedEntry {
                serial: aws_int.certificate().serial().clone(),
                revoked_at: now,
                reason: RevocationReason::KeyCompromise,
            }],
            1,
            now,
            now + time::Duration::days(30),
        )
        .unwrap();
    let crl_path = dir.path().join("root.crl");
    std::fs::write(&crl_path, crl.to_pem()).unwrap();
    let out = run(openssl()
        .args(["crl", "-noout", "-text", "-CAfile"])
        .arg(&root_path)
        .arg("-in")
        .arg(&crl_path)
        .arg("-verify"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("verify OK"), "{text}");
    assert!(
        text.to_uppercase()
            .contains(&aws_int.certificate().serial().to_string().to_uppercase()),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");
}
