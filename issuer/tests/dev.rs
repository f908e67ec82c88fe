//! `serve --dev`: the README's main command works as printed, and restarts reuse
//! the dev CA.

use crate::common::*;
use canopy_testsupport::openssl_verify_pem;
use serde_json::json;

#[test]
fn dev_mode_prints_a_command_that_gets_a_verified_workload_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let server = Server::start(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data_s,
            "--listen",
            "127.0.0.1:0",
        ],
        tmp.path(),
    );
    let banner = server.stdout.lock().unwrap().clone();
    assert!(banner.contains(&format!("spiffe://{TD}")), "{banner}");
    assert!(banner.contains(&format!(
        "{}/root.pem",
        data.canonicalize().unwrap().display()
    )));
    let root = std::fs::read_to_string(data.join("root.pem")).unwrap();
    let (ok, text) = openssl(
        tmp.path(),
        &[
            "x509",
            "-in",
            data.join("root.pem").to_str().unwrap(),
            "-noout",
            "-subject",
        ],
    );
    assert!(ok && text.contains("DEV"), "root is labelled DEV: {text}");
    for name in ["aws", "azure"] {
        let (ok, text) = openssl(
            tmp.path(),
            &[
                "x509",
                "-in",
                data.join(format!("{name}.pem")).to_str().unwrap(),
                "-noout",
                "-subject",
            ],
        );
        assert!(ok && text.contains("DEV") && text.contains(name), "{text}");
    }

    // The ready-to-paste command, run as printed.
    let command = banner
        .lines()
        .find(|l| l.starts_with("cd \"$(mktemp -d)\""))
        .unwrap_or_else(|| panic!("no command in banner:\n{banner}"));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "printed command failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("workload.pem: OK"), "{stdout}");
    let workdir = stdout.lines().last().unwrap().trim().to_string();
    let pem = std::fs::read_to_string(format!("{workdir}/workload.pem")).unwrap();
    std::fs::write(tmp.path().join("w.pem"), &pem).unwrap();
    let (ok, text) = openssl(
        tmp.path(),
        &["x509", "-in", "w.pem", "-noout", "-ext", "subjectAltName"],
    );
    assert!(
        ok && text.contains(&format!("URI:spiffe://{TD}/ns/default/sa/demo")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&workdir);

    // Strict verification of a sign done with our own client too.
    let token = std::fs::read_to_string(data.join("dev-token"))
        .unwrap()
        .trim()
        .to_string();
    let client = Client::new(server.addr, &root, None);
    let c = csr(Some(&format!("spiffe://{TD}/ns/default/sa/api")), &[]);
    let r = client.post_json(
        "/v1/sign",
        Some(&token),
        &json!({"csr": c.pem, "intermediate": "azure"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (ok, out) = openssl_verify_pem(
        tmp.path(),
        &root,
        r.json()["chain"].as_str().unwrap(),
        r.json()["certificate"].as_str().unwrap(),
    );
    assert!(ok, "{out}");
    drop(server);

    // A restart reuses the root, the intermediates and the token.
    let server = Server::start(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data_s,
            "--listen",
            "127.0.0.1:0",
        ],
        tmp.path(),
    );
    assert_eq!(
        std::fs::read_to_string(data.join("root.pem")).unwrap(),
        root
    );
    // The secret never reaches the terminal or a command line: the printed command
    // reads it from a 0600 header file (curl -H @FILE), the same token as before.
    let printed = server.stdout.lock().unwrap().clone();
    assert!(
        !printed.contains(&token),
        "the dev token is not printed:\n{printed}"
    );
    assert!(printed.contains("dev-token.header"), "{printed}");
    let header = std::fs::read_to_string(data.join("dev-token.header")).unwrap();
    assert_eq!(header.trim(), format!("Authorization: Bearer {token}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("."), 0o700, "data folder");
    assert_eq!(mode("issuer.db"), 0o600, "database");
    assert_eq!(mode("dev-token"), 0o600);
    assert_eq!(mode("dev-token.header"), 0o600);
    // `--listen 127.0.0.1:0` was for those runs only: the saved config keeps the default.
    let config = std::fs::read_to_string(data.join("config.yaml")).unwrap();
    assert!(config.contains("127.0.0.1:8443"), "{config}");
    let client = Client::new(server.addr, &root, None);
    let r = client.post_json(
        "/v1/sign",
        Some(&token),
        &json!({"csr": csr(Some(&format!("spiffe://{TD}/ns/default/sa/api")), &[]).pem}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (ok, out, err) = run_bin(&["audit", "verify", "--dev", "--data-dir", data_s]);
    assert!(ok, "{out}{err}");
}
