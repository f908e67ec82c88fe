//! `canopy-issuer cacerts sync --once` and `status`: Istio `cacerts` in the configured
//! clusters, from the CA material loaded once.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use canopy_issuer::ca_material::CaMaterial;
use canopy_issuer::config::Config;
use canopy_issuer::istio::IstioSetup;
use canopy_issuer::store::Store;
use clap::Subcommand;

use super::source::{OutputArgs, Source};

#[derive(Subcommand)]
pub enum CacertsCommand {
    /// Write a valid `cacerts` into every configured cluster (the Helm bootstrap Job).
    /// Exits 0 when every cluster's Secret is valid, 1 with a message per failed cluster.
    /// Safe to re-run and to run while istiod is up: a correct Secret is not rewritten.
    Sync {
        /// Run one pass and exit (`serve` keeps cacerts in sync continuously).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        source: Source,
    },
}

/// The Istio setup of the config, or the error that says none is configured.
fn istio_setup(config: &Config) -> anyhow::Result<Arc<IstioSetup>> {
    const NONE: &str = "no cluster in the config has `istio` settings";
    if config.clusters.iter().all(|c| c.istio.is_none()) {
        bail!(NONE);
    }
    let material = CaMaterial::load(config)?;
    IstioSetup::of_config(config, &material)?.context(NONE)
}

/// `cacerts sync --once`: one pass over every cluster; exit 1 if any failed.
pub async fn sync(source: &Source, once: bool, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    if !once {
        bail!("use `cacerts sync --once` (serve keeps cacerts in sync continuously)");
    }
    let config = source.load().await?;
    let setup = istio_setup(&config)?;
    let store = Store::connect(&config.storage.url, 2).await?;
    store.migrate().await?;
    let report =
        canopy_issuer::istio::sync_once(setup, store.clone(), canopy_issuer::clock::now()).await;
    store.close().await;
    if output.json() {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{report}");
    }
    for c in report.clusters.iter().filter(|c| !c.outcome.is_ok()) {
        eprintln!("error: cluster {}: {}", c.cluster, c.outcome);
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// `status`: per cluster, the roots trusted, the mesh CA, the rotation phase, problems.
pub async fn status(source: &Source, output: &OutputArgs) -> anyhow::Result<ExitCode> {
    let config = source.load().await?;
    let setup = istio_setup(&config)?;
    let report = canopy_issuer::istio::status(setup, canopy_issuer::clock::now()).await;
    if output.json() {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::from(report.exit_code()))
}
