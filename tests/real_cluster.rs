//! canopy's real Kubernetes control plane for tests (tests/cluster: embedded etcd and the
//! real kube-apiserver in one process per cluster), checked as canopy will use it: two
//! clusters at once, kubectl as admin, RBAC for static-token users, service-account tokens
//! verified against the cluster's own JWKS, and data kept across a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_testsupport::cluster::{ClusterOptions, TestCluster};
use canopy_testsupport::run_ok;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

/// A GET with rustls, trusting only the cluster CA, with an optional bearer token:
/// returns the status and the body (chunked bodies decoded).
fn https_get(cluster: &TestCluster, path: &str, bearer: Option<&str>) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cluster.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = cluster.server().trim_start_matches("https://").to_string();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // Go's server may close without close_notify after Connection: close.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("read {path}: {e}"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

fn kubectl_ok(cluster: &TestCluster, args: &[&str]) -> String {
    run_ok(cluster.kubectl().args(args))
}

/// Retries `f` for up to 15 s (RBAC and caches catch up asynchronously).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Creates namespace `ns` and ServiceAccount `sa`, gets a token for `audience` through the
/// TokenRequest API, and verifies it with the JWKS the cluster serves anonymously.
fn check_service_account_token(cluster: &TestCluster, ns: &str, sa: &str) -> String {
    kubectl_ok(cluster, &["create", "namespace", ns]);
    kubectl_ok(cluster, &["create", "serviceaccount", sa, "-n", ns]);
    let audience = "canopy-issuer";
    let jwt = cluster.service_account_token(ns, sa, audience, 600);

    let (status, discovery) = https_get(cluster, "/.well-known/openid-configuration", None);
    assert_eq!(status, 200, "anonymous openid-configuration: {discovery}");
    let discovery: Value = serde_json::from_str(&discovery).unwrap();
    assert_eq!(discovery["issuer"], cluster.issuer());

    let (status, jwks) = https_get(cluster, "/openid/v1/jwks", None);
    assert_eq!(status, 200, "anonymous JWKS: {jwks}");
    let claims = verify(cluster, &jwt, &jwks, audience).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims["iss"], cluster.issuer());
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:{sa}"));
    assert_eq!(claims["kubernetes.io"]["namespace"], ns);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], sa);
    let exp = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(exp, 600, "token lifetime: {claims}");
    jwks
}

/// Verifies `jwt`'s signature with the key of its `kid` in `jwks`, and its iss and aud.
fn verify(cluster: &TestCluster, jwt: &str, jwks: &str, audience: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("JWT header: {e}"))?;
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| format!("JWKS: {e}"))?;
    let kid = header.kid.clone().ok_or("JWT has no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[cluster.issuer()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| format!("JWT does not verify: {e}"))
}

#[test]
fn aws_and_azure_start_concurrently_and_issue_verifiable_tokens() {
    let started = Instant::now();
    let (aws, azure) = std::thread::scope(|s| {
        let aws = s.spawn(|| TestCluster::start("aws"));
        let azure = s.spawn(|| TestCluster::start("azure"));
        (aws.join().unwrap(), azure.join().unwrap())
    });
    eprintln!(
        "aws ready in {:?}, azure ready in {:?} (both, build check included: {:?})",
        aws.startup_time(),
        azure.startup_time(),
        started.elapsed()
    );
    assert_ne!(aws.server(), azure.server());
    assert_eq!(aws.issuer(), "https://aws.canopy.test");
    assert_eq!(azure.issuer(), "https://azure.canopy.test");

    for c in [&aws, &azure] {
        let out = kubectl_ok(
            c,
            &[
                "get",
                "namespaces",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        );
        for ns in ["default", "kube-system"] {
            assert!(out.split(' ').any(|n| n == ns), "{}: {out}", c.name());
        }
        let (status, body) = https_get(c, "/api/v1/namespaces", Some(c.admin_token()));
        assert_eq!(status, 200, "admin token: {body}");
    }

    let aws_jwks = check_service_account_token(&aws, "payments", "api");
    let azure_jwks = check_service_account_token(&azure, "payments", "api");
    // Each cluster signs with its own key: a token of one does not verify with the other's.
    let jwt = aws.service_account_token("payments", "api", "canopy-issuer", 600);
    verify(&aws, &jwt, &aws_jwks, "canopy-issuer").unwrap_or_else(|e| panic!("{e}"));
    assert!(verify(&aws, &jwt, &azure_jwks, "canopy-issuer").is_err());
    assert!(verify(&aws, &jwt, &aws_jwks, "someone-else").is_err());
}

#[test]
fn static_token_user_is_forbidden_until_bound() {
    let c = TestCluster::start_with("rbac", ClusterOptions::default().user("alice", &["devs"]));
    eprintln!("rbac ready in {:?}", c.startup_time());
    let path = "/api/v1/namespaces/default/secrets";
    let token = c.token_for("alice").to_string();

    let (status, body) = https_get(&c, path, Some("not-a-token"));
    assert_eq!(status, 401, "unknown token: {body}");
    let (status, body) = https_get(&c, path, Some(&token));
    assert_eq!(status, 403, "alice without RBAC: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "Forbidden");
    assert!(
        v["message"].as_str().unwrap().contains("\"alice\""),
        "{body}"
    );

    kubectl_ok(
        &c,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get,list",
            "--resource=secrets",
            "-n",
            "default",
        ],
    );
    kubectl_ok(
        &c,
        &[
            "create",
            "rolebinding",
            "alice-reads",
            "--role=secret-reader",
            "--group=devs",
            "-n",
            "default",
        ],
    );
    eventually("alice lists secrets once bound", || {
        let (status, body) = https_get(&c, path, Some(&token));
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
    // Still only in that namespace.
    let (status, _) = https_get(&c, "/api/v1/namespaces/kube-system/secrets", Some(&token));
    assert_eq!(status, 403);
}

#[test]
fn restart_keeps_data_port_and_tokens() {
    let mut c = TestCluster::start("restart");
    let first = c.startup_time();
    let server = c.server().to_string();
    kubectl_ok(&c, &["create", "namespace", "kept"]);
    kubectl_ok(
        &c,
        &[
            "create",
            "configmap",
            "cm",
            "-n",
            "kept",
            "--from-literal=k=v1",
        ],
    );
    kubectl_ok(&c, &["create", "serviceaccount", "sa", "-n", "kept"]);
    let jwt = c.service_account_token("kept", "sa", "canopy-issuer", 600);
    // A token for the cluster's own API audience (the issuer), to call the API with.
    let api_jwt = c.service_account_token("kept", "sa", c.issuer(), 600);
    let (_, jwks_before) = https_get(&c, "/openid/v1/jwks", None);
    let pid = c.pid();

    let t = Instant::now();
    c.restart();
    eprintln!(
        "restart: first start {first:?}; stop and start again {:?}, of which start {:?}",
        t.elapsed(),
        c.startup_time()
    );
    assert_ne!(c.pid(), pid);
    assert_eq!(c.server(), server, "same address after restart");
    let v = kubectl_ok(
        &c,
        &[
            "get",
            "configmap",
            "cm",
            "-n",
            "kept",
            "-o",
            "jsonpath={.data.k}",
        ],
    );
    assert_eq!(v, "v1");
    let (_, jwks_after) = https_get(&c, "/openid/v1/jwks", None);
    assert_eq!(jwks_before, jwks_after, "same signing key after restart");
    verify(&c, &jwt, &jwks_after, "canopy-issuer").unwrap_or_else(|e| panic!("{e}"));
    // The token issued before the restart still authenticates (403, not 401: no RBAC).
    let (status, body) = https_get(&c, "/api/v1/namespaces/kept/secrets", Some(&api_jwt));
    assert_eq!(status, 403, "old SA token after restart: {body}");
    assert!(body.contains("system:serviceaccount:kept:sa"), "{body}");

    c.stop();
    assert_eq!(c.pid(), None);
    assert!(!c.dir().join("ready.json").exists());
}
