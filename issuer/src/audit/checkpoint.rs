//! Signed checkpoints: the chain's head hash at a sequence number, signed with an ECDSA
//! P-256 key kept outside the database. Whoever can write the database can rewrite the
//! whole chain and its head row; they cannot sign a checkpoint, so entries up to a
//! checkpoint stay verifiable after older entries are archived and pruned.

use std::fmt;
use std::path::Path;

use canopy::key::{KeyPair, KeyType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

crate::store::schema::from_row! {
    /// A signed statement "entry `seq` of the audit chain has hash `hash`".
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Checkpoint {
        /// The entry vouched for.
        pub seq: i64,
        /// Its hash.
        pub hash: String,
        /// When it was signed, Unix milliseconds.
        pub at_ms: i64,
        /// SHA-256 of the signing key's SubjectPublicKeyInfo, lowercase hex.
        pub key_id: String,
        /// ECDSA P-256 SHA-256 signature (ASN.1 DER), lowercase hex.
        pub signature: String,
    }
}

impl Checkpoint {
    /// The bytes signed: a JSON array, so no field can run into the next.
    fn message(seq: i64, hash: &str, at_ms: i64, key_id: &str) -> Vec<u8> {
        serde_json::json!(["canopy-audit-checkpoint-v1", seq, hash, at_ms, key_id])
            .to_string()
            .into_bytes()
    }
}

/// Why a checkpoint key cannot be used or a checkpoint does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The key file could not be read.
    #[error("audit checkpoint key {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The private key file is readable by others.
    #[error("audit checkpoint key {path} has mode {mode:o}: it must be readable by its owner only (chmod 600 {path})")]
    Mode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not an ECDSA P-256 key.
    #[error("audit checkpoint key {path}: {reason} (use an unencrypted PKCS#8 ECDSA P-256 key, e.g. `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The database failed while checkpointing.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Signing failed.
    #[error("signing the audit checkpoint failed: {0}")]
    Sign(String),
    /// The checkpoint was signed by another key.
    #[error(
        "checkpoint at entry {seq} is signed by key {found}, not by the checkpoint key {expected}"
    )]
    WrongKey {
        /// The entry it vouches for.
        seq: i64,
        /// Key id in the checkpoint.
        found: String,
        /// Key id of the key checked with.
        expected: String,
    },
    /// The signature does not verify.
    #[error("checkpoint at entry {0}: its signature does not verify with the checkpoint key: it was forged or altered")]
    BadSignature(i64),
}

/// The private key that signs checkpoints. Not `Clone`; zeroized on drop (it owns a
/// [`KeyPair`]); `Debug` shows its key id only.
pub struct CheckpointKey {
    key: KeyPair,
    key_id: String,
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl CheckpointKey {
    /// Loads a PKCS#8 PEM ECDSA P-256 key from a file only its owner can read.
    pub fn load(path: &Path) -> Result<CheckpointKey, CheckpointError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let read = |e: std::io::Error| CheckpointError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CheckpointError::Mode { path: shown, mode });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read)?);
        let key = KeyPair::from_pem(&text).map_err(|e| CheckpointError::Key {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if key.key_type() != KeyType::EcdsaP256 {
            return Err(CheckpointError::Key {
                path: shown,
                reason: format!("it is a {} key", key.key_type()),
            });
        }
        Ok(Self::from_key(key))
    }

    /// A new random key (the dev setup's).
    pub fn generate() -> Result<CheckpointKey, CheckpointError> {
        let key = KeyPair::generate(KeyType::EcdsaP256)
            .map_err(|e| CheckpointError::Sign(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: KeyPair) -> CheckpointKey {
        CheckpointKey {
            key_id: key.fingerprint(),
            key,
        }
    }

    /// The key as unencrypted PKCS#8 PEM, to write to a 0600 file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        self.key.to_unencrypted_pem()
    }

    /// SHA-256 of the public key, lowercase hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half, to verify with.
    pub fn public_key(&self) -> CheckpointPublicKey {
        CheckpointPublicKey {
            spki: self.key.public_key_spki(),
            key_id: self.key_id.clone(),
        }
    }

    /// Signs "entry `seq` has hash `hash`" at `at_ms`.
    pub fn sign(&self, seq: i64, hash: &str, at_ms: i64) -> Result<Checkpoint, CheckpointError> {
        let message = Checkpoint::message(seq, hash, at_ms, &self.key_id);
        let signature = self
            .key
            .sign(&message)
            .map_err(|e| CheckpointError::Sign(e.to_string()))?;
        Ok(Checkpoint {
            seq,
            hash: hash.to_string(),
            at_ms,
            key_id: self.key_id.clone(),
            signature: hex::encode(signature),
        })
    }
}

/// The public key checkpoints are verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPublicKey {
    spki: Vec<u8>,
    key_id: String,
}

impl CheckpointPublicKey {
    /// Reads a `PUBLIC KEY` PEM (as `canopy-issuer audit checkpoint-key` prints it).
    pub fn from_pem(text: &str, source: &str) -> Result<CheckpointPublicKey, CheckpointError> {
        let bad = |reason: String| CheckpointError::Key {
            path: source.to_string(),
            reason,
        };
        let block = ::pem::parse_many(text)
            .map_err(|e| bad(format!("not PEM: {e}")))?
            .into_iter()
            .find(|b| b.tag() == "PUBLIC KEY")
            .ok_or_else(|| bad("no PUBLIC KEY block".into()))?;
        let spki = block.into_contents();
        match KeyType::from_spki(&spki) {
            Ok(KeyType::EcdsaP256) => {}
            Ok(other) => return Err(bad(format!("it is a {other} key"))),
            Err(e) => return Err(bad(e.to_string())),
        }
        Ok(CheckpointPublicKey {
            key_id: hex::encode(Sha256::digest(&spki)),
            spki,
        })
    }

    /// The key as `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        canopy::pem::encode("PUBLIC KEY", &self.spki)
    }

    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Checks that `checkpoint` was signed by this key.
    pub fn verify(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        use x509_parser::prelude::FromDer;
        if checkpoint.key_id != self.key_id {
            return Err(CheckpointError::WrongKey {
                seq: checkpoint.seq,
                found: checkpoint.key_id.clone(),
                expected: self.key_id.clone(),
            });
        }
        let bad = || CheckpointError::BadSignature(checkpoint.seq);
        let (_, spki) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki).map_err(|_| bad())?;
        let signature = hex::decode(&checkpoint.signature).map_err(|_| bad())?;
        let message = Checkpoint::message(
            checkpoint.seq,
            &checkpoint.hash,
            checkpoint.at_ms,
            &checkpoint.key_id,
        );
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &spki.subject_public_key.data,
        )
        .verify(&message, &signature)
        .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_and_any_change_does_not() {
        let key = CheckpointKey::generate().unwrap();
        let public = CheckpointPublicKey::from_pem(&key.public_key().to_pem(), "test").unwrap();
        assert_eq!(public, key.public_key());
        let cp = key.sign(7, &"ab".repeat(32), 1_000).unwrap();
        public.verify(&cp).unwrap();
        for changed in [
            Checkpoint {
                seq: 8,
                ..cp.clone()
            },
            Checkpoint {
                hash: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                at_ms: 1_001,
                ..cp.clone()
            },
        ] {
            assert!(matches!(
                public.verify(&changed),
                Err(CheckpointError::BadSignature(_))
            ));
        }
        let other = CheckpointKey::generate().unwrap();
        let forged = other.sign(7, &cp.hash, 1_000).unwrap();
        assert!(matches!(
            public.verify(&forged),
            Err(CheckpointError::WrongKey { .. })
        ));
        let relabelled = Checkpoint {
            key_id: cp.key_id.clone(),
            ..forged
        };
        assert!(matches!(
            public.verify(&relabelled),
            Err(CheckpointError::BadSignature(7))
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = CheckpointKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.key_id()));
        assert!(!shown.contains("PRIVATE"));
    }
}
