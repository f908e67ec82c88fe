//! Where passphrases come from: a file, or a prompt on a terminal. Never an argument,
//! never an environment variable, never printed.

use std::io::IsTerminal;
use std::path::Path;

use canopy::key::Passphrase;
use zeroize::Zeroizing;

use crate::error::{user, Result};

/// Whether the passphrase opens an existing key or protects a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Opening an existing encrypted key: asked once.
    Unlock,
    /// Encrypting a new key: asked twice on a terminal, and must be strong enough.
    Create,
}

/// A passphrase for `what` ("root key") from `file` (flag `flag`) or a terminal prompt.
pub fn obtain(file: Option<&Path>, what: &str, flag: &str, purpose: Purpose) -> Result<Passphrase> {
    let pass = match file {
        Some(path) => Passphrase::from_file(path)?,
        None => prompt(what, flag, purpose)?,
    };
    if purpose == Purpose::Create {
        pass.check_strength()
            .map_err(|e| user(format!("{e} (for the {what})")))?;
    }
    Ok(pass)
}

fn prompt(what: &str, flag: &str, purpose: Purpose) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        return Err(user(match purpose {
            Purpose::Unlock => {
                format!("the {what} is encrypted: pass {flag} FILE or run in a terminal")
            }
            Purpose::Create => format!(
                "a passphrase is needed to encrypt the {what}: pass {flag} FILE or run in a terminal"
            ),
        }));
    }
    let read = |label: String| -> Result<Zeroizing<String>> {
        rpassword::prompt_password(label)
            .map(Zeroizing::new)
            .map_err(|e| user(format!("cannot read the passphrase from the terminal: {e}")))
    };
    let first = read(format!("Passphrase for the {what}: "))?;
    if purpose == Purpose::Create {
        let again = read(format!("Repeat the passphrase for the {what}: "))?;
        if *first != *again {
            return Err(user("the two passphrases differ: run the command again"));
        }
    }
    Ok(Passphrase::new(first.as_str())?)
}
