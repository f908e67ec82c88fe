//! CA keys on a PKCS#11 token: the flags that name one, the PIN, and the key reference
//! file (`root-key.pkcs11.json`, `intermediates/NAME/key.pkcs11.json`) that says where a
//! key lives instead of holding it. The reference holds no secret: module path, token
//! serial and label, key id and label.

use std::path::{Path, PathBuf};

use canopy::pkcs11::{
    Extractable, KeyLocation, KeySelector, Pin, Pkcs11Error, Pkcs11Key, TokenSelector, TokenSpec,
};
use canopy::KeyType;
use std::io::IsTerminal;
use zeroize::Zeroizing;

use crate::args::Pkcs11Args;
use crate::error::{internal, user, CliError, Result};
use crate::files;

/// Where a key on a token lives, as written beside the certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyReference {
    /// The PKCS#11 module that reaches the token.
    pub module: PathBuf,
    /// Token and key.
    #[serde(flatten)]
    pub location: KeyLocation,
    /// The key's type.
    pub key_type: KeyType,
    /// The operator accepted a key the token lets out (`--allow-extractable-key`).
    #[serde(default)]
    pub allow_extractable: bool,
}

impl KeyReference {
    /// The reference to `key`, reached through `module`.
    pub fn of(key: &Pkcs11Key, module: &Path) -> Self {
        KeyReference {
            module: module.to_path_buf(),
            location: key.location().clone(),
            key_type: key.key_type(),
            allow_extractable: key.is_extractable(),
        }
    }

    /// Reads a reference file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = files::read_text(path, "key reference")?;
        serde_json::from_str(&text).map_err(|e| {
            user(format!(
                "{}: {e}: the key reference is damaged; restore it from the ceremony backup",
                path.display()
            ))
        })
    }

    /// The reference as the text of its file.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("references serialize");
        s.push('\n');
        s
    }

    /// Opens the key on its token (found by serial, the key by id) with `pin`.
    pub fn open(&self, pin: Pin) -> Result<Pkcs11Key> {
        let spec = TokenSpec {
            module: self.module.clone(),
            token: TokenSelector::Serial(self.location.token_serial.clone()),
        };
        let key = KeySelector::id_from_hex(&self.location.key_id).map_err(token_error)?;
        let allow = if self.allow_extractable {
            Extractable::Allow
        } else {
            Extractable::Refuse
        };
        Pkcs11Key::open(&spec, &key, pin, allow).map_err(token_error)
    }
}

/// A PIN from `file` (flag `flag`) or, on a terminal, a prompt; never an argument.
pub fn pin(file: Option<&Path>, what: &str, flag: &str) -> Result<Pin> {
    if let Some(path) = file {
        return Pin::from_file(path).map_err(token_error);
    }
    if !std::io::stdin().is_terminal() {
        return Err(user(format!(
            "the {what} is on a PKCS#11 token: pass its PIN with {flag} FILE or run in a terminal"
        )));
    }
    let text = Zeroizing::new(
        rpassword::prompt_password(format!("PIN of the token holding the {what}: "))
            .map_err(|e| user(format!("cannot read the PIN from the terminal: {e}")))?,
    );
    Pin::new(text.as_str()).map_err(token_error)
}

/// A token error as pkictl reports it: the user's to fix, except a module that
/// failed an operation it should support.
pub fn token_error(e: Pkcs11Error) -> CliError {
    match e {
        Pkcs11Error::Token { .. } => internal(e),
        other => user(other),
    }
}

impl Pkcs11Args {
    /// The module and token the flags name (`--pkcs11` given).
    pub fn spec(&self) -> Result<TokenSpec> {
        let module = self
            .pkcs11_module
            .clone()
            .ok_or_else(|| user("--pkcs11 needs --pkcs11-module PATH (the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)"))?;
        let token = match (&self.pkcs11_token, self.pkcs11_slot) {
            (Some(label), None) => TokenSelector::Label(label.clone()),
            (None, Some(slot)) => TokenSelector::Slot(slot),
            _ => {
                return Err(user(
                    "--pkcs11 needs the token: --pkcs11-token LABEL or --pkcs11-slot ID",
                ))
            }
        };
        Ok(TokenSpec { module, token })
    }

    /// The existing key the flags name (`--pkcs11-key-id` before `--pkcs11-key-label`).
    pub fn existing_key(&self) -> Result<KeySelector> {
        match (&self.pkcs11_key_id, &self.pkcs11_key_label) {
            (Some(id), _) => KeySelector::id_from_hex(id).map_err(token_error),
            (None, Some(label)) => Ok(KeySelector::Label(label.clone())),
            (None, None) => Err(user(
                "name the key on the token: --pkcs11-key-label LABEL or --pkcs11-key-id HEX",
            )),
        }
    }
}
