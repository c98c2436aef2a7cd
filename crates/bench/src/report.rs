//! The report of a run: what was measured, in JSON, and a summary for
//! people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::memory::Memory;
use crate::protocol::TrafficStats;
use crate::recorder::{decode, histogram};

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// `idle`, `steady`, `burst` or `drain`.
    pub scenario: String,
    /// The scenario's parameters, as given.
    pub parameters: serde_json::Value,
    /// When the run started, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The machine the run shared with the hub.
    pub machine: Machine,
    /// The hub under test.
    pub hub: HubInfo,
    /// How the load was spread.
    pub setup: Setup,
    /// Registering the devices.
    pub registration: Phase,
    /// Opening the WebSockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// The hub's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
    /// Message counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Messages>,
    /// Rates of the traffic phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// End-to-end latency: from the scheduled send time to receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
    /// From the actual send start to receipt (without the bench's own
    /// queueing when it cannot keep the schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_latency_us: Option<Percentiles>,
    /// Draining queues after reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    /// Per second of traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Second>,
    /// Failures by kind, across phases.
    pub errors: BTreeMap<String, u64>,
}

/// The machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// The 1, 5 and 15 minute load averages at the start.
    pub load_average: Vec<f64>,
    /// The open-file cap of a bench process.
    pub open_file_cap: u64,
}

/// The hub.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HubInfo {
    /// The base URL of its first node.
    pub url: String,
    /// The base URL of every node.
    pub nodes: Vec<String>,
    /// The process id of every node, where known (their memory is summed).
    pub pids: Vec<u32>,
    /// Whether this run started it.
    pub spawned: bool,
    /// The app the devices registered with.
    pub app: String,
}

/// How the load was spread.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Setup {
    /// Worker processes.
    pub workers: u32,
    /// Devices registered in all.
    pub devices: u64,
    /// The most WebSockets one worker held.
    pub connections_per_worker: u64,
    /// Whether sockets were spread over 127.0.0.0/8.
    pub spread_sources: bool,
}

/// A phase with a count and a duration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phase {
    /// How many.
    pub count: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_second: f64,
}

impl Phase {
    /// A phase of `count` in `seconds`.
    pub fn new(count: u64, seconds: f64) -> Self {
        Self {
            count,
            seconds,
            per_second: rate(count, seconds),
        }
    }
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Opening WebSockets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Connections {
    /// Sockets authenticated and served (`queue_empty` received).
    pub ok: u64,
    /// Sockets that failed.
    pub failed: u64,
    /// Wall time to open them all, seconds.
    pub seconds: f64,
    /// Connections a second.
    pub per_second: f64,
    /// Sockets still open when the run finished.
    pub alive_at_end: u64,
    /// Sockets that closed before the end, by why.
    pub dropped: BTreeMap<String, u64>,
}

/// The hub's memory before and after.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    /// After registration, before the sockets opened.
    pub before: Memory,
    /// At the end of the measured phase.
    pub after: Memory,
    /// Connections open at the second reading.
    pub connections: u64,
    /// `(RSS after - RSS before) / connections`, bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// The same with PSS.
    pub pss_bytes_per_connection: Option<f64>,
}

/// What happened to the messages.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Messages {
    /// Planned.
    pub scheduled: u64,
    /// Accepted by the hub (stored).
    pub acknowledged: u64,
    /// Sends that failed.
    pub failed: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Accepted and never received.
    pub lost: u64,
    /// Received although the send failed.
    pub received_unacknowledged: u64,
    /// Envelopes that were not the bench's own.
    pub foreign: u64,
    /// Every planned message accepted and received exactly once.
    pub exactly_once: bool,
}

/// Rates of the traffic phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// The planned rate (steady), messages a second.
    pub target_per_second: Option<f64>,
    /// From the start to the last send answer, seconds.
    pub send_seconds: f64,
    /// Accepted messages a second over that time.
    pub acknowledged_per_second: f64,
    /// From the start to the last receipt, seconds.
    pub receive_seconds: f64,
    /// Received messages a second over that time.
    pub received_per_second: f64,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Draining queues.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Drain {
    /// Envelopes queued while the recipients were offline.
    pub queued: u64,
    /// From the drain command to the last recipient's `queue_empty`.
    pub seconds: f64,
    /// Envelopes delivered a second.
    pub per_second: f64,
}

/// One second of traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start of traffic.
    pub second: u64,
    /// Sends started.
    pub sent: u64,
    /// Sends accepted.
    pub acknowledged: u64,
    /// Messages received.
    pub received: u64,
    /// Latency of the messages received in this second.
    pub latency_us: Percentiles,
}

/// Traffic of all workers together.
pub struct Merged {
    /// Summed counts.
    pub stats: TrafficStats,
    /// Latency from the scheduled time.
    pub latency: Histogram<u64>,
    /// Latency from the actual send.
    pub service: Histogram<u64>,
    /// Per second.
    pub seconds: Vec<Second>,
}

/// Adds the workers' traffic up.
pub fn merge(parts: &[TrafficStats]) -> anyhow::Result<Merged> {
    let mut stats = TrafficStats::default();
    let (mut latency, mut service) = (histogram(), histogram());
    let mut seconds: Vec<(u64, u64, u64, Histogram<u64>)> = Vec::new();
    for p in parts {
        stats.scheduled += p.scheduled;
        stats.acknowledged += p.acknowledged;
        stats.failed += p.failed;
        stats.received += p.received;
        stats.duplicates += p.duplicates;
        stats.lost += p.lost;
        stats.received_unacknowledged += p.received_unacknowledged;
        stats.foreign += p.foreign;
        stats.send_seconds = stats.send_seconds.max(p.send_seconds);
        stats.receive_seconds = stats.receive_seconds.max(p.receive_seconds);
        for (k, v) in &p.errors {
            *stats.errors.entry(k.clone()).or_default() += v;
        }
        latency.add(decode(&p.latency)?)?;
        service.add(decode(&p.service_latency)?)?;
        for (i, s) in p.timeline.iter().enumerate() {
            if seconds.len() <= i {
                seconds.resize_with(i + 1, || (0, 0, 0, histogram()));
            }
            let slot = &mut seconds[i];
            slot.0 += s.sent;
            slot.1 += s.acknowledged;
            slot.2 += s.received;
            slot.3.add(decode(&s.latency)?)?;
        }
    }
    let seconds = seconds
        .into_iter()
        .enumerate()
        .map(|(i, (sent, acknowledged, received, h))| Second {
            second: i as u64,
            sent,
            acknowledged,
            received,
            latency_us: Percentiles::of(&h),
        })
        .collect();
    Ok(Merged {
        stats,
        latency,
        service,
        seconds,
    })
}

impl Merged {
    /// The message counts.
    pub fn messages(&self) -> Messages {
        let s = &self.stats;
        Messages {
            scheduled: s.scheduled,
            acknowledged: s.acknowledged,
            failed: s.failed,
            received: s.received,
            duplicates: s.duplicates,
            lost: s.lost,
            received_unacknowledged: s.received_unacknowledged,
            foreign: s.foreign,
            exactly_once: s.acknowledged == s.scheduled
                && s.received == s.scheduled
                && s.duplicates == 0
                && s.lost == 0
                && s.foreign == 0,
        }
    }

    /// The rates.
    pub fn throughput(&self, target: Option<f64>) -> Throughput {
        let s = &self.stats;
        Throughput {
            target_per_second: target,
            send_seconds: s.send_seconds,
            acknowledged_per_second: rate(s.acknowledged, s.send_seconds),
            receive_seconds: s.receive_seconds,
            received_per_second: rate(s.received, s.receive_seconds),
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} on {} ({} workers, {} devices; load average {:?})",
            self.scenario,
            if self.hub.nodes.len() > 1 {
                self.hub.nodes.join(", ")
            } else {
                self.hub.url.clone()
            },
            self.setup.workers,
            self.setup.devices,
            self.machine.load_average
        );
        let r = &self.registration;
        let _ = writeln!(
            out,
            "registration: {} devices in {:.1} s ({:.0}/s)",
            r.count, r.seconds, r.per_second
        );
        if let Some(c) = &self.connections {
            let _ = writeln!(
                out,
                "connections: {} ok, {} failed in {:.1} s ({:.0}/s); {} open at the end",
                c.ok, c.failed, c.seconds, c.per_second, c.alive_at_end
            );
        }
        if let Some(m) = &self.memory {
            let per =
                |v: Option<f64>| v.map_or("-".to_owned(), |b| format!("{:.1} KiB", b / 1024.0));
            let _ = writeln!(
                out,
                "hub memory: RSS {} -> {} KiB, PSS {:?} -> {:?} KiB; per connection: RSS {}, PSS {}",
                m.before.rss_kib,
                m.after.rss_kib,
                m.before.pss_kib,
                m.after.pss_kib,
                per(m.rss_bytes_per_connection),
                per(m.pss_bytes_per_connection)
            );
        }
        if let Some(m) = &self.messages {
            let _ = writeln!(
                out,
                "messages: {} scheduled, {} accepted, {} failed, {} received, {} duplicates, {} lost{}",
                m.scheduled,
                m.acknowledged,
                m.failed,
                m.received,
                m.duplicates,
                m.lost,
                if m.exactly_once {
                    " (every message exactly once)"
                } else {
                    ""
                }
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                out,
                "throughput: {:.0} accepted/s over {:.1} s, {:.0} received/s{}",
                t.acknowledged_per_second,
                t.send_seconds,
                t.received_per_second,
                t.target_per_second
                    .map_or(String::new(), |r| format!(" (target {r:.0}/s)"))
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                out,
                "latency (scheduled send -> receipt): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            );
        }
        if let Some(d) = &self.drain {
            let _ = writeln!(
                out,
                "drain: {} queued envelopes delivered in {:.2} s ({:.0}/s)",
                d.queued, d.seconds, d.per_second
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "errors: {:?}", self.errors);
        }
        out
    }
}
