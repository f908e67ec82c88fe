//! The Go module a peer's binary was built from, as `go version -m` reads it out of the
//! binary (binaries from `go install` print "dev" for their own version).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Runs `BIN version`, which shows the binary runs, and returns what it printed.
pub fn run_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("version")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} version failed", bin.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `NAME v1.6.5`: checks that a `go install`ed binary runs and names the release of
/// the module it was built from.
pub fn release_label(bin: &Path, name: &str) -> anyhow::Result<String> {
    run_version(bin)?;
    let module = version(bin);
    let release = module
        .as_deref()
        .and_then(|m| m.split_whitespace().nth(1))
        .unwrap_or("(version unknown)");
    Ok(format!("{name} {release}"))
}

/// `github.com/cloudflare/cfssl v1.6.5` from `go version -m BIN`, or None without Go.
pub fn version(bin: &Path) -> Option<String> {
    let out = Command::new("go")
        .args(["version", "-m"])
        .arg(bin)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    module_line(&String::from_utf8_lossy(&out.stdout))
}

/// The main module's path and version from `go version -m` output.
fn module_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some("mod")).then_some(())?;
        Some(format!("{} {}", fields.next()?, fields.next()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_main_module() {
        let text = "/x/cfssl: go1.26.8\n\tpath\tgithub.com/cloudflare/cfssl/cmd/cfssl\n\t\
                    mod\tgithub.com/cloudflare/cfssl\tv1.6.5\th1:abc=\n\tdep\tgithub.com/x/y\tv1.0.0\n";
        assert_eq!(
            module_line(text).as_deref(),
            Some("github.com/cloudflare/cfssl v1.6.5")
        );
        assert_eq!(module_line("go1.26.8\n"), None);
    }
}
