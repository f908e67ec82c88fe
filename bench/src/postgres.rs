//! A fresh PostgreSQL database for one run, dropped afterwards.

use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};

/// A database made for this run.
#[derive(Debug)]
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
    /// `fsync` and `synchronous_commit` of the server, as it reports them.
    pub durability: String,
}

async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url))
        .await
        .context("connecting to PostgreSQL timed out")?
        .with_context(|| format!("connecting to PostgreSQL at {url}"))
}

impl FreshDatabase {
    /// Creates `canopy_bench_PID_TIME` through `admin_url` (a database of the server
    /// the user may create databases on).
    pub async fn create(admin_url: &str) -> anyhow::Result<FreshDatabase> {
        let Some((base, _)) = admin_url.rsplit_once('/') else {
            bail!("PostgreSQL URL {admin_url:?} names no database");
        };
        if !base.contains("://") || base.ends_with('/') {
            bail!("PostgreSQL URL {admin_url:?} names no database");
        }
        let mut admin = connect(admin_url).await?;
        let name = format!(
            "canopy_bench_{}_{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("CREATE DATABASE")?;
        let fsync: (String,) = sqlx::query_as("SHOW fsync").fetch_one(&mut admin).await?;
        let commit: (String,) = sqlx::query_as("SHOW synchronous_commit")
            .fetch_one(&mut admin)
            .await?;
        admin.close().await?;
        Ok(FreshDatabase {
            admin_url: admin_url.to_string(),
            url: format!("{base}/{name}"),
            durability: format!("fsync={}, synchronous_commit={}", fsync.0, commit.0),
            name,
        })
    }

    /// Drops the database.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}
