//! Where a subcommand's configuration comes from (`--config FILE` or `--dev`), and how a
//! report is printed (`--output text|json`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use canopy_issuer::config::Config;
use canopy_issuer::dev;
use canopy_issuer::store::Store;
use clap::Args;

/// Where the configuration comes from.
#[derive(Args)]
pub struct Source {
    /// Configuration file (YAML).
    #[arg(long, short, conflicts_with = "dev", required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Use the dev setup in the data folder (made on first use).
    #[arg(long)]
    dev: bool,
    /// Data folder of the dev setup.
    #[arg(long, default_value = ".canopy-dev", requires = "dev")]
    data_dir: PathBuf,
}

impl Source {
    /// The configuration (with `listen` replacing its address), and the dev setup if `--dev`.
    pub async fn load_listening(
        &self,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<(Config, Option<dev::DevSetup>)> {
        if self.dev {
            let setup = dev::prepare(&self.data_dir, listen).await?;
            Ok((setup.config.clone(), Some(setup)))
        } else {
            let path = self
                .config
                .as_deref()
                .unwrap_or(Path::new("canopy-issuer.yaml"));
            let mut config = Config::load(path)?;
            if let Some(addr) = listen {
                config.listen.address = addr;
            }
            Ok((config, None))
        }
    }

    /// The configuration.
    pub async fn load(&self) -> anyhow::Result<Config> {
        Ok(self.load_listening(None).await?.0)
    }

    /// The configuration and its store, with a pool of `connections`.
    pub async fn store(&self, connections: u32) -> anyhow::Result<(Config, Store)> {
        let config = self.load().await?;
        let store = Store::connect(&config.storage.url, connections).await?;
        Ok((config, store))
    }
}

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// `--output text|json` (and `--json`, the same as `--output json`).
#[derive(Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Same as `--output json`.
    #[arg(long)]
    json: bool,
}

impl OutputArgs {
    /// Whether to print JSON.
    pub fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }
}

/// A Unix time as RFC 3339, empty if out of range.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
