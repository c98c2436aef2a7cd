//! `passerelle bench`: a load generator for a running Passerelle hub.
//!
//! It registers real devices through the hub's HTTP API, opens their real
//! delivery WebSockets, sends opaque ciphertext envelopes of a chosen size
//! through the real send endpoint, receives and acknowledges them, and
//! measures what the hub did: throughput, end-to-end latency percentiles,
//! connection rate, the hub's memory per connection, and every message
//! counted (accepted by the hub, received once, lost, duplicated).
//!
//! | scenario | what |
//! | --- | --- |
//! | `idle` | N authenticated idle WebSockets; the hub's memory per connection |
//! | `steady` | 1:1 traffic at a target rate on a fixed (open-loop) schedule |
//! | `burst` | bursts of K messages at once, at an interval |
//! | `drain` | M messages queued for offline recipients, then drained |
//!
//! Connections are spread over worker processes (each process may hold only
//! so many open files) and over source addresses in 127.0.0.0/8 (each
//! address has only so many ephemeral ports). The coordinator re-runs its
//! own executable as workers (`bench worker`, hidden) and talks to them
//! with JSON lines ([`protocol`]).
//!
//! | module | concern |
//! | --- | --- |
//! | [`protocol`] | the job, commands and events between coordinator and workers |
//! | `coordinator` | sizing, workers, phases, the report |
//! | `worker` | one worker process |
//! | `register` | device registration through the HTTP API |
//! | `socket` | delivery WebSockets: connect, receive, acknowledge |
//! | `traffic` | senders on an open-loop schedule |
//! | `recorder` | per-message flags, latency histograms, the timeline |
//! | `payload` | the header inside each ciphertext |
//! | [`report`] | the JSON report and its summary |
//! | `chart` | the SVG chart |
//! | `hub` | a load-test hub configuration; `--spawn-hub` |
//! | `memory`, `openfiles`, `addr` | `/proc` readings, the open-file cap, source addresses |

mod addr;
mod chart;
mod coordinator;
mod hub;
mod memory;
mod openfiles;
mod payload;
pub mod protocol;
mod recorder;
mod register;
pub mod report;
mod socket;
mod traffic;
mod worker;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `passerelle bench`: load a hub with real devices and measure it.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Hold N authenticated idle WebSockets and measure the hub's memory
    /// per connection.
    Idle(IdleArgs),
    /// 1:1 traffic between pairs of devices at a target rate.
    Steady(SteadyArgs),
    /// Bursts of messages, all due at once.
    Burst(BurstArgs),
    /// Queue messages for offline recipients, then connect them and measure
    /// how fast their queues drain.
    Drain(DrainArgs),
    /// Print a hub configuration suited to a load test.
    HubConfig(HubConfigArgs),
    /// A worker process (started by the bench itself).
    #[command(hide = true)]
    Worker,
    /// A hub process for `--spawn-hub` (started by the bench itself).
    #[command(hide = true)]
    ServeHub {
        #[arg(long)]
        config: PathBuf,
    },
}

/// Options of every scenario.
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct Common {
    /// The hub's base URL; for a hub of several nodes, each node's,
    /// comma-separated. Devices take the nodes in turn, and with several
    /// nodes every message goes from a sender on one node to a recipient
    /// on another.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    hub: Vec<String>,
    /// Start a hub for this run (the configuration of `bench hub-config`,
    /// data in a temporary directory), and stop it afterwards.
    #[arg(long)]
    spawn_hub: bool,
    /// With --spawn-hub: how many nodes to start (more than one needs
    /// --database and --nats).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// With --spawn-hub: the PostgreSQL database the nodes share
    /// (`postgres://...`); by default a fresh SQLite database.
    #[arg(long)]
    database: Option<String>,
    /// With --spawn-hub: the NATS servers linking the nodes.
    #[arg(long)]
    nats: Option<String>,
    /// The process id of each hub node (comma-separated, in the order of
    /// --hub), to read their memory from /proc.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// The app to register devices with (default: `bench` on a spawned
    /// hub, `parley` otherwise).
    #[arg(long)]
    app: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the chart (SVG) here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// The most WebSockets one worker process holds (default: as many as
    /// its open-file cap allows).
    #[arg(long)]
    per_worker: Option<u64>,
    /// At least this many worker processes.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Registrations in flight per worker.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// WebSocket handshakes in flight per worker.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Do not bind sockets to spread source addresses in 127.0.0.0/8.
    #[arg(long)]
    no_spread: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Options of the scenarios with traffic.
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct TrafficArgs {
    /// Sender-recipient pairs (each recipient holds a WebSocket).
    #[arg(long, default_value_t = 1000)]
    pairs: u64,
    /// Ciphertext bytes per message (a short Signal text message is about
    /// 200 to 300).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// The most sends in flight per worker.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// How long to wait for the last messages, seconds.
    #[arg(long, default_value_t = 30.0)]
    grace: f64,
}

#[derive(Args, Debug, Clone, serde::Serialize)]
struct IdleArgs {
    #[command(flatten)]
    #[serde(skip)]
    common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u64,
    /// How long to hold them before reading the hub's memory, seconds.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

#[derive(Args, Debug, Clone, serde::Serialize)]
struct SteadyArgs {
    #[command(flatten)]
    #[serde(skip)]
    common: Common,
    #[command(flatten)]
    traffic: TrafficArgs,
    /// Messages a second, in all.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to send, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Args, Debug, Clone, serde::Serialize)]
struct BurstArgs {
    #[command(flatten)]
    #[serde(skip)]
    common: Common,
    #[command(flatten)]
    traffic: TrafficArgs,
    /// Messages per burst, in all.
    #[arg(long, default_value_t = 1000)]
    burst: u64,
    /// How many bursts.
    #[arg(long, default_value_t = 5)]
    bursts: u64,
    /// Time between bursts, milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[derive(Args, Debug, Clone, serde::Serialize)]
struct DrainArgs {
    #[command(flatten)]
    #[serde(skip)]
    common: Common,
    #[command(flatten)]
    traffic: TrafficArgs,
    /// Messages to queue, in all.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
}

#[derive(Args, Debug)]
struct HubConfigArgs {
    /// The address the hub listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where its database lives.
    #[arg(long, default_value = "./passerelle-bench-data")]
    data_dir: PathBuf,
    /// The PostgreSQL database the hub's nodes share, instead of SQLite.
    #[arg(long)]
    database: Option<String>,
    /// The NATS servers linking the hub's nodes.
    #[arg(long)]
    nats: Option<String>,
    /// This node's name.
    #[arg(long, default_value = "bench-0")]
    node: String,
}

/// How to run this executable again, as a worker or a hub.
#[derive(Clone, Debug)]
pub struct SelfCommand {
    program: PathBuf,
    prefix: Vec<OsString>,
}

impl SelfCommand {
    /// This executable, with `prefix` (the arguments that reach `bench`'s
    /// own subcommands, such as `["bench"]` for `passerelle bench`).
    pub fn current(prefix: &[&str]) -> anyhow::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            prefix: prefix.iter().map(OsString::from).collect(),
        })
    }

    /// A command running `bench <args>` in this executable.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.prefix).args(args);
        command
    }
}

/// Runs `passerelle bench ...` (the subcommand of the `passerelle` binary).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    run_with(args, &["bench"]).await
}

/// Runs the bench; `prefix` is what this executable needs before a bench
/// subcommand when it runs itself again as a worker or a hub.
pub async fn run_with(args: BenchArgs, prefix: &[&str]) -> anyhow::Result<()> {
    let me = SelfCommand::current(prefix)?;
    use coordinator::Scenario;
    let (common, scenario, parameters) = match args.command {
        BenchCommand::Worker => return worker::main().await,
        BenchCommand::ServeHub { config } => return hub::serve(config).await,
        BenchCommand::HubConfig(a) => {
            use std::io::Write as _;
            let _ = write!(
                std::io::stdout(),
                "{}",
                hub::config_toml(
                    &a.listen,
                    &a.data_dir,
                    &hub::Backend {
                        database: a.database,
                        nats: a.nats,
                    },
                    &a.node
                )
            );
            return Ok(());
        }
        BenchCommand::Idle(a) => (
            a.common.clone(),
            Scenario::Idle {
                connections: a.connections,
                hold: a.hold,
            },
            serde_json::to_value(&a)?,
        ),
        BenchCommand::Steady(a) => (
            a.common.clone(),
            Scenario::Steady {
                traffic: a.traffic.clone(),
                rate: a.rate,
                duration: a.duration,
            },
            serde_json::to_value(&a)?,
        ),
        BenchCommand::Burst(a) => (
            a.common.clone(),
            Scenario::Burst {
                traffic: a.traffic.clone(),
                burst: a.burst,
                bursts: a.bursts,
                interval_ms: a.interval_ms,
            },
            serde_json::to_value(&a)?,
        ),
        BenchCommand::Drain(a) => (
            a.common.clone(),
            Scenario::Drain {
                traffic: a.traffic.clone(),
                messages: a.messages,
            },
            serde_json::to_value(&a)?,
        ),
    };
    let report = coordinator::run(&me, &common, scenario, parameters).await?;
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", report.summary());
    }
    if let Some(path) = &common.out {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &common.chart {
        if !chart::draw(&report, path)? {
            eprintln!("no chart: this scenario has no traffic timeline");
        }
    }
    Ok(())
}
