//! CFSSL's side: `cfssl serve` over TLS, signing with the same kind of intermediate as
//! canopy (ECDSA P-256, made by canopy's core), a profile that allows only the bench
//! SPIFFE IDs, and its certificate database (SQLite certdb) recording every certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use hyper::StatusCode;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::canopy_side::{BenchCa, TRUST_DOMAIN};
use crate::load::Endpoint;
use crate::server::{free_port_pair, wait_answering, Server};

/// The CFSSL release the benchmark builds (`go install .../cmd/cfssl@v1.6.5`).
pub const VERSION: &str = "v1.6.5";
/// The signing profile the load asks for.
const PROFILE: &str = "spiffe";

/// The request body template for `/api/v1/cfssl/sign`: the URI SAN is named in
/// `hosts`, as OpenBao's request names it in `uri_sans`.
pub const BODY_TEMPLATE: &str =
    r#"{"certificate_request":"{csr}","profile":"spiffe","hosts":["{uri}"]}"#;

/// A running `cfssl serve`.
pub struct Cfssl {
    /// The process.
    pub server: Server,
    /// `cfssl version` (first line).
    pub version: String,
    endpoint: Endpoint,
    db_url: String,
}

/// Where cfssl's SQLite migrations are: `certdb/sqlite/migrations` in the module
/// source that `go install` left in the module cache.
pub fn default_migrations() -> anyhow::Result<PathBuf> {
    let out = Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .context("running `go env GOMODCACHE` (to find cfssl's certdb schema)")?;
    if !out.status.success() {
        bail!("`go env GOMODCACHE` failed");
    }
    let cache = String::from_utf8(out.stdout)?.trim().to_string();
    Ok(Path::new(&cache)
        .join(format!("github.com/cloudflare/cfssl@{VERSION}"))
        .join("certdb/sqlite/migrations"))
}

/// The `-- +goose Up` parts of cfssl's migration files, in order.
fn schema(migrations: &Path) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(migrations)
        .with_context(|| format!("reading cfssl's migrations in {}", migrations.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .sql migrations in {}", migrations.display());
    }
    let mut sql = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let up = text
            .split("-- +goose Down")
            .next()
            .unwrap_or_default()
            .split("-- +goose Up")
            .nth(1)
            .with_context(|| format!("{}: no `-- +goose Up` section", file.display()))?;
        sql.push_str(up);
        sql.push('\n');
    }
    Ok(sql)
}

impl Cfssl {
    /// Writes the CA, profile, TLS and certdb files into a new folder under `dir`,
    /// creates the certdb schema and starts `cfssl serve`.
    pub async fn start(
        bin: &Path,
        migrations: &Path,
        dir: &Path,
        ca: &BenchCa,
    ) -> anyhow::Result<Cfssl> {
        // Absolute, as the server runs in its own folder.
        let bin = &std::fs::canonicalize(bin).with_context(|| format!("{}", bin.display()))?;
        let version = crate::gomodule::release_label(bin, "CFSSL")?;
        let dir = dir.join("cfssl");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ca.pem"), ca.intermediate.certificate().to_pem())?;
        std::fs::write(dir.join("ca-key.pem"), &ca.intermediate_key_pem)?;
        let tls = crate::canopy_side::write_server_tls(&dir, ca)?;
        // Leaves as canopy's workload profile makes them: 1 h, digital signature,
        // server + client auth; names only in the bench trust domain.
        let config = serde_json::json!({
            "signing": {
                "default": {"usages": ["digital signature"], "expiry": "1h"},
                "profiles": {
                    PROFILE: {
                        "usages": ["digital signature", "server auth", "client auth"],
                        "expiry": "1h",
                        "name_whitelist": format!("^spiffe://{}/", TRUST_DOMAIN.replace('.', "\\.")),
                    }
                }
            }
        });
        std::fs::write(dir.join("config.json"), config.to_string())?;
        let db_file = dir.join("certs.db");
        let db_url = format!("sqlite:{}", db_file.display());
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db_file)
            .create_if_missing(true)
            .connect()
            .await
            .context("creating cfssl's certdb")?;
        sqlx::raw_sql(&schema(migrations)?)
            .execute(&mut conn)
            .await
            .context("creating cfssl's certdb schema")?;
        conn.close().await?;
        std::fs::write(
            dir.join("db.json"),
            serde_json::json!({"driver": "sqlite3", "data_source": db_file}).to_string(),
        )?;

        let port = free_port_pair()?;
        let mut command = Command::new(bin);
        command
            .current_dir(&dir)
            .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
            .args([
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config",
                "config.json",
            ])
            .args(["-db-config", "db.json"])
            .arg("-tls-cert")
            .arg(&tls.cert)
            .arg("-tls-key")
            .arg(&tls.key);
        let mut server = Server::spawn("cfssl", command, &dir.join("cfssl.log"))?;
        let base = Endpoint::new(&format!("https://127.0.0.1:{port}/"), &ca.root_pem)?;
        let status = wait_answering(&mut server, &base.at("/api/v1/cfssl/health")).await?;
        if status != StatusCode::OK {
            bail!("cfssl health: HTTP {status}: {}", server.log_tail());
        }
        Ok(Cfssl {
            server,
            version,
            endpoint: base.at("/api/v1/cfssl/sign"),
            db_url,
        })
    }

    /// Where the load signs.
    pub fn sign_endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Certificates in the certdb.
    pub async fn stored(&self) -> anyhow::Result<i64> {
        let mut conn = SqliteConnection::connect(&self.db_url).await?;
        let count: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM certificates")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(count.0)
    }
}
