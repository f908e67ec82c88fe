//! End to end: one issuer serving two clusters (`aws`, `azure`). In each, an
//! istio-csr-style and a cert-manager-`Certificate`-style CertificateRequest are
//! approved and Issued; the aws and azure workload leaves then complete a mutual
//! TLS handshake (rustls, each side trusting only the shared root from `status.ca`
//! and checking the peer's SPIFFE ID); the store lists them with their cluster and
//! namespace.

use std::sync::Arc;
use std::time::Duration;

use crate::certmanager_harness::*;
use canopy::cert::Certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
}

fn der_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    Certificate::parse_pem_all(pem)
        .unwrap()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies a server chain against the root alone and requires one SPIFFE ID
/// (workload certificates carry no DNS name to check).
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let cert = Certificate::from_der(end_entity.to_vec())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        match cert.spiffe_id() {
            Some(id) if id.to_string() == self.expected => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "server SPIFFE ID {other:?} is not {}",
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One side's material: chain (leaf + intermediates), key, and the root it trusts.
struct Side {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

fn side(cr: &serde_json::Value, key: &rcgen::KeyPair) -> Side {
    let chain = der_chain(&b64_pem(&cr["status"]["certificate"]));
    let mut roots = RootCertStore::empty();
    for root in der_chain(&b64_pem(&cr["status"]["ca"])) {
        roots.add(root).unwrap();
    }
    Side {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        roots: Arc::new(roots),
    }
}

/// Server (aws) and client (azure) handshake over TCP; each checks the other's SPIFFE ID.
async fn mutual_tls(server: Side, server_id: &str, client: Side, client_id: &str) {
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(server.roots.clone(), provider())
                .build()
                .unwrap(),
        )
        .with_single_cert(server.chain, server.key)
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: client.roots.clone(),
            expected: server_id.to_string(),
        }))
        .with_client_auth_cert(client.chain, client.key)
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let expected_client = client_id.to_string();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let peer_id = Certificate::from_der(peer.to_vec())
            .unwrap()
            .spiffe_id()
            .map(|id| id.to_string());
        assert_eq!(
            peer_id.as_deref(),
            Some(expected_client.as_str()),
            "client SPIFFE ID"
        );
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.ok();
        buf
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("workload").unwrap(), tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(&server_task.await.unwrap(), b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_issue_and_their_leaves_do_mutual_tls() {
    let env = Env::new(&["aws", "azure"]).await;
    let mut running = Vec::new();
    let mut istio_keys = Vec::new();
    for cluster in ["aws", "azure"] {
        let server = &env.cluster(cluster).server;
        create_cluster_issuer(server, "canopy", serde_json::json!({}));
        running.push(env.start(cluster).await);

        let istio_id = spiffe("bookinfo", &format!("reviews-{cluster}"));
        let istio = istio_csr(&istio_id);
        server
            .create_as(
                &istio_csr_user(),
                certificate_request(
                    "istio-system",
                    "istio-csr-1",
                    &istio.pem,
                    cluster_issuer_ref("canopy"),
                    istio_csr_spec(),
                ),
            )
            .unwrap();
        let dns_name = format!("web.{cluster}.example.com");
        let web = dns_csr(&dns_name);
        server
            .create(certificate_request(
                "web",
                "web-tls-1",
                &web.pem,
                cluster_issuer_ref("canopy"),
                certificate_spec(),
            ))
            .unwrap();
        approve(server, "istio-system", "istio-csr-1").await;
        approve(server, "web", "web-tls-1").await;
        istio_keys.push((cluster, istio_id, istio.key, dns_name));
    }

    let mut sides = Vec::new();
    for (cluster, istio_id, key, dns_name) in istio_keys {
        let server = &env.cluster(cluster).server;
        let cr = wait_reason(server, "istio-system", "istio-csr-1", "Issued").await;
        assert_eq!(ready(&cr).unwrap()["status"], "True");
        let chain = Certificate::parse_pem_all(&b64_pem(&cr["status"]["certificate"])).unwrap();
        assert_eq!(chain.len(), 2, "leaf + intermediate, no root");
        assert_eq!(chain[0].spiffe_id().unwrap().to_string(), istio_id);
        assert!(
            chain[0].subject_cn().is_none(),
            "istio-csr CSRs carry no CN"
        );
        assert!(
            chain[1].subject().contains(cluster),
            "signed by the {cluster} intermediate"
        );
        let life = chain[0].not_after() - chain[0].not_before();
        assert!(
            life <= time::Duration::hours(1) + time::Duration::minutes(2),
            "1 h as asked (plus backdating), got {life}"
        );
        let ca = Certificate::parse_pem_all(&b64_pem(&cr["status"]["ca"])).unwrap();
        assert_eq!(ca.len(), 1);
        assert!(ca[0].is_self_issued(), "status.ca is the root");
        assert!(cr["status"]["failureTime"].is_null());

        let web = wait_reason(server, "web", "web-tls-1", "Issued").await;
        let web_chain =
            Certificate::parse_pem_all(&b64_pem(&web["status"]["certificate"])).unwrap();
        assert_eq!(web_chain[0].dns_names(), std::slice::from_ref(&dns_name));
        assert!(web_chain[0].spiffe_id().is_none());
        let ekus = web_chain[0].ext_key_usage().unwrap();
        assert!(ekus.server_auth);

        // cert-manager's approver condition survives our server-side apply.
        let approved = cr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Approved" && c["status"] == "True");
        assert!(approved, "our apply must not remove the Approved condition");

        // An Issued event was recorded on the request.
        let events = wait_event(server, "istio-system", |e| {
            e["reason"] == "Issued" && e["regarding"]["name"] == "istio-csr-1"
        })
        .await;
        assert!(
            events
                .iter()
                .any(|e| e["reason"] == "Issued" && e["regarding"]["name"] == "istio-csr-1"),
            "an Issued event: {events:?}"
        );
        sides.push((side(&cr, &key), istio_id));
    }

    let (azure, azure_id) = sides.pop().unwrap();
    let (aws, aws_id) = sides.pop().unwrap();
    mutual_tls(aws, &aws_id, azure, &azure_id).await;

    // The store lists each certificate with its cluster and namespace, once.
    let records = env.records().await;
    let find = |cluster: &str, ns: &str| {
        records
            .iter()
            .filter(|r| r.cluster.as_deref() == Some(cluster) && r.namespace.as_deref() == Some(ns))
            .count()
    };
    for cluster in ["aws", "azure"] {
        assert_eq!(find(cluster, "istio-system"), 1, "{records:#?}");
        assert_eq!(find(cluster, "web"), 1, "{records:#?}");
    }
    let aws_istio = records
        .iter()
        .find(|r| {
            r.cluster.as_deref() == Some("aws") && r.namespace.as_deref() == Some("istio-system")
        })
        .unwrap();
    assert_eq!(aws_istio.intermediate, "aws");
    assert_eq!(aws_istio.auth_method, "cert-manager");
    assert!(aws_istio
        .requester
        .starts_with("certificaterequest:aws/istio-system/istio-csr-1#"));
    assert_eq!(aws_istio.profile, "workload");

    // Nothing is signed twice, however long the controllers keep running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.records().await.len(), 4);
    for r in running {
        r.stop().await;
    }
}
