//! `passerelle-bench`: the load generator on its own, the same as
//! `passerelle bench`.

use clap::Parser;

/// Load generator for a Passerelle hub.
#[derive(Parser)]
#[command(name = "passerelle-bench", version)]
struct Cli {
    #[command(flatten)]
    args: passerelle_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    passerelle_bench::run_with(Cli::parse().args, &[]).await
}
