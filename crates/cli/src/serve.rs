//! `passerelle serve`: the hub.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use passerelle_server::Config;
use tracing_subscriber::EnvFilter;

/// Where the hub listens and keeps its data; everything else is in the
/// configuration file.
#[derive(Args)]
pub struct ServeArgs {
    /// A TOML configuration file; without one, the hub runs in development
    /// mode with three demo apps.
    #[arg(long, env = "PASSERELLE_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the embedded database lives (default ./passerelle-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print an example configuration file and exit.
    #[arg(long)]
    print_example_config: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_example_config {
        out_inline!("{}", Config::example_toml());
        return Ok(());
    }
    let filter = EnvFilter::try_from_env("PASSERELLE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    let mut config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    passerelle_server::serve(config, shutdown)
        .await
        .context("running the hub")
}
