//! Private keys: generation, the key file formats operators meet, and encryption at rest.
//!
//! A [`KeyPair`] is not `Clone`, prints no secret in `Debug`, and wipes its serialized
//! form on drop. Encrypted files are PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2-HMAC-SHA256
//! and AES-256-CBC), the format `openssl pkey -passin` opens and `openssl genpkey -aes256`
//! writes.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use pkcs8::der::Decode;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use rcgen::{PublicKeyData, SignatureAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::{Zeroize, Zeroizing};

/// PBKDF2 iterations for keys canopy encrypts (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// The shortest passphrase accepted for a new encrypted key.
pub const MIN_PASSPHRASE_LEN: usize = 12;

/// The kinds of key canopy makes and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA (PKCS#1 v1.5 signatures with SHA-256) of the given modulus size.
    Rsa { bits: u32 },
    /// Ed25519 (not accepted by istiod for its CA).
    Ed25519,
}

impl KeyType {
    /// RSA 2048.
    pub const RSA2048: KeyType = KeyType::Rsa { bits: 2048 };
    /// RSA 3072.
    pub const RSA3072: KeyType = KeyType::Rsa { bits: 3072 };
    /// RSA 4096.
    pub const RSA4096: KeyType = KeyType::Rsa { bits: 4096 };

    /// Whether istiod accepts this key for its CA (ECDSA P-256/P-384 or RSA >= 2048).
    pub fn accepted_by_istiod(self) -> bool {
        match self {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => true,
            KeyType::Rsa { bits } => bits >= 2048,
            KeyType::Ed25519 => false,
        }
    }

    /// Whether the key is strong enough for canopy to sign for at all (RSA >= 2048).
    pub fn is_strong_enough(self) -> bool {
        !matches!(self, KeyType::Rsa { bits } if bits < 2048)
    }

    /// The signature algorithm canopy uses with this key.
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// The algorithm that verifies what [`KeyType::signature_algorithm`] signs.
    pub fn verification_algorithm(
        self,
    ) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature;
        match self {
            KeyType::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyType::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyType::Rsa { .. } => &signature::RSA_PKCS1_2048_8192_SHA256,
            KeyType::Ed25519 => &signature::ED25519,
        }
    }

    /// The name x509 readers give [`KeyType::signature_algorithm`] (as
    /// [`crate::Certificate::signature_algorithm`] reports it).
    pub fn signature_algorithm_name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-with-SHA256",
            KeyType::EcdsaP384 => "ecdsa-with-SHA384",
            KeyType::Rsa { .. } => "sha256WithRSAEncryption",
            KeyType::Ed25519 => "ED25519",
        }
    }

    /// The type of the key in a DER SubjectPublicKeyInfo, if canopy knows it.
    pub fn from_spki(spki_der: &[u8]) -> Result<Self, KeyError> {
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| KeyError::Malformed)?;
        Self::from_parsed_spki(&spki)
    }

    pub(crate) fn from_parsed_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        use x509_parser::oid_registry as oids;
        let alg = &spki.algorithm.algorithm;
        if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(KeyError::Unsupported(
                    "ECDSA key without a named curve".into(),
                ))?;
            if curve == oids::OID_EC_P256 {
                Ok(KeyType::EcdsaP256)
            } else if curve == oids::OID_NIST_EC_P384 {
                Ok(KeyType::EcdsaP384)
            } else {
                Err(KeyError::Unsupported(format!(
                    "ECDSA curve {curve} (use P-256 or P-384)"
                )))
            }
        } else if *alg == oids::OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => Ok(KeyType::Rsa {
                    bits: rsa.key_size() as u32,
                }),
                _ => Err(KeyError::Malformed),
            }
        } else if *alg == oids::OID_SIG_ED25519 {
            Ok(KeyType::Ed25519)
        } else if *alg == oids::OID_PKCS1_RSASSAPSS {
            Err(KeyError::Unsupported(
                "RSA-PSS keys (use RSA PKCS#1 or ECDSA)".into(),
            ))
        } else {
            Err(KeyError::Unsupported(format!("key algorithm {alg}")))
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeyType::Rsa { bits } => write!(f, "rsa{bits}"),
            KeyType::Ed25519 => f.write_str("ed25519"),
        }
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "ecdsa-p256" | "p256" | "ec-p256" => Ok(KeyType::EcdsaP256),
            "ecdsa-p384" | "p384" | "ec-p384" => Ok(KeyType::EcdsaP384),
            "rsa2048" | "rsa-2048" => Ok(KeyType::RSA2048),
            "rsa3072" | "rsa-3072" => Ok(KeyType::RSA3072),
            "rsa4096" | "rsa-4096" => Ok(KeyType::RSA4096),
            "ed25519" => Ok(KeyType::Ed25519),
            _ => Err(KeyError::Unsupported(format!(
                "key type {s:?} (choose ecdsa-p256, ecdsa-p384, rsa2048, rsa3072, rsa4096 or ed25519)"
            ))),
        }
    }
}

impl serde::Serialize for KeyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What went wrong with a key or key file. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("the key is not valid PEM or DER (expected PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY or ENCRYPTED PRIVATE KEY)")]
    Malformed,
    #[error(
        "the key is encrypted: pass --passphrase-file FILE or run in a terminal to be prompted"
    )]
    Encrypted,
    #[error("wrong passphrase for the encrypted key (or the key file is damaged)")]
    WrongPassphrase,
    #[error("the key file uses the legacy OpenSSL encryption (Proc-Type: 4,ENCRYPTED); convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`")]
    LegacyEncryption,
    #[error("passphrase is empty")]
    EmptyPassphrase,
    #[error("passphrase is too short: use at least {MIN_PASSPHRASE_LEN} characters")]
    WeakPassphrase,
    #[error("cannot read passphrase file {path}: {source}")]
    PassphraseFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key generation failed: {0}")]
    Generation(String),
    #[error("key encryption failed")]
    Encryption,
    /// The key lives elsewhere (a PKCS#11 token) and cannot be reached now; retry later.
    #[error("the signing key is not available: {0}")]
    Unavailable(String),
    /// A token refused or failed an operation that retrying will not fix.
    #[error("{0}")]
    Token(String),
}

/// A passphrase for an encrypted key file; wiped from memory on drop, never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase from text already in memory (a prompt's answer, a file's contents).
    pub fn new(text: impl Into<String>) -> Result<Self, KeyError> {
        let text = Zeroizing::new(text.into());
        if text.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        Ok(Self(text))
    }

    /// Reads a passphrase file; one trailing newline is not part of the passphrase.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let mut raw = std::fs::read_to_string(path).map_err(|source| KeyError::PassphraseFile {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = Zeroizing::new(raw.trim_end_matches(['\n', '\r']).to_owned());
        raw.zeroize();
        Self::new(trimmed.as_str())
    }

    /// Refuses passphrases too short to protect a CA key.
    pub fn check_strength(&self) -> Result<(), KeyError> {
        if self.0.chars().count() < MIN_PASSPHRASE_LEN {
            return Err(KeyError::WeakPassphrase);
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// A private key and its public half. Not `Clone`; zeroized on drop.
pub struct KeyPair {
    inner: rcgen::KeyPair,
    key_type: KeyType,
}

impl KeyPair {
    /// Generates a new key of the given type.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        let alg = key_type.signature_algorithm();
        let inner = match key_type {
            KeyType::Rsa { bits } => {
                let size = match bits {
                    2048 => rcgen::RsaKeySize::_2048,
                    3072 => rcgen::RsaKeySize::_3072,
                    4096 => rcgen::RsaKeySize::_4096,
                    _ => {
                        return Err(KeyError::Unsupported(format!(
                            "RSA {bits} (generate 2048, 3072 or 4096)"
                        )))
                    }
                };
                rcgen::KeyPair::generate_rsa_for(alg, size)
            }
            _ => rcgen::KeyPair::generate_for(alg),
        }
        .map_err(|e| KeyError::Generation(e.to_string()))?;
        Ok(Self { inner, key_type })
    }

    /// Opens an unencrypted key: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` (an
    /// `EC PARAMETERS` block before it is skipped) or PKCS#1 `RSA PRIVATE KEY`.
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        Self::from_pem_with(pem_text, None)
    }

    /// Opens a key file of any supported form, decrypting it when it is encrypted.
    pub fn from_pem_with(
        pem_text: &str,
        passphrase: Option<&Passphrase>,
    ) -> Result<Self, KeyError> {
        if pem_text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(KeyError::LegacyEncryption);
        }
        let blocks = ::pem::parse_many(pem_text).map_err(|_| KeyError::Malformed)?;
        let mut found = None;
        for block in blocks {
            let tag = block.tag().to_owned();
            let der = Zeroizing::new(block.into_contents());
            match tag.as_str() {
                "EC PARAMETERS" => continue,
                "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                    if found.is_some() {
                        return Err(KeyError::Unsupported(
                            "more than one private key in the file".into(),
                        ));
                    }
                    found = Some((tag, der));
                }
                _ => continue,
            }
        }
        let (tag, der) = found.ok_or(KeyError::Malformed)?;
        match tag.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => Self::from_pkcs8_der(&sec1_to_pkcs8(&der)?),
            "RSA PRIVATE KEY" => Self::from_pkcs8_der(&pkcs1_to_pkcs8(&der)?),
            _ => {
                let passphrase = passphrase.ok_or(KeyError::Encrypted)?;
                Self::from_encrypted_der(&der, passphrase)
            }
        }
    }

    /// Opens an `ENCRYPTED PRIVATE KEY` PEM.
    pub fn from_encrypted_pem(pem_text: &str, passphrase: &Passphrase) -> Result<Self, KeyError> {
        Self::from_pem_with(pem_text, Some(passphrase))
    }

    fn from_encrypted_der(der: &[u8], passphrase: &Passphrase) -> Result<Self, KeyError> {
        let info = EncryptedPrivateKeyInfo::from_der(der).map_err(|_| KeyError::Malformed)?;
        let doc = info
            .decrypt(passphrase.bytes())
            .map_err(|_| KeyError::WrongPassphrase)?;
        Self::from_pkcs8_der(doc.as_bytes()).map_err(|e| match e {
            // A wrong passphrase sometimes passes the padding check and yields garbage.
            KeyError::Malformed => KeyError::WrongPassphrase,
            other => other,
        })
    }

    /// Opens an unencrypted PKCS#8 DER key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = PrivateKeyInfo::from_der(der).map_err(|_| KeyError::Malformed)?;
        let _ = info;
        let inner = rcgen::KeyPair::try_from(der).map_err(|e| match e {
            rcgen::Error::CouldNotParseKeyPair => KeyError::Malformed,
            other => KeyError::Unsupported(other.to_string()),
        })?;
        let key_type = KeyType::from_spki(&inner.subject_public_key_info())?;
        if !key_type.is_strong_enough() {
            return Err(KeyError::Unsupported(format!(
                "{key_type}: RSA keys must be at least 2048 bits"
            )));
        }
        Ok(Self { inner, key_type })
    }

    /// The key encrypted with the passphrase, as an `ENCRYPTED PRIVATE KEY` PEM.
    pub fn to_encrypted_pem(&self, passphrase: &Passphrase) -> Result<Zeroizing<String>, KeyError> {
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| KeyError::Encryption)?;
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| KeyError::Encryption)?;
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
                .map_err(|_| KeyError::Encryption)?;
        let der = self.pkcs8_der();
        let info = PrivateKeyInfo::from_der(&der).map_err(|_| KeyError::Encryption)?;
        let doc = info
            .encrypt_with_params(params, passphrase.bytes())
            .map_err(|_| KeyError::Encryption)?;
        Ok(crate::pem::encode_secret(
            "ENCRYPTED PRIVATE KEY",
            doc.as_bytes(),
        ))
    }

    /// The key unencrypted as PKCS#8 `PRIVATE KEY` PEM (only for consumers that need it, like istiod).
    pub fn to_unencrypted_pem(&self) -> Zeroizing<String> {
        crate::pem::encode_secret("PRIVATE KEY", &self.pkcs8_der())
    }

    /// PKCS#8 v1 DER: the optional public key of v2 (aws-lc writes it for Ed25519) is dropped,
    /// because OpenSSL 3.0 cannot read v2 Ed25519 keys.
    fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        use pkcs8::der::Encode;
        let der = Zeroizing::new(self.inner.serialize_der());
        match PrivateKeyInfo::from_der(&der) {
            Ok(mut info) if info.public_key.is_some() => {
                info.public_key = None;
                match info.to_der() {
                    Ok(v1) => Zeroizing::new(v1),
                    Err(_) => der,
                }
            }
            _ => der,
        }
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex: safe to print and log.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.public_key_spki()))
    }

    /// Signs a message with the key's signature algorithm.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        rcgen::SigningKey::sign(&self.inner, msg).map_err(|e| KeyError::Generation(e.to_string()))
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.inner.zeroize();
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("type", &self.key_type)
            .field("spki_sha256", &self.fingerprint())
            .finish()
    }
}

/// PEM with 64-column lines and a final newline.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    crate::pem::encode(tag, der)
}

fn sec1_to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
    };
    for alg in [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
    ] {
        if let Ok(kp) = EcdsaKeyPair::from_private_key_der(alg, der) {
            let doc = kp.to_pkcs8v1().map_err(|_| KeyError::Malformed)?;
            return Ok(Zeroizing::new(doc.as_ref().to_vec()));
        }
    }
    Err(KeyError::Unsupported(
        "EC key on a curve other than P-256 or P-384, or a damaged EC key".into(),
    ))
}

fn pkcs1_to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use aws_lc_rs::encoding::AsDer;
    let kp = aws_lc_rs::rsa::KeyPair::from_der(der).map_err(|_| KeyError::Malformed)?;
    let doc = kp.as_der().map_err(|_| KeyError::Malformed)?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_generates_and_round_trips_encrypted() {
        let pass = Passphrase::new("correct horse battery staple").unwrap();
        for kt in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::RSA2048,
            KeyType::Ed25519,
        ] {
            let k = KeyPair::generate(kt).unwrap();
            assert_eq!(k.key_type(), kt);
            let enc = k.to_encrypted_pem(&pass).unwrap();
            assert!(enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
            assert!(enc.ends_with("-----END ENCRYPTED PRIVATE KEY-----\n"));
            let back = KeyPair::from_encrypted_pem(&enc, &pass).unwrap();
            assert_eq!(back.fingerprint(), k.fingerprint());
            let plain = KeyPair::from_pem(&k.to_unencrypted_pem()).unwrap();
            assert_eq!(plain.public_key_spki(), k.public_key_spki());
        }
    }

    #[test]
    fn wrong_passphrase_and_missing_passphrase_are_clear() {
        let k = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let enc = k
            .to_encrypted_pem(&Passphrase::new("the right passphrase").unwrap())
            .unwrap();
        let err =
            KeyPair::from_encrypted_pem(&enc, &Passphrase::new("the wrong passphrase").unwrap())
                .unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase), "{err}");
        assert!(matches!(
            KeyPair::from_pem(&enc).unwrap_err(),
            KeyError::Encrypted
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = KeyPair::generate(KeyType::EcdsaP256).unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("EcdsaP256") && dbg.contains(&k.fingerprint()));
        let pem = k.to_unencrypted_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!dbg.contains(&body));
        assert_eq!(
            format!("{:?}", Passphrase::new("secret-words-here").unwrap()),
            "Passphrase(<redacted>)"
        );
    }

    #[test]
    fn key_type_names() {
        for s in [
            "ecdsa-p256",
            "ecdsa-p384",
            "rsa2048",
            "rsa3072",
            "rsa4096",
            "ed25519",
        ] {
            assert_eq!(s.parse::<KeyType>().unwrap().to_string(), s);
        }
        assert!("dsa".parse::<KeyType>().is_err());
        assert!(!KeyType::Ed25519.accepted_by_istiod());
        assert!(!KeyType::Rsa { bits: 1024 }.accepted_by_istiod());
    }

    #[test]
    fn passphrase_rules() {
        assert!(matches!(
            Passphrase::new(""),
            Err(KeyError::EmptyPassphrase)
        ));
        assert!(Passphrase::new("short").unwrap().check_strength().is_err());
        assert!(Passphrase::new("long enough words")
            .unwrap()
            .check_strength()
            .is_ok());
    }
}
