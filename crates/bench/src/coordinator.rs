//! The coordinator: sizes the run, starts the workers, moves them through
//! the scenario's phases, reads the hub's memory, and writes the report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use passerelle_proto::api::accounts::AppList;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::hub::{self, SpawnedHub};
use crate::memory::{self, Memory};
use crate::protocol::{Command, Counters, Event, Job, Plan, Schedule, Traffic, TrafficStats};
use crate::report::{
    Connections, Drain, HubInfo, Machine, MemoryReport, Percentiles, Phase, Report, Setup, merge,
};
use crate::{SelfCommand, TrafficArgs, openfiles, socket};

/// What to run.
#[derive(Debug)]
pub enum Scenario {
    /// Idle connections.
    Idle {
        /// How many.
        connections: u64,
        /// How long to hold them before reading memory, seconds.
        hold: f64,
    },
    /// Steady 1:1 traffic.
    Steady {
        /// Pairs and messages.
        traffic: TrafficArgs,
        /// Messages a second, in all.
        rate: f64,
        /// Seconds.
        duration: f64,
    },
    /// Bursts.
    Burst {
        /// Pairs and messages.
        traffic: TrafficArgs,
        /// Messages per burst, in all.
        burst: u64,
        /// How many bursts.
        bursts: u64,
        /// Between bursts.
        interval_ms: u64,
    },
    /// Queue, then drain.
    Drain {
        /// Pairs and messages.
        traffic: TrafficArgs,
        /// Messages in all.
        messages: u64,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Self::Idle { .. } => "idle",
            Self::Steady { .. } => "steady",
            Self::Burst { .. } => "burst",
            Self::Drain { .. } => "drain",
        }
    }

    fn traffic(&self) -> Option<&TrafficArgs> {
        match self {
            Self::Idle { .. } => None,
            Self::Steady { traffic, .. }
            | Self::Burst { traffic, .. }
            | Self::Drain { traffic, .. } => Some(traffic),
        }
    }

    /// What is spread over workers: connections, or pairs.
    fn units(&self) -> u64 {
        match self {
            Self::Idle { connections, .. } => *connections,
            _ => self.traffic().map_or(0, |t| t.pairs),
        }
    }
}

/// Splits `total` in proportion to `shares` (largest remainders first, so
/// the parts add up to `total`).
pub fn proportional(total: u64, shares: &[u64]) -> Vec<u64> {
    let sum: u64 = shares.iter().sum();
    if sum == 0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<u128> = shares
        .iter()
        .map(|&s| u128::from(total) * u128::from(s))
        .collect();
    let mut parts: Vec<u64> = exact
        .iter()
        .map(|&e| u64::try_from(e / u128::from(sum)).unwrap_or(0))
        .collect();
    let mut left = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % u128::from(sum)));
    for i in order {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// How many workers hold `units` connections when a process may hold
/// `cap` open files and each worker also keeps `http` HTTP connections:
/// at most `asked` connections a worker (when given), at least
/// `min_workers` workers. Says so when `asked` is more than the cap allows.
pub fn size_workers(
    units: u64,
    cap: u64,
    http: u64,
    asked: Option<u64>,
    min_workers: u32,
) -> (u64, Option<String>) {
    let budget = openfiles::connections_per_worker(cap, http);
    let (per_worker, warning) = match asked {
        Some(asked) if asked > budget => (
            budget,
            Some(format!(
                "a process may hold {cap} open files: {asked} connections per worker is more than \
                 that allows beside {http} HTTP connections, so each worker holds at most {budget}"
            )),
        ),
        Some(asked) => (asked.max(1), None),
        None => (budget, None),
    };
    let workers = units
        .div_ceil(per_worker)
        .max(u64::from(min_workers))
        .min(units)
        .max(1);
    (workers, warning)
}

/// Runs a scenario and returns its report.
pub async fn run(
    me: &SelfCommand,
    common: &crate::Common,
    scenario: Scenario,
    parameters: serde_json::Value,
) -> anyhow::Result<Report> {
    let cap = openfiles::raise_and_read();
    let mut report = Report {
        scenario: scenario.name().into(),
        parameters,
        started_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|t| {
                    t.split_whitespace()
                        .take(3)
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            open_file_cap: cap,
        },
        ..Report::default()
    };
    let spawned = if common.spawn_hub {
        spawn_nodes(me, common).await?
    } else {
        Vec::new()
    };
    let result = run_on(me, common, &scenario, cap, &spawned, &mut report).await;
    for node in spawned {
        node.stop().await;
    }
    result.map(|()| report)
}

/// Starts the nodes of `--spawn-hub`, one after the other (the first
/// migrates a fresh database).
async fn spawn_nodes(me: &SelfCommand, common: &crate::Common) -> anyhow::Result<Vec<SpawnedHub>> {
    let backend = hub::Backend {
        database: common.database.clone(),
        nats: common.nats.clone(),
    };
    if common.nodes > 1 && (backend.database.is_none() || backend.nats.is_none()) {
        bail!(
            "{} nodes of one hub share a PostgreSQL database and talk over NATS: give --database \
             postgres://... and --nats nats://...",
            common.nodes
        );
    }
    let mut nodes = Vec::new();
    for index in 0..common.nodes.max(1) {
        match SpawnedHub::start(me, &backend, index).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for node in nodes {
                    node.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

async fn run_on(
    me: &SelfCommand,
    common: &crate::Common,
    scenario: &Scenario,
    cap: u64,
    spawned: &[SpawnedHub],
    report: &mut Report,
) -> anyhow::Result<()> {
    let urls: Vec<&str> = if spawned.is_empty() {
        common.hub.iter().map(String::as_str).collect()
    } else {
        spawned.iter().map(|h| h.url.as_str()).collect()
    };
    let mut nodes = Vec::new();
    for url in urls {
        let mut base = url::Url::parse(url).with_context(|| format!("the hub URL {url}"))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        nodes.push(base);
    }
    let Some(base) = nodes.first().cloned() else {
        bail!("no hub URL");
    };
    let pids: Vec<u32> = if spawned.is_empty() {
        common.hub_pid.clone()
    } else {
        spawned.iter().map(|h| h.pid).collect()
    };
    let app = common.app.clone().unwrap_or_else(|| {
        if !spawned.is_empty() {
            hub::APP
        } else {
            "parley"
        }
        .to_owned()
    });
    let apps: AppList = reqwest::get(base.join("v1/apps")?)
        .await
        .with_context(|| format!("is a hub running at {base}?"))?
        .error_for_status()?
        .json()
        .await?;
    let Some(scheme) = apps
        .apps
        .iter()
        .find(|a| a.id.as_str() == app)
        .map(|a| a.scheme)
    else {
        bail!(
            "the hub has no app {app}; it has: {}",
            apps.apps
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut loopback = true;
    for node in &nodes {
        let target = socket::Target::resolve(node).await?;
        loopback &= matches!(target.addr.ip(), IpAddr::V4(v4) if v4.is_loopback());
    }
    let spread = !common.no_spread && loopback;

    // Size the workers from the open-file cap.
    let units = scenario.units();
    if units == 0 {
        bail!("nothing to do: zero connections or pairs");
    }
    let in_flight = scenario.traffic().map_or(0, |t| t.max_in_flight);
    let http = (in_flight + common.register_concurrency) as u64;
    let (workers, warning) = size_workers(units, cap, http, common.per_worker, common.workers);
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    let per_node = units.div_ceil(nodes.len() as u64);
    for &pid in &pids {
        if let Some(hub_cap) = memory::open_file_cap(pid) {
            // A node holds one socket per device connected to it, and a few
            // files.
            if per_node + 64 > hub_cap {
                eprintln!(
                    "the hub (process {pid}) may hold {hub_cap} open files: {per_node} \
                     connections to one hub process will run into that cap; measure up to about \
                     {} per hub process, and spread more over several nodes",
                    hub_cap.saturating_sub(1000)
                );
            }
        }
    }
    let shares = proportional(units, &vec![1; usize::try_from(workers).unwrap_or(1)]);
    let plans = plans(scenario, &shares);
    let devices_per_unit = if matches!(scenario, Scenario::Idle { .. }) {
        1
    } else {
        2
    };
    report.hub = HubInfo {
        url: base.to_string(),
        nodes: nodes.iter().map(ToString::to_string).collect(),
        pids: pids.clone(),
        spawned: !spawned.is_empty(),
        app: app.clone(),
    };
    report.setup = Setup {
        workers: u32::try_from(workers).unwrap_or(u32::MAX),
        devices: units * devices_per_unit,
        connections_per_worker: shares.iter().copied().max().unwrap_or(0),
        spread_sources: spread,
    };

    let run_tag: String = {
        use rand::Rng as _;
        let mut rng = rand::rngs::OsRng;
        (0..6)
            .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
            .collect()
    };
    let mut first_device = 0;
    let mut jobs = Vec::new();
    for (w, (share, plan)) in shares.iter().zip(plans).enumerate() {
        let devices = share * devices_per_unit;
        jobs.push(Job {
            worker: u32::try_from(w).unwrap_or(u32::MAX),
            nodes: nodes.iter().map(ToString::to_string).collect(),
            spread,
            app: app.clone(),
            scheme,
            run: run_tag.clone(),
            devices,
            first_device,
            register_concurrency: common.register_concurrency,
            connect_concurrency: common.connect_concurrency,
            plan,
        });
        first_device += devices;
    }

    let bars = Bars {
        quiet: common.quiet,
    };
    let start = Instant::now();
    let mut pool = Workers::start(me, &jobs).await?;
    let bar = bars.bar("register", report.setup.devices);
    let registered = pool
        .phase(
            &bar,
            |c| c.registered,
            |e| match e {
                Event::Registered { devices, .. } => Some(devices),
                _ => None,
            },
        )
        .await?;
    bar.finish_and_clear();
    report.registration = Phase::new(registered.iter().sum(), start.elapsed().as_secs_f64());
    let before = read_memory(&pids);

    match scenario {
        Scenario::Idle { hold, .. } => {
            let connected = connect(&mut pool, &bars, units, report).await?;
            tokio::time::sleep(Duration::from_secs_f64(hold.max(0.0))).await;
            let after = read_memory(&pids);
            finish(&mut pool, report).await?;
            report.memory = memory_report(before, after, connected);
        }
        Scenario::Steady { .. } | Scenario::Burst { .. } => {
            connect(&mut pool, &bars, units, report).await?;
            let total = jobs.iter().map(|j| planned(&j.plan)).sum();
            pool.send(Command::Traffic).await?;
            let bar = bars.bar("traffic", total);
            let stats = pool
                .phase(
                    &bar,
                    |c| c.received,
                    |e| match e {
                        Event::TrafficDone(stats) => Some(*stats),
                        _ => None,
                    },
                )
                .await?;
            bar.finish_and_clear();
            let after = read_memory(&pids);
            finish(&mut pool, report).await?;
            traffic_report(report, &stats, scenario)?;
            report.memory = memory_report(before, after, 0);
        }
        Scenario::Drain { .. } => {
            let total = jobs.iter().map(|j| planned(&j.plan)).sum();
            pool.send(Command::Traffic).await?;
            let bar = bars.bar("queue", total);
            pool.phase(
                &bar,
                |c| c.acknowledged,
                |e| match e {
                    Event::TrafficDone(stats) => Some(*stats),
                    _ => None,
                },
            )
            .await?;
            bar.finish_and_clear();
            let queued_memory = read_memory(&pids);
            pool.send(Command::Drain).await?;
            let start = Instant::now();
            let bar = bars.bar("drain", total);
            let drained = pool
                .phase(
                    &bar,
                    |c| c.received,
                    |e| match e {
                        Event::Drained { seconds, ok, stats } => Some((seconds, ok, *stats)),
                        _ => None,
                    },
                )
                .await?;
            bar.finish_and_clear();
            let wall = start.elapsed().as_secs_f64();
            // The drain ends at the last recipient's `queue_empty`: the
            // slowest worker's time (the wall time also counts the grace
            // for stragglers).
            let seconds = drained.iter().map(|d| d.0).fold(0.0, f64::max).min(wall);
            let ok = drained.iter().map(|d| d.1).sum();
            let stats: Vec<TrafficStats> = drained.into_iter().map(|d| d.2).collect();
            finish(&mut pool, report).await?;
            report.connections = Some(Connections {
                ok,
                failed: units - ok,
                seconds,
                per_second: ok as f64 / seconds.max(f64::EPSILON),
                ..Connections::default()
            });
            traffic_report(report, &stats, scenario)?;
            let queued = report.messages.as_ref().map_or(0, |m| m.acknowledged);
            let delivered = report.messages.as_ref().map_or(0, |m| m.received);
            report.drain = Some(Drain {
                queued,
                seconds,
                per_second: delivered as f64 / seconds.max(f64::EPSILON),
            });
            report.memory = memory_report(before, queued_memory, 0);
        }
    }
    pool.wait().await;
    Ok(())
}

fn planned(plan: &Plan) -> u64 {
    match plan {
        Plan::Idle => 0,
        Plan::Traffic(t) | Plan::Drain(t) => t.schedule.total(),
    }
}

/// Each worker's plan, for its share of the units.
fn plans(scenario: &Scenario, shares: &[u64]) -> Vec<Plan> {
    let units: u64 = shares.iter().sum();
    let traffic = |t: &TrafficArgs, schedule: Schedule| Traffic {
        schedule,
        size: t.size,
        max_in_flight: t.max_in_flight,
        grace_ms: (t.grace.max(0.0) * 1000.0) as u64,
    };
    match scenario {
        Scenario::Idle { .. } => shares.iter().map(|_| Plan::Idle).collect(),
        Scenario::Steady {
            traffic: t,
            rate,
            duration,
        } => {
            let total = (rate * duration).round().max(0.0) as u64;
            let counts = proportional(total, shares);
            shares
                .iter()
                .zip(counts)
                .map(|(&share, count)| {
                    let rate = rate * share as f64 / units as f64;
                    Plan::Traffic(traffic(t, Schedule::Steady { rate, count }))
                })
                .collect()
        }
        Scenario::Burst {
            traffic: t,
            burst,
            bursts,
            interval_ms,
        } => proportional(*burst, shares)
            .into_iter()
            .map(|size| {
                Plan::Traffic(traffic(
                    t,
                    Schedule::Burst {
                        size,
                        bursts: *bursts,
                        interval_ms: *interval_ms,
                    },
                ))
            })
            .collect(),
        Scenario::Drain {
            traffic: t,
            messages,
        } => proportional(*messages, shares)
            .into_iter()
            .map(|size| {
                Plan::Drain(traffic(
                    t,
                    Schedule::Burst {
                        size,
                        bursts: 1,
                        interval_ms: 0,
                    },
                ))
            })
            .collect(),
    }
}

/// The memory of every hub process, summed; none unless every one reads.
fn read_memory(pids: &[u32]) -> Option<Memory> {
    if pids.is_empty() {
        return None;
    }
    let mut total = Memory {
        rss_kib: 0,
        pss_kib: Some(0),
    };
    for &pid in pids {
        match memory::read(pid) {
            Ok(m) => {
                total.rss_kib += m.rss_kib;
                total.pss_kib = total.pss_kib.zip(m.pss_kib).map(|(a, b)| a + b);
            }
            Err(e) => {
                eprintln!("cannot read the memory of process {pid}: {e}");
                return None;
            }
        }
    }
    Some(total)
}

fn memory_report(
    before: Option<Memory>,
    after: Option<Memory>,
    connections: u64,
) -> Option<MemoryReport> {
    let (before, after) = (before?, after?);
    Some(MemoryReport {
        before,
        after,
        connections,
        rss_bytes_per_connection: memory::per_connection(
            before.rss_kib,
            after.rss_kib,
            connections,
        ),
        pss_bytes_per_connection: before
            .pss_kib
            .zip(after.pss_kib)
            .and_then(|(b, a)| memory::per_connection(b, a, connections)),
    })
}

/// The connect phase: every worker opens its sockets.
async fn connect(
    pool: &mut Workers,
    bars: &Bars,
    expected: u64,
    report: &mut Report,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    pool.send(Command::Connect).await?;
    let bar = bars.bar("connect", expected);
    let results = pool
        .phase(
            &bar,
            |c| c.connected,
            |e| match e {
                Event::Connected {
                    ok, failed, errors, ..
                } => Some((ok, failed, errors)),
                _ => None,
            },
        )
        .await?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let ok: u64 = results.iter().map(|r| r.0).sum();
    for (_, _, errors) in &results {
        for (k, v) in errors {
            *report.errors.entry(format!("connect: {k}")).or_default() += v;
        }
    }
    report.connections = Some(Connections {
        ok,
        failed: results.iter().map(|r| r.1).sum(),
        seconds,
        per_second: ok as f64 / seconds.max(f64::EPSILON),
        ..Connections::default()
    });
    Ok(ok)
}

async fn finish(pool: &mut Workers, report: &mut Report) -> anyhow::Result<()> {
    pool.send(Command::Finish).await?;
    let finished = pool
        .phase(
            &ProgressBar::hidden(),
            |_| 0,
            |e| match e {
                Event::Finished { alive, dropped } => Some((alive, dropped)),
                _ => None,
            },
        )
        .await?;
    let alive = finished.iter().map(|f| f.0).sum();
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    for (_, d) in finished {
        for (k, v) in d {
            *dropped.entry(k).or_default() += v;
        }
    }
    for (k, v) in &dropped {
        *report.errors.entry(format!("dropped: {k}")).or_default() += v;
    }
    if let Some(c) = report.connections.as_mut() {
        c.alive_at_end = alive;
        c.dropped = dropped;
    }
    Ok(())
}

fn traffic_report(
    report: &mut Report,
    stats: &[TrafficStats],
    scenario: &Scenario,
) -> anyhow::Result<()> {
    let merged = merge(stats)?;
    for (k, v) in &merged.stats.errors {
        *report.errors.entry(format!("send: {k}")).or_default() += v;
    }
    report.messages = Some(merged.messages());
    let target = match scenario {
        Scenario::Steady { rate, .. } => Some(*rate),
        _ => None,
    };
    report.throughput = Some(merged.throughput(target));
    if !matches!(scenario, Scenario::Drain { .. }) {
        // In a drain, latency counts the time the recipients were offline.
        report.latency_us = Some(Percentiles::of(&merged.latency));
        report.service_latency_us = Some(Percentiles::of(&merged.service));
    }
    report.timeline = merged.seconds;
    Ok(())
}

struct Bars {
    quiet: bool,
}

impl Bars {
    fn bar(&self, what: &'static str, len: u64) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(what);
        bar
    }
}

/// The worker processes.
struct Workers {
    children: Vec<Child>,
    inputs: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    latest: Vec<Counters>,
}

impl Workers {
    async fn start(me: &SelfCommand, jobs: &[Job]) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut inputs = Vec::new();
        for (w, job) in jobs.iter().enumerate() {
            let mut child = me
                .command(&["worker"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let mut input = child.stdin.take().context("worker input")?;
            let output = child.stdout.take().context("worker output")?;
            let mut line = serde_json::to_string(job)?;
            line.push('\n');
            input.write_all(line.as_bytes()).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(output).lines();
                let mut finished = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(event) => {
                            finished = matches!(event, Event::Finished { .. });
                            let _ = tx.send((w, event));
                        }
                        Err(_) => eprintln!("worker {w}: {line}"),
                    }
                }
                if !finished {
                    let _ = tx.send((
                        w,
                        Event::Failed {
                            message: "exited before finishing".into(),
                        },
                    ));
                }
            });
            children.push(child);
            inputs.push(input);
        }
        Ok(Self {
            latest: vec![Counters::default(); children.len()],
            children,
            inputs,
            events,
        })
    }

    async fn send(&mut self, command: Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(&command)?;
        line.push('\n');
        for (w, input) in self.inputs.iter_mut().enumerate() {
            input
                .write_all(line.as_bytes())
                .await
                .with_context(|| format!("worker {w} is gone"))?;
        }
        Ok(())
    }

    /// Waits for one `pick`ed event from every worker, showing `counter`'s
    /// sum on `bar` meanwhile.
    async fn phase<T>(
        &mut self,
        bar: &ProgressBar,
        counter: fn(&Counters) -> u64,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut got: Vec<Option<T>> = (0..self.children.len()).map(|_| None).collect();
        while got.iter().any(Option::is_none) {
            let (w, event) = self.events.recv().await.context("every worker is gone")?;
            match event {
                Event::Progress(c) => {
                    self.latest[w] = c;
                    bar.set_position(self.latest.iter().map(counter).sum());
                }
                Event::Failed { message } => bail!("worker {w} failed: {message}"),
                other => {
                    if let Some(t) = pick(other) {
                        got[w] = Some(t);
                    }
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    async fn wait(mut self) {
        drop(std::mem::take(&mut self.inputs));
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_sized_from_the_open_file_cap() {
        // 19,000 idle connections fit one worker under a 20,000 cap.
        assert_eq!(size_workers(19_000, 20_000, 32, None, 1), (1, None));
        // 50,000 do not: three workers.
        assert_eq!(size_workers(50_000, 20_000, 32, None, 1).0, 3);
        // Asking for more per worker than the cap allows is said and spread.
        let (workers, warning) = size_workers(50_000, 20_000, 32, Some(40_000), 1);
        assert_eq!(workers, 3);
        assert!(warning.is_some_and(|w| w.contains("20000 open files")));
        // Fewer per worker, or more workers, when asked.
        assert_eq!(size_workers(100, 20_000, 32, Some(30), 1), (4, None));
        assert_eq!(size_workers(100, 20_000, 32, None, 5), (5, None));
        // Never more workers than connections.
        assert_eq!(size_workers(2, 20_000, 32, None, 8), (2, None));
    }

    #[test]
    fn proportional_parts_add_up() {
        assert_eq!(proportional(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(proportional(7, &[3, 1]), vec![5, 2]);
        assert_eq!(proportional(0, &[3, 1]), vec![0, 0]);
        assert_eq!(proportional(5, &[0, 0]), vec![0, 0]);
        let parts = proportional(100_001, &[19_000, 19_000, 12_000]);
        assert_eq!(parts.iter().sum::<u64>(), 100_001);
    }
}
