//! The config file as the binary reads it: relative paths taken from the file's folder,
//! the database URL from `CANOPY_STORAGE_URL` checked and used instead of the file's, and
//! errors that name the field at fault and exit 1.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
trust_domain: mesh.example
storage: { url: "sqlite:from-file.db" }
roots: [root.pem]
intermediates:
  - { name: aws, cert: aws.pem, key: aws-key.pem }
"#;

fn migrate(config: &Path, storage_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy-issuer"));
    cmd.args(["migrate", "--config"]).arg(config);
    match storage_url {
        Some(url) => cmd.env("CANOPY_STORAGE_URL", url),
        None => cmd.env_remove("CANOPY_STORAGE_URL"),
    };
    cmd.output().expect("run canopy-issuer")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_database_is_found_from_the_files_folder_or_taken_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issuer.yaml");
    std::fs::write(&config, CONFIG).unwrap();

    // Started elsewhere, the relative SQLite file is still next to the config.
    let out = migrate(&config, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("from-file.db").exists());

    let other = dir.path().join("from-env.db");
    let url = format!("sqlite://{}?mode=rwc", other.display());
    let out = migrate(&config, Some(&url));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.exists(), "the URL from the environment was used");
}

#[test]
fn a_bad_value_is_refused_with_its_field_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issuer.yaml");
    std::fs::write(&config, CONFIG).unwrap();

    let out = migrate(&config, Some("mysql://db/canopy"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "field `storage.url (from $CANOPY_STORAGE_URL)`: must start with sqlite: or postgres://"
        ),
        "{}",
        stderr(&out)
    );

    std::fs::write(&config, CONFIG.replace("name: aws", "name: AWS")).unwrap();
    let out = migrate(&config, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "field `intermediates[0].name`: use 1-63 lowercase letters, digits, '-' or '_'"
        ),
        "{}",
        stderr(&out)
    );

    let key_and_token = CONFIG.replace(
        "key: aws-key.pem }",
        "key: aws-key.pem, pkcs11: { module: m.so, slot: 0, key_label: k, pin_file: pin } }",
    );
    std::fs::write(&config, key_and_token).unwrap();
    let out = migrate(&config, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "field `intermediates[0]`: give the key as exactly one of key (a file) or pkcs11 (a token)"
        ),
        "{}",
        stderr(&out)
    );
}
