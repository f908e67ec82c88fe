//! step-ca's side: a `ca.json` written here (no `step` CLI), the same kind of
//! intermediate as canopy's (ECDSA P-256, made by canopy's core), a JWK provisioner
//! whose key stays with the benchmark, and bbolt as its database. Every sign request
//! carries its own one-time token (step-ca records each token's ID to refuse reuse, and
//! each certificate it issues), so tokens are made before each timed window.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::body::Bytes;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::canopy_side::BenchCa;
use crate::load::Endpoint;
use crate::server::{free_port_pair, wait_answering, Server};
use crate::workload::{Body, WorkloadCsr};

/// The JWK provisioner's name (the tokens' issuer).
const PROVISIONER: &str = "canopy-bench";
/// The provisioner key's ID (any string step-ca can match the token header against).
const KEY_ID: &str = "canopy-bench-jwk";
/// Audience of the sign tokens: step-ca accepts `https://<dnsName>/1.0/sign`.
const AUDIENCE: &str = "https://127.0.0.1/1.0/sign";

/// A running step-ca and the provisioner key that makes its tokens.
pub struct StepCa {
    /// The process.
    pub server: Server,
    /// `step-ca v0.30.2`.
    pub version: String,
    /// Makes the one-time tokens.
    pub tokens: Tokens,
    endpoint: Endpoint,
    db_file: std::path::PathBuf,
}

/// The provisioner's signing key, making one-time sign tokens.
pub struct Tokens {
    key: EncodingKey,
    /// Makes token IDs unique across the run.
    minted: usize,
}

/// The provisioner key as a public JWK (P-256, ES256).
fn public_jwk(key: &rcgen::KeyPair) -> anyhow::Result<serde_json::Value> {
    let point = key.public_key_raw();
    if point.len() != 65 || point[0] != 4 {
        bail!("the provisioner key is not an uncompressed P-256 point");
    }
    Ok(serde_json::json!({
        "use": "sig",
        "kty": "EC",
        "kid": KEY_ID,
        "crv": "P-256",
        "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }))
}

impl StepCa {
    /// Writes `ca.json` and the CA files into a new folder under `dir` and starts
    /// step-ca on bbolt.
    pub async fn start(bin: &Path, dir: &Path, ca: &BenchCa) -> anyhow::Result<StepCa> {
        // Absolute, as the server runs in its own folder.
        let bin = &std::fs::canonicalize(bin).with_context(|| format!("{}", bin.display()))?;
        let version = crate::gomodule::release_label(bin, "step-ca")?;
        let dir = dir.join("step-ca");
        std::fs::create_dir_all(dir.join("db"))?;
        std::fs::write(dir.join("root.pem"), &ca.root_pem)?;
        std::fs::write(
            dir.join("intermediate.pem"),
            ca.intermediate.certificate().to_pem(),
        )?;
        std::fs::write(dir.join("intermediate-key.pem"), &ca.intermediate_key_pem)?;
        let provisioner_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let token_key = EncodingKey::from_ec_der(&provisioner_key.serialize_der());
        let port = free_port_pair()?;
        let db_file = dir.join("db").join("step.db");
        let config = serde_json::json!({
            "root": dir.join("root.pem"),
            "crt": dir.join("intermediate.pem"),
            "key": dir.join("intermediate-key.pem"),
            "address": format!("127.0.0.1:{port}"),
            "dnsNames": ["127.0.0.1"],
            "logger": {"format": "text"},
            // bbolt syncs every write; badgerv2 (what `step ca init` picks) does not.
            "db": {"type": "bbolt", "dataSource": db_file},
            "authority": {
                "provisioners": [{
                    "type": "JWK",
                    "name": PROVISIONER,
                    "key": public_jwk(&provisioner_key)?,
                    "claims": {
                        "minTLSCertDuration": "5m",
                        "maxTLSCertDuration": "24h",
                        "defaultTLSCertDuration": "1h",
                    },
                }]
            },
        });
        let config_file = dir.join("ca.json");
        std::fs::write(&config_file, serde_json::to_string_pretty(&config)?)?;
        let mut command = Command::new(bin);
        command
            .arg(&config_file)
            .env("HOME", &dir)
            .env("STEPPATH", dir.join("step"));
        let mut server = Server::spawn("step-ca", command, &dir.join("step-ca.log"))?;
        let base = Endpoint::new(&format!("https://127.0.0.1:{port}/"), &ca.root_pem)?;
        let status = wait_answering(&mut server, &base.at("/health")).await?;
        if status != StatusCode::OK {
            bail!("step-ca health: HTTP {status}: {}", server.log_tail());
        }
        Ok(StepCa {
            server,
            version,
            tokens: Tokens {
                key: token_key,
                minted: 0,
            },
            endpoint: base.at("/1.0/sign"),
            db_file,
        })
    }

    /// Where the load signs.
    pub fn sign_endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// What step-ca's database holds: its size (bbolt cannot be read from here, so
    /// certificates are not counted).
    pub fn stored(&self) -> String {
        let bytes = std::fs::metadata(&self.db_file).map_or(0, |m| m.len());
        format!("bbolt {:.1} MB, not counted", bytes as f64 / 1e6)
    }
}

impl Tokens {
    /// `count` request bodies, each `{csr, ott}` with a fresh one-time token for its
    /// CSR's SPIFFE ID, valid for `lifetime` from now.
    pub fn bodies(
        &mut self,
        csrs: &[WorkloadCsr],
        count: usize,
        lifetime: Duration,
    ) -> anyhow::Result<Arc<Vec<Body>>> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let exp = now + i64::try_from(lifetime.as_secs())? + 60;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KEY_ID.into());
        header.typ = Some("JWT".into());
        let bodies = (0..count)
            .map(|i| {
                let csr = &csrs[i % csrs.len()];
                let claims = serde_json::json!({
                    "iss": PROVISIONER,
                    "aud": AUDIENCE,
                    "sub": csr.uri,
                    "sans": [csr.uri],
                    "jti": format!("{}-{}", std::process::id(), self.minted + i),
                    "nbf": now - 1,
                    "exp": exp,
                });
                let ott = jsonwebtoken::encode(&header, &claims, &self.key)?;
                let text = serde_json::json!({"csr": csr.pem, "ott": ott}).to_string();
                Ok(Body {
                    bytes: Bytes::from(text),
                    uri: csr.uri.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.minted += count;
        Ok(Arc::new(bodies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_carries_the_public_point() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let jwk = public_jwk(&key).unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), key.public_key_raw());
        assert_eq!(jwk["kid"], KEY_ID);
    }

    #[test]
    fn tokens_verify_with_the_provisioner_key_and_are_each_unique() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let jwk = public_jwk(&key).unwrap();
        let mut tokens = Tokens {
            key: EncodingKey::from_ec_der(&key.serialize_der()),
            minted: 0,
        };
        let csrs = crate::workload::generate(2, "bench.example").unwrap();
        let mut bodies = tokens
            .bodies(&csrs, 3, Duration::from_secs(60))
            .unwrap()
            .to_vec();
        bodies.extend(
            tokens
                .bodies(&csrs, 1, Duration::from_secs(60))
                .unwrap()
                .iter()
                .cloned(),
        );
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[PROVISIONER]);
        let mut ids = std::collections::HashSet::new();
        for (i, body) in bodies.iter().enumerate() {
            let sent: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
            let ott = sent["ott"].as_str().unwrap();
            assert_eq!(
                jsonwebtoken::decode_header(ott).unwrap().kid.as_deref(),
                Some(KEY_ID)
            );
            let claims = jsonwebtoken::decode::<serde_json::Value>(ott, &decoding, &validation)
                .unwrap()
                .claims;
            let uri = &csrs[i % 3 % 2].uri;
            assert_eq!(&body.uri, uri);
            assert_eq!(sent["csr"], csrs[i % 3 % 2].pem);
            assert_eq!(claims["sub"], *uri);
            assert_eq!(claims["sans"], serde_json::json!([uri]));
            assert!(ids.insert(claims["jti"].as_str().unwrap().to_string()));
        }
    }
}
