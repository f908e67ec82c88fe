//! Relative paths in the configuration file are taken from the file's folder, so the
//! issuer reads the same files whatever directory it was started in.

use std::path::{Path, PathBuf};

use super::file::ConfigFile;

/// Joins every relative path of `file` (and a relative SQLite file in `storage.url`) to `base`.
pub fn resolve(file: &mut ConfigFile, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    file.roots.iter_mut().for_each(fix);
    file.crls.iter_mut().for_each(fix);
    for i in &mut file.intermediates {
        fix(&mut i.cert);
        i.key.iter_mut().for_each(fix);
        i.passphrase_file.iter_mut().for_each(fix);
        if let Some(p11) = &mut i.pkcs11 {
            fix(&mut p11.pin_file);
        }
    }
    file.audit.checkpoint_key.iter_mut().for_each(fix);
    file.audit.archive_dir.iter_mut().for_each(fix);
    if let Some(tls) = &mut file.listen.tls {
        fix(&mut tls.cert);
        fix(&mut tls.key);
        tls.passphrase_file.iter_mut().for_each(fix);
    }
    for c in &mut file.clusters {
        c.kubeconfig.iter_mut().for_each(fix);
        if let Some(jwt) = &mut c.jwt {
            jwt.jwks_file.iter_mut().for_each(fix);
        }
    }
    if let Some(url) = sqlite_url_from(&file.storage.url, base) {
        file.storage.url = url;
    }
}

/// `sqlite:FILE` with a relative FILE, joined to `base`; `None` for anything else.
fn sqlite_url_from(url: &str, base: &Path) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let file = rest.trim_start_matches("//");
    let (file, query) = file.split_once('?').unwrap_or((file, ""));
    if file.is_empty() || file.starts_with('/') || file == ":memory:" {
        return None;
    }
    let joined = base.join(file);
    Some(if query.is_empty() {
        format!("sqlite://{}", joined.display())
    } else {
        format!("sqlite://{}?{query}", joined.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_sqlite_files_move() {
        let base = Path::new("/etc/canopy");
        assert_eq!(
            sqlite_url_from("sqlite:issuer.db?mode=rwc", base).as_deref(),
            Some("sqlite:///etc/canopy/issuer.db?mode=rwc")
        );
        assert_eq!(sqlite_url_from("sqlite:///var/issuer.db", base), None);
        assert_eq!(sqlite_url_from("sqlite::memory:", base), None);
        assert_eq!(sqlite_url_from("postgres://db/canopy", base), None);
    }
}
