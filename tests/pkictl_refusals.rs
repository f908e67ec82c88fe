//! Every refusal of `pkictl`: the clear one-line error, exit code 1, and nothing written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use canopy_testsupport::{openssl, passphrase_file, run, run_fails, run_ok};

const PASS: &str = "root passphrase that is long";

fn pkictl() -> Command {
    canopy_testsupport::cmd("pkictl")
}

/// Every file under `dir` with its bytes: equal snapshots mean nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    canopy_testsupport::list_files(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

struct Setup {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    pass: PathBuf,
    csr: PathBuf,
}

fn setup() -> Setup {
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path().to_path_buf();
    let pass = passphrase_file(&work, "root.pass", PASS);
    let root = work.join("root");
    run_ok(
        pkictl()
            .args([
                "init-root",
                "--cn",
                "Acme Root CA",
                "--trust-domain",
                "mesh.example",
                "--dir",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    let csr = work.join("aws.csr");
    canopy_testsupport::openssl_p256_csr(&work.join("aws.key"), &csr, "/CN=aws", None);
    Setup {
        _tmp: tmp,
        work,
        root,
        pass,
        csr,
    }
}

fn sign(s: &Setup, csr: &Path, pass: &Path) -> Command {
    let mut c = pkictl();
    c.args(["sign-intermediate", "--name", "aws", "--root"])
        .arg(&s.root)
        .arg("--csr")
        .arg(csr)
        .arg("--passphrase-file")
        .arg(pass);
    c
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    lines[0]
}

#[test]
fn wrong_passphrase_is_refused_and_nothing_is_written() {
    let s = setup();
    let wrong = passphrase_file(&s.work, "wrong.pass", "this is not the passphrase");
    let before = snapshot(&s.work);
    let err = run_fails(&mut sign(&s, &s.csr, &wrong), 1);
    let line = one_line(&err);
    assert!(line.contains("wrong passphrase for the root key"), "{line}");
    assert!(!err.contains("this is not the passphrase") && !err.contains(PASS));
    assert_eq!(snapshot(&s.work), before);
    // The right one works, so the refusal was about the passphrase.
    run_ok(&mut sign(&s, &s.csr, &s.pass));
}

#[test]
fn no_passphrase_source_off_a_terminal_is_refused() {
    let s = setup();
    let before = snapshot(&s.work);
    // stdin is not a terminal (canopy_testsupport::cmd gives /dev/null) and no file is given.
    let err = run_fails(
        pkictl()
            .args(["sign-intermediate", "--name", "aws", "--root"])
            .arg(&s.root)
            .arg("--csr")
            .arg(&s.csr),
        1,
    );
    assert!(
        one_line(&err).contains("pass --passphrase-file FILE or run in a terminal"),
        "{err}"
    );
    let err = run_fails(
        pkictl()
            .args(["init-root", "--cn", "New Root", "--dir"])
            .arg(s.work.join("new-root")),
        1,
    );
    assert!(
        one_line(&err).contains("--passphrase-file FILE or run in a terminal"),
        "{err}"
    );
    // An environment variable is not a passphrase source.
    let err = run_fails(
        pkictl()
            .env("CANOPY_PASSPHRASE", PASS)
            .env("PKICTL_PASSPHRASE", PASS)
            .args(["crl", "--root"])
            .arg(&s.root),
        1,
    );
    assert!(err.contains("run in a terminal"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn weak_new_passphrase_is_refused() {
    let s = setup();
    let weak = passphrase_file(&s.work, "weak.pass", "short");
    let err = run_fails(
        pkictl()
            .args(["init-root", "--cn", "R", "--dir"])
            .arg(s.work.join("r2"))
            .arg("--passphrase-file")
            .arg(&weak),
        1,
    );
    assert!(one_line(&err).contains("too short"), "{err}");
    assert!(!s.work.join("r2").exists());
}

#[test]
fn init_root_never_overwrites_a_root() {
    let s = setup();
    let before = snapshot(&s.work);
    let err = run_fails(
        pkictl()
            .args(["init-root", "--cn", "Evil Root", "--dir"])
            .arg(&s.root)
            .arg("--passphrase-file")
            .arg(&s.pass),
        1,
    );
    assert!(one_line(&err).contains("refusing to overwrite"), "{err}");
    assert_eq!(snapshot(&s.work), before);
    // A non-empty directory that is not a root is refused too; no staging folder is left.
    std::fs::create_dir(s.work.join("busy")).unwrap();
    std::fs::write(s.work.join("busy/notes.txt"), "hello\n").unwrap();
    run_fails(
        pkictl()
            .args(["init-root", "--cn", "R", "--dir"])
            .arg(s.work.join("busy"))
            .arg("--passphrase-file")
            .arg(&s.pass),
        1,
    );
    let names: Vec<String> = std::fs::read_dir(&s.work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp")),
        "staging left behind: {names:?}"
    );
}

#[test]
fn tampered_ledger_is_found_and_blocks_signing() {
    let s = setup();
    run_ok(&mut sign(&s, &s.csr, &s.pass));
    let ledger = s.root.join("ledger.jsonl");
    run_ok(pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root));
    // Edit one field of line 2 (the aws intermediate).
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[1].contains("\"CN=aws\""));
    lines[1] = lines[1].replace("\"CN=aws\"", "\"CN=evil\"");
    std::fs::write(&ledger, lines.join("\n") + "\n").unwrap();

    let err = run_fails(
        pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root),
        1,
    );
    assert!(one_line(&err).contains("line 2"), "{err}");
    // Signing refuses while the ledger is damaged, and writes nothing.
    let csr2 = s.work.join("gcp.csr");
    canopy_testsupport::openssl_p256_csr(&s.work.join("gcp.key"), &csr2, "/CN=gcp", None);
    let before = snapshot(&s.work);
    let err = run_fails(
        pkictl()
            .args(["sign-intermediate", "--name", "gcp", "--root"])
            .arg(&s.root)
            .arg("--csr")
            .arg(&csr2)
            .arg("--passphrase-file")
            .arg(&s.pass),
        1,
    );
    assert!(one_line(&err).contains("ledger line 2"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn entries_cut_off_the_end_of_the_ledger_fail_against_the_written_down_head() {
    let s = setup();
    run_ok(&mut sign(&s, &s.csr, &s.pass));
    let serial = serde_json::from_str::<serde_json::Value>(&run_ok(
        pkictl()
            .args(["inspect", "--output", "json"])
            .arg(s.root.join("intermediates/aws/cert.pem")),
    ))
    .unwrap()["files"][0]["objects"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    run_ok(
        pkictl()
            .args(["revoke", "--reason", "superseded", "--root"])
            .arg(&s.root)
            .arg(&serial),
    );
    let out = run_ok(pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root));
    let head = out
        .lines()
        .find_map(|l| l.strip_prefix("head: entry 3 hash "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no head line in:\n{out}"))
        .to_owned();
    run_ok(
        pkictl()
            .args(["ledger", "--verify", "--expect-head", &head[..16], "--root"])
            .arg(&s.root),
    );

    // Cut the revocation off the end: the chain is still intact and no file is
    // unaccounted for, so only the written-down head shows it.
    let ledger = s.root.join("ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&ledger, kept.join("\n") + "\n").unwrap();
    run_ok(pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root));
    let err = run_fails(
        pkictl()
            .args(["ledger", "--verify", "--expect-head", &head, "--root"])
            .arg(&s.root),
        1,
    );
    assert!(
        one_line(&err).contains("entries were removed from its end"),
        "{err}"
    );
    let err = run_fails(
        pkictl()
            .args(["ledger", "--verify", "--expect-head", "xyz", "--root"])
            .arg(&s.root),
        1,
    );
    assert!(err.contains("12 or more digits"), "{err}");
}

#[test]
fn a_certificate_file_missing_from_the_ledger_fails_verification() {
    let s = setup();
    // A certificate dropped into the root directory that the ledger never recorded.
    let other = s.work.join("other");
    run_ok(
        pkictl()
            .args(["init-root", "--cn", "Other", "--dir"])
            .arg(&other)
            .arg("--passphrase-file")
            .arg(&s.pass),
    );
    std::fs::create_dir_all(s.root.join("intermediates/ghost")).unwrap();
    std::fs::copy(
        other.join("root-cert.pem"),
        s.root.join("intermediates/ghost/cert.pem"),
    )
    .unwrap();
    let err = run_fails(
        pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root),
        1,
    );
    assert!(
        one_line(&err).contains("ghost/cert.pem") && err.contains("not in the ledger"),
        "{err}"
    );
}

#[test]
fn malformed_csr_is_refused_and_nothing_is_written() {
    let s = setup();
    let bad = s.work.join("bad.csr");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let garbage = s.work.join("garbage.csr");
    std::fs::write(&garbage, "hello\n").unwrap();
    let before = snapshot(&s.work);
    let err = run_fails(&mut sign(&s, &bad, &s.pass), 1);
    assert!(one_line(&err).contains("malformed CSR"), "{err}");
    let err = run_fails(&mut sign(&s, &garbage, &s.pass), 1);
    assert!(
        one_line(&err).contains("no PEM CERTIFICATE REQUEST"),
        "{err}"
    );
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn csr_with_a_bad_signature_is_refused_and_nothing_is_written() {
    let s = setup();
    let der = s.work.join("aws.csr.der");
    run_ok(
        openssl()
            .args(["req", "-outform", "DER", "-in"])
            .arg(&s.csr)
            .arg("-out")
            .arg(&der),
    );
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 1; // the last byte belongs to the signature
    bytes[last] ^= 0x01;
    std::fs::write(&der, &bytes).unwrap();
    let tampered = s.work.join("tampered.csr");
    run_ok(
        openssl()
            .args(["req", "-inform", "DER", "-in"])
            .arg(&der)
            .arg("-out")
            .arg(&tampered),
    );
    // openssl agrees the signature is bad (OpenSSL 3.0 says so but exits 0: read what it says).
    let out = run(openssl()
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&tampered));
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("verify failure") || !out.status.success(),
        "{said}"
    );
    let before = snapshot(&s.work);
    let err = run_fails(&mut sign(&s, &tampered, &s.pass), 1);
    assert!(
        one_line(&err).contains("CSR signature does not verify"),
        "{err}"
    );
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn ed25519_intermediate_is_refused_for_cacerts() {
    let s = setup();
    run_ok(
        pkictl()
            .args([
                "new-intermediate",
                "--name",
                "edge",
                "--key-type",
                "ed25519",
                "--unencrypted-key-insecure",
                "--root",
            ])
            .arg(&s.root)
            .arg("--passphrase-file")
            .arg(&s.pass),
    );
    let before = snapshot(&s.work);
    let out = s.work.join("cacerts-edge");
    let err = run_fails(
        pkictl()
            .args(["cacerts", "--intermediate", "edge", "--root"])
            .arg(&s.root)
            .arg("--out")
            .arg(&out)
            .arg("--secret-yaml")
            .arg(s.work.join("edge.yaml")),
        1,
    );
    let line = one_line(&err);
    assert!(
        line.contains("istiod would reject") && line.contains("ed25519"),
        "{line}"
    );
    assert!(!out.exists() && !s.work.join("edge.yaml").exists());
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn cacerts_with_a_key_that_is_not_the_intermediates_is_refused() {
    let s = setup();
    run_ok(&mut sign(&s, &s.csr, &s.pass));
    let stranger = s.work.join("stranger.key");
    run_ok(
        openssl()
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&stranger),
    );
    let before = snapshot(&s.work);
    let err = run_fails(
        pkictl()
            .args(["cacerts", "--intermediate", "aws", "--root"])
            .arg(&s.root)
            .arg("--key")
            .arg(&stranger)
            .arg("--out")
            .arg(s.work.join("cc")),
        1,
    );
    assert!(one_line(&err).contains("key-mismatch"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn ttl_past_the_roots_expiry_is_refused_unless_clamped() {
    let s = setup();
    let before = snapshot(&s.work);
    let mut c = sign(&s, &s.csr, &s.pass);
    c.args(["--ttl", "20y"]);
    let err = run_fails(&mut c, 1);
    assert!(one_line(&err).contains("--clamp"), "{err}");
    assert_eq!(snapshot(&s.work), before);
    let mut c = sign(&s, &s.csr, &s.pass);
    c.args(["--ttl", "20y", "--clamp", "--output", "json"]);
    let out = c.output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clamped"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clamped"], true);
    let root = canopy::Certificate::from_pem(
        &std::fs::read_to_string(s.root.join("root-cert.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v["not_after"].as_str().unwrap(),
        root.not_after()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
}

#[test]
fn revoking_a_serial_the_root_never_signed_is_refused() {
    let s = setup();
    let before = snapshot(&s.work);
    let err = run_fails(
        pkictl()
            .args(["revoke", "--reason", "key-compromise", "--root"])
            .arg(&s.root)
            .arg("0123456789abcdef"),
        1,
    );
    assert!(one_line(&err).contains("not signed by this root"), "{err}");
    let err = run_fails(
        pkictl()
            .args(["revoke", "--reason", "because", "--root"])
            .arg(&s.root)
            .arg("01"),
        1,
    );
    assert!(err.contains("unknown revocation reason"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn bad_usage_exits_1_and_help_exits_0() {
    run_fails(pkictl().arg("no-such-command"), 1);
    run_fails(pkictl().args(["init-root", "--cn", "x"]), 1);
    for cmd in [
        "init-root",
        "sign-intermediate",
        "new-intermediate",
        "cacerts",
        "inspect",
        "verify",
        "ledger",
        "revoke",
        "crl",
        "cross-sign",
        "bundle",
    ] {
        let out = run_ok(pkictl().args([cmd, "--help"]));
        assert!(out.contains("Usage: pkictl"), "{cmd}: {out}");
    }
    let help = run_ok(pkictl().args(["init-root", "--help"]));
    for f in [
        "root-cert.pem",
        "root-key.pem",
        "ledger.jsonl",
        "intermediates/NAME/cert.pem",
        "chain.pem",
        "crl.pem",
        "0600",
        "0700",
    ] {
        assert!(help.contains(f), "init-root --help does not document {f}");
    }
    // The passphrase is never an argument.
    run_fails(
        pkictl().args([
            "init-root",
            "--cn",
            "x",
            "--dir",
            "/nonexistent/x",
            "--passphrase",
            "hunter2hunter2",
        ]),
        1,
    );
}

#[test]
fn an_existing_intermediate_is_renewed_only_with_replace() {
    let s = setup();
    run_ok(&mut sign(&s, &s.csr, &s.pass));
    let first = std::fs::read_to_string(s.root.join("intermediates/aws/cert.pem")).unwrap();
    let before = snapshot(&s.work);
    let err = run_fails(&mut sign(&s, &s.csr, &s.pass), 1);
    assert!(one_line(&err).contains("--replace"), "{err}");
    assert_eq!(snapshot(&s.work), before);
    let mut c = sign(&s, &s.csr, &s.pass);
    c.arg("--replace");
    run_ok(&mut c);
    let old = canopy::Certificate::from_pem(&first).unwrap();
    let retired = s.root.join(format!(
        "intermediates/aws/retired-{}/cert.pem",
        old.serial()
    ));
    assert_eq!(std::fs::read_to_string(retired).unwrap(), first);
    assert_ne!(
        std::fs::read_to_string(s.root.join("intermediates/aws/cert.pem")).unwrap(),
        first
    );
    run_ok(pkictl().args(["ledger", "--verify", "--root"]).arg(&s.root));
}

/// A second root beside `s.root`, with the given trust domain.
fn other_root(s: &Setup, dir: &str, cn: &str, trust_domain: &str) -> PathBuf {
    let root = s.work.join(dir);
    run_ok(
        pkictl()
            .args([
                "init-root",
                "--cn",
                cn,
                "--trust-domain",
                trust_domain,
                "--dir",
            ])
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&s.pass),
    );
    root
}

fn sha256_of(cert: &Path) -> String {
    canopy::Certificate::from_pem(&std::fs::read_to_string(cert).unwrap())
        .unwrap()
        .fingerprint_sha256()
        .to_owned()
}

fn cross_sign(s: &Setup, other: &Path, fingerprint: &str) -> Command {
    let mut c = pkictl();
    c.arg("cross-sign")
        .arg("--root")
        .arg(&s.root)
        .arg("--other-root")
        .arg(other)
        .arg("--fingerprint")
        .arg(fingerprint)
        .arg("--out")
        .arg(s.work.join("cross.pem"))
        .arg("--passphrase-file")
        .arg(&s.pass);
    c
}

#[test]
fn cross_sign_refuses_a_root_whose_self_signature_is_not_its_own_key() {
    // The attack: a "root" certificate naming the victim's key (or any key) under a root
    // name, signed by some other key. Cross-signing it would certify a key nobody proved
    // to hold, under a name of the attacker's choosing.
    let s = setup();
    let w = &s.work;
    let ssl = |args: &[&str]| {
        let out = run(openssl().current_dir(w).args(args));
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    ssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "signer.key",
    ]);
    ssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "signer.key",
        "-subj",
        "/CN=Forged Root",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectAltName=URI:spiffe://mesh.example",
        "-out",
        "signer.pem",
    ]);
    canopy_testsupport::openssl_p256_csr(
        &w.join("named.key"),
        &w.join("named.csr"),
        "/CN=Forged Root",
        None,
    );
    std::fs::write(
        w.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectAltName=URI:spiffe://mesh.example\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "named.csr",
        "-CA",
        "signer.pem",
        "-CAkey",
        "signer.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "ca.ext",
        "-out",
        "forged.pem",
    ]);
    let forged = w.join("forged.pem");
    let before = snapshot(w);
    let err = run_fails(&mut cross_sign(&s, &forged, &sha256_of(&forged)), 1);
    assert!(
        one_line(&err).contains("not self-signed by its own key"),
        "{err}"
    );
    assert_eq!(snapshot(w), before);
}

#[test]
fn cross_sign_refuses_a_root_of_another_trust_domain() {
    let s = setup();
    let other = other_root(&s, "other", "Other Root", "other.example");
    let cert = other.join("root-cert.pem");
    let before = snapshot(&s.work);
    let err = run_fails(&mut cross_sign(&s, &cert, &sha256_of(&cert)), 1);
    let line = one_line(&err);
    assert!(
        line.contains("trust domains differ")
            && line.contains("spiffe://mesh.example")
            && line.contains("spiffe://other.example"),
        "{err}"
    );
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn cross_sign_refuses_a_fingerprint_that_is_not_the_files() {
    // The file was swapped on its way to the offline machine: the fingerprint read out by
    // the other root's owner does not match, and no passphrase is even asked.
    let s = setup();
    let other = other_root(&s, "next", "Next Root", "mesh.example");
    let impostor = other_root(&s, "impostor", "Next Root", "mesh.example");
    let before = snapshot(&s.work);
    let announced = sha256_of(&other.join("root-cert.pem"));
    let err = run_fails(
        &mut cross_sign(&s, &impostor.join("root-cert.pem"), &announced),
        1,
    );
    assert!(
        one_line(&err).contains("not the --fingerprint given"),
        "{err}"
    );
    assert_eq!(snapshot(&s.work), before);
    // The genuine one, with the fingerprint as people write it, is cross-signed.
    let colons = announced
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    run_ok(&mut cross_sign(&s, &other.join("root-cert.pem"), &colons));
    // A cross-sign without the fingerprint is a usage error.
    run_fails(
        pkictl()
            .arg("cross-sign")
            .arg("--root")
            .arg(&s.root)
            .arg("--other-root")
            .arg(other.join("root-cert.pem"))
            .arg("--out")
            .arg(s.work.join("cross2.pem")),
        1,
    );
}

#[test]
fn cross_sign_refuses_a_root_under_this_roots_own_name() {
    let s = setup();
    let twin = other_root(&s, "twin", "Acme Root CA", "mesh.example");
    let cert = twin.join("root-cert.pem");
    let before = snapshot(&s.work);
    let err = run_fails(&mut cross_sign(&s, &cert, &sha256_of(&cert)), 1);
    assert!(one_line(&err).contains("this root's own name"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}

#[test]
fn an_intermediate_may_not_take_the_roots_name() {
    // The attack: an intermediate named like the root looks self-issued, so path
    // validation and people reading a chain take it for the root.
    let s = setup();
    let before = snapshot(&s.work);
    let mut c = sign(&s, &s.csr, &s.pass);
    c.args(["--cn", "Acme Root CA"]);
    let err = run_fails(&mut c, 1);
    assert!(one_line(&err).contains("is the issuer's own name"), "{err}");
    assert_eq!(snapshot(&s.work), before);
    // Taken from the CSR's subject, the same.
    let csr = s.work.join("root-named.csr");
    canopy_testsupport::openssl_p256_csr(
        &s.work.join("root-named.key"),
        &csr,
        "/CN=Acme Root CA",
        None,
    );
    let before = snapshot(&s.work);
    let err = run_fails(&mut sign(&s, &csr, &s.pass), 1);
    assert!(one_line(&err).contains("is the issuer's own name"), "{err}");
    assert_eq!(snapshot(&s.work), before);
}
