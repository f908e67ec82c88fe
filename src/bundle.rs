//! Trust bundles: the SPIFFE trust bundle JSON (a JWK Set with `x509-svid` keys).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::cert::{CertError, Certificate};

/// Why a bundle could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("root {subject} has a key type a SPIFFE bundle cannot carry")]
    UnsupportedKey { subject: String },
    #[error("malformed SPIFFE bundle: {0}")]
    Malformed(String),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The SPIFFE trust bundle for the given roots (SPIFFE Trust Domain and Bundle spec, section 4).
pub fn spiffe_bundle_json(
    roots: &[Certificate],
    sequence: u64,
    refresh_hint_seconds: u64,
) -> Result<Value, BundleError> {
    let keys = roots.iter().map(jwk_for).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_seconds,
    }))
}

fn jwk_for(root: &Certificate) -> Result<Value, BundleError> {
    let unsupported = || BundleError::UnsupportedKey {
        subject: root.subject().to_owned(),
    };
    let (_, spki) =
        SubjectPublicKeyInfo::from_der(root.public_key_spki()).map_err(|_| unsupported())?;
    let x5c = vec![STANDARD.encode(root.der())];
    let mut jwk = match (root.key_type(), spki.parsed().map_err(|_| unsupported())?) {
        (Some(kt), PublicKey::EC(point)) => {
            let data = point.data();
            let (crv, len) = match kt {
                crate::key::KeyType::EcdsaP256 => ("P-256", 32),
                crate::key::KeyType::EcdsaP384 => ("P-384", 48),
                _ => return Err(unsupported()),
            };
            if data.len() != 1 + 2 * len || data[0] != 0x04 {
                return Err(unsupported());
            }
            json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(&data[1..1 + len]), "y": URL_SAFE_NO_PAD.encode(&data[1 + len..])})
        }
        (_, PublicKey::RSA(rsa)) => {
            let strip =
                |b: &[u8]| -> Vec<u8> { b.iter().skip_while(|x| **x == 0).copied().collect() };
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(strip(rsa.modulus)), "e": URL_SAFE_NO_PAD.encode(strip(rsa.exponent))})
        }
        (Some(crate::key::KeyType::Ed25519), _) => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(spki.subject_public_key.data.as_ref())})
        }
        _ => return Err(unsupported()),
    };
    jwk["use"] = json!("x509-svid");
    jwk["x5c"] = json!(x5c);
    Ok(jwk)
}

/// The X.509 roots in a SPIFFE trust bundle JSON (keys with `use: x509-svid`).
pub fn roots_from_spiffe_bundle(bundle: &Value) -> Result<Vec<Certificate>, BundleError> {
    let keys = bundle
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| BundleError::Malformed("no \"keys\" array".into()))?;
    let mut roots = Vec::new();
    for k in keys
        .iter()
        .filter(|k| k.get("use").and_then(Value::as_str) == Some("x509-svid"))
    {
        let x5c = k
            .get("x5c")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .ok_or_else(|| {
                BundleError::Malformed("an x509-svid key needs exactly one x5c entry".into())
            })?;
        let der = STANDARD
            .decode(x5c[0].as_str().unwrap_or_default())
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        roots.push(Certificate::from_der(der)?);
    }
    Ok(roots)
}
