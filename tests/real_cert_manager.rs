//! The real cert-manager (controller and webhook from the github.com/cert-manager/cert-manager
//! module, tests/cluster/certmanager) against canopy's real control plane (tests/cluster):
//! issuance through SelfSigned and CA issuers checked with openssl, the webhook writing the
//! requester's identity into CertificateRequests and rejecting invalid resources, and the
//! built-in approver approving requests for canopy's `pki.canopy.dev` ClusterIssuer.

use std::time::{Duration, Instant};

use base64::Engine;
use canopy_testsupport::certmanager::{self, output_with_stdin, wait_until, CertManager};
use canopy_testsupport::cluster::{ClusterOptions, TestCluster};
use canopy_testsupport::{
    openssl, openssl_p256_csr, openssl_verify, run_ok, tempdir, workspace_root,
};
use serde_json::Value;

/// How long cert-manager may take to act on a resource.
const ACT_TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl_json(c: &TestCluster, args: &[&str]) -> Result<Value, String> {
    let out = c
        .kubectl()
        .args(args)
        .args(["-o", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The condition of `type` in `obj.status.conditions`, if any.
fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Waits until `kind/name` in `ns` has condition `cond` with status True; returns it.
fn wait_condition(
    c: &TestCluster,
    cm: &CertManager,
    kind: &str,
    ns: &str,
    name: &str,
    cond: &str,
) -> Value {
    let start = Instant::now();
    loop {
        let obj = kubectl_json(c, &["get", kind, name, "-n", ns]);
        if let Ok(obj) = &obj {
            if condition(obj, cond).is_some_and(|c| c["status"] == "True") {
                return obj.clone();
            }
        }
        if start.elapsed() > ACT_TIMEOUT {
            panic!(
                "{kind} {ns}/{name} not {cond} within {ACT_TIMEOUT:?}: {}\n{}",
                obj.map(|o| o["status"].to_string()).unwrap_or_else(|e| e),
                cm.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn secret_field(c: &TestCluster, ns: &str, name: &str, key: &str) -> Vec<u8> {
    let secret =
        kubectl_json(c, &["get", "secret", name, "-n", ns]).unwrap_or_else(|e| panic!("{e}"));
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("secret {ns}/{name} has no {key}: {}", secret["data"]));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("secret data is base64")
}

/// A CertificateRequest for `issuer_ref` (YAML flow mapping) with a fresh P-256 CSR.
fn certificate_request(name: &str, issuer_ref: &str, extra_spec: &str) -> String {
    let dir = tempdir();
    let (key, csr) = (dir.path().join("key.pem"), dir.path().join("csr.pem"));
    openssl_p256_csr(
        &key,
        &csr,
        "/CN=web",
        Some("URI:spiffe://mesh.example/ns/default/sa/web"),
    );
    let request = certmanager::base64(&std::fs::read(&csr).unwrap());
    format!(
        r#"apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: {name}
  namespace: default
spec:
  request: {request}
  duration: 1h
  usages: ["digital signature", "client auth", "server auth"]
  issuerRef: {issuer_ref}
{extra_spec}"#
    )
}

/// `kubectl create -f -` (as admin, or with `token`): Ok(stdout) or Err(stderr).
fn create(c: &TestCluster, token: Option<&str>, yaml: &str) -> Result<String, String> {
    let mut cmd = match token {
        Some(t) => c.kubectl_with_token(t),
        None => c.kubectl(),
    };
    cmd.args(["create", "-o", "name", "-f", "-"]);
    let out = output_with_stdin(&mut cmd, yaml);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn selfsigned_and_ca_issuers_issue_a_spiffe_certificate() {
    let c = TestCluster::start("cm-issue");
    let cm = CertManager::start(&c);
    eprintln!(
        "cluster ready in {:.1?}, cert-manager {} in {:.1?}",
        c.startup_time(),
        cm.version(),
        cm.startup_time()
    );
    c.apply(
        r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: selfsigned
spec:
  selfSigned: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: mesh-root
  namespace: default
spec:
  isCA: true
  commonName: canopy test mesh root
  secretName: mesh-root
  duration: 24h
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: selfsigned, kind: ClusterIssuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: mesh-ca
  namespace: default
spec:
  ca:
    secretName: mesh-root
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: web
  namespace: default
spec:
  secretName: web-tls
  duration: 1h
  uris: ["spiffe://mesh.example/ns/default/sa/web"]
  usages: ["digital signature", "server auth", "client auth"]
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: mesh-ca, kind: Issuer}
"#,
    );
    let issuer_ready = wait_condition(&c, &cm, "clusterissuer", "default", "selfsigned", "Ready");
    assert_eq!(
        condition(&issuer_ready, "Ready").unwrap()["reason"],
        "IsReady"
    );
    wait_condition(&c, &cm, "certificate", "default", "mesh-root", "Ready");
    wait_condition(&c, &cm, "issuer", "default", "mesh-ca", "Ready");
    wait_condition(&c, &cm, "certificate", "default", "web", "Ready");
    // Ready comes a moment before cert-manager records the revision and drops Issuing.
    let web = canopy_testsupport::certmanager::wait_until(
        "the web Certificate at revision 1",
        Duration::from_secs(30),
        || {
            let web = kubectl_json(&c, &["get", "certificate", "web", "-n", "default"])?;
            if web["status"]["revision"] == 1 {
                Ok(web)
            } else {
                Err(web["status"].to_string())
            }
        },
    );
    assert!(condition(&web, "Issuing").is_none(), "{}", web["status"]);

    // The request the Certificate made was approved by cert-manager's approver.
    let crs = kubectl_json(&c, &["get", "certificaterequests", "-n", "default"]).unwrap();
    let web_cr = crs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cr| cr["spec"]["issuerRef"]["name"] == "mesh-ca")
        .unwrap_or_else(|| panic!("no CertificateRequest for mesh-ca: {crs}"));
    let approved = condition(web_cr, "Approved").expect("Approved condition");
    assert_eq!(approved["reason"], "cert-manager.io", "{approved}");
    // Made by the controller (admin kubeconfig): the webhook recorded that identity.
    assert_eq!(
        web_cr["spec"]["username"], "kubernetes-admin",
        "{}",
        web_cr["spec"]
    );

    let dir = tempdir();
    let (root, leaf, ca) = (
        dir.path().join("root.pem"),
        dir.path().join("leaf.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&root, secret_field(&c, "default", "mesh-root", "tls.crt")).unwrap();
    std::fs::write(&leaf, secret_field(&c, "default", "web-tls", "tls.crt")).unwrap();
    std::fs::write(&ca, secret_field(&c, "default", "web-tls", "ca.crt")).unwrap();
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(&root).unwrap(),
        "web-tls ca.crt is the mesh root"
    );
    let out = openssl_verify(&root, None, &leaf);
    assert!(
        out.status.success(),
        "openssl verify of web-tls against mesh-root: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The leaf: the SPIFFE URI as its only name, not a CA, valid for 1h.
    let text = run_ok(
        openssl()
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&leaf),
    );
    assert!(
        text.contains("URI:spiffe://mesh.example/ns/default/sa/web"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    let pem = std::fs::read(&leaf).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("leaf PEM");
    let cert = pem.parse_x509().expect("leaf DER");
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600, "leaf lifetime");
    let root_pem = std::fs::read(&root).unwrap();
    let (_, root_pem) = x509_parser::pem::parse_x509_pem(&root_pem).unwrap();
    let root_cert = root_pem.parse_x509().unwrap();
    assert_eq!(cert.issuer(), root_cert.subject());
    assert!(root_cert.is_ca());
}

#[test]
fn webhook_writes_the_requesters_identity_into_certificate_requests() {
    let c = TestCluster::start_with(
        "cm-identity",
        ClusterOptions::default().user("alice", &["mesh-devs", "payments"]),
    );
    let cm = CertManager::start(&c);
    run_ok(c.kubectl().args([
        "create",
        "role",
        "cr-creator",
        "--verb=create,get",
        "--resource=certificaterequests.cert-manager.io",
        "-n",
        "default",
    ]));
    run_ok(c.kubectl().args([
        "create",
        "rolebinding",
        "alice-creates-crs",
        "--role=cr-creator",
        "--user=alice",
        "-n",
        "default",
    ]));

    // A forged identity in the object: the webhook overwrites it with alice's.
    let forged = r#"  username: mallory
  uid: forged-uid
  groups: ["system:masters"]
  extra:
    forged: ["yes"]
"#;
    let yaml = certificate_request(
        "from-alice",
        "{name: canopy, kind: ClusterIssuer, group: pki.canopy.dev}",
        forged,
    );
    let token = c.token_for("alice").to_string();
    let created = wait_until("alice creates a CertificateRequest", ACT_TIMEOUT, || {
        create(&c, Some(&token), &yaml)
    });
    assert_eq!(
        created.trim(),
        "certificaterequest.cert-manager.io/from-alice"
    );

    let cr = kubectl_json(
        &c,
        &["get", "certificaterequest", "from-alice", "-n", "default"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let spec = &cr["spec"];
    assert_eq!(spec["username"], "alice", "{spec}");
    assert_eq!(spec["uid"], "alice", "the token file's uid: {spec}");
    let mut groups: Vec<&str> = spec["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {spec}"))
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        ["mesh-devs", "payments", "system:authenticated"],
        "{spec}"
    );
    assert!(spec.get("extra").is_none(), "forged extra kept: {spec}");

    // Nobody may change it afterwards, not even admin.
    let out = c
        .kubectl()
        .args(["patch", "certificaterequest", "from-alice", "-n", "default"])
        .args(["--type=merge", "-p", r#"{"spec":{"username":"mallory"}}"#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "identity changed by a patch");
    assert!(
        err.contains("denied the request") && err.contains("spec.username"),
        "{err}"
    );

    // Admin's own request carries admin's identity (client certificate).
    let yaml = certificate_request(
        "from-admin",
        "{name: canopy, kind: ClusterIssuer, group: pki.canopy.dev}",
        "  username: alice\n",
    );
    create(&c, None, &yaml).unwrap_or_else(|e| panic!("{e}"));
    let cr = kubectl_json(
        &c,
        &["get", "certificaterequest", "from-admin", "-n", "default"],
    )
    .unwrap();
    assert_eq!(cr["spec"]["username"], "kubernetes-admin", "{}", cr["spec"]);
    let groups = cr["spec"]["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g == "system:masters"), "{groups:?}");
    drop(cm);
}

#[test]
fn webhook_rejects_invalid_resources_with_clear_messages() {
    let c = TestCluster::start("cm-validate");
    let cm = CertManager::start(&c);
    let denied = "admission webhook \"webhook.cert-manager.io\" denied the request";

    let no_names = r#"apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: no-names, namespace: default}
spec:
  secretName: no-names
  issuerRef: {name: selfsigned, kind: ClusterIssuer}
"#;
    let err = create(&c, None, no_names).expect_err("Certificate without names created");
    assert!(err.contains(denied), "{err}");
    assert!(
        err.contains("at least one of commonName") && err.contains("uriSANs must be set"),
        "{err}"
    );

    let short = r#"apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: short, namespace: default}
spec:
  secretName: short
  duration: 10m
  uris: ["spiffe://mesh.example/ns/default/sa/web"]
  issuerRef: {name: selfsigned, kind: ClusterIssuer}
"#;
    let err = create(&c, None, short).expect_err("Certificate of 10m created");
    assert!(err.contains(denied), "{err}");
    assert!(
        err.contains("spec.duration")
            && err.contains("certificate duration must be greater than 1h0m0s"),
        "{err}"
    );

    let renew_after_expiry = r#"apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: renew, namespace: default}
spec:
  secretName: renew
  duration: 1h
  renewBefore: 2h
  uris: ["spiffe://mesh.example/ns/default/sa/web"]
  issuerRef: {name: selfsigned, kind: ClusterIssuer}
"#;
    let err = create(&c, None, renew_after_expiry).expect_err("renewBefore > duration created");
    assert!(
        err.contains(denied) && err.contains("spec.renewBefore"),
        "{err}"
    );

    let bad_csr = r#"apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata: {name: bad-csr, namespace: default}
spec:
  request: bm90IGEgQ1NS
  issuerRef: {name: canopy, kind: ClusterIssuer, group: pki.canopy.dev}
"#;
    let err = create(&c, None, bad_csr).expect_err("CertificateRequest with a bad CSR created");
    assert!(
        err.contains(denied) && err.contains("spec.request"),
        "{err}"
    );

    // None of them exists; a valid Certificate is admitted.
    let out = run_ok(c.kubectl().args([
        "get",
        "certificates,certificaterequests",
        "-A",
        "-o",
        "name",
    ]));
    assert_eq!(out.trim(), "", "denied objects exist");
    let ok = short.replace("duration: 10m", "duration: 2h");
    create(&c, None, &ok).unwrap_or_else(|e| panic!("valid Certificate denied: {e}"));
    drop(cm);
}

#[test]
fn approver_approves_requests_for_canopy_cluster_issuers() {
    let c = TestCluster::start("cm-approve");
    let cm = CertManager::start(&c);
    // The webhook lets the approver set Approved only for a signer the apiserver serves.
    let crd = std::fs::read_to_string(
        workspace_root().join("charts/canopy-issuer/crds/pki.canopy.dev_clusterissuers.yaml"),
    )
    .expect("read canopy ClusterIssuer CRD");
    c.apply(&crd);
    run_ok(c.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusterissuers.pki.canopy.dev",
    ]));

    let canopy = certificate_request(
        "for-canopy",
        "{name: canopy, kind: ClusterIssuer, group: pki.canopy.dev}",
        "",
    );
    let unknown = certificate_request(
        "for-unknown-signer",
        "{name: other, kind: ClusterIssuer, group: pki.unknown.example}",
        "",
    );
    create(&c, None, &canopy).unwrap_or_else(|e| panic!("{e}"));
    create(&c, None, &unknown).unwrap_or_else(|e| panic!("{e}"));

    let cr = wait_condition(
        &c,
        &cm,
        "certificaterequest",
        "default",
        "for-canopy",
        "Approved",
    );
    let approved = condition(&cr, "Approved").unwrap();
    assert_eq!(approved["reason"], "cert-manager.io", "{approved}");
    assert_eq!(
        approved["message"], "Certificate request has been approved by cert-manager.io",
        "{approved}"
    );
    // Not signed (no canopy-issuer runs), not denied, not failed by cert-manager's own
    // issuers (they ignore other groups).
    for other in ["Ready", "Denied", "InvalidRequest"] {
        assert!(
            condition(&cr, other).is_none(),
            "{other} on for-canopy: {}",
            cr["status"]
        );
    }

    // For a signer that does not exist, the webhook refuses the approver's update.
    wait_until(
        "the webhook refuses approving an unknown signer",
        ACT_TIMEOUT,
        || {
            let log = cm.controller_log();
            if log.contains("referenced signer resource does not exist") {
                Ok(())
            } else {
                Err("not in controller.log yet".to_string())
            }
        },
    );
    let cr = kubectl_json(
        &c,
        &[
            "get",
            "certificaterequest",
            "for-unknown-signer",
            "-n",
            "default",
        ],
    )
    .unwrap();
    assert!(
        condition(&cr, "Approved").is_none(),
        "unknown signer approved: {}",
        cr["status"]
    );
}
