//! `pkictl`: parse, run, and turn the outcome into an exit code (0 ok, 1 user, 2 internal).

use clap::Parser;
use pkictl::args::Cli;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = pkictl::run(&cli, now()) {
        eprintln!("pkictl: error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// Now, in whole seconds: certificates, CRLs and the ledger all carry whole seconds.
/// pkictl's one reading of the wall clock (clippy.toml); commands are handed the time.
#[allow(clippy::disallowed_methods)]
fn now() -> time::OffsetDateTime {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}
