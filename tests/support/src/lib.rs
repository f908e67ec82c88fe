//! Test-only helpers for canopy's end-to-end tests: find and run the real binaries,
//! run `openssl` as an independent checker, make private temp folders.
// Tests and benchmarks read the wall clock freely (clippy.toml keeps it out of the code).
#![allow(clippy::disallowed_methods)]

pub mod certmanager;
pub mod cluster;
pub mod istiod;
pub mod pki;
pub mod softhsm;
pub mod x509check;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root (where the top Cargo.toml is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support is two levels below the root")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Path to a workspace binary (`pkictl`, `canopy-issuer`), built once per test process
/// with the same profile as the running test, so tests always run the current code.
/// `CANOPY_TEST_BINS_BUILT=1` (tests/run.sh, which builds them just before the tests)
/// skips that build: under nextest every test is its own process.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let release = cfg!(not(debug_assertions));
    BUILT.get_or_init(|| {
        if std::env::var_os("CANOPY_TEST_BINS_BUILT").is_some_and(|v| v == "1") && !release {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "pkictl",
            "-p",
            "canopy-issuer",
            "-p",
            "canopy-testsupport",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A `Command` for a workspace binary with a clean environment for canopy variables.
pub fn cmd(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("CANOPY_PASSPHRASE").stdin(Stdio::null());
    c
}

/// Runs a command and returns its output; panics with stderr when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs and asserts success, returning stdout as text.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and asserts failure with the given exit code, returning stderr as text.
pub fn run_fails(cmd: &mut Command, code: i32) -> String {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?} should exit {code}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An `openssl` command (the independent checker). Panics if openssl is missing:
/// tests/run.sh installs it.
pub fn openssl() -> Command {
    let c = Command::new("openssl");
    assert!(
        Command::new("openssl").arg("version").output().is_ok(),
        "openssl is not installed: run tests/run.sh, which installs it"
    );
    c
}

/// `openssl req` that makes an unencrypted P-256 key at `key` and a CSR at `csr` with
/// the given subject and, if any, one `subjectAltName` extension (e.g. `URI:spiffe://...`);
/// panics with openssl's output if it fails.
pub fn openssl_p256_csr(key: &Path, csr: &Path, subject: &str, san: Option<&str>) {
    let mut c = openssl();
    c.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ])
    .args(["-nodes", "-subj", subject]);
    if let Some(san) = san {
        c.arg("-addext").arg(format!("subjectAltName={san}"));
    }
    run_ok(c.arg("-keyout").arg(key).arg("-out").arg(csr));
}

/// `openssl verify -x509_strict` of `cert` against `root` with optional untrusted chain.
pub fn openssl_verify(root: &Path, untrusted: Option<&Path>, cert: &Path) -> Output {
    openssl_verify_at(root, untrusted, cert, None)
}

/// [`openssl_verify`] as of `at` (unix seconds, openssl's `-attime`) when given, else now.
/// The one place the tests run `openssl verify`.
pub fn openssl_verify_at(
    root: &Path,
    untrusted: Option<&Path>,
    cert: &Path,
    at: Option<i64>,
) -> Output {
    let mut c = openssl();
    c.args(["verify", "-x509_strict"]);
    if let Some(at) = at {
        c.arg("-attime").arg(at.to_string());
    }
    c.arg("-CAfile").arg(root);
    if let Some(u) = untrusted {
        c.arg("-untrusted").arg(u);
    }
    c.arg(cert);
    run(&mut c)
}

/// [`openssl_verify`] of PEM texts, written to a fresh folder inside `dir`: whether it
/// passed, and openssl's stdout and stderr.
pub fn openssl_verify_pem(
    dir: &Path,
    root_pem: &str,
    chain_pem: &str,
    leaf_pem: &str,
) -> (bool, String) {
    let files = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(dir)
        .expect("create a folder for openssl verify");
    let write = |name: &str, pem: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, pem).expect("write a PEM for openssl verify");
        path
    };
    let (root, chain, leaf) = (
        write("root.pem", root_pem),
        write("chain.pem", chain_pem),
        write("leaf.pem", leaf_pem),
    );
    let out = openssl_verify(&root, Some(&chain), &leaf);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A private temporary folder, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("canopy-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Writes a passphrase file (mode 0600) and returns its path.
pub fn passphrase_file(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{passphrase}\n")).expect("write passphrase");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// The permission bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file below `dir`, relative, sorted (to show "nothing was written").
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Runs a build script of a Go test tool (tests/*/build.sh: it prints what it builds on
/// stderr, which is passed through, and the binary's path as the last line of stdout)
/// and returns that path.
pub fn built_by(script: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); its messages are above",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "{} did not print the binary's path: {stdout:?}",
        script.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (for a listener a test starts next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// `canopy-issuer serve --config CONFIG` in the background, its stderr in `log`; killed
/// on drop.
pub struct Serving(std::process::Child);

impl Serving {
    pub fn start(config: &Path, log: &Path) -> Serving {
        Serving::start_as(config, log, None)
    }

    /// [`Serving::start`] as the replica `pod_name` (the `POD_NAME` a pod gets from the
    /// downward API: its Lease identity).
    pub fn start_as(config: &Path, log: &Path, pod_name: Option<&str>) -> Serving {
        let log = std::fs::File::create(log).expect("create the issuer's log");
        let mut cmd = Command::new(bin("canopy-issuer"));
        if let Some(name) = pod_name {
            cmd.env("POD_NAME", name);
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("CANOPY_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start canopy-issuer serve");
        Serving(child)
    }
}

impl Serving {
    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Stops the process as Kubernetes stops a pod (SIGTERM: it stops its controllers,
    /// releasing their Leases) and returns how it ended; panics after 30 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("canopy-issuer did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
