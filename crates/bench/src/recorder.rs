//! Counting and timing messages on one worker: which were accepted by the
//! hub, which arrived (and how often), and how long each took.
//!
//! Every message has a number; a byte of flags per number records what
//! happened to it, so loss and duplicates are counted exactly rather than
//! inferred from totals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};

use crate::payload::Header;
use crate::protocol::{Schedule, SecondStats, TrafficStats};

const ACKNOWLEDGED: u8 = 1;
const FAILED: u8 = 2;
const RECEIVED: u8 = 4;

/// The largest latency recorded, in microseconds (an hour); longer ones are
/// clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, three significant figures.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}

/// Encodes a histogram (HdrHistogram V2, base64).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = V2Serializer::new().serialize(h, &mut bytes);
    STANDARD.encode(bytes)
}

/// Decodes [`encode`]'s output.
pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = STANDARD.decode(text)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MICROS)
}

#[derive(Default)]
struct Second {
    sent: u64,
    acknowledged: u64,
    received: u64,
    latency: Option<Histogram<u64>>,
}

struct Timings {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    seconds: Vec<Second>,
    errors: BTreeMap<String, u64>,
    last_answer: Duration,
    last_receipt: Duration,
}

impl Timings {
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = usize::try_from(at.as_secs())
            .unwrap_or(usize::MAX)
            .min(86_400);
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        &mut self.seconds[i]
    }
}

/// What one worker's messages did.
pub struct Tracker {
    worker: u32,
    /// The worker's clock origin: payloads carry times relative to it.
    origin: Instant,
    /// When traffic started: schedule offsets count from it.
    start: OnceLock<Instant>,
    schedule: Option<Schedule>,
    flags: Vec<AtomicU8>,
    timings: Mutex<Timings>,
    /// Sends started.
    pub sent: AtomicU64,
    /// Sends accepted.
    pub acknowledged: AtomicU64,
    /// Sends failed.
    pub failed: AtomicU64,
    /// Distinct messages received.
    pub received: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
}

impl Tracker {
    /// A tracker for `schedule`'s messages (none for idle runs).
    pub fn new(worker: u32, schedule: Option<Schedule>) -> Self {
        let total = schedule.as_ref().map_or(0, Schedule::total);
        Self {
            worker,
            origin: Instant::now(),
            start: OnceLock::new(),
            schedule,
            flags: (0..total).map(|_| AtomicU8::new(0)).collect(),
            timings: Mutex::new(Timings {
                latency: histogram(),
                service: histogram(),
                seconds: Vec::new(),
                errors: BTreeMap::new(),
                last_answer: Duration::ZERO,
                last_receipt: Duration::ZERO,
            }),
            sent: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
        }
    }

    fn timings(&self) -> std::sync::MutexGuard<'_, Timings> {
        self.timings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the start of traffic (once) and returns it.
    pub fn start(&self) -> Instant {
        *self.start.get_or_init(Instant::now)
    }

    /// How many messages are planned.
    pub fn total(&self) -> u64 {
        self.flags.len() as u64
    }

    /// When message `m` is due.
    pub fn due(&self, m: u64) -> Instant {
        let offset = self
            .schedule
            .as_ref()
            .map_or(Duration::ZERO, |s| s.offset(m));
        self.start() + offset
    }

    /// The header for message `m`, whose send starts now.
    pub fn header(&self, m: u64) -> Header {
        let now = Instant::now();
        self.sent.fetch_add(1, Ordering::Relaxed);
        let at = now.saturating_duration_since(self.start());
        self.timings().second(at).sent += 1;
        Header {
            worker: self.worker,
            index: m,
            sent_ns: u64::try_from(now.duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The hub answered the send of message `m`: accepted, or failed with
    /// the kind of error.
    pub fn answered(&self, m: u64, result: Result<(), String>) {
        let now = Instant::now().saturating_duration_since(self.start());
        let Some(flags) = self.flags.get(usize::try_from(m).unwrap_or(usize::MAX)) else {
            return;
        };
        let mut t = self.timings();
        t.last_answer = t.last_answer.max(now);
        match result {
            Ok(()) => {
                flags.fetch_or(ACKNOWLEDGED, Ordering::Relaxed);
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
                t.second(now).acknowledged += 1;
            }
            Err(kind) => {
                flags.fetch_or(FAILED, Ordering::Relaxed);
                self.failed.fetch_add(1, Ordering::Relaxed);
                *t.errors.entry(kind).or_default() += 1;
            }
        }
    }

    /// A message arrived with this content.
    pub fn received_payload(&self, content: &[u8]) {
        let now = Instant::now();
        let header = crate::payload::read(content).filter(|h| h.worker == self.worker);
        let Some((header, flags)) =
            header.and_then(|h| Some((h, self.flags.get(usize::try_from(h.index).ok()?)?)))
        else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if flags.fetch_or(RECEIVED, Ordering::Relaxed) & RECEIVED != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let latency = micros(now.saturating_duration_since(self.due(header.index)));
        let sent = self.origin + Duration::from_nanos(header.sent_ns);
        let service = micros(now.saturating_duration_since(sent));
        let at = now.saturating_duration_since(self.start());
        let mut t = self.timings();
        t.last_receipt = t.last_receipt.max(at);
        let _ = t.latency.record(latency);
        let _ = t.service.record(service);
        let second = t.second(at);
        second.received += 1;
        let _ = second.latency.get_or_insert_with(histogram).record(latency);
    }

    /// Whether every accepted message has arrived.
    pub fn all_received(&self) -> bool {
        self.received.load(Ordering::Relaxed) >= self.acknowledged.load(Ordering::Relaxed)
    }

    /// The totals, with loss and duplicates counted message by message.
    pub fn stats(&self) -> TrafficStats {
        let (mut lost, mut received_unacknowledged) = (0, 0);
        for flags in &self.flags {
            let f = flags.load(Ordering::Relaxed);
            if f & ACKNOWLEDGED != 0 && f & RECEIVED == 0 {
                lost += 1;
            }
            if f & ACKNOWLEDGED == 0 && f & RECEIVED != 0 {
                received_unacknowledged += 1;
            }
        }
        let t = self.timings();
        TrafficStats {
            scheduled: self.total(),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            lost,
            received_unacknowledged,
            foreign: self.foreign.load(Ordering::Relaxed),
            send_seconds: t.last_answer.as_secs_f64(),
            receive_seconds: t.last_receipt.as_secs_f64(),
            latency: encode(&t.latency),
            service_latency: encode(&t.service),
            timeline: t
                .seconds
                .iter()
                .map(|s| SecondStats {
                    sent: s.sent,
                    acknowledged: s.acknowledged,
                    received: s.received,
                    latency: encode(s.latency.as_ref().unwrap_or(&histogram())),
                })
                .collect(),
            errors: t.errors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::payload;

    fn content(t: &Tracker, m: u64) -> Vec<u8> {
        let mut buf = vec![0; 64];
        payload::write(&mut buf, t.header(m));
        buf
    }

    #[test]
    fn counts_loss_duplicates_and_strangers() {
        let t = Tracker::new(
            2,
            Some(Schedule::Steady {
                rate: 1000.0,
                count: 4,
            }),
        );
        t.start();
        let c: Vec<_> = (0..4).map(|m| content(&t, m)).collect();
        t.answered(0, Ok(()));
        t.answered(1, Ok(()));
        t.answered(2, Err("HTTP 503".into()));
        t.answered(3, Ok(()));
        t.received_payload(&c[0]);
        t.received_payload(&c[0]);
        t.received_payload(&c[2]);
        t.received_payload(b"not ours");
        let other = Tracker::new(
            9,
            Some(Schedule::Steady {
                rate: 1.0,
                count: 1,
            }),
        );
        t.received_payload(&content(&other, 0));
        let s = t.stats();
        assert_eq!((s.scheduled, s.acknowledged, s.failed), (4, 3, 1));
        assert_eq!((s.received, s.duplicates, s.foreign), (2, 1, 2));
        assert_eq!((s.lost, s.received_unacknowledged), (2, 1));
        assert_eq!(s.errors.get("HTTP 503"), Some(&1));
        assert_eq!(decode(&s.latency).unwrap().len(), 2);
        let per_second: u64 = s.timeline.iter().map(|x| x.received).sum();
        assert_eq!(per_second, 2);
    }
}
