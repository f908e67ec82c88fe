//! CA keys that never leave a PKCS#11 token (an HSM, a smart card, SoftHSM): a
//! [`Signer`](crate::ca::Signer) that asks the token to sign.
//!
//! The token is found by label, serial or slot; the key by label or CKA_ID; the PIN is
//! handed in (from a file or a prompt, never an argument) and wiped on drop. One session
//! is opened and reused under a mutex; a session the token lost (removed, reset) is
//! reopened on the next use, so a signer outlives a token that goes away and comes back.
//! ECDSA is CKM_ECDSA over a digest hashed here (every token has it) with the raw r||s
//! answer re-encoded as the DER X.509 wants; RSA is CKM_RSA_PKCS over a DigestInfo.

use crate::der;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256, Sha384};
use zeroize::Zeroizing;

use crate::key::{KeyError, KeyType};

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// A token's user PIN: wiped from memory on drop, never printed.
pub struct Pin(AuthPin);

impl Pin {
    /// A PIN from text already in memory (a prompt's answer).
    pub fn new(text: impl Into<String>) -> Result<Self, Pkcs11Error> {
        let text = Zeroizing::new(text.into());
        if text.is_empty() {
            return Err(Pkcs11Error::EmptyPin);
        }
        Ok(Pin(AuthPin::from(text.as_str())))
    }

    /// The PIN in `path` (its first line; a trailing newline is not part of it).
    pub fn from_file(path: &Path) -> Result<Self, Pkcs11Error> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| Pkcs11Error::PinFile {
                    path: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?,
            );
        Pin::new(text.lines().next().unwrap_or(""))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(redacted)")
    }
}

/// Which token in a module.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSelector {
    /// CKA_LABEL of the token (what `softhsm2-util --init-token --label` set).
    Label(String),
    /// The token's serial number.
    Serial(String),
    /// A slot id.
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "labelled {l:?}"),
            TokenSelector::Serial(s) => write!(f, "with serial {s}"),
            TokenSelector::Slot(s) => write!(f, "in slot {s}"),
        }
    }
}

/// Which private key on a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySelector {
    /// CKA_LABEL.
    Label(String),
    /// CKA_ID.
    Id(Vec<u8>),
}

impl KeySelector {
    /// A key id written as hex (`0a1b...`, colons allowed).
    pub fn id_from_hex(s: &str) -> Result<Self, Pkcs11Error> {
        let clean: String = s.chars().filter(|c| *c != ':').collect();
        match hex::decode(&clean) {
            Ok(id) if !id.is_empty() => Ok(KeySelector::Id(id)),
            _ => Err(Pkcs11Error::BadKeyId(s.chars().take(80).collect())),
        }
    }

    fn attribute(&self) -> Attribute {
        match self {
            KeySelector::Label(l) => Attribute::Label(l.as_bytes().to_vec()),
            KeySelector::Id(id) => Attribute::Id(id.clone()),
        }
    }
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySelector::Label(l) => write!(f, "labelled {l:?}"),
            KeySelector::Id(id) => write!(f, "with id {}", hex::encode(id)),
        }
    }
}

/// The module and token a key lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    /// Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// Which token.
    pub token: TokenSelector,
}

/// Where a key lives, as recorded in ledgers and configs: never a PIN.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyLocation {
    /// The token's label.
    pub token_label: String,
    /// The token's serial number.
    pub token_serial: String,
    /// CKA_ID of the key, hex.
    pub key_id: String,
    /// CKA_LABEL of the key.
    pub key_label: String,
}

/// Whether a key the token lets out (CKA_EXTRACTABLE, or not CKA_SENSITIVE) may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extractable {
    /// Refuse it: a CA key on a token is meant never to leave it.
    Refuse,
    /// Use it anyway (the operator said so with a flag whose name says it).
    Allow,
}

/// What went wrong with a token or a key on it. Never carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("cannot load the PKCS#11 module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error("no token {token} in {module} (tokens present: {present}): check the token selector, or that the token is plugged in")]
    TokenNotFound {
        token: String,
        module: String,
        present: String,
    },
    #[error("wrong PIN for token {token}")]
    WrongPin { token: String },
    #[error("the user PIN of token {token} is locked: unlock it with the security officer PIN")]
    PinLocked { token: String },
    #[error("the PIN is empty")]
    EmptyPin,
    #[error("cannot read the PIN file {path}: {reason}")]
    PinFile { path: String, reason: String },
    #[error("no private key {key} on token {token}")]
    KeyNotFound { key: String, token: String },
    #[error("{count} private keys are {key} on token {token}: select one by its id")]
    KeyAmbiguous {
        key: String,
        token: String,
        count: usize,
    },
    #[error("a key {key} already exists on token {token}: choose another label, or use that key explicitly")]
    KeyExists { key: String, token: String },
    #[error("the key {key} on token {token} can leave the token ({why}): a CA key must be CKA_EXTRACTABLE false and CKA_SENSITIVE true")]
    Extractable {
        key: String,
        token: String,
        why: String,
    },
    #[error("the key {key} on token {token} is not usable: {why}")]
    Unusable {
        key: String,
        token: String,
        why: String,
    },
    #[error("invalid key id {0:?}: give the CKA_ID in hex")]
    BadKeyId(String),
    #[error("the token {token} is not available ({reason}): check that it is present")]
    Unavailable { token: String, reason: String },
    #[error("PKCS#11 {op} failed on token {token}: {reason}")]
    Token {
        op: &'static str,
        token: String,
        reason: String,
    },
}

impl From<Pkcs11Error> for KeyError {
    fn from(e: Pkcs11Error) -> Self {
        match e {
            Pkcs11Error::Unavailable { .. } => KeyError::Unavailable(e.to_string()),
            other => KeyError::Token(other.to_string()),
        }
    }
}

/// The name of a PKCS#11 return value (`SessionHandleInvalid`), for messages.
fn rv_name(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f}: {rv:?}"),
        other => format!("{other:?}"),
    }
}

/// Whether the error means the token or our session is gone (retry after reopening).
fn is_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::SlotIdInvalid
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError,
            _
        )
    )
}

/// A loaded PKCS#11 module. Each is loaded and C_Initialize'd once per process (PKCS#11
/// state is per process, so keys on one module share it). A token that went away leaves
/// some modules (SoftHSM among them) unable to see it again until they are initialized
/// anew: [`Module::reinitialize`] does that, and bumps the generation so that sessions
/// from before (whose handles the module may hand out again) are never used nor closed.
struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    generation: RwLock<u64>,
}

impl Module {
    /// The module at `path`, loaded and initialized on first use.
    fn load(path: &Path) -> Result<Arc<Module>, Pkcs11Error> {
        static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
        let mut modules = MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(path) {
            return Ok(m.clone());
        }
        let fail = |reason: String| Pkcs11Error::Module {
            module: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let ctx = Pkcs11::new(path).map_err(|e| fail(rv_name(&e)))?;
        initialize(&ctx).map_err(|e| fail(rv_name(&e)))?;
        let m = Arc::new(Module {
            ctx,
            path: path.to_path_buf(),
            generation: RwLock::new(0),
        });
        modules.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    /// Shared use of the module at its current generation.
    fn read(&self) -> RwLockReadGuard<'_, u64> {
        self.generation.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Finalizes and initializes the module again, unless someone did since `seen`.
    fn reinitialize(&self, seen: u64) -> Result<(), Pkcs11Error> {
        let mut generation = self.generation.write().unwrap_or_else(|p| p.into_inner());
        if *generation != seen {
            return Ok(());
        }
        let _ = self.ctx.clone().finalize();
        *generation += 1;
        initialize(&self.ctx).map_err(|e| Pkcs11Error::Module {
            module: self.path.display().to_string(),
            reason: rv_name(&e),
        })
    }
}

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The slot holding the token `spec` names, and the token's label and serial.
fn find_token(ctx: &Pkcs11, spec: &TokenSpec) -> Result<(Slot, String, String), Pkcs11Error> {
    let unavailable = |e: CkError| Pkcs11Error::Unavailable {
        token: spec.token.to_string(),
        reason: rv_name(&e),
    };
    let mut present = Vec::new();
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(unavailable)?
    {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim().to_owned();
        let serial = info.serial_number().trim().to_owned();
        let hit = match &spec.token {
            TokenSelector::Label(l) => *l == label,
            TokenSelector::Serial(s) => *s == serial,
            TokenSelector::Slot(id) => *id == slot.id(),
        };
        if hit {
            return Ok((slot, label, serial));
        }
        present.push(format!("{label:?} (serial {serial}, slot {})", slot.id()));
    }
    Err(Pkcs11Error::TokenNotFound {
        token: spec.token.to_string(),
        module: spec.module.display().to_string(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

/// An open, logged-in session: logged out and closed when dropped, unless the module
/// was initialized anew since (then the handle is no longer ours to close).
struct LoggedIn {
    module: Arc<Module>,
    generation: u64,
    session: Option<Session>,
    /// Whether this session's login is ours to undo (PKCS#11 login is per token and
    /// application: a second key on the token finds it already logged in).
    logged_in_here: bool,
}

impl LoggedIn {
    /// Opens a session on `slot` (read-write when `rw`) and logs in with `pin`.
    fn open(
        module: &Arc<Module>,
        slot: Slot,
        rw: bool,
        pin: &AuthPin,
        token: &str,
    ) -> Result<Self, Pkcs11Error> {
        let generation = module.read();
        let session = if rw {
            module.ctx.open_rw_session_no_drop(slot)
        } else {
            module.ctx.open_ro_session_no_drop(slot)
        }
        .map_err(|e| Pkcs11Error::Unavailable {
            token: token.to_owned(),
            reason: rv_name(&e),
        })?;
        let mut li = LoggedIn {
            module: module.clone(),
            generation: *generation,
            session: Some(session),
            logged_in_here: false,
        };
        drop(generation);
        li.logged_in_here = login(li.session(), pin, token)?;
        Ok(li)
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("set until dropped")
    }
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        let generation = self.module.read();
        if let Some(session) = self.session.take() {
            if *generation == self.generation {
                if self.logged_in_here {
                    let _ = session.logout();
                }
                let _ = session.close();
            }
        }
    }
}

/// A logged-in session and the key's handle in it.
struct Open {
    login: LoggedIn,
    key: ObjectHandle,
}

fn login(session: &Session, pin: &AuthPin, token: &str) -> Result<bool, Pkcs11Error> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(false),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(Pkcs11Error::WrongPin {
            token: token.to_owned(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
            token: token.to_owned(),
        }),
        Err(e) if is_gone(&e) => Err(Pkcs11Error::Unavailable {
            token: token.to_owned(),
            reason: rv_name(&e),
        }),
        Err(e) => Err(Pkcs11Error::Token {
            op: "login",
            token: token.to_owned(),
            reason: rv_name(&e),
        }),
    }
}

/// A private key on a PKCS#11 token, usable as a CA [`Signer`](crate::ca::Signer).
pub struct Pkcs11Key {
    module: Arc<Module>,
    id: Vec<u8>,
    location: KeyLocation,
    key_type: KeyType,
    spki: Vec<u8>,
    extractable: bool,
    pin: AuthPin,
    session: Mutex<Option<Open>>,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.module.path)
            .field("location", &self.location)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Opens the private key `key` on the token `spec` names, logging in with `pin`.
    /// A key the token would let out is refused unless `extractable` allows it.
    pub fn open(
        spec: &TokenSpec,
        key: &KeySelector,
        pin: Pin,
        extractable: Extractable,
    ) -> Result<Self, Pkcs11Error> {
        let module = Module::load(&spec.module)?;
        let (slot, token_label, token_serial) = find_token(&module.ctx, spec)?;
        let token = format!("{token_label:?}");
        let li = LoggedIn::open(&module, slot, false, &pin.0, &token)?;
        let found = li
            .session()
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), key.attribute()])
            .map_err(|e| op_error("C_FindObjects", &token, &e))?;
        let handle = match found.as_slice() {
            [] => {
                return Err(Pkcs11Error::KeyNotFound {
                    key: key.to_string(),
                    token,
                })
            }
            [one] => *one,
            many => {
                return Err(Pkcs11Error::KeyAmbiguous {
                    key: key.to_string(),
                    token,
                    count: many.len(),
                })
            }
        };
        let (id, label, leaves, can_sign) = private_attributes(li.session(), handle, &token)?;
        let unusable = |why: String| Pkcs11Error::Unusable {
            key: key.to_string(),
            token: token.clone(),
            why,
        };
        if !can_sign {
            return Err(unusable("CKA_SIGN is false".into()));
        }
        if id.is_empty() {
            return Err(unusable(
                "it has no CKA_ID, so its public key cannot be found".into(),
            ));
        }
        if let Some(why) = &leaves {
            if extractable == Extractable::Refuse {
                return Err(Pkcs11Error::Extractable {
                    key: key.to_string(),
                    token,
                    why: why.clone(),
                });
            }
        }
        let spki = public_key_spki(li.session(), &id, &token).map_err(|e| match e {
            Pkcs11Error::Unusable { why, .. } => unusable(why),
            other => other,
        })?;
        let key_type = KeyType::from_spki(&spki).map_err(|e| unusable(e.to_string()))?;
        if matches!(key_type, KeyType::Ed25519) || !key_type.is_strong_enough() {
            return Err(unusable(format!(
                "{key_type} keys are not supported here (use ECDSA P-256/P-384 or RSA >= 2048)"
            )));
        }
        Ok(Pkcs11Key {
            module,
            location: KeyLocation {
                token_label,
                token_serial,
                key_id: hex::encode(&id),
                key_label: label,
            },
            id,
            key_type,
            spki,
            extractable: leaves.is_some(),
            pin: pin.0,
            session: Mutex::new(Some(Open {
                login: li,
                key: handle,
            })),
        })
    }

    /// Generates a key pair on the token (private half CKA_SENSITIVE, not CKA_EXTRACTABLE,
    /// CKA_SIGN only), labelled `label`, with a fresh random CKA_ID, and opens it.
    /// Refuses when an object with that label is already there.
    pub fn generate(
        spec: &TokenSpec,
        label: &str,
        key_type: KeyType,
        pin: Pin,
    ) -> Result<Self, Pkcs11Error> {
        let module = Module::load(&spec.module)?;
        let (slot, token_label, token_serial) = find_token(&module.ctx, spec)?;
        let token = format!("{token_label:?}");
        let selector = KeySelector::Label(label.to_owned());
        let unusable = |why: String| Pkcs11Error::Unusable {
            key: selector.to_string(),
            token: token.clone(),
            why,
        };
        let (mechanism, curve) = match key_type {
            KeyType::EcdsaP256 => (Mechanism::EccKeyPairGen, Some(OID_P256)),
            KeyType::EcdsaP384 => (Mechanism::EccKeyPairGen, Some(OID_P384)),
            KeyType::Rsa { bits } if bits >= 2048 => (Mechanism::RsaPkcsKeyPairGen, None),
            other => {
                return Err(unusable(format!(
                "{other} keys are not made on tokens (use ecdsa-p256, ecdsa-p384 or rsa2048..4096)"
            )))
            }
        };
        let id: [u8; 16] = rand::random();
        {
            let li = LoggedIn::open(&module, slot, true, &pin.0, &token)?;
            let existing = li
                .session()
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .map_err(|e| op_error("C_FindObjects", &token, &e))?;
            if !existing.is_empty() {
                return Err(Pkcs11Error::KeyExists {
                    key: selector.to_string(),
                    token,
                });
            }
            let common = |private: bool| {
                vec![
                    Attribute::Token(true),
                    Attribute::Private(private),
                    Attribute::Id(id.to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ]
            };
            let mut public = common(false);
            public.push(Attribute::Verify(true));
            match (curve, key_type) {
                (Some(curve), _) => public.push(Attribute::EcParams(der::tlv(0x06, curve))),
                (None, KeyType::Rsa { bits }) => public.extend([
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Encrypt(false),
                ]),
                (None, _) => unreachable!("only RSA has no curve"),
            }
            let mut private = common(true);
            private.extend([
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
            ]);
            li.session()
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(|e| op_error("C_GenerateKeyPair", &token, &e))?;
        }
        let spec = TokenSpec {
            module: spec.module.clone(),
            token: TokenSelector::Serial(token_serial),
        };
        Pkcs11Key::open(
            &spec,
            &KeySelector::Id(id.to_vec()),
            pin,
            Extractable::Refuse,
        )
    }

    /// Where the key lives (token serial and label, key id and label).
    pub fn location(&self) -> &KeyLocation {
        &self.location
    }

    /// Whether the token would let the key out (it was opened with [`Extractable::Allow`]).
    pub fn is_extractable(&self) -> bool {
        self.extractable
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo of the key.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn token_name(&self) -> String {
        format!("{:?}", self.location.token_label)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Open>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session on the token, logged in, with the key's handle.
    fn reopen(&self) -> Result<Open, Pkcs11Error> {
        let spec = TokenSpec {
            module: self.module.path.clone(),
            token: TokenSelector::Serial(self.location.token_serial.clone()),
        };
        let token = self.token_name();
        let unavailable = |reason: String| Pkcs11Error::Unavailable {
            token: token.clone(),
            reason,
        };
        let (slot, _, _) = find_token(&self.module.ctx, &spec).map_err(|e| match e {
            Pkcs11Error::TokenNotFound { .. } => unavailable("the token is not present".into()),
            other => other,
        })?;
        let li = LoggedIn::open(&self.module, slot, false, &self.pin, &token)?;
        let found = li
            .session()
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(self.id.clone()),
            ])
            .map_err(|e| unavailable(rv_name(&e)))?;
        let [key] = found.as_slice() else {
            return Err(unavailable(format!(
                "key {} is not on it",
                self.location.key_id
            )));
        };
        // Another token that took the serial, or another key under the id, is not ours.
        if public_key_spki(li.session(), &self.id, &token)
            .ok()
            .as_deref()
            != Some(&self.spki[..])
        {
            return Err(unavailable(format!(
                "key {} is not the one opened",
                self.location.key_id
            )));
        }
        Ok(Open {
            login: li,
            key: *key,
        })
    }

    /// Runs `f` on an open session. A session the token lost is reopened; a token the
    /// module cannot see any more makes the module initialize anew once, so a token that
    /// came back is found. Wrong PIN and the like are reported, not retried.
    fn with_session<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, Pkcs11Error> {
        let mut guard = self.lock();
        let mut reinitialized = false;
        // A fresh session that fails the same way again means the token is gone.
        for _ in 0..4 {
            let generation = *self.module.read();
            if guard
                .as_ref()
                .is_some_and(|o| o.login.generation != generation)
            {
                *guard = None;
            }
            if guard.is_none() {
                match self.reopen() {
                    Ok(open) => *guard = Some(open),
                    Err(Pkcs11Error::Unavailable { .. }) if !reinitialized => {
                        reinitialized = true;
                        self.module.reinitialize(generation)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let open = guard.as_ref().expect("session set above");
            let result = {
                let current = self.module.read();
                if *current != open.login.generation {
                    continue;
                }
                f(open.login.session(), open.key)
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if is_gone(&e) => *guard = None,
                Err(e) => return Err(op_error(op, &self.token_name(), &e)),
            }
        }
        Err(Pkcs11Error::Unavailable {
            token: self.token_name(),
            reason: format!("{op} failed on every fresh session"),
        })
    }

    /// Checks that the key can sign now: the token is there and a session on it works
    /// (reopened if it was lost).
    pub fn check(&self) -> Result<(), Pkcs11Error> {
        self.with_session("C_GetAttributeValue", |session, key| {
            // An attribute read asks the token, not only the library's session table.
            session
                .get_attributes(key, &[AttributeType::KeyType])
                .map(|_| ())
        })
    }

    /// Signs `msg` with the key type's algorithm; the answer is what X.509 carries.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let (mechanism, input) = match self.key_type {
            KeyType::EcdsaP256 => (Mechanism::Ecdsa, Sha256::digest(msg).to_vec()),
            KeyType::EcdsaP384 => (Mechanism::Ecdsa, Sha384::digest(msg).to_vec()),
            KeyType::Rsa { .. } => {
                let mut v = SHA256_DIGEST_INFO.to_vec();
                v.extend_from_slice(&Sha256::digest(msg));
                (Mechanism::RsaPkcs, v)
            }
            KeyType::Ed25519 => {
                return Err(Pkcs11Error::Token {
                    op: "C_Sign",
                    token: self.token_name(),
                    reason: "Ed25519 keys are refused when opened".into(),
                })
            }
        };
        let raw = self.with_session("C_Sign", |session, key| {
            session.sign(&mechanism, key, &input)
        })?;
        match self.key_type {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                der::ecdsa_signature(&raw).ok_or_else(|| Pkcs11Error::Token {
                    op: "C_Sign",
                    token: self.token_name(),
                    reason: format!("an ECDSA signature of odd length {}", raw.len()),
                })
            }
            _ => Ok(raw),
        }
    }
}

impl Drop for Pkcs11Key {
    fn drop(&mut self) {
        // Log out and close the session; the PIN (an AuthPin) is wiped with the rest.
        self.lock().take();
    }
}

fn op_error(op: &'static str, token: &str, e: &CkError) -> Pkcs11Error {
    if is_gone(e) {
        Pkcs11Error::Unavailable {
            token: token.to_owned(),
            reason: rv_name(e),
        }
    } else {
        Pkcs11Error::Token {
            op,
            token: token.to_owned(),
            reason: rv_name(e),
        }
    }
}

/// CKA_ID, CKA_LABEL, why the key can leave the token (None: it cannot), CKA_SIGN.
fn private_attributes(
    session: &Session,
    key: ObjectHandle,
    token: &str,
) -> Result<(Vec<u8>, String, Option<String>, bool), Pkcs11Error> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::Sign,
            ],
        )
        .map_err(|e| op_error("C_GetAttributeValue", token, &e))?;
    let (mut id, mut label) = (Vec::new(), String::new());
    let (mut extractable, mut sensitive, mut sign) = (true, false, false);
    for a in attrs {
        match a {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::Extractable(b) => extractable = b,
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Sign(b) => sign = b,
            _ => {}
        }
    }
    let leaves = match (extractable, sensitive) {
        (false, true) => None,
        (true, true) => Some("CKA_EXTRACTABLE is true".to_owned()),
        (false, false) => Some("CKA_SENSITIVE is false".to_owned()),
        (true, false) => Some("CKA_EXTRACTABLE is true and CKA_SENSITIVE is false".to_owned()),
    };
    Ok((id, label, leaves, sign))
}

/// The SubjectPublicKeyInfo of the public key object with CKA_ID `id`.
fn public_key_spki(session: &Session, id: &[u8], token: &str) -> Result<Vec<u8>, Pkcs11Error> {
    let unusable = |why: &str| Pkcs11Error::Unusable {
        key: KeySelector::Id(id.to_vec()).to_string(),
        token: token.to_owned(),
        why: why.to_owned(),
    };
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(|e| op_error("C_FindObjects", token, &e))?;
    let [public] = found.as_slice() else {
        return Err(unusable(
            "there is not exactly one public key object with its CKA_ID",
        ));
    };
    let attrs = session
        .get_attributes(
            *public,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(|e| op_error("C_GetAttributeValue", token, &e))?;
    let (mut kind, mut params, mut point, mut n, mut e) = (None, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(k) => kind = Some(k),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    match (kind, params, point, n, e) {
        (Some(k), Some(params), Some(point), _, _) if k == CkKeyType::EC => {
            // CKA_EC_POINT is a DER OCTET STRING around the point (some tokens omit it).
            let point = der::unwrap_octet_string(&point).unwrap_or(&point);
            if point.first() != Some(&0x04) {
                return Err(unusable("its EC point is not uncompressed"));
            }
            let alg = der::tlv(0x30, &[der::tlv(0x06, OID_EC_PUBLIC_KEY), params].concat());
            Ok(der::tlv(0x30, &[alg, der::bit_string(point)].concat()))
        }
        (Some(k), _, _, Some(n), Some(e)) if k == CkKeyType::RSA => {
            let rsa = der::tlv(0x30, &[der::uint(&n), der::uint(&e)].concat());
            let alg = der::tlv(0x30, &[der::tlv(0x06, OID_RSA), vec![0x05, 0x00]].concat());
            Ok(der::tlv(0x30, &[alg, der::bit_string(&rsa)].concat()))
        }
        _ => Err(unusable("it is neither an EC nor an RSA key")),
    }
}

#[cfg(test)]
mod tests {
    use super::der;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(der::uint(&[0, 0, 1]), vec![0x02, 0x01, 0x01]);
        assert_eq!(der::uint(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der::uint(&[0, 0]), vec![0x02, 0x01, 0x00]);
        assert_eq!(der::uint(&[0x7f, 0xff]), vec![0x02, 0x02, 0x7f, 0xff]);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let v = der::tlv(0x04, &[0u8; 300]);
        assert_eq!(&v[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der::unwrap_octet_string(&v).map(<[u8]>::len), Some(300));
        assert_eq!(der::unwrap_octet_string(&v[..v.len() - 1]), None);
    }

    #[test]
    fn ecdsa_raw_signatures_become_der_that_aws_lc_verifies() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
        let rng = SystemRandom::new();
        let fixed = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(fixed, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref()).unwrap();
        for i in 0..64u8 {
            let msg = [i; 32];
            let raw = key.sign(&rng, &msg).unwrap();
            let der = der::ecdsa_signature(raw.as_ref()).unwrap();
            signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_ASN1,
                key.public_key().as_ref(),
            )
            .verify(&msg, &der)
            .unwrap();
        }
        assert_eq!(der::ecdsa_signature(&[1, 2, 3]), None);
    }
}
