//! canopy as a signer of PodCertificateRequests (`certificates.k8s.io/v1`, GA in
//! Kubernetes 1.37) against the real kube-apiserver, with the Node authorizer and the
//! NodeRestriction admission plugin as a real cluster has them. The test plays the
//! kubelet: a node client certificate (CN `system:node:NAME`, O `system:nodes`) signed
//! by the cluster's CA, the Node object it registers, a Pod bound to it that mounts a
//! `podCertificate` volume, and the PodCertificateRequest the kubelet creates for it
//! (an empty PKCS#10 request signed with a fresh key). canopy answers in the request's
//! status; the chain verifies with the root (`openssl verify`) and carries the pod's
//! SPIFFE ID, in two clusters with two intermediates. Refusals: another signer's
//! request untouched, a request that does not match the API server's pod / service
//! account / UIDs, a key type the policy refuses, a bad proof of possession.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use canopy_testsupport::certmanager::{output_with_stdin, wait_until};
use canopy_testsupport::cluster::{ClusterOptions, TestCluster};
use canopy_testsupport::{free_port, openssl, openssl_verify, pki, run_ok, Serving};
use serde_json::{json, Value};

const TD: &str = "mesh.example";
const SIGNER: &str = "canopy.dev/spiffe";
const NODE: &str = "node-1";
/// The issuer's own user in the test clusters, so the audit log tells its requests apart.
const ISSUER_USER: &str = "canopy-issuer";

/// A control plane with what a real cluster has for nodes: the Node authorizer (on in
/// every test cluster) and the NodeRestriction admission plugin (kube-apiserver leaves
/// it off by default; kubeadm, EKS and AKS turn it on).
fn start(name: &str) -> TestCluster {
    TestCluster::start_with(
        name,
        ClusterOptions::default()
            .audit()
            .user(ISSUER_USER, &["system:masters"])
            .apiserver_arg("--enable-admission-plugins=NodeRestriction"),
    )
}

/// The kubelet's credentials: a client certificate for `system:node:NODE` in group
/// `system:nodes`, signed by the cluster's client CA, as TLS bootstrap would give it.
struct Node {
    cert: PathBuf,
    key: PathBuf,
}

impl Node {
    fn credentials(cluster: &TestCluster, work: &Path) -> Node {
        let dir = work.join(format!("{}-node", cluster.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, csr, cert) = (
            dir.join("key.pem"),
            dir.join("csr.pem"),
            dir.join("cert.pem"),
        );
        canopy_testsupport::openssl_p256_csr(
            &key,
            &csr,
            &format!("/O=system:nodes/CN=system:node:{NODE}"),
            None,
        );
        let ca_key = cluster.ca_file().with_file_name("ca.key");
        run_ok(
            openssl()
                .args(["x509", "-req", "-days", "1", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(cluster.ca_file())
                .arg("-CAkey")
                .arg(&ca_key)
                .args(["-CAcreateserial", "-out"])
                .arg(&cert),
        );
        Node { cert, key }
    }

    fn kubectl(&self, cluster: &TestCluster) -> Command {
        let mut c = Command::new("kubectl");
        let home = cluster.dir().join("kubectl-home");
        c.arg(format!("--server={}", cluster.server()))
            .arg("--certificate-authority")
            .arg(cluster.ca_file())
            .arg("--client-certificate")
            .arg(&self.cert)
            .arg("--client-key")
            .arg(&self.key)
            .env("HOME", &home)
            .env("KUBECACHEDIR", home.join("cache"))
            .env_remove("KUBECONFIG");
        c
    }
}

fn create(mut c: Command, manifest: &Value) -> Result<String, String> {
    c.args(["create", "-o", "json", "-f", "-"]);
    let out = output_with_stdin(&mut c, &manifest.to_string());
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn get(cluster: &TestCluster, args: &[&str]) -> Value {
    let mut c = cluster.kubectl();
    c.args(["get", "-o", "json"]).args(args);
    serde_json::from_str(&run_ok(&mut c)).unwrap()
}

/// A namespace, service accounts `web` and `admin`, the node (registered with its own
/// credentials, as the kubelet does) and pod `web` bound to it, mounting a
/// `podCertificate` volume for `signer`.
struct Workload {
    node_uid: String,
    pod_uid: String,
    sa_uid: String,
    admin_uid: String,
}

fn workload(cluster: &TestCluster, node: &Node, ns: &str, signer: &str) -> Workload {
    run_ok(cluster.kubectl().args(["create", "namespace", ns]));
    for sa in ["web", "admin"] {
        run_ok(
            cluster
                .kubectl()
                .args(["-n", ns, "create", "serviceaccount", sa]),
        );
    }
    let node_json = match create(
        node.kubectl(cluster),
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    ) {
        Ok(created) => serde_json::from_str::<Value>(&created).unwrap(),
        // Registered already (a second namespace in the same cluster).
        Err(e) if e.contains("AlreadyExists") => get(cluster, &["node", NODE]),
        Err(e) => panic!("the node could not register itself: {e}"),
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "serviceAccountName": "web",
            "nodeName": NODE,
            "containers": [{
                "name": "app", "image": "registry.example/app:1",
                "volumeMounts": [{"name": "spiffe", "mountPath": "/var/run/spiffe", "readOnly": true}],
            }],
            "volumes": [{"name": "spiffe", "projected": {"sources": [{"podCertificate": {
                "signerName": signer, "keyType": "ECDSAP256",
                "maxExpirationSeconds": 3600,
                "credentialBundlePath": "credentialbundle.pem",
            }}]}}],
        },
    });
    let pod: Value = serde_json::from_str(&create(cluster.kubectl(), &pod).unwrap()).unwrap();
    let uid = |v: &Value| v["metadata"]["uid"].as_str().unwrap().to_string();
    Workload {
        node_uid: uid(&node_json),
        pod_uid: uid(&pod),
        sa_uid: uid(&get(cluster, &["-n", ns, "serviceaccount", "web"])),
        admin_uid: uid(&get(cluster, &["-n", ns, "serviceaccount", "admin"])),
    }
}

/// A fresh key of `keytype` (openssl `-newkey` argument) and the kubelet's stub
/// request: an empty PKCS#10 request signed with it (DER).
fn stub_request(work: &Path, name: &str, newkey: &[&str]) -> Vec<u8> {
    let (key, der) = (
        work.join(format!("{name}.key")),
        work.join(format!("{name}.der")),
    );
    run_ok(
        openssl()
            .args(["req", "-new", "-nodes", "-subj", "/", "-outform", "DER"])
            .args(newkey)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&der),
    );
    std::fs::read(&der).unwrap()
}

const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn pcr(ns: &str, name: &str, signer: &str, w: &Workload, stub: &[u8]) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "PodCertificateRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "signerName": signer,
            "podName": "web", "podUID": w.pod_uid,
            "serviceAccountName": "web", "serviceAccountUID": w.sa_uid,
            "nodeName": NODE, "nodeUID": w.node_uid,
            "maxExpirationSeconds": 3600,
            "stubPKCS10Request": base64::engine::general_purpose::STANDARD.encode(stub),
        },
    })
}

/// Creates `manifest` as the node, retrying while the Node authorizer's graph has not
/// seen the pod yet (it learns pods from an informer).
fn create_as_node(cluster: &TestCluster, node: &Node, manifest: &Value) {
    wait_until(
        "the node may create the request",
        Duration::from_secs(30),
        || create(node.kubectl(cluster), manifest).map(|_| ()),
    );
}

fn status(cluster: &TestCluster, ns: &str, name: &str) -> Value {
    get(
        cluster,
        &["-n", ns, "podcertificaterequests.certificates.k8s.io", name],
    )["status"]
        .clone()
}

/// Waits for a terminal condition; returns the whole status.
fn answered(cluster: &TestCluster, ns: &str, name: &str) -> Value {
    wait_until("the request is answered", Duration::from_secs(60), || {
        let s = status(cluster, ns, name);
        if s["conditions"].as_array().is_some_and(|c| !c.is_empty()) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
}

fn condition(s: &Value) -> (String, String, String) {
    let c = &s["conditions"][0];
    let f = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (f("type"), f("reason"), f("message"))
}

/// The issuer's config: one cluster entry per (name, kubeconfig), each signing pod
/// certificates with its own intermediate under policy `pods`.
fn issuer_config(
    work: &Path,
    pki: &pki::Pki,
    clusters: &[&TestCluster],
    key_types: &str,
) -> PathBuf {
    let mut y = format!(
        "{}listen: {{ address: \"127.0.0.1:{}\" }}\nclusters:\n",
        pki.config_head(TD, work),
        free_port()
    );
    for c in clusters {
        y.push_str(&format!(
            "  - name: {n}\n    intermediate: {n}\n    kubeconfig: {k}\n    pod_certificates: {{ policy: pods, signer_names: [{SIGNER}] }}\n",
            n = c.name(),
            k = c.kubeconfig_for(ISSUER_USER).display()
        ));
    }
    y.push_str(&format!(
        "policies:\n  - name: pods\n    spiffe_ids: [\"spiffe://{TD}/ns/{{namespace}}/sa/{{sa}}\"]\n    max_ttl: 24h\n    key_types: {key_types}\n"
    ));
    let path = work.join("issuer.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

fn write(path: &Path, data: &str) -> PathBuf {
    std::fs::write(path, data).unwrap();
    path.to_path_buf()
}

#[test]
fn a_pod_gets_its_spiffe_certificate_in_both_clusters() {
    let (aws, azure) = std::thread::scope(|s| {
        let aws = s.spawn(|| start("aws"));
        let azure = s.spawn(|| start("azure"));
        (aws.join().unwrap(), azure.join().unwrap())
    });
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path();
    let pki = pki::make(work, TD, &["aws", "azure"]);
    let config = issuer_config(work, &pki, &[&aws, &azure], "[ecdsa-p256]");
    let _issuer = Serving::start(&config, &work.join("issuer.log"));

    for (cluster, ns) in [(&aws, "shop"), (&azure, "payments")] {
        let node = Node::credentials(cluster, work);
        let w = workload(cluster, &node, ns, SIGNER);
        let stub = stub_request(work, cluster.name(), P256);
        create_as_node(cluster, &node, &pcr(ns, "req-web-1", SIGNER, &w, &stub));
        let s = answered(cluster, ns, "req-web-1");
        let (type_, reason, message) = condition(&s);
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Issued", "Issued"),
            "{message}"
        );

        let chain = write(
            &work.join(format!("{}.pem", cluster.name())),
            s["certificateChain"].as_str().unwrap(),
        );
        let o = openssl_verify(&pki.root_cert, Some(&chain), &chain);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        let text = run_ok(
            openssl()
                .args(["x509", "-noout", "-text", "-in"])
                .arg(&chain),
        );
        let id = format!("spiffe://{TD}/ns/{ns}/sa/web");
        assert!(text.contains(&format!("URI:{id}")), "{text}");
        // Signed by this cluster's intermediate, for the key the kubelet holds.
        let issuer = run_ok(
            openssl()
                .args(["x509", "-noout", "-issuer", "-in"])
                .arg(&chain),
        );
        let inter_subject = run_ok(
            openssl().args(["x509", "-noout", "-subject", "-in"]).arg(
                &pki.intermediates
                    .iter()
                    .find(|(n, ..)| n == cluster.name())
                    .unwrap()
                    .1,
            ),
        );
        assert_eq!(
            issuer.trim_start_matches("issuer=").trim(),
            inter_subject.trim_start_matches("subject=").trim()
        );
        let pubkey = |args: &[&str], path: &Path| run_ok(openssl().args(args).arg(path));
        assert_eq!(
            pubkey(&["x509", "-noout", "-pubkey", "-in"], &chain),
            pubkey(
                &["pkey", "-pubout", "-in"],
                &work.join(format!("{}.key", cluster.name()))
            )
        );
        // The lifetime respects maxExpirationSeconds (3600) and the times are the leaf's.
        let dates = run_ok(
            openssl()
                .args(["x509", "-noout", "-startdate", "-enddate", "-in"])
                .arg(&chain),
        );
        let ts = |k: &str| {
            let v = s[k].as_str().unwrap();
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let (nb, na, refresh) = (ts("notBefore"), ts("notAfter"), ts("beginRefreshAt"));
        assert!(
            na - nb <= time::Duration::HOUR && na - nb >= time::Duration::minutes(59),
            "{dates}"
        );
        assert!(
            refresh >= nb + time::Duration::minutes(10)
                && refresh <= na - time::Duration::minutes(10)
        );

        // Recorded and audited like every other certificate.
        let rows = sql(
            work,
            &format!(
            "SELECT auth_method, cluster, intermediate FROM certificates WHERE spiffe_id = '{id}'"
        ),
        );
        let name = cluster.name();
        assert_eq!(rows.trim(), format!("pod-certificate|{name}|{name}"));
        let audited = sql(work, &format!(
            "SELECT outcome FROM audit_log WHERE action = 'sign' AND actor LIKE 'podcertificaterequest:{name}/{ns}/req-web-1#%'"
        ));
        assert_eq!(audited.trim(), "ok");
    }
}

fn sql(work: &Path, query: &str) -> String {
    run_ok(
        Command::new("sqlite3")
            .arg(work.join("issuer.db"))
            .arg(query),
    )
}

/// One cluster, the issuer signing for it with `key_types`, node credentials and pod
/// `web` in namespace `shop`.
struct Setup {
    cluster: TestCluster,
    node: Node,
    w: Workload,
    _tmp: tempfile::TempDir,
    work: PathBuf,
    _issuer: Serving,
}

fn setup(key_types: &str) -> Setup {
    let cluster = start("aws");
    let tmp = canopy_testsupport::tempdir();
    let work = tmp.path().to_path_buf();
    let pki = pki::make(&work, TD, &["aws"]);
    let config = issuer_config(&work, &pki, &[&cluster], key_types);
    let issuer = Serving::start(&config, &work.join("issuer.log"));
    let node = Node::credentials(&cluster, &work);
    let w = workload(&cluster, &node, "shop", SIGNER);
    Setup {
        cluster,
        node,
        w,
        _tmp: tmp,
        work,
        _issuer: issuer,
    }
}

impl Setup {
    fn issued_count(&self) -> usize {
        sql(
            &self.work,
            "SELECT count(*) FROM certificates WHERE auth_method = 'pod-certificate'",
        )
        .trim()
        .parse()
        .unwrap()
    }

    /// Issues one good request as the node, so that "nothing happened to X" is judged
    /// after the signer demonstrably ran.
    fn control(&self, name: &str) {
        let stub = stub_request(&self.work, name, P256);
        create_as_node(
            &self.cluster,
            &self.node,
            &pcr("shop", name, SIGNER, &self.w, &stub),
        );
        assert_eq!(
            condition(&answered(&self.cluster, "shop", name)).0,
            "Issued"
        );
    }
}

#[test]
fn another_signers_request_is_left_untouched() {
    let s = setup("[ecdsa-p256]");
    let other = "example.com/other";
    // A pod that mounts the other signer's volume, and the kubelet's request for it.
    let mut pod = get(&s.cluster, &["-n", "shop", "pod", "web"]);
    pod["metadata"] = json!({"name": "other", "namespace": "shop"});
    pod["spec"]["volumes"][0]["projected"]["sources"][0]["podCertificate"]["signerName"] =
        json!(other);
    pod.as_object_mut().unwrap().remove("status");
    let pod: Value = serde_json::from_str(&create(s.cluster.kubectl(), &pod).unwrap()).unwrap();
    let mark = s.cluster.audit_mark();
    let stub = stub_request(&s.work, "other", P256);
    let mut req = pcr("shop", "req-other", other, &s.w, &stub);
    req["spec"]["podName"] = json!("other");
    req["spec"]["podUID"] = pod["metadata"]["uid"].clone();
    create_as_node(&s.cluster, &s.node, &req);
    s.control("req-web-after");

    assert_eq!(status(&s.cluster, "shop", "req-other"), json!({}));
    let touched: Vec<_> = s
        .cluster
        .audit_since(mark)
        .into_iter()
        .filter(|e| {
            e.user == ISSUER_USER && e.resource == "podcertificaterequests" && e.name == "req-other"
        })
        .map(|e| format!("{} {} {}", e.user, e.verb, e.subresource))
        .collect();
    assert!(
        touched.is_empty(),
        "canopy read or wrote another signer's request: {touched:?}"
    );
    // The same filter sees the issuer's status write to its own signer's request.
    let own = s
        .cluster
        .audit_since(mark)
        .into_iter()
        .filter(|e| e.user == ISSUER_USER && e.name == "req-web-after" && e.subresource == "status")
        .count();
    assert!(own > 0, "the audit log shows no status write by the issuer");
    assert_eq!(s.issued_count(), 1);
}

#[test]
fn a_request_that_does_not_match_the_api_servers_pod_is_denied() {
    let s = setup("[ecdsa-p256]");
    // NodeRestriction holds the node to the truth; anybody else RBAC lets create
    // PodCertificateRequests is not checked by the API server. Such a creator claims
    // the privileged service account for pod web (and, separately, a wrong pod UID).
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pcr-creator", "namespace": "shop"},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests"], "verbs": ["create", "get"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pcr-creator", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pcr-creator"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}],
    });
    for m in [role, binding] {
        create(s.cluster.kubectl(), &m).unwrap();
    }
    let token = s
        .cluster
        .service_account_token("shop", "web", s.cluster.issuer(), 600);
    let cases = [
        (
            "req-admin",
            json!({"serviceAccountName": "admin", "serviceAccountUID": s.w.admin_uid}),
        ),
        (
            "req-sa-uid",
            json!({"serviceAccountUID": "00000000-0000-0000-0000-000000000000"}),
        ),
        (
            "req-pod-uid",
            json!({"podUID": "00000000-0000-0000-0000-000000000001"}),
        ),
        (
            "req-node-uid",
            json!({"nodeUID": "00000000-0000-0000-0000-000000000002"}),
        ),
    ];
    for (name, patch) in &cases {
        let stub = stub_request(&s.work, name, P256);
        let mut req = pcr("shop", name, SIGNER, &s.w, &stub);
        for (k, v) in patch.as_object().unwrap() {
            req["spec"][k] = v.clone();
        }
        create(s.cluster.kubectl_with_token(&token), &req).unwrap();
    }
    for (name, _) in &cases {
        let (type_, reason, message) = condition(&answered(&s.cluster, "shop", name));
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Denied", "IdentityMismatch"),
            "{name}: {message}"
        );
        assert!(message.contains("nothing issued"), "{message}");
        assert!(status(&s.cluster, "shop", name)
            .get("certificateChain")
            .is_none());
    }
    assert_eq!(s.issued_count(), 0);
    let denied = sql(&s.work, "SELECT count(*) FROM audit_log WHERE action = 'sign' AND outcome = 'denied' AND actor LIKE 'podcertificaterequest:aws/shop/req-%'");
    assert_eq!(denied.trim(), "4");
}

#[test]
fn a_key_type_the_policy_refuses_is_denied_as_unsupported() {
    let s = setup("[ecdsa-p384]");
    let stub = stub_request(&s.work, "p256", P256);
    create_as_node(
        &s.cluster,
        &s.node,
        &pcr("shop", "req-p256", SIGNER, &s.w, &stub),
    );
    let (type_, reason, message) = condition(&answered(&s.cluster, "shop", "req-p256"));
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "UnsupportedKeyType"),
        "{message}"
    );
    assert!(
        message.contains("ecdsa-p384"),
        "the message names what the policy allows: {message}"
    );
    // A key type canopy does not issue for at all (P-521, which the API allows).
    let stub = stub_request(
        &s.work,
        "p521",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
    );
    create_as_node(
        &s.cluster,
        &s.node,
        &pcr("shop", "req-p521", SIGNER, &s.w, &stub),
    );
    let (type_, reason, message) = condition(&answered(&s.cluster, "shop", "req-p521"));
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "UnsupportedKeyType"),
        "{message}"
    );
    assert_eq!(s.issued_count(), 0);
}

#[test]
fn a_bad_proof_of_possession_never_gets_a_certificate() {
    let s = setup("[ecdsa-p256]");
    // The kubelet's stub request with one bit of its signature flipped. The API server
    // verifies the signature on create and refuses it; canopy verifies it again before
    // it certifies the key (decision::proof_of_possession, unit-tested with the same
    // tampering), so neither layer alone lets it through.
    let mut stub = stub_request(&s.work, "bad", P256);
    let at = stub.len() - 3;
    stub[at] ^= 0x01;
    let err = create(
        s.node.kubectl(&s.cluster),
        &pcr("shop", "req-bad", SIGNER, &s.w, &stub),
    )
    .unwrap_err();
    assert!(
        err.contains("stubPKCS10Request") && err.contains("invalid signature"),
        "{err}"
    );
    // Names in the stub request (the pod asking for more than its identity): Denied.
    let key = s.work.join("named.key");
    let der = s.work.join("named.der");
    run_ok(
        openssl()
            .args([
                "req",
                "-new",
                "-nodes",
                "-subj",
                "/CN=admin",
                "-outform",
                "DER",
            ])
            .args(P256)
            .args([
                "-addext",
                &format!("subjectAltName=URI:spiffe://{TD}/ns/kube-system/sa/admin"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&der),
    );
    let named = std::fs::read(&der).unwrap();
    create_as_node(
        &s.cluster,
        &s.node,
        &pcr("shop", "req-named", SIGNER, &s.w, &named),
    );
    let (type_, reason, message) = condition(&answered(&s.cluster, "shop", "req-named"));
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "NonEmptyStubPKCS10Request"),
        "{message}"
    );
    assert_eq!(s.issued_count(), 0);
}
