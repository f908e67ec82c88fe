//! The attacks of issue 17, each tried against the real binary as an attacker would,
//! each named after the attack. On the code before identity binding every one of
//! them got a certificate (or an identity); now each is refused with a clear error
//! and nothing is issued. The rule: shared/contracts/authorization.md.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use canopy::ca::CertificateAuthority;
use canopy::cert::Certificate;
use canopy::constraints::NameConstraints;
use canopy::key::{KeyPair, KeyType, Passphrase};
use canopy::profile::{CaProfile, CaRequest, LeafProfile, LeafRequest};
use canopy::ttl::Ttl;
use serde_json::json;

/// The issuer's own serving name (its listener certificate carries it).
const ISSUER_NAME: &str = "canopy-issuer.canopy.svc.cluster.local";
const ISS: &str = "https://kubernetes.default.svc";

struct Env {
    dir: tempfile::TempDir,
    server: Server,
    client: Client,
    root: String,
    ops: String,
    narrow: String,
    aws_jwt: JwtKey,
    azure_jwt: JwtKey,
    config: String,
}

fn write_config(dir: &Path, aws: &JwtKey, azure: &JwtKey) -> String {
    let path = dir.join("attacks.yaml");
    let text = format!(
        r#"trust_domain: {TD}
listen:
  address: "127.0.0.1:0"
  server_names: [{ISSUER_NAME}, localhost]
  server_ips: [127.0.0.1]
storage: {{ url: "sqlite:{db}" }}
roots: [root.pem]
intermediates:
  - {{ name: aws, cert: aws.pem, key: aws-key.pem, passphrase_file: passphrase }}
  - {{ name: azure, cert: azure.pem, key: azure-key.pem, passphrase_file: passphrase }}
default_intermediate: aws
clusters:
  - name: aws
    intermediate: aws
    jwt: {{ audiences: [canopy-issuer], issuer: "{ISS}", jwks: {aws_jwks} }}
  - name: azure
    intermediate: azure
    jwt: {{ audiences: [canopy-issuer], issuer: "{ISS}", jwks: {azure_jwks} }}
policies:
  # An operator's token: anything in the trust domain, cluster DNS names.
  - name: ops
    spiffe_ids: ["spiffe://{TD}/**"]
    dns_names: ["*.*.svc.cluster.local"]
    profiles: [workload, server]
    revoke: true
    list: true
  # A token without DNS rights.
  - name: narrow
    spiffe_ids: ["spiffe://{TD}/ns/narrow/sa/*"]
  # Pods (service-account JWTs) and mTLS renewals: their own identity, and the
  # service names of their namespace; `*.*.svc.cluster.local` is what a hand-written
  # policy says, and before identity binding it granted every namespace's names.
  - name: workloads
    identities: ["spiffe://{TD}/ns/*/sa/*"]
    spiffe_ids: ["{{self}}"]
    dns_names: ["*.{{namespace}}.svc.cluster.local", "*.*.svc.cluster.local"]
    max_ttl: 2h
"#,
        db = dir.join("attacks.db").display(),
        aws_jwks = aws.jwks,
        azure_jwks = azure.jwks,
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn token(config: &str, policy: &str) -> String {
    let (ok, out, err) = run_bin(&["token", "create", "--policy", policy, "--config", config]);
    assert!(ok, "token create: {out}{err}");
    out.trim().to_string()
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    dev_material(dir.path());
    let aws_jwt = JwtKey::new("aws");
    let azure_jwt = JwtKey::new("azure");
    let config = write_config(dir.path(), &aws_jwt, &azure_jwt);
    let ops = token(&config, "ops");
    let narrow = token(&config, "narrow");
    let server = Server::start(&["serve", "--config", &config], dir.path());
    let root = std::fs::read_to_string(dir.path().join("root.pem")).unwrap();
    let client = Client::new(server.addr, &root, None);
    Env {
        dir,
        server,
        client,
        root,
        ops,
        narrow,
        aws_jwt,
        azure_jwt,
        config,
    }
}

fn id(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

impl Env {
    fn sign(
        &self,
        client: &Client,
        auth: Option<&str>,
        csr: &str,
        extra: serde_json::Value,
    ) -> Response {
        let mut body = json!({"csr": csr});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        client.post_json("/v1/sign", auth, &body)
    }

    fn pod_token(&self, cluster: &str, ns: &str, sa: &str) -> String {
        let key = if cluster == "aws" {
            &self.aws_jwt
        } else {
            &self.azure_jwt
        };
        key.token(cluster, "canopy-issuer", ns, sa, 600)
    }

    /// How many certificates the issuer has recorded.
    fn recorded(&self) -> usize {
        let r = self.client.get(
            "/v1/certificates?limit=500",
            &[("Authorization", &bearer(&self.ops))],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().unwrap().len()
    }

    /// A certificate for `spiffe` signed with `token`: (chain PEM, key PEM, serial).
    fn issue(&self, token: &str, spiffe: &str, dns: &[&str]) -> (String, String, String) {
        let c = csr(Some(spiffe), dns);
        let r = self.sign(&self.client, Some(token), &c.pem, json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (
            j["chain"].as_str().unwrap().to_string(),
            c.key_pem,
            j["serial"].as_str().unwrap().to_string(),
        )
    }

    fn mtls(&self, chain: &str, key: &str) -> Client {
        Client::new(self.server.addr, &self.root, Some((chain, key)))
    }

    /// The dev `aws` intermediate as a CA, loaded from its encrypted key file: what an
    /// attacker who stole it, or istiod's mesh CA key, would hold.
    fn aws_ca(&self) -> CertificateAuthority {
        let dir = self.dir.path();
        let pass = Passphrase::from_file(&dir.join("passphrase")).unwrap();
        let key = KeyPair::from_pem_with(
            &std::fs::read_to_string(dir.join("aws-key.pem")).unwrap(),
            Some(&pass),
        )
        .unwrap();
        let cert =
            Certificate::from_pem(&std::fs::read_to_string(dir.join("aws.pem")).unwrap()).unwrap();
        CertificateAuthority::new(cert, vec![], Arc::new(key)).unwrap()
    }

    /// A workload leaf for `spiffe` signed by the aws intermediate at `signed_at` (not
    /// recorded: see [`record`]).
    fn aws_leaf(
        &self,
        spiffe: &str,
        ttl: Ttl,
        signed_at: time::OffsetDateTime,
    ) -> (canopy::ca::IssuedCertificate, KeyPair) {
        self.aws_ca()
            .issue_with_new_key(
                &LeafRequest {
                    spiffe_id: Some(spiffe.parse().unwrap()),
                    trust_domain: Some(TD.parse().unwrap()),
                    ttl: Some(ttl),
                    ..LeafRequest::new(LeafProfile::Workload)
                },
                KeyType::EcdsaP256,
                signed_at,
            )
            .unwrap()
    }

    /// A leaf for `spiffe` minted with the key of a mesh CA under the aws intermediate (as
    /// `cacerts` holds it, unencrypted): (chain PEM, key PEM).
    fn mesh_ca_leaf(&self, constraints: Option<NameConstraints>, spiffe: &str) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let (mesh, mesh_key) = self
            .aws_ca()
            .issue_with_new_key(
                &CaRequest {
                    trust_domain: Some(TD.parse().unwrap()),
                    ttl: Some(Ttl::days(30)),
                    clamp_to_issuer: true,
                    name_constraints: constraints,
                    ..CaRequest::new(CaProfile::MeshCa, "aws mesh CA")
                },
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        let mesh_ca = CertificateAuthority::new(
            mesh.certificate.clone(),
            mesh.chain[1..].to_vec(),
            Arc::new(mesh_key),
        )
        .unwrap();
        let (leaf, leaf_key) = mesh_ca
            .issue_with_new_key(
                &LeafRequest {
                    spiffe_id: Some(spiffe.parse().unwrap()),
                    trust_domain: Some(TD.parse().unwrap()),
                    ttl: Some(Ttl::hours(1)),
                    clamp_to_issuer: true,
                    ..LeafRequest::new(LeafProfile::Workload)
                },
                KeyType::EcdsaP256,
                now,
            )
            .unwrap();
        (
            Certificate::pem_of(&leaf.chain),
            leaf_key.to_unencrypted_pem().to_string(),
        )
    }
}

fn refused(r: &Response, status: u16, code: &str, mentions: &str) {
    assert_eq!(r.status, status, "expected {status} {code}: {}", r.text());
    let j = r.json();
    assert_eq!(j["code"], code, "{j}");
    let message = j["message"].as_str().unwrap();
    assert!(
        message.contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
}

#[test]
fn pod_token_gets_other_namespaces_dns_names() {
    let env = env();
    let jwt = env.pod_token("aws", "shop", "web");
    let own = id("/ns/shop/sa/web");
    let before = env.recorded();
    for (name, code) in [
        (
            "api.payments.svc.cluster.local",
            "dns_name_outside_namespace",
        ),
        ("*.payments.svc.cluster.local", "wildcard_not_allowed"),
        ("*.shop.svc.cluster.local", "wildcard_not_allowed"),
        (ISSUER_NAME, "reserved_name"),
        ("localhost", "reserved_name"),
    ] {
        let c = csr(Some(&own), &[name]);
        let r = env.sign(&env.client, Some(&jwt), &c.pem, json!({}));
        refused(&r, 403, code, name.trim_start_matches("*."));
    }
    assert_eq!(env.recorded(), before, "nothing issued");
    // Its own namespace's names it gets.
    let c = csr(Some(&own), &["web.shop.svc.cluster.local"]);
    let r = env.sign(&env.client, Some(&jwt), &c.pem, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    // So does an operator's token, for any namespace, but never the issuer's name.
    let c = csr(Some(&own), &["api.payments.svc.cluster.local"]);
    assert_eq!(
        env.sign(&env.client, Some(&env.ops), &c.pem, json!({}))
            .status,
        200
    );
    let c = csr(None, &[ISSUER_NAME]);
    let r = env.sign(
        &env.client,
        Some(&env.ops),
        &c.pem,
        json!({"profile": "server"}),
    );
    refused(&r, 403, "reserved_name", ISSUER_NAME);
}

#[test]
fn stolen_mesh_ca_key_mints_identities_over_mtls() {
    let env = env();
    // A mesh CA under the aws intermediate, as `cacerts` holds it (key unencrypted), and
    // a workload identity the attacker mints with its stolen key.
    let stolen_leaf = |constraints: Option<NameConstraints>| {
        let (chain, key) = env.mesh_ca_leaf(constraints, &id("/ns/istio-system/sa/istiod"));
        env.mtls(&chain, &key)
    };
    let before = env.recorded();
    let c = csr(Some(&id("/ns/istio-system/sa/istiod")), &[]);

    // Under a default mesh CA (URI constraint), rustls refuses the chain in the handshake.
    let mtls = stolen_leaf(None);
    let body = serde_json::to_vec(&json!({"csr": c.pem})).unwrap();
    let err = mtls
        .try_request(
            "POST",
            "/v1/sign",
            &[("content-type", "application/json")],
            Some(&body),
        )
        .map(|r| r.status)
        .expect_err("a mesh CA leaf completes no handshake");
    assert!(err.to_string().contains("CertificateUnknown"), "{err}");

    // With DNS constraints only (`mesh_ca_uri_constraint: false`) the handshake passes;
    // the issuer itself refuses any leaf its intermediates did not sign directly.
    let mtls = stolen_leaf(Some(NameConstraints {
        permitted_uri_hosts: vec![],
        permitted_dns: NameConstraints::istiod_dns("istio-system"),
    }));
    let r = env.sign(&mtls, None, &c.pem, json!({}));
    refused(
        &r,
        401,
        "bad_client_certificate",
        "not issued by one of this issuer's intermediates",
    );
    // Not even the serverAuth name of the issuer through it.
    let c = csr(None, &[ISSUER_NAME]);
    let r = env.sign(&mtls, None, &c.pem, json!({"profile": "server"}));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(env.recorded(), before, "nothing issued");
}

#[test]
fn leaf_signed_with_the_intermediate_key_but_never_recorded_is_no_identity() {
    let env = env();
    let (leaf, key) = env
        .aws_ca()
        .issue_with_new_key(
            &LeafRequest {
                spiffe_id: Some(id("/ns/shop/sa/web").parse().unwrap()),
                trust_domain: Some(TD.parse().unwrap()),
                ttl: Some(Ttl::hours(1)),
                ..LeafRequest::new(LeafProfile::Workload)
            },
            KeyType::EcdsaP256,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let mtls = env.mtls(&Certificate::pem_of(&leaf.chain), &key.to_unencrypted_pem());
    let r = env.sign(
        &mtls,
        None,
        &csr(Some(&id("/ns/shop/sa/web")), &[]).pem,
        json!({}),
    );
    refused(
        &r,
        401,
        "bad_client_certificate",
        "not in this issuer's records",
    );
}

#[test]
fn token_without_dns_rights_hops_into_wider_policy_over_mtls() {
    let env = env();
    let app = id("/ns/narrow/sa/app");
    // The narrow token gets its SPIFFE ID, and no DNS name.
    let c = csr(Some(&app), &["app.narrow.svc.cluster.local"]);
    let r = env.sign(&env.client, Some(&env.narrow), &c.pem, json!({}));
    refused(
        &r,
        403,
        "dns_name_not_allowed",
        "app.narrow.svc.cluster.local",
    );
    let (chain, key, _) = env.issue(&env.narrow, &app, &[]);
    // Presented over mTLS it matches the `workloads` policy, which has DNS names.
    let mtls = env.mtls(&chain, &key);
    let before = env.recorded();
    let r = env.sign(&mtls, None, &c.pem, json!({}));
    refused(&r, 403, "renewal_widens", "app.narrow.svc.cluster.local");
    // A longer lifetime than the token's policy allowed is not the hop either: the
    // renewal of the same names is what mTLS is for.
    let r = env.sign(&mtls, None, &csr(Some(&app), &[]).pem, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.recorded(), before + 1);
}

#[test]
fn expired_client_certificate_still_authenticates_on_a_resumed_tls13_session() {
    let env = env();
    // A certificate of ours that expires in a few seconds: signed by the aws
    // intermediate and recorded, as the issuer does (the minimum lifetime is 10
    // minutes, so it is signed "10 minutes ago").
    let ttl = Ttl::minutes(10);
    let now = time::OffsetDateTime::now_utc();
    let signed_at = now - ttl.as_duration() + time::Duration::seconds(4);
    let web = id("/ns/shop/sa/web");
    let (leaf, key) = env.aws_leaf(&web, ttl, signed_at);
    let cert = &leaf.certificate;
    record(&env, cert);
    let mtls = env.mtls(&Certificate::pem_of(&leaf.chain), &key.to_unencrypted_pem());
    let path = format!("/v1/certificates/{}", cert.serial());
    let r = mtls.get(&path, &[]);
    assert_eq!(r.status, 200, "valid now: {}", r.text());
    // Wait past notAfter; the client resumes its TLS 1.3 session (same config, same
    // session cache), so no new handshake verifies the certificate.
    let wait = cert.not_after() - time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    std::thread::sleep(wait.unsigned_abs());
    let r = mtls.get(&path, &[]);
    refused(&r, 401, "bad_client_certificate", "not valid now");
}

/// Records `cert` in the issuer's database as the issuer would.
fn record(env: &Env, cert: &Certificate) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", env.dir.path().join("attacks.db").display());
        let store = canopy_issuer::store::Store::connect(&url, 1).await.unwrap();
        let record = canopy_issuer::store::CertificateRecord {
            spiffe_id: cert.spiffe_id().map(|i| i.to_string()),
            ..canopy_issuer::store::CertificateRecord::new(
                cert,
                "aws",
                "workload",
                "test",
                "internal",
                cert.not_before().unix_timestamp(),
            )
        };
        let event = canopy_issuer::audit::AuditEvent::new(
            0,
            "test",
            "sign",
            cert.serial().to_string(),
            canopy_issuer::audit::Outcome::Ok,
            json!({}),
        );
        store
            .commit([canopy_issuer::store::Write::Issued(Box::new(record), event)])
            .await
            .unwrap();
        store.close().await;
    });
}

#[test]
fn certificate_renewed_from_a_revoked_one_keeps_renewing() {
    let env = env();
    let web = id("/ns/shop/sa/web");
    let (chain_a, key_a, serial_a) = env.issue(&env.ops, &web, &[]);
    // Renewed over mTLS with A before A is revoked: B.
    let c = csr(Some(&web), &[]);
    let r = env.sign(&env.mtls(&chain_a, &key_a), None, &c.pem, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let chain_b = r.json()["chain"].as_str().unwrap().to_string();
    // The operator revokes A and denies the identity's renewal.
    let r = env.client.post_json(
        "/v1/revoke",
        Some(&env.ops),
        &json!({"serial": serial_a, "reason": "key-compromise", "deny_renewal": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let before = env.recorded();
    let again = csr(Some(&web), &[]);
    let r = env.sign(&env.mtls(&chain_b, &c.key_pem), None, &again.pem, json!({}));
    refused(&r, 401, "bad_client_certificate", "deny list");
    let r = env.sign(&env.client, Some(&env.ops), &again.pem, json!({}));
    refused(&r, 403, "identity_denied", "deny list");
    let jwt = env.pod_token("aws", "shop", "web");
    let r = env.sign(&env.client, Some(&jwt), &again.pem, json!({}));
    refused(&r, 403, "identity_denied", "deny list");
    assert_eq!(env.recorded(), before, "nothing issued");
    // The operator lifts it: issuing works again.
    let (ok, out, err) = run_bin(&["deny", "remove", &web, "--config", &env.config]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        env.sign(&env.client, Some(&jwt), &again.pem, json!({}))
            .status,
        200
    );
}

#[test]
fn dns_only_certificates_and_the_listener_certificate_cannot_be_revoked() {
    let env = env();
    let c = csr(None, &["api.payments.svc.cluster.local"]);
    let r = env.sign(
        &env.client,
        Some(&env.ops),
        &c.pem,
        json!({"profile": "server"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let dns_only = r.json()["serial"].as_str().unwrap().to_string();
    let r = env.client.post_json(
        "/v1/revoke",
        Some(&env.ops),
        &json!({"serial": dns_only, "reason": "superseded"}),
    );
    assert_eq!(
        r.status,
        200,
        "operator revokes a DNS-only certificate: {}",
        r.text()
    );
    // The listener's own certificate, by serial, from the command line.
    let list = env
        .client
        .get(
            "/v1/certificates?limit=500",
            &[("Authorization", &bearer(&env.ops))],
        )
        .json();
    let listener = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["requester"] == "canopy-issuer")
        .expect("the listener certificate is recorded")["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = run_bin(&[
        "revoke",
        &listener,
        "--reason",
        "superseded",
        "--config",
        &env.config,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("revoked"), "{out}");
    // Both are on the aws CRL, which canopy signs again only when revocations change.
    let crl = |env: &Env| {
        env.client
            .get("/v1/crl/aws", &[("Accept", "application/x-pem-file")])
            .text()
    };
    let first = crl(&env);
    assert_eq!(
        crl(&env),
        first,
        "the cached CRL is served while nothing changed"
    );
    std::fs::write(env.dir.path().join("aws.crl"), &first).unwrap();
    let (ok, text) = openssl(
        env.dir.path(),
        &["crl", "-in", "aws.crl", "-noout", "-text"],
    );
    assert!(ok, "{text}");
    for serial in [&dns_only, &listener] {
        assert!(
            text.to_lowercase().contains(&serial.to_lowercase()),
            "{serial} missing from the CRL:\n{text}"
        );
    }
    // A workload may not revoke somebody else's DNS-only certificate.
    let jwt = env.pod_token("aws", "shop", "web");
    let r = env
        .client
        .post_json("/v1/revoke", Some(&jwt), &json!({"serial": dns_only}));
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn mtls_requester_of_azure_renews_from_the_aws_intermediate() {
    let env = env();
    let web = id("/ns/shop/sa/web");
    let jwt = env.pod_token("azure", "shop", "web");
    let c = csr(Some(&web), &[]);
    let r = env.sign(&env.client, Some(&jwt), &c.pem, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["intermediate"], "azure");
    let chain = r.json()["chain"].as_str().unwrap().to_string();
    let mtls = env.mtls(&chain, &c.key_pem);
    let renew = csr(Some(&web), &[]);
    let r = env.sign(&mtls, None, &renew.pem, json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["intermediate"],
        "azure",
        "renewed by its own cluster's intermediate"
    );
    let r = env.sign(&mtls, None, &renew.pem, json!({"intermediate": "aws"}));
    refused(&r, 403, "intermediate_not_allowed", "aws");
    let r = env.sign(
        &env.client,
        Some(&jwt),
        &renew.pem,
        json!({"intermediate": "aws"}),
    );
    refused(&r, 403, "intermediate_not_allowed", "aws");
}

#[test]
fn root_crl_revoking_an_intermediate_is_honoured_by_the_mtls_verifier() {
    let env = env();
    let web = id("/ns/shop/sa/web");
    let (chain, key, _) = env.issue(&env.ops, &web, &[]);
    // The root revokes the aws intermediate; its CRL goes into the config.
    let dir = env.dir.path();
    let pass = Passphrase::from_file(&dir.join("passphrase")).unwrap();
    let root_key = KeyPair::from_pem_with(
        &std::fs::read_to_string(dir.join("root-key.pem")).unwrap(),
        Some(&pass),
    )
    .unwrap();
    let root_cert = Certificate::from_pem(&env.root).unwrap();
    let root = CertificateAuthority::new(root_cert, vec![], Arc::new(root_key)).unwrap();
    let aws =
        Certificate::from_pem(&std::fs::read_to_string(dir.join("aws.pem")).unwrap()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let crl = root
        .sign_crl(
            &[canopy::crl::RevokedEntry {
                serial: aws.serial().clone(),
                revoked_at: now,
                reason: canopy::crl::RevocationReason::CaCompromise,
            }],
            1,
            now - time::Duration::minutes(1),
            now + time::Duration::days(1),
        )
        .unwrap();
    std::fs::write(dir.join("root.crl"), crl.to_pem()).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap() + "crls: [root.crl]\n";
    std::fs::write(&env.config, text).unwrap();
    drop(env.server);
    let server = Server::start(&["serve", "--config", &env.config], dir);
    let mtls = Client::new(server.addr, &env.root, Some((&chain, &key)));
    let c = csr(Some(&web), &[]);
    match mtls.try_request(
        "POST",
        "/v1/sign",
        &[("Content-Type", "application/json")],
        Some(json!({"csr": c.pem}).to_string().as_bytes()),
    ) {
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("revoked") || e.to_string().contains("alert"),
            "{e}"
        ),
        Ok(r) => panic!(
            "a leaf under a revoked intermediate was served: {} {}",
            r.status,
            r.text()
        ),
    }
}

/// One row of [`mtls_requesters_as_a_table`]: what is asked (name, SPIFFE ID path, DNS
/// names, intermediate), then the expected (status, error code) per presented certificate.
type Row = (
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    Option<&'static str>,
    [(u16, &'static str); 5],
);

/// mTLS requesters as one table (authorization.md): who presents which certificate ×
/// what it asks for → the answer. A renewal gets the presented certificate's names at
/// most, from the intermediate that issued it; a certificate canopy did not issue, one
/// no longer valid, or one revoked is no identity at all. Every refusal issues nothing.
#[test]
fn mtls_requesters_as_a_table() {
    let env = env();
    let web = id("/ns/shop/sa/web");
    let pod = |cluster: &str| {
        let c = csr(Some(&web), &[]);
        let jwt = env.pod_token(cluster, "shop", "web");
        let r = env.sign(&env.client, Some(&jwt), &c.pem, json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["intermediate"], cluster);
        (
            j["chain"].as_str().unwrap().to_string(),
            c.key_pem,
            j["serial"].as_str().unwrap().to_string(),
        )
    };
    let (aws_chain, aws_key, _) = pod("aws");
    let (azure_chain, azure_key, _) = pod("azure");
    let (revoked_chain, revoked_key, revoked_serial) = pod("aws");
    let r = env.client.post_json(
        "/v1/revoke",
        Some(&env.ops),
        &json!({"serial": revoked_serial, "reason": "key-compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Issued by the aws intermediate and recorded, but its notAfter has passed.
    let ttl = Ttl::minutes(10);
    let (expired, expired_key) = env.aws_leaf(
        &web,
        ttl,
        time::OffsetDateTime::now_utc() - ttl.as_duration() - time::Duration::minutes(1),
    );
    record(&env, &expired.certificate);
    // A mesh CA under aws with DNS constraints only (`mesh_ca_uri_constraint: false`), so
    // the handshake passes and the issuer itself must refuse its leaf.
    let (mesh_chain, mesh_key) = env.mesh_ca_leaf(
        Some(NameConstraints {
            permitted_uri_hosts: vec![],
            permitted_dns: NameConstraints::istiod_dns("istio-system"),
        }),
        &web,
    );
    let columns = [
        ("aws leaf", env.mtls(&aws_chain, &aws_key)),
        ("azure leaf", env.mtls(&azure_chain, &azure_key)),
        ("mesh-CA leaf", env.mtls(&mesh_chain, &mesh_key)),
        (
            "expired leaf",
            env.mtls(
                &Certificate::pem_of(&expired.chain),
                &expired_key.to_unencrypted_pem(),
            ),
        ),
        ("revoked leaf", env.mtls(&revoked_chain, &revoked_key)),
    ];
    // Status 0: the TLS handshake itself fails (rustls checks validity).
    const NO: (u16, &str) = (401, "bad_client_certificate");
    const HS: (u16, &str) = (0, "");
    const OK: (u16, &str) = (200, "");
    const WIDENS: (u16, &str) = (403, "renewal_widens");
    const INTER: (u16, &str) = (403, "intermediate_not_allowed");
    #[rustfmt::skip]
    let table: [Row; 6] = [
        //  ask                    SPIFFE ID            DNS names                              intermediate  aws     azure   mesh  expired revoked
        ("own id",               Some("/ns/shop/sa/web"), &[],                                   None,          [OK,     OK,     NO,   HS,     NO]),
        ("other id, same ns",    Some("/ns/shop/sa/api"), &[],                                   None,          [WIDENS, WIDENS, NO,   HS,     NO]),
        ("other namespace's id", Some("/ns/payments/sa/api"), &[],                               None,          [WIDENS, WIDENS, NO,   HS,     NO]),
        ("own id + a DNS name",  Some("/ns/shop/sa/web"), &["web.shop.svc.cluster.local"],       None,          [WIDENS, WIDENS, NO,   HS,     NO]),
        ("own id from aws",      Some("/ns/shop/sa/web"), &[],                                   Some("aws"),   [OK,     INTER,  NO,   HS,     NO]),
        ("own id from azure",    Some("/ns/shop/sa/web"), &[],                                   Some("azure"), [INTER,  OK,     NO,   HS,     NO]),
    ];
    let mut failures = Vec::new();
    let mut issued = 0;
    let before = env.recorded();
    for (ask, spiffe, dns, intermediate, expected) in table {
        let c = csr(spiffe.map(id).as_deref(), dns);
        let mut body = json!({"csr": c.pem});
        if let Some(i) = intermediate {
            body["intermediate"] = json!(i);
        }
        let body = serde_json::to_vec(&body).unwrap();
        for ((who, client), want) in columns.iter().zip(expected) {
            let got = match client.try_request(
                "POST",
                "/v1/sign",
                &[("content-type", "application/json")],
                Some(&body),
            ) {
                Ok(r) if r.status == 200 => (200, String::new()),
                Ok(r) => (
                    r.status,
                    r.json()["code"].as_str().unwrap_or("").to_string(),
                ),
                Err(_) => (0, String::new()),
            };
            if got.0 == 200 {
                issued += 1;
            }
            if (got.0, got.1.as_str()) != want {
                failures.push(format!("{who} × {ask}: expected {want:?}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(env.recorded(), before + issued, "refusals issue nothing");
}
