//! pkictl: canopy's offline root CA. The binary is a thin `main` around [`run`].

pub mod args;
pub mod bundle;
pub mod cacerts;
pub mod crl;
pub mod error;
pub mod files;
pub mod inspect;
pub mod intermediate;
pub mod ledger;
pub mod output;
pub mod passphrase;
pub mod root;
pub mod rotation;
pub mod token;
pub mod verify;

use args::{Cli, Command};
pub use error::{CliError, Result};

/// Runs one parsed command at time `now`.
pub fn run(cli: &Cli, now: time::OffsetDateTime) -> Result<()> {
    match &cli.command {
        Command::InitRoot(a) => root::init_root(a, now),
        Command::SignIntermediate(a) => intermediate::sign(a, now),
        Command::NewIntermediate(a) => intermediate::new(a, now),
        Command::Cacerts(a) => cacerts::run(a, now),
        Command::Inspect(a) => inspect::run(a, now),
        Command::Verify(a) => verify::run(a, now),
        Command::Ledger(a) => ledger::run(a),
        Command::Revoke(a) => crl::revoke(a, now),
        Command::Crl(a) => crl::crl(a, now),
        Command::CrossSign(a) => rotation::cross_sign(a, now),
        Command::Bundle(a) => bundle::run(a),
    }
}
