//! canopy's service-account JWT authentication against real Kubernetes: tokens from the
//! TokenRequest API of two real kube-apiservers, verified by canopy-issuer against each
//! cluster's own `/openid/v1/jwks` and issuer. A pod's token gets its own SPIFFE ID;
//! a token for another audience, a token of the other cluster presented as this one's,
//! and a request for another service account's identity are refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use canopy_testsupport::certmanager::wait_until;
use canopy_testsupport::cluster::TestCluster;
use canopy_testsupport::{openssl_verify, pki, run, run_ok};
use serde_json::{json, Value};

const TD: &str = "mesh.example";

/// POST /v1/sign with `token` (curl, trusting only the root); (status, body).
fn sign(port: u16, root: &Path, token: &str, body: &Value) -> (u16, Value) {
    let out = run_ok(
        Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(root)
            .args(["-H", "content-type: application/json", "-H"])
            .arg(format!("authorization: Bearer {token}"))
            .arg("--data-binary")
            .arg(body.to_string())
            .arg(format!("https://127.0.0.1:{port}/v1/sign")),
    );
    let (text, code) = out.trim_end().rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(text).unwrap_or(Value::Null),
    )
}

#[test]
fn service_account_tokens_of_real_clusters_get_their_own_identity_only() {
    let (aws, azure) = std::thread::scope(|s| {
        let a = s.spawn(|| TestCluster::start("aws"));
        let z = s.spawn(|| TestCluster::start("azure"));
        (a.join().unwrap(), z.join().unwrap())
    });
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let pki = pki::make(work, TD, &["aws", "azure"]);
    let port = canopy_testsupport::free_port();
    let mut yaml = pki.config_head(TD, work);
    yaml.push_str(&format!(
        "listen: {{ address: \"127.0.0.1:{port}\", server_ips: [\"127.0.0.1\"], intermediate: aws }}\nclusters:\n"
    ));
    for c in [&aws, &azure] {
        // The JWKS the cluster publishes, as an operator saves it for canopy.
        let jwks = run_ok(c.kubectl().args(["get", "--raw", "/openid/v1/jwks"]));
        let file = work.join(format!("{}-jwks.json", c.name()));
        std::fs::write(&file, jwks).unwrap();
        yaml.push_str(&format!(
            "  - name: {n}\n    intermediate: {n}\n    jwt: {{ audiences: [canopy-issuer], issuer: \"{}\", jwks_file: {} }}\n",
            c.issuer(),
            file.display(),
            n = c.name()
        ));
        run_ok(c.kubectl().args(["create", "namespace", "shop"]));
        for sa in ["web", "db"] {
            run_ok(
                c.kubectl()
                    .args(["-n", "shop", "create", "serviceaccount", sa]),
            );
        }
    }
    yaml.push_str(&format!(
        "policies:\n  - name: workloads\n    identities: [\"spiffe://{TD}/ns/*/sa/*\"]\n    spiffe_ids: [\"{{self}}\"]\n    max_ttl: 1h\n"
    ));
    let config = work.join("issuer.yaml");
    std::fs::write(&config, yaml).unwrap();
    let _issuer = canopy_testsupport::Serving::start(&config, &work.join("issuer.log"));
    wait_until("the issuer answers", Duration::from_secs(30), || {
        let o = run(Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&pki.root_cert)
            .arg(format!("https://127.0.0.1:{port}/healthz")));
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    });

    let id = |sa: &str| format!("spiffe://{TD}/ns/shop/sa/{sa}");
    let csr_of = |name: &str, spiffe: &str| {
        let (key, csr) = (
            work.join(format!("{name}.key")),
            work.join(format!("{name}.csr")),
        );
        canopy_testsupport::openssl_p256_csr(&key, &csr, "/", Some(&format!("URI:{spiffe}")));
        std::fs::read_to_string(csr).unwrap()
    };
    for c in [&aws, &azure] {
        // A projected token of shop/web, for canopy's audience: its own identity.
        let token = c.service_account_token("shop", "web", "canopy-issuer", 600);
        let (status, body) = sign(
            port,
            &pki.root_cert,
            &token,
            &json!({"csr": csr_of("web", &id("web")), "ttl": "30m"}),
        );
        assert_eq!(status, 200, "{}: {body}", c.name());
        let leaf = work.join(format!("{}-web.pem", c.name()));
        std::fs::write(&leaf, body["chain"].as_str().unwrap()).unwrap();
        let o = openssl_verify(&pki.root_cert, Some(&leaf), &leaf);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        let text = run_ok(
            canopy_testsupport::openssl()
                .args(["x509", "-noout", "-issuer", "-ext", "subjectAltName", "-in"])
                .arg(&leaf),
        );
        assert!(
            text.contains(&id("web")) && text.contains(&format!("CN = {}", c.name())),
            "{text}"
        );

        // The same token asking for shop/db's identity.
        let (status, body) = sign(
            port,
            &pki.root_cert,
            &token,
            &json!({"csr": csr_of("db", &id("db"))}),
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("spiffe_id_not_allowed")),
            "{body}"
        );
        // A token for the API server's own audience.
        let other_aud = c.service_account_token("shop", "web", c.issuer(), 600);
        let (status, body) = sign(
            port,
            &pki.root_cert,
            &other_aud,
            &json!({"csr": csr_of("web", &id("web"))}),
        );
        assert_eq!(status, 401, "{body}");
    }
    // An azure token whose `iss` is rewritten to aws's cannot be: the signature is
    // azure's key, and aws's JWKS does not verify it; nor does azure's own token verify
    // against aws's keys, whatever canopy is told.
    let token = azure.service_account_token("shop", "web", "canopy-issuer", 600);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    claims["iss"] = json!(aws.issuer());
    parts[1] = b64.encode(claims.to_string());
    let (status, body) = sign(
        port,
        &pki.root_cert,
        &parts.join("."),
        &json!({"csr": csr_of("web", &id("web"))}),
    );
    assert_eq!(status, 401, "{body}");
}
