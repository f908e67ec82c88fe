//! SoftHSM2 tokens for tests: each test gets its own SOFTHSM2_CONF and token directory,
//! handed to the processes it starts (never set in the test process itself).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user PIN of every test token.
pub const PIN: &str = "246810";
const SO_PIN: &str = "13579111";

/// Where Debian and others put the SoftHSM2 module.
const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 module, if softhsm2 is installed.
pub fn module() -> Option<PathBuf> {
    MODULES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A SoftHSM2 installation private to one test.
pub struct SoftHsm {
    /// The SOFTHSM2_CONF file.
    pub conf: PathBuf,
    /// The token directory.
    pub tokens: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// A file (0600) holding [`PIN`].
    pub pin_file: PathBuf,
    hidden: PathBuf,
}

impl SoftHsm {
    /// A fresh configuration under `dir`; panics when softhsm2 is not installed.
    pub fn new(dir: &Path) -> Self {
        let module = module().expect(
            "softhsm2 is not installed: apt-get install softhsm2 (tests/run.sh installs it)",
        );
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin_file = crate::passphrase_file(dir, "token-pin", PIN);
        SoftHsm {
            conf,
            tokens,
            module,
            pin_file,
            hidden: dir.join("softhsm-tokens-away"),
        }
    }

    /// Initializes a new token labelled `label` with [`PIN`].
    pub fn init_token(&self, label: &str) {
        crate::run_ok(self.env(&mut Command::new("softhsm2-util")).args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
    }

    /// Points `cmd` at this installation.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("SOFTHSM2_CONF", &self.conf)
    }

    /// Takes every token away, as if unplugged (moves the token directory aside).
    pub fn unplug(&self) {
        std::fs::rename(&self.tokens, &self.hidden).unwrap();
        std::fs::create_dir_all(&self.tokens).unwrap();
    }

    /// Puts the tokens back.
    pub fn plug_in(&self) {
        std::fs::remove_dir(&self.tokens).unwrap();
        std::fs::rename(&self.hidden, &self.tokens).unwrap();
    }

    /// `softhsm-testkey` (this crate's helper) with this installation's environment.
    pub fn testkey(&self, args: &[&str]) -> String {
        let mut c = Command::new(crate::bin("softhsm-testkey"));
        self.env(&mut c)
            .arg(&self.module)
            .args(args)
            .env("TESTKEY_PIN", PIN);
        crate::run_ok(&mut c)
    }
}
