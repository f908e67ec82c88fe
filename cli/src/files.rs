//! Writing files the way a CA must: atomically (temp file in the same directory, fsync,
//! rename, fsync the directory), with restrictive modes, and always ending in a newline.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{internal, user, Result};

/// Mode of private keys and anything that contains one.
pub const PRIVATE: u32 = 0o600;
/// Mode of certificates, chains, CRLs and the ledger.
pub const PUBLIC: u32 = 0o644;
/// Mode of directories pkictl creates.
pub const PRIVATE_DIR: u32 = 0o700;

/// A name for a temporary sibling of `path`, unique within this machine for this run.
// The clock's nanoseconds only make the name unique (with the pid and a counter); no
// decision is taken on them.
#[allow(clippy::disallowed_methods)]
pub fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pkictl".into());
    path.with_file_name(format!(".{name}.tmp-{}-{n}-{nanos}", std::process::id()))
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `text` (plus a final newline if it lacks one) to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(&parent_of(path))
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(path, e));
    }
    Ok(())
}

/// Writes a new file inside a directory being staged (no rename needed: the directory is).
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let res = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.sync_all()
    })();
    res.map_err(|e| write_error(path, e))
}

/// Creates a directory (and missing parents) with mode 0700 for the new ones.
pub fn create_private_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .map_err(|e| write_error(path, e))
}

/// fsyncs a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_error(path: &Path, e: std::io::Error) -> crate::error::CliError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => {
            user(format!("cannot write {}: {e}", path.display()))
        }
        _ => internal(format!("cannot write {}: {e}", path.display())),
    }
}

/// Reads a text file; `what` names it in the error ("CSR", "root certificate").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| {
        user(format!(
            "cannot read {what} {}: {}",
            path.display(),
            match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                _ => e.to_string(),
            }
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| user(format!("{what} {} is not PEM text", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_sets_mode_adds_newline_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_atomic(&p, "secret", PRIVATE).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "secret\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, "replaced\n", PRIVATE).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "replaced\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn write_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        write_new(&p, "one", PUBLIC).unwrap();
        assert!(write_new(&p, "two", PUBLIC).is_err());
        assert_eq!(fs::read_to_string(&p).unwrap(), "one\n");
    }
}
