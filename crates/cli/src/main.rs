//! `passerelle`: the hub (`serve`), a command-line client for every app on
//! it (`chat`), a first look (`demo`), and a load generator (`bench`).

/// Prints a line to standard output. A closed pipe (`passerelle ... | head`)
/// ends the output quietly instead of panicking as `println!` would.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Like [`out!`], without the newline.
macro_rules! out_inline {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod chat;
mod demo;
mod profile;
mod serve;

use clap::{Parser, Subcommand};

/// Passerelle: an open, end-to-end encrypted messaging hub.
#[derive(Parser)]
#[command(name = "passerelle", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(serve::ServeArgs),
    /// Chat as one or more accounts, on any app of a hub.
    Chat(chat::ChatArgs),
    /// Register users on the demo apps of a running hub and show a short
    /// encrypted conversation among them.
    Demo(demo::DemoArgs),
    /// Load a running hub with real devices and measure it.
    Bench(passerelle_bench::BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => passerelle_bench::run(args).await,
    }
}
