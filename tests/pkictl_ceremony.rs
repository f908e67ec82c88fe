//! The whole offline ceremony with the real `pkictl` binary: a root, `aws` from an
//! `openssl req` CSR, `azure` from `new-intermediate`, `cacerts` for both, a revocation and
//! CRLs; every output checked by openssl and rustls-webpki, not only by canopy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use canopy::{
    Certificate, CertificateAuthority, KeyPair, KeyType, LeafProfile, LeafRequest, Passphrase,
};
use canopy_testsupport::{list_files, mode, openssl, openssl_verify, passphrase_file, run, run_ok};
use rustls_pki_types::{CertificateDer, UnixTime};

const ROOT_PASS: &str = "root passphrase that is long";
const AZURE_PASS: &str = "azure key passphrase words";

fn pkictl() -> Command {
    canopy_testsupport::cmd("pkictl")
}

/// Runs pkictl, asserts success, and keeps stdout+stderr to check for leaked secrets.
fn ok(log: &mut Vec<String>, c: &mut Command) -> String {
    let out = run(c);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    log.push(stdout.clone());
    log.push(stderr);
    stdout
}

struct Ceremony {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    pass: PathBuf,
    azure_pass: PathBuf,
    aws_key: PathBuf,
    log: Vec<String>,
}

impl Ceremony {
    fn p(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }
}

/// init-root, aws from an openssl CSR, azure with new-intermediate, cacerts for both.
fn ceremony() -> Ceremony {
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path().to_path_buf();
    let pass = passphrase_file(&work, "root.pass", ROOT_PASS);
    let azure_pass = passphrase_file(&work, "azure.pass", AZURE_PASS);
    let root = work.join("root");
    let mut log = Vec::new();
    ok(
        &mut log,
        pkictl()
            .args([
                "init-root",
                "--cn",
                "Acme Root CA",
                "--org",
                "Acme",
                "--trust-domain",
                "mesh.example",
                "--dir",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass),
    );

    let aws_key = work.join("aws.key");
    let aws_csr = work.join("aws.csr");
    canopy_testsupport::openssl_p256_csr(&aws_key, &aws_csr, "/CN=aws", None);
    ok(
        &mut log,
        pkictl()
            .args(["sign-intermediate", "--name", "aws", "--root"])
            .arg(&root)
            .arg("--csr")
            .arg(&aws_csr)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    ok(
        &mut log,
        pkictl()
            .args(["new-intermediate", "--name", "azure", "--root"])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass)
            .arg("--key-passphrase-file")
            .arg(&azure_pass),
    );

    ok(
        &mut log,
        pkictl()
            .args(["cacerts", "--intermediate", "aws", "--root"])
            .arg(&root)
            .arg("--key")
            .arg(&aws_key)
            .arg("--out")
            .arg(work.join("cacerts-aws"))
            .arg("--secret-yaml")
            .arg(work.join("cacerts-aws.yaml")),
    );
    ok(
        &mut log,
        pkictl()
            .args(["cacerts", "--intermediate", "azure", "--root"])
            .arg(&root)
            .arg("--key-passphrase-file")
            .arg(&azure_pass)
            .arg("--out")
            .arg(work.join("cacerts-azure")),
    );
    Ceremony {
        _tmp: tmp,
        work,
        root,
        pass,
        azure_pass,
        aws_key,
        log,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_openssl_ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: openssl says no\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workload leaf signed under an intermediate with canopy's own CA code.
fn workload_leaf(intermediate: &Path, key: KeyPair, id: &str) -> Certificate {
    let cert = Certificate::from_pem(&read(intermediate)).unwrap();
    let ca = CertificateAuthority::new(cert, vec![], Arc::new(key)).unwrap();
    let req = LeafRequest {
        spiffe_id: Some(id.parse().unwrap()),
        trust_domain: Some("mesh.example".parse().unwrap()),
        ..LeafRequest::new(LeafProfile::Workload)
    };
    let (issued, _leaf_key) = ca
        .issue_with_new_key(&req, KeyType::EcdsaP256, time::OffsetDateTime::now_utc())
        .unwrap();
    issued.certificate
}

fn aws_key(c: &Ceremony) -> KeyPair {
    KeyPair::from_pem(&read(&c.aws_key)).unwrap()
}

fn azure_key(c: &Ceremony) -> KeyPair {
    let pass = Passphrase::new(AZURE_PASS).unwrap();
    KeyPair::from_encrypted_pem(&read(&c.root.join("intermediates/azure/key.pem")), &pass).unwrap()
}

/// rustls-webpki: the leaf verifies for client and server auth against `root_pem`'s roots.
fn webpki_verifies(
    leaf: &Certificate,
    intermediate: &Path,
    root_pem: &Path,
) -> Result<(), webpki::Error> {
    let roots: Vec<Certificate> = Certificate::parse_pem_all(&read(root_pem)).unwrap();
    let root_ders: Vec<CertificateDer<'static>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.der().to_vec()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).unwrap())
        .collect();
    let inter = CertificateDer::from(
        Certificate::from_pem(&read(intermediate))
            .unwrap()
            .der()
            .to_vec(),
    );
    let leaf_der = CertificateDer::from(leaf.der().to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    let now = UnixTime::now();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            std::slice::from_ref(&inter),
            now,
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

#[test]
fn ceremony_outputs_pass_openssl_and_have_the_right_modes() {
    let mut c = ceremony();
    let root = c.root.clone();

    // Chains: each intermediate verifies strictly to the root, in the root dir and in cacerts.
    for name in ["aws", "azure"] {
        let inter = root.join(format!("intermediates/{name}/cert.pem"));
        assert_openssl_ok(
            openssl_verify(&root.join("root-cert.pem"), None, &inter),
            name,
        );
        let cc = c.p(&format!("cacerts-{name}"));
        assert_openssl_ok(
            openssl_verify(
                &cc.join("root-cert.pem"),
                Some(&cc.join("cert-chain.pem")),
                &cc.join("ca-cert.pem"),
            ),
            &format!("cacerts-{name}"),
        );
        // cert-chain.pem: ca-cert.pem first, the root last.
        let chain = Certificate::parse_pem_all(&read(&cc.join("cert-chain.pem"))).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0],
            Certificate::from_pem(&read(&cc.join("ca-cert.pem"))).unwrap()
        );
        assert_eq!(
            chain[1],
            Certificate::from_pem(&read(&root.join("root-cert.pem"))).unwrap()
        );
        // ca-key.pem is unencrypted PKCS#8 and matches ca-cert.pem.
        let key_text = read(&cc.join("ca-key.pem"));
        assert!(
            key_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}: ca-key.pem is not PKCS#8"
        );
        assert!(chain[0].matches_key(&KeyPair::from_pem(&key_text).unwrap()));
        assert_eq!(
            mode(&cc.join("ca-key.pem")),
            0o600,
            "{name} ca-key.pem mode"
        );
        for f in list_files(&cc) {
            assert!(
                read(&cc.join(&f)).ends_with('\n'),
                "{name}/{f} lacks a final newline"
            );
        }
    }
    // The aws cacerts carries the key openssl made.
    assert!(
        aws_key(&c).public_key_spki()
            == KeyPair::from_pem(&read(&c.p("cacerts-aws/ca-key.pem")))
                .unwrap()
                .public_key_spki()
    );

    // Encrypted keys open with openssl and the passphrase, and not without it.
    for (key, pass) in [
        (root.join("root-key.pem"), &c.pass),
        (root.join("intermediates/azure/key.pem"), &c.azure_pass),
    ] {
        assert!(read(&key).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        let mut passin = std::ffi::OsString::from("file:");
        passin.push(pass);
        assert_openssl_ok(
            run(openssl()
                .args(["pkey", "-noout", "-in"])
                .arg(&key)
                .arg("-passin")
                .arg(&passin)),
            "openssl pkey -passin",
        );
        let wrong = passphrase_file(&c.work, "wrong.pass", "not the passphrase at all");
        let mut passin = std::ffi::OsString::from("file:");
        passin.push(&wrong);
        assert!(!run(openssl()
            .args(["pkey", "-noout", "-in"])
            .arg(&key)
            .arg("-passin")
            .arg(&passin))
        .status
        .success());
    }
    assert_eq!(mode(&root), 0o700);

    // The Secret manifest: Opaque `cacerts` in istio-system with the four files, mode 0600.
    let yaml_path = c.p("cacerts-aws.yaml");
    assert_eq!(mode(&yaml_path), 0o600);
    let secret: serde_yaml::Value = serde_yaml::from_str(&read(&yaml_path)).unwrap();
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(secret["type"].as_str(), Some("Opaque"));
    assert_eq!(secret["metadata"]["name"].as_str(), Some("cacerts"));
    assert_eq!(
        secret["metadata"]["namespace"].as_str(),
        Some("istio-system")
    );
    for k in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        assert!(
            secret["data"][k].as_str().is_some_and(|v| !v.is_empty()),
            "Secret lacks {k}"
        );
    }
    for k in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(secret["data"].get(k).is_none());
    }

    // Revoke azure, publish CRLs: openssl verifies them with the root, numbers go up.
    let azure = Certificate::from_pem(&read(&root.join("intermediates/azure/cert.pem"))).unwrap();
    ok(
        &mut c.log,
        pkictl()
            .args(["revoke", "--reason", "superseded", "--root"])
            .arg(&root)
            .arg(azure.serial().to_string()),
    );
    for expect in ["0x01", "0x02"] {
        ok(
            &mut c.log,
            pkictl()
                .args(["crl", "--root"])
                .arg(&root)
                .arg("--passphrase-file")
                .arg(&c.pass),
        );
        let crl = root.join("crl.pem");
        let out = run(openssl()
            .args(["crl", "-noout", "-crlnumber", "-text", "-CAfile"])
            .arg(root.join("root-cert.pem"))
            .arg("-verify")
            .arg("-in")
            .arg(&crl));
        assert_openssl_ok(out.clone(), "openssl crl -verify");
        let text = String::from_utf8_lossy(&out.stdout).to_uppercase()
            + &String::from_utf8_lossy(&out.stderr).to_uppercase();
        assert!(text.contains("VERIFY OK"), "{text}");
        assert!(
            text.contains(&format!("CRLNUMBER={}", expect.to_uppercase())),
            "{text}"
        );
        assert!(
            text.contains(&azure.serial().to_string().to_uppercase()),
            "azure's serial is not in the CRL: {text}"
        );
    }
    // openssl now refuses the revoked intermediate when asked to check CRLs.
    let out = run(openssl()
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(root.join("root-cert.pem"))
        .arg("-CRLfile")
        .arg(root.join("crl.pem"))
        .arg(root.join("intermediates/azure/cert.pem")));
    assert!(
        !out.status.success(),
        "revoked azure still verifies with -crl_check"
    );

    // The ledger accounts for everything, and its JSON lists each kind in order.
    ok(
        &mut c.log,
        pkictl().args(["ledger", "--verify", "--root"]).arg(&root),
    );
    let json: serde_json::Value = serde_json::from_str(&ok(
        &mut c.log,
        pkictl()
            .args(["ledger", "--output", "json", "--root"])
            .arg(&root),
    ))
    .unwrap();
    let kinds: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "root",
            "intermediate",
            "intermediate",
            "revoke",
            "crl",
            "crl"
        ]
    );

    // Every file pkictl wrote ends with a newline.
    for f in list_files(&root) {
        assert!(
            read(&root.join(&f)).ends_with('\n'),
            "{f} lacks a final newline"
        );
    }
    // No passphrase appears in anything pkictl printed.
    for out in &c.log {
        assert!(
            !out.contains(ROOT_PASS) && !out.contains(AZURE_PASS),
            "a passphrase was printed: {out}"
        );
    }
}

#[test]
fn a_leaf_in_one_cloud_verifies_against_the_root_shipped_to_the_other() {
    let c = ceremony();
    let aws_inter = c.root.join("intermediates/aws/cert.pem");
    let azure_inter = c.root.join("intermediates/azure/cert.pem");
    let aws_leaf = workload_leaf(
        &aws_inter,
        aws_key(&c),
        "spiffe://mesh.example/ns/shop/sa/cart",
    );
    let azure_leaf = workload_leaf(
        &azure_inter,
        azure_key(&c),
        "spiffe://mesh.example/ns/pay/sa/api",
    );

    // Each leaf against the *other* cloud's cacerts root-cert.pem and chain.pem's root.
    let azure_root = c.p("cacerts-azure/root-cert.pem");
    let aws_root = c.p("cacerts-aws/root-cert.pem");
    webpki_verifies(&aws_leaf, &aws_inter, &azure_root).expect("aws leaf vs azure's root (webpki)");
    webpki_verifies(&azure_leaf, &azure_inter, &aws_root)
        .expect("azure leaf vs aws's root (webpki)");
    let azure_chain_root = c.p("azure-chain-root.pem");
    let chain =
        Certificate::parse_pem_all(&read(&c.root.join("intermediates/azure/chain.pem"))).unwrap();
    std::fs::write(&azure_chain_root, chain.last().unwrap().to_pem()).unwrap();
    webpki_verifies(&aws_leaf, &aws_inter, &azure_chain_root)
        .expect("aws leaf vs azure chain.pem's root");

    // openssl agrees, in both directions.
    for (leaf, inter, other_root, name) in [
        (&aws_leaf, &aws_inter, &azure_root, "aws"),
        (&azure_leaf, &azure_inter, &aws_root, "azure"),
    ] {
        let leaf_path = c.p(&format!("{name}-leaf.pem"));
        std::fs::write(&leaf_path, leaf.to_pem()).unwrap();
        assert_openssl_ok(
            openssl_verify(other_root, Some(inter), &leaf_path),
            &format!("{name} leaf"),
        );
        // pkictl verify shows the path to the shared root.
        let out = run_ok(
            pkictl()
                .arg("verify")
                .arg("--root")
                .arg(other_root)
                .arg("--chain")
                .arg(inter)
                .arg(&leaf_path),
        );
        assert!(out.contains("OK") && out.contains("Acme Root CA"), "{out}");
    }

    // And it must be able to fail: a leaf from an unrelated root is refused by all three.
    let stranger = c.p("stranger");
    run_ok(
        pkictl()
            .args([
                "init-root",
                "--cn",
                "Stranger Root",
                "--trust-domain",
                "mesh.example",
                "--dir",
            ])
            .arg(&stranger)
            .arg("--passphrase-file")
            .arg(&c.pass),
    );
    run_ok(
        pkictl()
            .args([
                "new-intermediate",
                "--name",
                "x",
                "--unencrypted-key-insecure",
                "--root",
            ])
            .arg(&stranger)
            .arg("--passphrase-file")
            .arg(&c.pass),
    );
    let x_inter = stranger.join("intermediates/x/cert.pem");
    let x_key = KeyPair::from_pem(&read(&stranger.join("intermediates/x/key.pem"))).unwrap();
    let x_leaf = workload_leaf(&x_inter, x_key, "spiffe://mesh.example/ns/evil/sa/x");
    assert!(webpki_verifies(&x_leaf, &x_inter, &aws_root).is_err());
    let x_path = c.p("x-leaf.pem");
    std::fs::write(&x_path, x_leaf.to_pem()).unwrap();
    assert!(!openssl_verify(&aws_root, Some(&x_inter), &x_path)
        .status
        .success());
    let err = canopy_testsupport::run_fails(
        pkictl()
            .arg("verify")
            .arg("--root")
            .arg(&aws_root)
            .arg("--chain")
            .arg(&x_inter)
            .arg(&x_path),
        1,
    );
    assert!(err.contains("verification failed"), "{err}");
}
