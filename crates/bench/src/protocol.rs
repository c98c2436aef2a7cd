//! What the coordinator and its worker processes tell each other: one JSON
//! object a line, the job and commands on the worker's standard input,
//! events on its standard output.

use std::collections::BTreeMap;
use std::time::Duration;

use passerelle_proto::IdentifierScheme;
use serde::{Deserialize, Serialize};

/// A worker's job, its first line of input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The worker's number.
    pub worker: u32,
    /// The base URLs of the hub's nodes (one for a single-node hub).
    pub nodes: Vec<String>,
    /// Whether to bind sockets to spread loopback source addresses.
    pub spread: bool,
    /// The app devices register with, and its scheme.
    pub app: String,
    /// How the app names accounts.
    pub scheme: IdentifierScheme,
    /// A tag of this run, in handles, so runs never collide.
    pub run: String,
    /// How many devices this worker registers.
    pub devices: u64,
    /// The global number of this worker's first device (for its address).
    pub first_device: u64,
    /// Registrations in flight.
    pub register_concurrency: usize,
    /// WebSocket handshakes in flight.
    pub connect_concurrency: usize,
    /// What the devices do.
    pub plan: Plan,
}

/// What a worker's devices do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Plan {
    /// Every device connects and stays idle.
    Idle,
    /// Devices pair up (sender, recipient); recipients stay connected while
    /// senders send on a schedule.
    Traffic(Traffic),
    /// Devices pair up; senders send while recipients are offline, then the
    /// recipients connect and drain their queues.
    Drain(Traffic),
}

impl Plan {
    /// The node device `device` (its global number) registers with and
    /// talks to, of `nodes`. Idle devices take the nodes in turn. In a
    /// plan with traffic, device `2k` sends to device `2k + 1`: pair `k`'s
    /// sender talks to node `k mod nodes` and its recipient to the next
    /// node, so with several nodes every message crosses from one node to
    /// another, in every direction alike.
    pub fn node_of(&self, device: u64, nodes: usize) -> usize {
        let nodes = u64::try_from(nodes.max(1)).unwrap_or(1);
        let node = match self {
            Self::Idle => device % nodes,
            Self::Traffic(_) | Self::Drain(_) => (device / 2 + device % 2) % nodes,
        };
        usize::try_from(node).unwrap_or(0)
    }
}

/// Messages between pairs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Traffic {
    /// When each message is due.
    pub schedule: Schedule,
    /// Ciphertext bytes per message.
    pub size: usize,
    /// The most sends in flight; a due message waits for a free slot, and
    /// its latency counts the wait.
    pub max_in_flight: usize,
    /// How long to wait for the last messages after the last send, ms.
    pub grace_ms: u64,
}

/// When messages are due, from the start of traffic: an open-loop schedule
/// fixed in advance, so that a slow hub delays sends without thinning them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `count` messages at `rate` a second, evenly spaced.
    Steady {
        /// Messages a second.
        rate: f64,
        /// How many.
        count: u64,
    },
    /// `bursts` bursts of `size` messages each, all due at once, every
    /// `interval_ms`.
    Burst {
        /// Messages per burst.
        size: u64,
        /// How many bursts.
        bursts: u64,
        /// Time between bursts.
        interval_ms: u64,
    },
}

impl Schedule {
    /// How many messages in all.
    pub fn total(&self) -> u64 {
        match *self {
            Self::Steady { count, .. } => count,
            Self::Burst { size, bursts, .. } => size.saturating_mul(bursts),
        }
    }

    /// When message `m` is due, from the start.
    pub fn offset(&self, m: u64) -> Duration {
        match *self {
            Self::Steady { rate, .. } if rate > 0.0 => Duration::from_secs_f64(m as f64 / rate),
            Self::Steady { .. } => Duration::ZERO,
            Self::Burst {
                size, interval_ms, ..
            } => Duration::from_millis((m / size.max(1)).saturating_mul(interval_ms)),
        }
    }
}

/// From the coordinator to a worker, after the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Open the WebSockets (every device when idle, recipients otherwise).
    Connect,
    /// Send the planned messages (recipients connected or not, per plan).
    Traffic,
    /// Connect the recipients and let them drain their queues.
    Drain,
    /// Close everything and exit.
    Finish,
}

/// From a worker to the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Counters so far, for the progress bar.
    Progress(Counters),
    /// Every device is registered.
    Registered {
        /// How many.
        devices: u64,
        /// How long it took.
        seconds: f64,
    },
    /// The WebSockets are open and their queues were served.
    Connected {
        /// Sockets that got to `queue_empty`.
        ok: u64,
        /// Sockets that failed.
        failed: u64,
        /// How long it took.
        seconds: f64,
        /// Why sockets failed, by kind.
        errors: BTreeMap<String, u64>,
    },
    /// Traffic is done (every message received, or the grace is over).
    TrafficDone(Box<TrafficStats>),
    /// Recipients drained their queues.
    Drained {
        /// From the drain command to the last `queue_empty`.
        seconds: f64,
        /// Recipients that got to `queue_empty`.
        ok: u64,
        /// What was sent and received.
        stats: Box<TrafficStats>,
    },
    /// The worker closed everything.
    Finished {
        /// Connections still open at the end (for idle: none dropped).
        alive: u64,
        /// Connections that ended before the finish, by why.
        dropped: BTreeMap<String, u64>,
    },
    /// The worker failed and is exiting.
    Failed {
        /// Why.
        message: String,
    },
}

/// Running totals of a worker.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Devices registered.
    pub registered: u64,
    /// Sockets served (`queue_empty` seen).
    pub connected: u64,
    /// Sends started.
    pub sent: u64,
    /// Sends the hub accepted.
    pub acknowledged: u64,
    /// Distinct messages received.
    pub received: u64,
}

/// What a worker's traffic did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrafficStats {
    /// Messages planned.
    pub scheduled: u64,
    /// Sends the hub accepted (`200`: the envelope is stored).
    pub acknowledged: u64,
    /// Sends that failed (an error answer or a transport error).
    pub failed: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received again (the same message number).
    pub duplicates: u64,
    /// Accepted by the hub and never received.
    pub lost: u64,
    /// Received although the send reported a failure.
    pub received_unacknowledged: u64,
    /// Envelopes whose content was not a bench payload of this worker.
    pub foreign: u64,
    /// From the start of traffic to the last send answer, seconds.
    pub send_seconds: f64,
    /// From the start of traffic to the last receipt, seconds.
    pub receive_seconds: f64,
    /// Latency from the scheduled send time to receipt, microseconds
    /// (HdrHistogram V2, base64).
    pub latency: String,
    /// Latency from the actual send start to receipt, microseconds.
    pub service_latency: String,
    /// Per second of traffic.
    pub timeline: Vec<SecondStats>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

/// One second of traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SecondStats {
    /// Sends started.
    pub sent: u64,
    /// Sends accepted.
    pub acknowledged: u64,
    /// Messages received.
    pub received: u64,
    /// Latency of the messages received in this second (HdrHistogram V2,
    /// base64).
    pub latency: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = Schedule::Steady {
            rate: 100.0,
            count: 10,
        };
        assert_eq!(s.total(), 10);
        assert_eq!(s.offset(50), Duration::from_millis(500));
        let b = Schedule::Burst {
            size: 10,
            bursts: 3,
            interval_ms: 200,
        };
        assert_eq!(b.total(), 30);
        assert_eq!(b.offset(9), Duration::ZERO);
        assert_eq!(b.offset(10), Duration::from_millis(200));
        assert_eq!(b.offset(29), Duration::from_millis(400));
    }
}
