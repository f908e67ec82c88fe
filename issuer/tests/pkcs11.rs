//! An intermediate whose key lives on a PKCS#11 token (SoftHSM2, a private SOFTHSM2_CONF):
//! the issuer signs with it; the token taken away fails /readyz and answers 503 with
//! Retry-After, records nothing, and signing resumes when the token is back; a wrong PIN
//! stops the start with a message that names the token, not the PIN.

use std::path::Path;
use std::process::Command;

use canopy_testsupport::softhsm::{SoftHsm, PIN};
use canopy_testsupport::{passphrase_file, run_ok};
use serde_json::json;

use canopy_testsupport::openssl_verify_pem;

use crate::common::{csr, wait_for, Client, Server, BIN, TD};

const ROOT_PASS: &str = "root passphrase that is long";

/// A root (key file) and intermediate `aws` whose key pkictl made on the token "issuer-hsm".
fn hierarchy(dir: &Path, hsm: &SoftHsm) {
    hsm.init_token("issuer-hsm");
    let pass = passphrase_file(dir, "root.pass", ROOT_PASS);
    let pkictl = || {
        let mut c = canopy_testsupport::cmd("pkictl");
        hsm.env(&mut c).current_dir(dir);
        c
    };
    run_ok(
        pkictl()
            .args([
                "init-root",
                "--dir",
                "root",
                "--cn",
                "Root",
                "--trust-domain",
                TD,
            ])
            .arg("--passphrase-file")
            .arg(&pass),
    );
    run_ok(
        pkictl()
            .args(["new-intermediate", "--root", "root", "--name", "aws"])
            .arg("--passphrase-file")
            .arg(&pass)
            .args(["--pkcs11", "--pkcs11-module"])
            .arg(&hsm.module)
            .args(["--pkcs11-token", "issuer-hsm", "--key-pin-file"])
            .arg(&hsm.pin_file),
    );
}

fn config(dir: &Path, hsm: &SoftHsm, pin_file: &Path) -> String {
    let path = dir.join("issuer.yaml");
    std::fs::write(
        &path,
        format!(
            r#"trust_domain: {TD}
listen:
  address: "127.0.0.1:0"
storage:
  url: "sqlite:hsm.db"
roots: [root/root-cert.pem]
intermediates:
  - name: aws
    cert: root/intermediates/aws/chain.pem
    pkcs11:
      module: {module}
      token_label: issuer-hsm
      key_label: canopy-intermediate-aws
      pin_file: {pin}
policies:
  - name: dev
    spiffe_ids: ["spiffe://{TD}/ns/*/sa/*"]
    profiles: [workload]
    max_ttl: 24h
    list: true
"#,
            module = hsm.module.display(),
            pin = pin_file.display(),
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn issuer(args: &[&str], hsm: &SoftHsm) -> std::process::Output {
    let mut c = Command::new(BIN);
    hsm.env(&mut c).args(args).output().unwrap()
}

fn sign(client: &Client, token: &str) -> crate::common::Response {
    let c = csr(Some(&format!("spiffe://{TD}/ns/default/sa/web")), &[]);
    client.post_json("/v1/sign", Some(token), &json!({"csr": c.pem, "ttl": "1h"}))
}

fn issued_count(client: &Client, token: &str) -> usize {
    let auth = format!("Bearer {token}");
    let r = client.get("/v1/certificates", &[("Authorization", auth.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().len()
}

#[test]
fn signs_with_a_token_held_intermediate_and_survives_the_token_going_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hsm = SoftHsm::new(dir);
    hierarchy(dir, &hsm);
    let cfg = config(dir, &hsm, &hsm.pin_file);
    let out = issuer(
        &["token", "create", "--policy", "dev", "--config", &cfg],
        &hsm,
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let server = Server::start_with_env(
        &["serve", "--config", &cfg],
        dir,
        &[("SOFTHSM2_CONF", hsm.conf.as_path())],
    );
    let root = std::fs::read_to_string(dir.join("root/root-cert.pem")).unwrap();
    let client = Client::new(server.addr, &root, None);
    assert_eq!(client.get("/readyz", &[]).status, 200);
    // The issuer's own serving certificate is recorded too.
    let before = issued_count(&client, &token);

    // Signed on the token; openssl follows leaf -> intermediate -> root.
    let r = sign(&client, &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let (ok, why) = openssl_verify_pem(
        dir,
        &root,
        j["chain"].as_str().unwrap(),
        j["certificate"].as_str().unwrap(),
    );
    assert!(ok, "{why}");
    assert_eq!(issued_count(&client, &token), before + 1);

    // The token goes away: not ready, and signing answers 503 with Retry-After.
    hsm.unplug();
    let ready = client.get("/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let message = ready.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("intermediate aws"), "{message}");
    assert!(message.contains("not available"), "{message}");
    let r = sign(&client, &token);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.code(), "signer_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        issued_count(&client, &token),
        before + 1,
        "nothing recorded"
    );

    // Back: ready again (the module is initialized anew), signing resumes.
    hsm.plug_in();
    wait_for(
        30,
        || client.get("/readyz", &[]).status == 200,
        "ready after the token is back",
    );
    let r = sign(&client, &token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(issued_count(&client, &token), before + 2);
    let log = server.log();
    assert!(!log.contains(PIN), "the PIN is in the log");
}

#[test]
fn a_wrong_pin_or_missing_key_stops_the_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hsm = SoftHsm::new(dir);
    hierarchy(dir, &hsm);
    let bad = passphrase_file(dir, "bad-pin", "999999");
    let cfg = config(dir, &hsm, &bad);
    let out = issuer(&["serve", "--config", &cfg], &hsm);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("wrong PIN for token \"issuer-hsm\""),
        "{stderr}"
    );
    assert!(!stderr.contains("999999"), "{stderr}");

    let cfg = config(dir, &hsm, &hsm.pin_file);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("key_label: canopy-intermediate-aws", "key_label: nope"),
    )
    .unwrap();
    let out = issuer(&["serve", "--config", &cfg], &hsm);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no private key labelled \"nope\""),
        "{stderr}"
    );
}
