//! A worker process: registers its share of the devices, then follows the
//! coordinator's commands, reporting events as JSON lines on standard
//! output.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::protocol::{Command, Counters, Event, Job, Plan};
use crate::recorder::Tracker;
use crate::register::{Device, Registrar, http_client};
use crate::socket::{self, End, Target};
use crate::traffic::{self, Pairs};
use crate::{addr, openfiles};

/// How long sockets may take to reach `queue_empty` after connecting.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes events to standard output, one line each.
struct Out;

impl Out {
    fn emit(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Runs a worker: reads the job and commands from standard input.
pub async fn main() -> anyhow::Result<()> {
    openfiles::raise_and_read();
    let out = Out;
    let result = work(&out).await;
    if let Err(e) = &result {
        out.emit(&Event::Failed {
            message: format!("{e:#}"),
        });
    }
    result
}

/// Sockets of this worker and what they have done.
#[derive(Default)]
struct Sockets {
    /// Sockets that got to `queue_empty`.
    served: AtomicU64,
    /// Sockets that ended before `queue_empty`.
    lost_early: AtomicU64,
    /// Sockets open now.
    alive: AtomicU64,
    changed: Notify,
    /// Why sockets ended, by kind.
    dropped: Mutex<BTreeMap<String, u64>>,
}

impl Sockets {
    fn note_drop(&self, why: String) {
        *self
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(why)
            .or_default() += 1;
    }

    /// Waits until `expected` sockets were served or ended.
    async fn wait_served(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + SERVE_TIMEOUT;
        loop {
            let changed = self.changed.notified();
            let served = self.served.load(Ordering::Relaxed);
            if served + self.lost_early.load(Ordering::Relaxed) >= expected
                || Instant::now() >= deadline
            {
                return served;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
    }
}

struct Worker {
    job: Job,
    /// The WebSocket of each node.
    targets: Vec<Target>,
    tracker: Arc<Tracker>,
    sockets: Arc<Sockets>,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Worker {
    /// Opens `devices`' sockets; each reads until told to stop.
    async fn connect(&mut self, devices: &[Device]) -> Event {
        let start = Instant::now();
        let before = self.sockets.served.load(Ordering::Relaxed);
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let targets = &self.targets;
        let mut opened = futures_util::stream::iter(devices)
            .map(|d| socket::connect(&targets[d.node], d))
            .buffer_unordered(self.job.connect_concurrency.max(1));
        let mut ok = 0;
        while let Some(result) = opened.next().await {
            match result {
                Ok(ws) => {
                    ok += 1;
                    let (sockets, tracker, stop) = (
                        self.sockets.clone(),
                        self.tracker.clone(),
                        self.stop.subscribe(),
                    );
                    sockets.alive.fetch_add(1, Ordering::Relaxed);
                    self.tasks.spawn(async move {
                        let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        let flag = served.clone();
                        let on_served = {
                            let sockets = sockets.clone();
                            move || {
                                flag.store(true, Ordering::Relaxed);
                                sockets.served.fetch_add(1, Ordering::Relaxed);
                                sockets.changed.notify_waiters();
                            }
                        };
                        let end = socket::receive(ws, tracker, on_served, stop).await;
                        sockets.alive.fetch_sub(1, Ordering::Relaxed);
                        if let End::Lost(why) = end {
                            sockets.note_drop(why);
                            if !served.load(Ordering::Relaxed) {
                                sockets.lost_early.fetch_add(1, Ordering::Relaxed);
                                sockets.changed.notify_waiters();
                            }
                        }
                    });
                }
                Err(kind) => *errors.entry(kind).or_default() += 1,
            }
        }
        drop(opened);
        let served = self.sockets.wait_served(before + ok).await - before;
        let failed = devices.len() as u64 - served;
        if served < ok {
            *errors.entry("no queue_empty".into()).or_default() += ok - served;
        }
        Event::Connected {
            ok: served,
            failed,
            seconds: start.elapsed().as_secs_f64(),
            errors,
        }
    }

    async fn finish(&mut self) -> Event {
        let alive = self.sockets.alive.load(Ordering::Relaxed);
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        let dropped = self
            .sockets
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Event::Finished { alive, dropped }
    }
}

async fn work(out: &Out) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let job: Job = serde_json::from_str(&lines.next_line().await?.context("no job on input")?)
        .context("reading the job")?;
    let nodes = Arc::new(
        job.nodes
            .iter()
            .map(|n| url::Url::parse(n))
            .collect::<Result<Vec<_>, _>>()?,
    );
    if nodes.is_empty() {
        anyhow::bail!("the job names no hub node");
    }
    let traffic = match &job.plan {
        Plan::Idle => None,
        Plan::Traffic(t) | Plan::Drain(t) => Some(t.clone()),
    };
    let tracker = Arc::new(Tracker::new(
        job.worker,
        traffic.as_ref().map(|t| t.schedule.clone()),
    ));
    let registered = Arc::new(AtomicU64::new(0));
    let sockets = Arc::new(Sockets::default());
    let ticker = tokio::spawn({
        let (tracker, registered, sockets) = (tracker.clone(), registered.clone(), sockets.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                Out.emit(&Event::Progress(Counters {
                    registered: registered.load(Ordering::Relaxed),
                    connected: sockets.served.load(Ordering::Relaxed),
                    sent: tracker.sent.load(Ordering::Relaxed),
                    acknowledged: tracker.acknowledged.load(Ordering::Relaxed),
                    received: tracker.received.load(Ordering::Relaxed),
                }));
            }
        }
    });

    let pool = traffic.as_ref().map_or(64, |t| t.max_in_flight) + job.register_concurrency;
    let http = http_client(job.spread.then(|| addr::http(job.worker)), pool)?;
    let registrar = Registrar {
        nodes: nodes.to_vec(),
        app: job.app.clone(),
        scheme: job.scheme,
        run: job.run.clone(),
        worker: job.worker,
        http: http.clone(),
    };
    let start = Instant::now();
    let first = job.first_device;
    let spread = job.spread;
    let devices = registrar
        .register_all(
            job.devices,
            job.register_concurrency,
            |i| spread.then(|| addr::device(first + i)),
            |i| job.plan.node_of(first + i, nodes.len()),
            &registered,
        )
        .await?;
    out.emit(&Event::Registered {
        devices: devices.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
    });

    let (listeners, pairs) = match job.plan {
        Plan::Idle => (devices, None),
        _ => {
            let (senders, recipients): (Vec<_>, Vec<_>) = devices
                .chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .unzip();
            let pairs = Arc::new(Pairs {
                senders,
                recipients: recipients.clone(),
            });
            (recipients, Some(pairs))
        }
    };
    let (stop, _) = watch::channel(false);
    let mut worker = Worker {
        targets: {
            let mut targets = Vec::with_capacity(nodes.len());
            for node in nodes.iter() {
                targets.push(Target::resolve(node).await?);
            }
            targets
        },
        job,
        tracker: tracker.clone(),
        sockets,
        tasks: JoinSet::new(),
        stop,
    };

    while let Some(line) = lines.next_line().await? {
        let command: Command = serde_json::from_str(&line).context("reading a command")?;
        match command {
            Command::Connect => out.emit(&worker.connect(&listeners).await),
            Command::Traffic | Command::Drain => {
                let (Some(plan), Some(pairs)) = (traffic.as_ref(), pairs.clone()) else {
                    anyhow::bail!("{command:?} needs a plan with traffic");
                };
                if command == Command::Traffic {
                    let draining = matches!(worker.job.plan, Plan::Drain(_));
                    traffic::run(
                        tracker.clone(),
                        pairs,
                        http.clone(),
                        nodes.clone(),
                        plan,
                        !draining,
                    )
                    .await?;
                    out.emit(&Event::TrafficDone(Box::new(tracker.stats())));
                } else {
                    let start = Instant::now();
                    let ok = match worker.connect(&listeners).await {
                        Event::Connected { ok, .. } => ok,
                        _ => 0,
                    };
                    let seconds = start.elapsed().as_secs_f64();
                    let until = Instant::now() + Duration::from_millis(plan.grace_ms);
                    while !tracker.all_received() && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    out.emit(&Event::Drained {
                        seconds,
                        ok,
                        stats: Box::new(tracker.stats()),
                    });
                }
            }
            Command::Finish => {
                let event = worker.finish().await;
                ticker.abort();
                out.emit(&event);
                return Ok(());
            }
        }
    }
    ticker.abort();
    anyhow::bail!("the coordinator went away")
}
