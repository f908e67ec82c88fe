//! Passphrase prompts on a real terminal: `script` (util-linux) gives pkictl a pty, so
//! rpassword reads with echo off, exactly as on an operator's laptop.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use canopy_testsupport::{openssl, run};

const TYPED: &str = "typed on the terminal, long";

/// Runs pkictl under a pty, typing each line after a pause; returns (exit code, all output).
fn on_terminal(args: &str, lines: &[&str]) -> (i32, String) {
    let bin = canopy_testsupport::bin("pkictl");
    let mut child = Command::new("script")
        .args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs pkictl on a pty");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        std::thread::sleep(Duration::from_millis(700));
        writeln!(stdin, "{l}").unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn init_root_prompts_twice_without_echo() {
    let tmp = canopy_testsupport::tempdir();
    let dir = tmp.path().join("root");
    let (code, out) = on_terminal(
        &format!("init-root --cn Typed --dir {}", dir.display()),
        &[TYPED, TYPED],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Passphrase for the root key") && out.contains("Repeat the passphrase"),
        "{out}"
    );
    assert!(!out.contains(TYPED), "the passphrase was echoed: {out}");
    // The typed passphrase is the one that protects the key.
    let pass = canopy_testsupport::passphrase_file(tmp.path(), "p", TYPED);
    let mut passin = std::ffi::OsString::from("file:");
    passin.push(&pass);
    let o = run(openssl()
        .args(["pkey", "-noout", "-in"])
        .arg(dir.join("root-key.pem"))
        .arg("-passin")
        .arg(&passin));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn mismatched_prompts_write_nothing() {
    let tmp = canopy_testsupport::tempdir();
    let dir = tmp.path().join("root");
    let (code, out) = on_terminal(
        &format!("init-root --cn Typed --dir {}", dir.display()),
        &[TYPED, "something else entirely"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the two passphrases differ"), "{out}");
    assert!(!Path::new(&dir).exists());
    assert!(canopy_testsupport::list_files(tmp.path()).is_empty());
}
