//! HTTP hardening: what a hostile or broken client can send, against the real binary.
//! Every case must end in a clear 4xx (or the connection cut off in bounded time), and
//! the service must keep serving others: each test checks `/healthz` and a sign after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// The server's time limit for a request head (tls.rs `HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

struct Env {
    _dir: tempfile::TempDir,
    server: Server,
    client: Client,
    root: String,
    token: String,
}

fn setup() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let issuer = Configured::new(
        &dir,
        "sqlite:hardening.db",
        // curl --parallel (http2_many_streams) opens a connection for every 32 streams it
        // cannot place, more than the per-peer cap of 64: that cap is limits.rs's subject.
        "  burst: 10000\n  rate_per_second: 10000\n  request_timeout: 5s\n  max_connections_per_peer: 1024",
    );
    let (server, client) = issuer.serve(&dir);
    Env {
        _dir: tmp,
        server,
        client,
        root: issuer.root,
        token: issuer.token,
    }
}

/// The service still answers: `/healthz` and a real sign.
fn still_serving(env: &mut Env) {
    assert!(env.server.alive(), "issuer died:\n{}", env.server.log());
    let h = env.client.get("/healthz", &[]);
    assert_eq!(h.status, 200, "{}", h.text());
    let csr = csr(Some(&format!("spiffe://{TD}/ns/default/sa/web")), &[]);
    let r = env
        .client
        .post_json("/v1/sign", Some(&env.token), &json!({"csr": csr.pem}));
    assert_eq!(r.status, 200, "sign after the attack: {}", r.text());
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A raw TLS connection (HTTP/1.1, no ALPN) for writing whatever bytes a test wants.
fn raw(env: &Env) -> Tls {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(env.root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(env.server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // Finish the handshake now, so later timings measure HTTP only.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Reads what the server sends until it closes (or 30 s); returns the status code, if any.
fn answer(tls: &mut Tls) -> (Option<u16>, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() > 4096 * 64 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok());
    (status, text)
}

/// Sends raw request bytes (tolerating a server that stops reading) and reads the answer.
fn send_raw(env: &Env, bytes: &[u8]) -> (Option<u16>, String) {
    let mut tls = raw(env);
    let _ = tls.write_all(bytes).and_then(|()| tls.flush());
    answer(&mut tls)
}

fn sign_head(env: &Env, extra: &str) -> String {
    format!(
        "POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n",
        env.token
    )
}

fn assert_error(status: Option<u16>, text: &str, want: u16, code: &str) {
    assert_eq!(status, Some(want), "expected {want} {code}, got:\n{text}");
    if !code.is_empty() {
        assert!(
            text.contains(&format!("\"code\":\"{code}\"")),
            "expected code {code}:\n{text}"
        );
    }
}

#[test]
fn oversized_bodies_are_refused_declared_or_chunked() {
    let mut env = setup();
    // Declared: refused from the headers alone, before any body byte is sent.
    let head = sign_head(&env, "Content-Length: 104857600\r\n");
    let t0 = Instant::now();
    let (status, text) = send_raw(&env, head.as_bytes());
    assert_error(status, &text, 413, "body_too_large");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "413 took {:?}",
        t0.elapsed()
    );

    // Undeclared, HTTP/1.1 chunked: up to 16 MiB in 16 KiB chunks. The server stops
    // reading at the limit (64 KiB), answers 413 and closes. A client that keeps writing
    // gets a reset, which may discard the 413 before it is read (as with any HTTP/1.1
    // server that does no lingering close), so "cut off long before 16 MiB" is a pass too.
    let mut tls = raw(&env);
    tls.write_all(sign_head(&env, "Transfer-Encoding: chunked\r\n").as_bytes())
        .unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    let mut early = Vec::new();
    let mut sent = 0usize;
    let mut cut_off = false;
    while sent < 16 * 1024 * 1024 {
        let framed = [
            format!("{:x}\r\n", chunk.len()).as_bytes(),
            &chunk[..],
            b"\r\n",
        ]
        .concat();
        if tls.write_all(&framed).and_then(|()| tls.flush()).is_err() {
            cut_off = true;
            break;
        }
        sent += chunk.len();
        let mut buf = [0u8; 4096];
        match tls.read(&mut buf) {
            Ok(0) => {
                cut_off = true;
                break;
            }
            Ok(n) => {
                early.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&early).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 413") || cut_off,
        "chunked body: neither 413 nor cut off after {sent} bytes: {text}"
    );
    assert!(
        sent < 8 * 1024 * 1024,
        "the server kept reading a chunked body: {sent} bytes accepted"
    );
    eprintln!(
        "chunked HTTP/1.1: {sent} bytes accepted, answer {:?}, cut off {cut_off}",
        text.lines().next()
    );

    // HTTP/2 (curl, ALPN h2) with a body of undeclared length: the server answers 413
    // once the body passes the limit and reads the rest (up to 16 times the limit) so the
    // stream ends cleanly: every try is a clean 413 (limits.rs tries more variants).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &env.root).unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 1024 * 1024]).unwrap();
    for _ in 0..3 {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "30", "--cacert"])
            .arg(&root)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", env.server.addr.port()))
            .args(["-H", &format!("Authorization: Bearer {}", env.token)])
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Transfer-Encoding: chunked",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", big.display()))
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(format!(
                "https://localhost:{}/v1/sign",
                env.server.addr.port()
            ))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.ends_with("2 413") && text.contains("body_too_large"),
            "HTTP/2 undeclared 1 MiB body: not a clean 413: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    still_serving(&mut env);
}

/// Slowloris: heads sent one byte a second (and a connection that sends nothing after
/// the handshake) are cut off within the server's header timeout, while others are served.
#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    let mut env = setup();
    let started = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..4 {
        let mut tls = raw(&env);
        attackers.push(std::thread::spawn(move || {
            tls.sock
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let t0 = Instant::now();
            if i > 0 {
                tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    .unwrap();
            }
            let mut one = [0u8; 1];
            while t0.elapsed() < Duration::from_secs(60) {
                // i == 0 sends nothing at all; the others trickle one byte a second.
                if i > 0 && tls.write_all(b"a").and_then(|()| tls.flush()).is_err() {
                    return t0.elapsed();
                }
                match tls.read(&mut one) {
                    Ok(_) => return t0.elapsed(), // closed (0) or an error answer
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return t0.elapsed(),
                }
            }
            t0.elapsed()
        }));
    }
    // Meanwhile the service answers others.
    std::thread::sleep(Duration::from_secs(2));
    still_serving(&mut env);
    for a in attackers {
        let held = a.join().unwrap();
        assert!(
            held < HEADER_TIMEOUT + Duration::from_secs(5),
            "a slow client held its connection for {held:?} (header timeout {HEADER_TIMEOUT:?})"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(40));
    still_serving(&mut env);
}

/// A declared body sent one byte a second: the request timeout (5 s here) answers 408.
#[test]
fn slow_body_times_out() {
    let mut env = setup();
    let mut tls = raw(&env);
    tls.write_all(sign_head(&env, "Content-Length: 1000\r\n").as_bytes())
        .unwrap();
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        if tls.write_all(b" ").and_then(|()| tls.flush()).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "expected 408 after the 5 s request timeout, got after {:?}: {text}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    still_serving(&mut env);
}

#[test]
fn malformed_json_and_wrong_content_types_are_4xx() {
    let mut env = setup();
    let auth = format!("Bearer {}", env.token);
    let post = |ct: Option<&str>, body: &[u8]| {
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        env.client.request("POST", "/v1/sign", &h, Some(body))
    };
    let bad_json: &[&[u8]] = &[
        b"",
        b"{",
        b"{\"csr\": ",
        b"[]",
        b"null",
        b"\"csr\"",
        b"{\"csr\": 5}",
        b"{\"csr\": \"x\", \"csr\": \"y\"}",
        b"{\"csr\": \"x\", \"admin\": true}",
        b"{\"csr\": \"\xff\xfe\"}",
        b"\xef\xbb\xbf{\"csr\": \"x\"}",
        &[b'['; 10000],
    ];
    for body in bad_json {
        let r = post(Some("application/json"), body);
        assert_eq!(
            r.status,
            400,
            "body {:?}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        let code = r.code();
        assert!(
            ["bad_json", "bad_request", "bad_csr"].contains(&code.as_str()),
            "body {:?}: code {code}",
            String::from_utf8_lossy(body)
        );
    }
    // Deeply nested JSON: serde_json's recursion limit answers, no stack overflow.
    let deep = format!("{{\"csr\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(post(Some("application/json"), deep.as_bytes()).status, 400);

    let body = br#"{"csr": "x"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("application/jsonx"),
    ] {
        let r = post(ct, body);
        assert_eq!(r.status, 415, "content type {ct:?}: {}", r.text());
        assert_eq!(r.code(), "unsupported_media_type");
    }
    // Revoke's body too.
    let r = env.client.request(
        "POST",
        "/v1/revoke",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(b"{\"serial\": [1,2]}"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    still_serving(&mut env);
}

#[test]
fn path_traversal_in_names_is_404_and_reads_no_file() {
    let mut env = setup();
    let paths = [
        "/v1/chain/..%2f..%2fetc%2fpasswd",
        "/v1/chain/..%2F..%2Froot.pem",
        "/v1/chain/%2e%2e",
        "/v1/chain/aws%00",
        "/v1/chain/aws%2f..%2f..%2f..%2fetc%2fpasswd",
        "/v1/crl/../../x",
        "/v1/crl/..%2f..%2fhardening.db",
        "/v1/crl/%2e%2e%2f%2e%2e%2fetc%2fshadow",
        "/v1/../../etc/passwd",
        "/v1/certificates/..%2f..%2fetc",
        "/v1/chain/aws/../../../etc/passwd",
        "//etc/passwd",
    ];
    for p in paths {
        let (status, text) = send_raw(
            &env,
            format!(
                "GET {p} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                env.token
            )
            .as_bytes(),
        );
        let status = status.unwrap_or_else(|| panic!("{p}: no answer: {text}"));
        assert!(
            [400, 404].contains(&status),
            "{p}: expected 400/404, got {status}: {text}"
        );
        for leak in ["root:", "BEGIN", "SQLite format", "/tmp", "No such file"] {
            assert!(
                !text.contains(leak),
                "{p}: answer mentions {leak:?}: {text}"
            );
        }
    }
    // A known name still works.
    assert_eq!(env.client.get("/v1/chain/aws", &[]).status, 200);
    still_serving(&mut env);
}

#[test]
fn header_injection_and_malformed_heads_are_400() {
    let mut env = setup();
    let heads: &[&[u8]] = &[
        // bare CR inside a value
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\rInjected: 1\r\n\r\n",
        // bare LF splitting a header (only a CRLF ends a line in our answer's eyes)
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\nX-B\r\n\r\n",
        // obsolete line folding
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n folded\r\n\r\n",
        // NUL in a value
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n",
        // space before the colon
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A : a\r\n\r\n",
        // CR/LF in the request target
        b"GET /healthz\r\nX: y HTTP/1.1\r\nHost: localhost\r\n\r\n",
        // both Content-Length and Transfer-Encoding (request smuggling)
        b"POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // two different Content-Lengths
        b"POST /v1/sign HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        // not HTTP at all
        b"\x16\x03\x01garbage\r\n\r\n",
    ];
    for head in heads {
        let (status, text) = send_raw(&env, head);
        match status {
            Some(s) => assert!(
                (400..500).contains(&s),
                "{:?}: expected 4xx, got {s}: {text}",
                String::from_utf8_lossy(head)
            ),
            // Closing without an answer is an acceptable refusal of garbage.
            None => assert!(
                text.is_empty(),
                "{:?}: {text}",
                String::from_utf8_lossy(head)
            ),
        }
        assert!(
            !text.to_ascii_lowercase().contains("injected"),
            "a header was reflected: {text}"
        );
    }
    // Invalid UTF-8 / control bytes in Authorization: a clear 401, not a crash.
    let (status, text) = send_raw(
        &env,
        b"GET /v1/certificates HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
    );
    assert_error(status, &text, 401, "");
    let (status, text) = send_raw(
        &env,
        b"GET /v1/certificates HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\tb.c.d\r\nConnection: close\r\n\r\n",
    );
    assert_error(status, &text, 401, "");
    still_serving(&mut env);
}

#[test]
fn very_many_or_very_large_headers_are_431() {
    let mut env = setup();
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, text) = send_raw(&env, many.as_bytes());
    assert_eq!(status, Some(431), "500 headers: {text}");

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let (status, text) = send_raw(&env, huge.as_bytes());
    assert!(
        status == Some(431) || status.is_none(),
        "1 MiB header: {:?} {}",
        status,
        &text[..text.len().min(300)]
    );
    still_serving(&mut env);
}

/// HTTP/2 through curl (ALPN h2): works, and 300 parallel streams (32 per connection,
/// `limits.http2_max_concurrent_streams`) leave the service serving.
#[test]
fn http2_many_streams() {
    let mut env = setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &env.root).unwrap();
    let url = format!("https://localhost:{}/healthz", env.server.addr.port());
    let mut args = vec![
        "-sS".to_string(),
        "--http2".into(),
        "--parallel".into(),
        "--parallel-max".into(),
        "300".into(),
        "--cacert".into(),
        root.to_str().unwrap().into(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", env.server.addr.port()),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version} %{http_code}\\n".into(),
        "--max-time".into(),
        "60".into(),
    ];
    for _ in 0..300 {
        args.push(url.clone());
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text.lines().filter(|l| *l == "2 200").count();
    assert!(
        ok >= 250,
        "HTTP/2: {ok} of 300 answered 200: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    still_serving(&mut env);
}
