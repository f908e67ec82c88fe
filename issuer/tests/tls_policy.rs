//! TLS policy of the listener, checked from outside with openssl and curl: TLS 1.2+ only,
//! only ECDHE + AEAD suites on TLS 1.2, client certificates verified against our roots.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// The TLS 1.2 suites the listener may accept (forward secret, AEAD).
const ALLOWED_TLS12: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// `openssl s_client` with stdin closed: (handshake completed, output).
fn s_client(port: u16, root: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(root)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A completed handshake prints the negotiated cipher; "Cipher is (NONE)" means none.
    let done =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (done, text)
}

struct Env {
    dir: tempfile::TempDir,
    server: Server,
    root: std::path::PathBuf,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &[
            "serve",
            "--dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let root = dir.path().join("root.pem");
    Env { dir, server, root }
}

#[test]
fn only_tls12_and_tls13_are_spoken() {
    let env = setup();
    let port = env.server.addr.port();
    let (ok, text) = s_client(port, &env.root, &["-tls1_3"]);
    assert!(ok && text.contains("TLSv1.3"), "TLS 1.3 refused:\n{text}");
    let (ok, text) = s_client(port, &env.root, &["-tls1_2"]);
    assert!(ok && text.contains("TLSv1.2"), "TLS 1.2 refused:\n{text}");
    // The client is told to allow old versions (SECLEVEL=0), so a refusal is the server's;
    // the same client settings with TLS 1.2 succeed, so the version is what is refused.
    let (ok, text) = s_client(
        port,
        &env.root,
        &["-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    assert!(ok, "TLS 1.2 with SECLEVEL=0 refused:\n{text}");
    for old in ["-tls1_1", "-tls1"] {
        let (ok, text) = s_client(port, &env.root, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(!ok, "{old} was accepted:\n{text}");
        // rustls answers a ClientHello without TLS 1.2+ with a handshake_failure alert.
        assert!(
            text.contains("alert protocol version") || text.contains("alert handshake failure"),
            "{old}: not refused with a TLS alert:\n{text}"
        );
    }
}

#[test]
fn no_weak_suites_on_tls12() {
    let env = setup();
    let port = env.server.addr.port();
    let list = Command::new("openssl")
        .args([
            "ciphers",
            "-tls1_2",
            "-s",
            "ALL:COMPLEMENTOFALL:@SECLEVEL=0",
        ])
        .output()
        .expect("openssl ciphers");
    let suites: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .trim()
        .split(':')
        .filter(|s| !s.starts_with("TLS_")) // TLS 1.3 names
        .map(str::to_string)
        .collect();
    assert!(suites.len() > 20, "openssl offers few suites: {suites:?}");
    for must in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-NULL-SHA",
        "AES128-SHA",
    ] {
        assert!(suites.iter().any(|s| s == must), "openssl lacks {must}");
    }
    let mut accepted = Vec::new();
    for suite in &suites {
        let (ok, _) = s_client(
            port,
            &env.root,
            &["-tls1_2", "-cipher", &format!("{suite}:@SECLEVEL=0")],
        );
        if ok {
            accepted.push(suite.clone());
        }
    }
    let weak: Vec<_> = accepted
        .iter()
        .filter(|s| !ALLOWED_TLS12.contains(&s.as_str()))
        .collect();
    assert!(weak.is_empty(), "weak TLS 1.2 suites accepted: {weak:?}");
    assert!(!accepted.is_empty(), "no TLS 1.2 suite accepted at all");
    eprintln!(
        "TLS 1.2: {} suites offered one by one, accepted only {accepted:?}",
        suites.len()
    );
}

/// Client certificates are verified against our roots: one from another root is refused
/// (the handshake fails), ours is accepted, and none at all is allowed (tokens, JWTs).
#[test]
fn client_certificate_from_another_root_is_refused() {
    let env = setup();
    let port = env.server.addr.port();
    let dir = env.dir.path();
    // A foreign CA and a client certificate under it with a SPIFFE ID of our trust domain.
    let run = |args: &[&str]| {
        let (ok, out) = openssl(dir, args);
        assert!(ok, "openssl {args:?}: {out}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Evil Root",
        "-days",
        "2",
        "-keyout",
        "evil-ca-key.pem",
        "-out",
        "evil-ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=web",
        "-keyout",
        "evil-key.pem",
        "-out",
        "evil.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=URI:spiffe://{TD}/ns/default/sa/web\nextendedKeyUsage=clientAuth\n"
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "evil.csr",
        "-CA",
        "evil-ca.pem",
        "-CAkey",
        "evil-ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "evil.pem",
    ]);
    // openssl resolves -cert relative to its cwd: run it in `dir`.
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_2",
        ])
        .args(["-servername", "localhost", "-CAfile", "root.pem"])
        .args(["-cert", "evil.pem", "-key", "evil-key.pem"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || text.contains("Cipher is (NONE)"),
        "TLS 1.2 handshake with a foreign client certificate completed:\n{text}"
    );
    assert!(
        text.contains("alert") || text.contains("unknown ca") || text.contains("bad certificate"),
        "no TLS alert for the foreign client certificate:\n{text}"
    );

    // TLS 1.3 (the client learns after its Finished): a request through curl must fail,
    // never reach the API as that SPIFFE ID.
    let curl = |cert: Option<(&str, &str)>| {
        let mut c = Command::new("curl");
        c.current_dir(dir)
            .args([
                "-sS",
                "--tlsv1.3",
                "--max-time",
                "20",
                "--cacert",
                "root.pem",
            ])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code}"]);
        if let Some((cert, key)) = cert {
            c.args(["--cert", cert, "--key", key]);
        }
        let out = c
            .args(["-X", "GET"])
            .arg(format!("https://localhost:{port}/v1/certificates"))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = curl(Some(("evil.pem", "evil-key.pem")));
    assert!(
        !ok,
        "TLS 1.3 request with a foreign client certificate answered:\n{text}"
    );
    // Without a certificate: the handshake is fine and the API answers 401.
    let (ok, text) = curl(None);
    assert!(ok && text.ends_with("401"), "no client cert: {text}");
}
