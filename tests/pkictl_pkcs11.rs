//! The ceremony with the root key on a PKCS#11 token (SoftHSM2, a private SOFTHSM2_CONF per
//! test): the same commands with `--pkcs11`, every output checked by openssl; and every
//! refusal (wrong PIN, missing token, key not found, an extractable key, the token gone
//! mid-ceremony) with its message, exit code 1, and nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;

use canopy_testsupport::softhsm::{SoftHsm, PIN};
use canopy_testsupport::{list_files, openssl, openssl_verify, passphrase_file, run, run_ok};

const KEY_PASS: &str = "intermediate key passphrase";

struct Token {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    hsm: SoftHsm,
}

impl Token {
    fn new() -> Token {
        let tmp = canopy_testsupport::tempdir();
        let work = tmp.path().to_path_buf();
        let hsm = SoftHsm::new(&work);
        hsm.init_token("ceremony");
        Token {
            _tmp: tmp,
            work,
            hsm,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }

    fn pkictl(&self) -> Command {
        let mut c = canopy_testsupport::cmd("pkictl");
        self.hsm.env(&mut c).current_dir(&self.work);
        c
    }

    /// `pkictl init-root --pkcs11 ...` on the "ceremony" token.
    fn init_root(&self, dir: &str, extra: &[&str]) -> Command {
        let mut c = self.pkictl();
        c.args(["init-root", "--dir", dir, "--cn", "Token Root"])
            .args(["--trust-domain", "mesh.example", "--pkcs11"])
            .arg("--pkcs11-module")
            .arg(&self.hsm.module)
            .args(["--pkcs11-token", "ceremony", "--pin-file"])
            .arg(&self.hsm.pin_file)
            .args(extra);
        c
    }
}

fn fails(c: &mut Command) -> String {
    let out = run(c);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{c:?} should fail with exit 1: {stderr}"
    );
    assert!(!stderr.contains(PIN), "the PIN leaked: {stderr}");
    stderr
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_openssl_ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "openssl rejected {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ceremony_on_a_token_root_intermediates_cacerts_crl_pass_openssl() {
    let t = Token::new();
    let key_pass = passphrase_file(&t.work, "key.pass", KEY_PASS);
    let mut log = vec![run_ok(&mut t.init_root("root", &[]))];
    let root = t.p("root");
    assert!(
        !root.join("root-key.pem").exists(),
        "no key file for a token root"
    );
    let reference: serde_json::Value =
        serde_json::from_str(&read(&root.join("root-key.pkcs11.json"))).unwrap();
    assert_eq!(reference["token_label"], "ceremony");
    assert_eq!(reference["key_label"], "canopy-root");
    assert_eq!(reference["allow_extractable"], false);
    // The token made it CKA_EXTRACTABLE false and CKA_SENSITIVE true, as the HSM reports.
    let attrs = t.hsm.testkey(&["attrs", "ceremony", "canopy-root"]);
    assert_eq!(
        attrs.trim(),
        "extractable=false sensitive=true never_extractable=true"
    );
    // The ledger records where the key lives, not the PIN.
    let ledger = read(&root.join("ledger.jsonl"));
    let first: serde_json::Value = serde_json::from_str(ledger.lines().next().unwrap()).unwrap();
    assert_eq!(first["key"]["token_serial"], reference["token_serial"]);
    assert_eq!(first["key"]["key_id"], reference["key_id"]);

    // Both clouds' intermediates, signed by the token; their keys are files istiod can read.
    for name in ["aws", "azure"] {
        log.push(run_ok(
            t.pkictl()
                .args(["new-intermediate", "--root", "root", "--name", name])
                .arg("--pin-file")
                .arg(&t.hsm.pin_file)
                .arg("--key-passphrase-file")
                .arg(&key_pass),
        ));
        let inter = root.join(format!("intermediates/{name}/cert.pem"));
        assert_openssl_ok(
            openssl_verify(&root.join("root-cert.pem"), None, &inter),
            name,
        );
        log.push(run_ok(
            t.pkictl()
                .args(["cacerts", "--root", "root", "--intermediate", name])
                .arg("--key-passphrase-file")
                .arg(&key_pass)
                .args(["--out", &format!("cacerts-{name}")]),
        ));
        let out = t.p(&format!("cacerts-{name}"));
        assert_openssl_ok(
            openssl_verify(
                &out.join("root-cert.pem"),
                Some(&out.join("cert-chain.pem")),
                &out.join("ca-cert.pem"),
            ),
            &format!("cacerts {name}"),
        );
    }

    // Revoke azure, publish a CRL signed on the token, and openssl now refuses azure.
    let azure = read(&root.join("intermediates/azure/cert.pem"));
    let serial = canopy::Certificate::from_pem(&azure)
        .unwrap()
        .serial()
        .to_string();
    run_ok(t.pkictl().args([
        "revoke",
        "--root",
        "root",
        &serial,
        "--reason",
        "superseded",
    ]));
    log.push(run_ok(
        t.pkictl()
            .args(["crl", "--root", "root", "--pin-file"])
            .arg(&t.hsm.pin_file),
    ));
    assert_openssl_ok(
        openssl()
            .args(["crl", "-noout", "-CAfile"])
            .arg(root.join("root-cert.pem"))
            .arg("-in")
            .arg(root.join("crl.pem"))
            .output()
            .unwrap(),
        "the CRL",
    );
    let crl_check = openssl()
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(root.join("root-cert.pem"))
        .arg("-CRLfile")
        .arg(root.join("crl.pem"))
        .arg(root.join("intermediates/azure/cert.pem"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&crl_check.stdout),
        String::from_utf8_lossy(&crl_check.stderr)
    );
    assert!(
        !crl_check.status.success() && said.contains("revoked"),
        "revoked azure still verifies with -crl_check: {said}"
    );

    // An intermediate key meant for an HSM: made on a second token, never a file.
    t.hsm.init_token("issuer-hsm");
    log.push(run_ok(
        t.pkictl()
            .args(["new-intermediate", "--root", "root", "--name", "hsm"])
            .arg("--pin-file")
            .arg(&t.hsm.pin_file)
            .args(["--pkcs11", "--pkcs11-module"])
            .arg(&t.hsm.module)
            .args(["--pkcs11-token", "issuer-hsm", "--key-pin-file"])
            .arg(&t.hsm.pin_file),
    ));
    let hsm_dir = root.join("intermediates/hsm");
    assert!(!hsm_dir.join("key.pem").exists());
    assert!(hsm_dir.join("key.pkcs11.json").exists());
    assert_openssl_ok(
        openssl_verify(&root.join("root-cert.pem"), None, &hsm_dir.join("cert.pem")),
        "hsm",
    );
    assert_eq!(
        t.hsm
            .testkey(&["attrs", "issuer-hsm", "canopy-intermediate-hsm"])
            .trim(),
        "extractable=false sensitive=true never_extractable=true"
    );
    // istiod needs a key file: cacerts says so and writes nothing.
    let err = fails(t.pkictl().args([
        "cacerts",
        "--root",
        "root",
        "--intermediate",
        "hsm",
        "--out",
        "cacerts-hsm",
    ]));
    assert!(err.contains("lives on a PKCS#11 token"), "{err}");
    assert!(!t.p("cacerts-hsm").exists());

    run_ok(t.pkictl().args(["ledger", "--root", "root", "--verify"]));
    let ledger = read(&root.join("ledger.jsonl"));
    assert_eq!(
        ledger.lines().count(),
        6,
        "root, aws, azure, revoke, crl, hsm"
    );
    assert!(ledger.lines().last().unwrap().contains("\"key\""));
    for text in log.iter().chain([&ledger]) {
        assert!(!text.contains(PIN), "the PIN appears in output or ledger");
    }
    for f in list_files(&t.work) {
        if !f.starts_with("softhsm") && f != "token-pin" {
            assert!(!read(&t.work.join(&f)).contains(PIN), "{f} holds the PIN");
        }
    }
}

#[test]
fn p384_and_rsa_roots_on_a_token_sign_what_openssl_accepts() {
    let t = Token::new();
    let key_pass = passphrase_file(&t.work, "key.pass", KEY_PASS);
    for (dir, key_type, label) in [
        ("p384", "ecdsa-p384", "root-p384"),
        ("rsa", "rsa4096", "root-rsa"),
    ] {
        run_ok(&mut t.init_root(dir, &["--key-type", key_type, "--pkcs11-key-label", label]));
        let text = run_ok(
            openssl()
                .args(["x509", "-noout", "-text", "-in"])
                .arg(t.p(dir).join("root-cert.pem")),
        );
        assert!(
            text.contains(if key_type == "rsa4096" {
                "sha256WithRSAEncryption"
            } else {
                "ecdsa-with-SHA384"
            }),
            "{text}"
        );
        run_ok(
            t.pkictl()
                .args(["new-intermediate", "--root", dir, "--name", "aws"])
                .arg("--pin-file")
                .arg(&t.hsm.pin_file)
                .arg("--key-passphrase-file")
                .arg(&key_pass),
        );
        let root = t.p(dir);
        assert_openssl_ok(
            openssl_verify(
                &root.join("root-cert.pem"),
                None,
                &root.join("intermediates/aws/cert.pem"),
            ),
            dir,
        );
    }
}

#[test]
fn refusals_say_why_exit_1_and_write_nothing() {
    let t = Token::new();
    let bad_pin = passphrase_file(&t.work, "bad-pin", "999999");

    // Wrong PIN: no root directory, no key left on the token.
    let c = t.init_root("root", &[]);
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let pin_at = args.iter().position(|a| a == "--pin-file").unwrap() + 1;
    let mut wrong = t.pkictl();
    wrong
        .args(&args[..pin_at])
        .arg(&bad_pin)
        .args(&args[pin_at + 1..]);
    let err = fails(&mut wrong);
    assert!(err.contains("wrong PIN for token \"ceremony\""), "{err}");
    assert!(!t.p("root").exists());
    assert_eq!(
        t.hsm.testkey(&["attrs", "ceremony", "canopy-root"]).trim(),
        ""
    );

    // No PIN and no terminal: told how to give one.
    let mut no_pin = t.pkictl();
    no_pin.args(&args[..pin_at - 1]).args(&args[pin_at + 1..]);
    let err = fails(&mut no_pin);
    assert!(err.contains("pass its PIN with --pin-file FILE"), "{err}");

    // Missing token.
    let err = fails(
        t.pkictl()
            .args(["init-root", "--dir", "root", "--cn", "R", "--pkcs11"])
            .arg("--pkcs11-module")
            .arg(&t.hsm.module)
            .args(["--pkcs11-token", "not-there", "--pin-file"])
            .arg(&t.hsm.pin_file),
    );
    assert!(err.contains("no token labelled \"not-there\""), "{err}");
    assert!(
        err.contains("\"ceremony\""),
        "lists the tokens present: {err}"
    );
    assert!(!t.p("root").exists());

    // A module that is not there.
    let err = fails(
        t.pkictl()
            .args(["init-root", "--dir", "root", "--cn", "R", "--pkcs11"])
            .args(["--pkcs11-module", "/nonexistent/libpkcs11.so"])
            .args(["--pkcs11-token", "ceremony", "--pin-file"])
            .arg(&t.hsm.pin_file),
    );
    assert!(err.contains("cannot load the PKCS#11 module"), "{err}");

    // Key not found.
    let err = fails(&mut t.init_root(
        "root",
        &["--pkcs11-existing-key", "--pkcs11-key-label", "nope"],
    ));
    assert!(err.contains("no private key labelled \"nope\""), "{err}");
    assert!(!t.p("root").exists());

    // A key the token lets out: refused for a root, unless the flag says so.
    t.hsm.testkey(&["make-extractable", "ceremony", "leaky"]);
    let existing = ["--pkcs11-existing-key", "--pkcs11-key-label", "leaky"];
    let err = fails(&mut t.init_root("root", &existing));
    assert!(err.contains("CKA_EXTRACTABLE is true"), "{err}");
    assert!(err.contains("--allow-extractable-key"), "{err}");
    assert!(!t.p("root").exists());
    let mut allowed = t.init_root("root", &existing);
    allowed.arg("--allow-extractable-key");
    let out = run(&mut allowed);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the root key can leave"));
    let reference = read(&t.p("root/root-key.pkcs11.json"));
    assert!(
        reference.contains("\"allow_extractable\": true"),
        "{reference}"
    );

    // A second root under the label already used: refused, nothing written.
    let err = fails(&mut t.init_root("root2", &["--pkcs11-key-label", "leaky"]));
    assert!(err.contains("already exists on token"), "{err}");
    assert!(!t.p("root2").exists());

    // Against an existing root: wrong PIN, then the token gone; the ledger stays as it was.
    let root = t.p("root");
    let before = list_files(&root);
    let ledger = read(&root.join("ledger.jsonl"));
    let err = fails(
        t.pkictl()
            .args(["crl", "--root", "root", "--pin-file"])
            .arg(&bad_pin),
    );
    assert!(err.contains("wrong PIN"), "{err}");
    t.hsm.unplug();
    let err = fails(
        t.pkictl()
            .args(["new-intermediate", "--root", "root", "--name", "aws"])
            .arg("--pin-file")
            .arg(&t.hsm.pin_file)
            .arg("--unencrypted-key-insecure"),
    );
    assert!(err.contains("token"), "{err}");
    t.hsm.plug_in();
    assert_eq!(list_files(&root), before);
    assert_eq!(read(&root.join("ledger.jsonl")), ledger);

    // A reference edited to name another key than the ledger recorded is refused.
    let edited =
        read(&root.join("root-key.pkcs11.json")).replace("\"key_id\": \"", "\"key_id\": \"00");
    std::fs::write(root.join("root-key.pkcs11.json"), edited).unwrap();
    let err = fails(
        t.pkictl()
            .args(["crl", "--root", "root", "--pin-file"])
            .arg(&t.hsm.pin_file),
    );
    assert!(err.contains("not the key the ledger recorded"), "{err}");
    assert_eq!(read(&root.join("ledger.jsonl")), ledger);
}
