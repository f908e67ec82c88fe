//! `pkictl inspect`/`verify` output, and the rotation tools: `cross-sign` both ways and
//! `bundle` (PEM and SPIFFE), checked with openssl and rustls-webpki.

use std::path::{Path, PathBuf};
use std::process::Command;

use canopy::Certificate;
use canopy_testsupport::{openssl, openssl_verify, passphrase_file, run_fails, run_ok};
use rustls_pki_types::{CertificateDer, UnixTime};

const PASS: &str = "root passphrase that is long";

fn pkictl() -> Command {
    canopy_testsupport::cmd("pkictl")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A root's SHA-256 fingerprint as `pkictl inspect` prints it (what its owner reads out).
fn fingerprint(root: &Path) -> String {
    let out = run_ok(
        pkictl()
            .args(["inspect", "--output", "json"])
            .arg(root.join("root-cert.pem")),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fp = v["files"][0]["objects"][0]["sha256_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint in {out}"));
    fp.to_ascii_uppercase()
}

/// A root with an `aws` intermediate (unencrypted key, for the test's convenience).
fn root_with_aws(work: &Path, dir: &str, cn: &str, pass: &Path) -> PathBuf {
    let root = work.join(dir);
    run_ok(
        pkictl()
            .args([
                "init-root",
                "--trust-domain",
                "mesh.example",
                "--cn",
                cn,
                "--dir",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(pass),
    );
    run_ok(
        pkictl()
            .args([
                "new-intermediate",
                "--name",
                "aws",
                "--unencrypted-key-insecure",
                "--root",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(pass),
    );
    root
}

#[test]
fn inspect_json_reports_every_field() {
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let pass = passphrase_file(work, "p", PASS);
    let root = root_with_aws(work, "root", "Acme Root CA", &pass);
    let csr = work.join("x.csr");
    run_ok(
        openssl()
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-nodes",
                "-subj",
                "/CN=x",
                "-addext",
                "subjectAltName=URI:spiffe://mesh.example/ns/a/sa/b",
                "-keyout",
            ])
            .arg(work.join("x.key"))
            .arg("-out")
            .arg(&csr),
    );
    let chain = root.join("intermediates/aws/chain.pem");
    let out = run_ok(
        pkictl()
            .args(["inspect", "--output", "json"])
            .arg(&chain)
            .arg(&csr)
            .arg(work.join("x.key"))
            .arg(root.join("root-key.pem")),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect --output json is JSON");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);

    let inter = &files[0]["objects"][0];
    assert_eq!(inter["kind"], "certificate");
    assert_eq!(inter["subject"], "CN=aws");
    assert_eq!(inter["issuer"], "CN=Acme Root CA");
    assert_eq!(inter["profile"], "intermediate");
    assert_eq!(inter["lint"], serde_json::json!([]));
    assert_eq!(inter["spiffe_id"], "spiffe://mesh.example");
    assert_eq!(
        inter["sans"]["uri"],
        serde_json::json!(["spiffe://mesh.example"])
    );
    assert_eq!(inter["key_type"], "ecdsa-p256");
    assert_eq!(inter["path_len"], 1);
    assert_eq!(inter["expired"], false);
    assert!(inter["seconds_left"].as_i64().unwrap() > 4 * 365 * 86_400);
    for k in [
        "serial",
        "not_before",
        "not_after",
        "time_left",
        "sha256_fingerprint",
    ] {
        assert!(inter[k].as_str().is_some_and(|s| !s.is_empty()), "no {k}");
    }
    // The fingerprint is the one openssl computes.
    let cert_path = root.join("intermediates/aws/cert.pem");
    let fp = run_ok(
        openssl()
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert_path),
    );
    let fp: String = fp
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(inter["sha256_fingerprint"], fp.as_str());
    let serial = run_ok(
        openssl()
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&cert_path),
    );
    assert_eq!(
        inter["serial"],
        serial
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase()
            .as_str()
    );

    assert_eq!(files[0]["objects"][1]["profile"], "root");
    assert_eq!(files[0]["chain_problems"], serde_json::json!([]));
    let csr_obj = &files[1]["objects"][0];
    assert_eq!(csr_obj["kind"], "csr");
    assert_eq!(csr_obj["key_type"], "ecdsa-p384");
    assert_eq!(
        csr_obj["spiffe_ids"],
        serde_json::json!(["spiffe://mesh.example/ns/a/sa/b"])
    );
    assert_eq!(files[2]["objects"][0]["kind"], "private-key");
    assert_eq!(files[2]["objects"][0]["encrypted"], false);
    assert_eq!(files[3]["objects"][0]["encrypted"], true);
    // Key material is never printed, not even the unencrypted key's.
    let key_body: String = read(&work.join("x.key")).lines().nth(1).unwrap().to_owned();
    assert!(!out.contains(&key_body));

    // A chain in the wrong order is reported.
    let reversed = work.join("reversed.pem");
    let certs = Certificate::parse_pem_all(&read(&chain)).unwrap();
    std::fs::write(
        &reversed,
        Certificate::pem_of(&[certs[1].clone(), certs[0].clone()]),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        pkictl()
            .args(["inspect", "--output", "json"])
            .arg(&reversed),
    ))
    .unwrap();
    let problems = v["files"][0]["chain_problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("wrong order")),
        "{problems:?}"
    );
    let text = run_ok(pkictl().arg("inspect").arg(&reversed));
    assert!(text.contains("chain problem"), "{text}");
}

#[test]
fn verify_reports_the_path_and_time() {
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let pass = passphrase_file(work, "p", PASS);
    let root = root_with_aws(work, "root", "Acme Root CA", &pass);
    let root_cert = root.join("root-cert.pem");
    let cert = root.join("intermediates/aws/cert.pem");
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        pkictl()
            .args(["verify", "--output", "json", "--root"])
            .arg(&root_cert)
            .arg(&cert),
    ))
    .unwrap();
    assert_eq!(v["valid"], true);
    let path: Vec<&str> = v["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["CN=aws", "CN=Acme Root CA"]);
    let err = run_fails(
        pkictl()
            .args(["verify", "--at", "2099-01-01T00:00:00Z", "--root"])
            .arg(&root_cert)
            .arg(&cert),
        1,
    );
    assert!(err.contains("expired"), "{err}");
    let err = run_fails(
        pkictl()
            .args(["verify", "--at", "2001-01-01T00:00:00Z", "--root"])
            .arg(&root_cert)
            .arg(&cert),
        1,
    );
    assert!(err.contains("not valid until"), "{err}");
}

fn webpki_ok(cert: &Path, intermediates: &[&Path], roots: &Path) -> bool {
    let der =
        |p: &Path| CertificateDer::from(Certificate::from_pem(&read(p)).unwrap().der().to_vec());
    let root_ders: Vec<_> = Certificate::parse_pem_all(&read(roots))
        .unwrap()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).unwrap())
        .collect();
    let inter: Vec<_> = intermediates.iter().map(|p| der(p)).collect();
    let leaf_der = der(cert);
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

#[test]
fn cross_signing_lets_each_roots_chains_verify_under_the_other() {
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let pass = passphrase_file(work, "p", PASS);
    let a = root_with_aws(work, "root-a", "Root A", &pass);
    let b = root_with_aws(work, "root-b", "Root B", &pass);
    let b_signs_a = work.join("b-signs-a.pem");
    let a_signs_b = work.join("a-signs-b.pem");
    run_ok(
        pkictl()
            .arg("cross-sign")
            .arg("--root")
            .arg(&b)
            .arg("--other-root")
            .arg(a.join("root-cert.pem"))
            .arg("--fingerprint")
            .arg(fingerprint(&a))
            .arg("--out")
            .arg(&b_signs_a)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    run_ok(
        pkictl()
            .arg("cross-sign")
            .arg("--root")
            .arg(&a)
            .arg("--other-root")
            .arg(b.join("root-cert.pem"))
            .arg("--fingerprint")
            .arg(fingerprint(&b))
            .arg("--out")
            .arg(&a_signs_b)
            .arg("--passphrase-file")
            .arg(&pass),
    );

    let cross = Certificate::from_pem(&read(&b_signs_a)).unwrap();
    let root_a = Certificate::from_pem(&read(&a.join("root-cert.pem"))).unwrap();
    assert_eq!(cross.subject_raw(), root_a.subject_raw());
    assert_eq!(cross.public_key_spki(), root_a.public_key_spki());
    assert_eq!(cross.issuer(), "CN=Root B");

    // A leaf under A's aws verifies with only B trusted, through the cross certificate.
    let a_aws = a.join("intermediates/aws/cert.pem");
    let b_aws = b.join("intermediates/aws/cert.pem");
    let leaf = |inter: &Path, key: &Path, name: &str| -> PathBuf {
        let ca = canopy::CertificateAuthority::new(
            Certificate::from_pem(&read(inter)).unwrap(),
            vec![],
            std::sync::Arc::new(canopy::KeyPair::from_pem(&read(key)).unwrap()),
        )
        .unwrap();
        let req = canopy::LeafRequest {
            spiffe_id: Some("spiffe://mesh.example/ns/x/sa/y".parse().unwrap()),
            ..canopy::LeafRequest::new(canopy::LeafProfile::Workload)
        };
        let (issued, _) = ca
            .issue_with_new_key(
                &req,
                canopy::KeyType::EcdsaP256,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let p = work.join(name);
        std::fs::write(&p, issued.certificate.to_pem()).unwrap();
        p
    };
    let a_leaf = leaf(&a_aws, &a.join("intermediates/aws/key.pem"), "a-leaf.pem");
    let b_leaf = leaf(&b_aws, &b.join("intermediates/aws/key.pem"), "b-leaf.pem");
    let untrusted = work.join("a-untrusted.pem");
    std::fs::write(&untrusted, read(&a_aws) + &read(&b_signs_a)).unwrap();
    let out = openssl_verify(&b.join("root-cert.pem"), Some(&untrusted), &a_leaf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(webpki_ok(
        &a_leaf,
        &[&a_aws, &b_signs_a],
        &b.join("root-cert.pem")
    ));
    // ...and not without it.
    assert!(
        !openssl_verify(&b.join("root-cert.pem"), Some(&a_aws), &a_leaf)
            .status
            .success()
    );
    assert!(!webpki_ok(&a_leaf, &[&a_aws], &b.join("root-cert.pem")));
    // The reverse direction.
    let untrusted = work.join("b-untrusted.pem");
    std::fs::write(&untrusted, read(&b_aws) + &read(&a_signs_b)).unwrap();
    assert!(
        openssl_verify(&a.join("root-cert.pem"), Some(&untrusted), &b_leaf)
            .status
            .success()
    );
    assert!(webpki_ok(
        &b_leaf,
        &[&b_aws, &a_signs_b],
        &a.join("root-cert.pem")
    ));

    // The cross certificate is in the signing root's ledger, which still verifies.
    let ledger = read(&b.join("ledger.jsonl"));
    assert!(ledger.contains("\"cross-sign\"") && ledger.contains(cross.fingerprint_sha256()));
    run_ok(pkictl().args(["ledger", "--verify", "--root"]).arg(&b));
    // A root may not cross-sign itself.
    run_fails(
        pkictl()
            .arg("cross-sign")
            .arg("--root")
            .arg(&a)
            .arg("--other-root")
            .arg(a.join("root-cert.pem"))
            .arg("--fingerprint")
            .arg(fingerprint(&a))
            .arg("--out")
            .arg(work.join("self.pem"))
            .arg("--passphrase-file")
            .arg(&pass),
        1,
    );

    // bundle: both roots, once each, as PEM and as a SPIFFE bundle.
    let both = work.join("roots.pem");
    run_ok(
        pkictl()
            .arg("bundle")
            .arg(a.join("root-cert.pem"))
            .arg(b.join("root-cert.pem"))
            .arg(a.join("root-cert.pem"))
            .arg("--out")
            .arg(&both),
    );
    let roots = Certificate::parse_pem_all(&read(&both)).unwrap();
    assert_eq!(roots.len(), 2);
    assert!(read(&both).ends_with('\n'));
    // During the rotation, leaves under either root verify against the bundle.
    assert!(openssl_verify(&both, Some(&a_aws), &a_leaf)
        .status
        .success());
    assert!(openssl_verify(&both, Some(&b_aws), &b_leaf)
        .status
        .success());
    let spiffe = run_ok(
        pkictl()
            .args([
                "bundle",
                "--spiffe",
                "--trust-domain",
                "mesh.example",
                "--sequence",
                "7",
            ])
            .arg(a.join("root-cert.pem"))
            .arg(b.join("root-cert.pem")),
    );
    let v: serde_json::Value = serde_json::from_str(&spiffe).unwrap();
    assert_eq!(v["spiffe_sequence"], 7);
    let back = canopy::bundle::roots_from_spiffe_bundle(&v).unwrap();
    assert_eq!(back, roots);
    // A root of another trust domain does not go into this trust domain's bundle.
    let err = run_fails(
        pkictl()
            .args(["bundle", "--spiffe", "--trust-domain", "other.example"])
            .arg(a.join("root-cert.pem")),
        1,
    );
    assert!(err.contains("trust domain"), "{err}");
    // A leaf is not a root.
    run_fails(pkictl().arg("bundle").arg(&a_leaf), 1);
}
