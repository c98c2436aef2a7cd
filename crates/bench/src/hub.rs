//! The hub under test: a configuration suited to a load test, and a hub
//! process started for one run.
//!
//! A hub's default limits protect it from abuse: registrations are limited
//! per client address (`limits.rate_registration`, 60 a minute), and a
//! device may hold 10,000 queued envelopes. A load test registers
//! thousands of devices from one machine, so the configuration printed by
//! `passerelle bench hub-config` (and used by `--spawn-hub`) turns the
//! per-address limits off and raises the queue cap; everything else keeps
//! the hub's defaults, so what is measured is the hub as deployed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Child;

use crate::SelfCommand;

/// The app the bench registers with on a hub it configures.
pub const APP: &str = "bench";

/// Where the nodes of a spawned hub keep their data and how they are
/// linked.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    /// The PostgreSQL database the nodes share; none: each node's own
    /// SQLite database (one node only).
    pub database: Option<String>,
    /// The NATS servers linking the nodes.
    pub nats: Option<String>,
}

/// A hub configuration for a load test: node `node` of a hub on `backend`.
pub fn config_toml(listen: &str, data_dir: &Path, backend: &Backend, node: &str) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut linked = String::new();
    if let Some(database) = &backend.database {
        linked += &format!("database = \"{}\"\n", quote(database));
    }
    if let Some(nats) = &backend.nats {
        linked += &format!("nats = \"{}\"\n", quote(nats));
    }
    format!(
        r#"# A Passerelle hub configured for `passerelle bench`.
listen = "{listen}"
data_dir = "{data_dir}"
node = "{node}"
{linked}
[apps.{APP}]
name = "Bench"
scheme = "username"

[limits]
# Every device of a load test registers from this machine: no per-address
# limit on registrations and verifications.
rate_registration = {{ per_minute = 0, burst = 0 }}
rate_verification = {{ per_minute = 0, burst = 0 }}
# Drain runs queue many envelopes for one device.
max_queued_envelopes = 1000000
"#,
        data_dir = quote(&data_dir.display().to_string()),
        node = quote(node),
    )
}

/// A hub process started for this run, stopped on drop.
pub struct SpawnedHub {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Its process id.
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl SpawnedHub {
    /// Starts node `index` of a hub on `backend`, on a free loopback port
    /// with [`config_toml`] and a fresh data directory, and waits until it
    /// answers `/readyz`.
    pub async fn start(me: &SelfCommand, backend: &Backend, index: u32) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let config = dir.path().join("hub.toml");
        let data = dir.path().join("data");
        let node = format!("bench-{index}");
        std::fs::write(&config, config_toml(&listen, &data, backend, &node))?;
        let mut command = me.command(&["serve-hub", "--config"]);
        command
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().context("starting the hub")?;
        let pid = child.id().context("the hub exited at once")?;
        let hub = Self {
            child,
            url: format!("http://{listen}/"),
            pid,
            _dir: dir,
        };
        hub.wait_ready().await?;
        Ok(hub)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("{}readyz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("the hub did not become ready within a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the hub: closing its input asks it to shut down gracefully.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The hidden `serve-hub` command: the same `passerelle_server::serve` as
/// `passerelle serve`, with the open-file cap raised, warnings logged, and
/// a graceful stop when standard input closes.
pub async fn serve(config: PathBuf) -> anyhow::Result<()> {
    crate::openfiles::raise_and_read();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PASSERELLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config =
        passerelle_server::Config::load(Some(&config)).context("loading the configuration")?;
    let shutdown = async {
        use tokio::io::AsyncReadExt as _;
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    passerelle_server::serve(config, shutdown)
        .await
        .context("running the hub")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_config_is_a_valid_hub_config() {
        let text = config_toml(
            "127.0.0.1:9999",
            Path::new("/tmp/x \"y\""),
            &Backend::default(),
            "n0",
        );
        let config = passerelle_server::Config::from_toml(&text).unwrap();
        assert!(!config.limits.rate_registration.is_on());
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x \"y\""));
        assert!(config.app(&APP.parse().unwrap()).is_some());
        assert!(config.database.is_none() && config.nats.is_none());

        let linked = Backend {
            database: Some("postgres://postgres@127.0.0.1:5432/bench".into()),
            nats: Some("nats://127.0.0.1:4222".into()),
        };
        let text = config_toml("127.0.0.1:9999", Path::new("/tmp/d"), &linked, "bench-1");
        let config = passerelle_server::Config::from_toml(&text).unwrap();
        assert!(config.database.is_some());
        assert_eq!(config.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(config.node, "bench-1");
    }
}
