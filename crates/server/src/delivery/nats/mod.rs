//! Delivery between the nodes of one hub, over NATS.
//!
//! Every node of a hub shares the store; what they must share besides is
//! the news that envelopes were queued for a device connected elsewhere.
//! NATS carries it, with nothing home-made in between.
//!
//! # Who hears what: interest, not a directory
//!
//! A node subscribes to the subject of every device connected to it
//! (`passerelle.device.<account>.<device>`, see [`wire`]) for as long as
//! the device has a connection there, and publishes wakes, removals and
//! ephemeral pushes on the recipient's subject. NATS routes a message only
//! to the connections that have interest in its subject and drops the
//! rest at the first server, so no node, table or presence record has to
//! know where a device is: the location is the subscription, it goes away
//! with the node's NATS connection when a node dies, and a NATS cluster
//! has no single point of failure. A node-level wildcard with a presence
//! record would have needed a shared directory kept right through crashes
//! (the very single point this avoids), and sending every wake to every
//! node would make each node's traffic grow with the whole hub's.
//!
//! # Local first
//!
//! A wake or removal for a device connected here goes to this node's
//! [`Registry`] at once, in process; it is also published, because for a
//! moment a device may hold connections on two nodes (while the older one
//! learns it was replaced). The client connects with `no_echo`, so a
//! node never hears its own messages back. An ephemeral push for a device
//! connected here stays here; otherwise it is a NATS request answered by
//! the holding node, `1` (taken) or `0`, and a push nobody answers within
//! [`EPHEMERAL_TIMEOUT`] (or that NATS answers "no responders" at once)
//! counts as not taken: a typing indicator is not worth waiting for.
//!
//! # Replacement across nodes
//!
//! Each connection has a [`Generation`] from a hybrid logical clock. When
//! a device connects, its node subscribes, then publishes a *claim* with
//! that generation; a node holding a connection of the same device that
//! ranks below the claim closes it with [`CloseReason::Replaced`], one
//! that ranks above ignores it. Both nodes compare the same two values,
//! so when a device connects to two nodes at once exactly one connection
//! survives, and a connection opened after its node heard a claim always
//! ranks above it.
//!
//! # Failure
//!
//! NATS core is at-most-once, so everything sent on it is a hint; the
//! envelopes are in the store, and a connection reads the store when it
//! opens and on every wake. What covers a lost message:
//!
//! - A new subscription is confirmed by a round trip to the server, then
//!   the device's connection is woken once: anything queued before the
//!   subscription worked is read then.
//! - While NATS is unreachable, wakes and removals that could not be
//!   published are remembered (at most [`MAX_PENDING`] devices, past that
//!   only the fact that some were lost) and published when the connection
//!   returns, or replaced by one "wake every connection" message to every
//!   node.
//! - On every (re)connection the client has resubscribed (async-nats does
//!   that); the node confirms with a round trip, wakes all of its
//!   connections, and publishes a claim for each, which settles any
//!   device left connected to two nodes while claims could not travel.
//! - A slow-consumer event from NATS (messages were dropped) wakes every
//!   connection of this node.
//!
//! A node cut from NATS keeps serving its own devices and queuing for all;
//! `/readyz` reports it unready, and `passerelle_bus_connected` is 0.

pub mod wire;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use passerelle_proto::{AccountId, DeviceId, Envelope};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use self::wire::{BusMessage, NOT_TAKEN, TAKEN};
use super::{BusStatus, CloseReason, Delivery, Generation, Presence, Registry};
use crate::metrics;

/// How long an ephemeral push to another node may wait for its answer.
pub const EPHEMERAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How many devices' lost wakes are remembered while NATS is away.
pub const MAX_PENDING: usize = 10_000;
/// How many wakes and removals wait to be published at most.
const OUTBOX: usize = 4096;
/// How long the round trip that confirms subscriptions may take.
const ROUND_TRIP: Duration = Duration::from_secs(2);

type Key = (AccountId, DeviceId);

/// Why the bus could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A NATS URL does not parse.
    #[error("nats: bad server address {0:?}: {1}")]
    Address(String, String),
    /// The registry already has a bus.
    #[error("nats: this registry already has a bus")]
    Taken,
    /// The client could not start.
    #[error("nats: {0}")]
    Connect(String),
}

/// Parses `nats = "..."`: one URL or several, comma-separated.
pub fn parse_servers(text: &str) -> Result<Vec<ServerAddr>, BusError> {
    let servers: Vec<ServerAddr> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| BusError::Address(s.to_owned(), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Address(text.to_owned(), "no URL".into()));
    }
    Ok(servers)
}

/// What could not be published while NATS was away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    Wake,
    Removed,
}

#[derive(Default)]
struct Pending {
    devices: HashMap<Key, Lost>,
    /// More devices lost wakes than [`MAX_PENDING`].
    overflowed: bool,
}

/// News from the registry, in the order it happened.
enum News {
    Arrived(Key, Generation),
    Left(Key),
}

struct PresenceQueue(mpsc::UnboundedSender<News>);

impl Presence for PresenceQueue {
    fn arrived(&self, account: AccountId, device: DeviceId, generation: Generation) {
        let _ = self.0.send(News::Arrived((account, device), generation));
    }

    fn left(&self, account: AccountId, device: DeviceId) {
        let _ = self.0.send(News::Left((account, device)));
    }
}

struct Shared {
    client: Client,
    registry: Registry,
    node: String,
    pending: Mutex<Pending>,
    outbox: mpsc::Sender<(Key, Lost)>,
}

/// Delivery over NATS; see the module documentation.
#[derive(Clone)]
pub struct NatsDelivery {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NatsDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDelivery")
            .field("node", &self.shared.node)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl NatsDelivery {
    /// Starts the bus for this node's `registry`: connects to `servers`
    /// (a comma-separated list of NATS URLs) in the background, and keeps
    /// reconnecting whenever the connection is lost. Returns at once: a
    /// node starts while NATS is down and joins when it comes.
    pub async fn start(servers: &str, node: &str, registry: Registry) -> Result<Self, BusError> {
        let servers = parse_servers(servers)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .name(format!("passerelle {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let events = events_tx.clone();
                async move {
                    let _ = events.send(event);
                }
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let (news_tx, news) = mpsc::unbounded_channel();
        if !registry.set_presence(Box::new(PresenceQueue(news_tx))) {
            return Err(BusError::Taken);
        }
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let shared = Arc::new(Shared {
            client,
            registry,
            node: node.to_owned(),
            pending: Mutex::default(),
            outbox,
        });
        metrics::bus_connected(false);
        let nodes = shared
            .client
            .subscribe(wire::nodes_subject())
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        let tasks = vec![
            tokio::spawn(subscriptions(shared.clone(), news)),
            tokio::spawn(publisher(shared.clone(), outgoing)),
            tokio::spawn(connection_events(shared.clone(), events)),
            tokio::spawn(node_messages(shared.clone(), nodes)),
        ];
        tracing::info!(node, "message bus starting");
        Ok(Self {
            shared,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    /// Whether the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a wake or removal that could not go out.
    fn lose(&self, key: Key, what: Lost) {
        metrics::bus_lost();
        let mut pending = self.pending();
        if pending.devices.len() >= MAX_PENDING && !pending.devices.contains_key(&key) {
            pending.overflowed = true;
            return;
        }
        let entry = pending.devices.entry(key).or_insert(what);
        if what == Lost::Removed {
            *entry = Lost::Removed;
        }
    }

    /// Queues a wake or removal for the publisher; remembered as lost when
    /// NATS is away or the queue is full.
    fn send(&self, key: Key, what: Lost) {
        if !self.is_connected() || self.outbox.try_send((key, what)).is_err() {
            self.lose(key, what);
        }
    }

    async fn publish(&self, subject: String, message: &BusMessage) -> bool {
        let payload = match message.encode() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not encode a bus message");
                return false;
            }
        };
        match self.client.publish(subject, payload.into()).await {
            Ok(()) => {
                metrics::bus_published(kind(message));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not publish on the bus");
                false
            }
        }
    }

    /// Waits until the server has read everything sent before (a request
    /// on a subject nobody listens to comes back "no responders" after the
    /// server processed what preceded it on this connection).
    async fn round_trip(&self) -> bool {
        let probe = format!("{}.probe.{}", wire::nodes_subject(), uuid::Uuid::new_v4());
        let answer =
            tokio::time::timeout(ROUND_TRIP, self.client.request(probe, bytes::Bytes::new())).await;
        match answer {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => e.kind() == async_nats::RequestErrorKind::NoResponders,
            Err(_) => false,
        }
    }

    /// After a (re)connection: confirms the subscriptions, republishes
    /// what was lost and a claim per local connection, and wakes every
    /// local connection.
    async fn resync(&self) {
        if !self.round_trip().await {
            return;
        }
        let Pending {
            devices,
            overflowed,
        } = std::mem::take(&mut *self.pending());
        if overflowed {
            self.publish(wire::nodes_subject(), &BusMessage::WakeAll)
                .await;
        }
        for ((account, device), what) in devices {
            let message = match what {
                Lost::Wake => BusMessage::Wake,
                Lost::Removed => BusMessage::Removed,
            };
            if !self
                .publish(wire::device_subject(account, device), &message)
                .await
            {
                self.lose((account, device), what);
            }
        }
        for (account, device, generation) in self.registry.devices() {
            self.publish(
                wire::device_subject(account, device),
                &BusMessage::Claim(generation),
            )
            .await;
        }
        self.registry.wake_all();
    }

    /// Acts on a message heard on a device's subject.
    async fn heard(&self, key: Key, message: async_nats::Message) {
        let (account, device) = key;
        let decoded = match BusMessage::decode(&message.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a bad bus message");
                return;
            }
        };
        metrics::bus_received(kind(&decoded));
        match decoded {
            BusMessage::Wake | BusMessage::WakeAll => self.registry.wake(account, device),
            BusMessage::Removed => self
                .registry
                .disconnect(account, device, CloseReason::Removed),
            BusMessage::Claim(claim) => {
                if self.registry.yield_to(account, device, claim) {
                    tracing::debug!(account = %account, device = %device, "connection replaced on another node");
                }
            }
            BusMessage::Ephemeral(envelope) => {
                let taken = self.registry.push_ephemeral(account, device, *envelope);
                if let Some(reply) = message.reply {
                    let answer = if taken { TAKEN } else { NOT_TAKEN };
                    let _ = self
                        .client
                        .publish(reply, bytes::Bytes::from_static(answer))
                        .await;
                }
            }
        }
    }
}

fn kind(message: &BusMessage) -> &'static str {
    match message {
        BusMessage::Wake => "wake",
        BusMessage::Removed => "removed",
        BusMessage::Claim(_) => "claim",
        BusMessage::Ephemeral(_) => "ephemeral",
        BusMessage::WakeAll => "wake_all",
    }
}

/// Keeps one subscription per device connected here, in the order the
/// registry reports arrivals and departures.
async fn subscriptions(shared: Arc<Shared>, mut news: mpsc::UnboundedReceiver<News>) {
    let mut subscribed: HashMap<Key, AbortHandle> = HashMap::new();
    while let Some(news) = news.recv().await {
        match news {
            News::Arrived(key, generation) => {
                let (account, device) = key;
                // Replaced or gone since: its successor's news follows.
                if shared.registry.generation(account, device) != Some(generation) {
                    continue;
                }
                if let Entry::Vacant(slot) = subscribed.entry(key) {
                    match shared
                        .client
                        .subscribe(wire::device_subject(account, device))
                        .await
                    {
                        Ok(subscriber) => {
                            let task = tokio::spawn(listen(shared.clone(), key, subscriber));
                            slot.insert(task.abort_handle());
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not subscribe to a device");
                            continue;
                        }
                    }
                    // Anything queued before the subscription worked is
                    // read now; anything after comes with a wake.
                    if shared.is_connected() && shared.round_trip().await {
                        shared.registry.wake(account, device);
                    }
                }
                shared
                    .publish(
                        wire::device_subject(account, device),
                        &BusMessage::Claim(generation),
                    )
                    .await;
            }
            News::Left(key) => {
                let (account, device) = key;
                if !shared.registry.is_connected(account, device) {
                    if let Some(task) = subscribed.remove(&key) {
                        task.abort();
                    }
                }
            }
        }
    }
    for task in subscribed.into_values() {
        task.abort();
    }
}

/// Hands what is heard on one device's subject to the registry.
async fn listen(shared: Arc<Shared>, key: Key, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        shared.heard(key, message).await;
    }
}

/// Publishes queued wakes and removals; what fails is remembered.
async fn publisher(shared: Arc<Shared>, mut outgoing: mpsc::Receiver<(Key, Lost)>) {
    while let Some(((account, device), what)) = outgoing.recv().await {
        let message = match what {
            Lost::Wake => BusMessage::Wake,
            Lost::Removed => BusMessage::Removed,
        };
        let sent = shared.is_connected()
            && shared
                .publish(wire::device_subject(account, device), &message)
                .await;
        if !sent {
            shared.lose((account, device), what);
        }
    }
}

/// Follows the NATS connection: metrics, logs, and a resync on every
/// (re)connection.
async fn connection_events(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut connected_before = false;
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                metrics::bus_connected(true);
                if connected_before {
                    metrics::bus_reconnected();
                    tracing::info!(node = %shared.node, "message bus reconnected");
                } else {
                    tracing::info!(node = %shared.node, "message bus connected");
                }
                connected_before = true;
                shared.resync().await;
            }
            Event::Disconnected => {
                metrics::bus_connected(false);
                tracing::warn!(node = %shared.node, "message bus disconnected; reconnecting");
            }
            Event::SlowConsumer(_) => {
                tracing::warn!("the message bus dropped messages for this node; waking all");
                shared.registry.wake_all();
            }
            other => tracing::debug!(event = %other, "message bus event"),
        }
    }
}

/// Listens on the subject every node hears.
async fn node_messages(shared: Arc<Shared>, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        match BusMessage::decode(&message.payload) {
            Ok(BusMessage::WakeAll) => {
                metrics::bus_received("wake_all");
                shared.registry.wake_all();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "ignored a bad bus message"),
        }
    }
}

impl Delivery for NatsDelivery {
    fn wake(&self, account: AccountId, device: DeviceId) {
        self.shared.registry.wake(account, device);
        self.shared.send((account, device), Lost::Wake);
    }

    fn push_ephemeral(
        &self,
        account: AccountId,
        device: DeviceId,
        envelope: Envelope,
    ) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.registry.is_connected(account, device) {
                return shared.registry.push_ephemeral(account, device, envelope);
            }
            if !shared.is_connected() {
                return false;
            }
            let message = BusMessage::Ephemeral(Box::new(envelope));
            let Ok(payload) = message.encode() else {
                return false;
            };
            let request = shared
                .client
                .request(wire::device_subject(account, device), payload.into());
            metrics::bus_published("ephemeral");
            match tokio::time::timeout(EPHEMERAL_TIMEOUT, request).await {
                Ok(Ok(answer)) => answer.payload.as_ref() == TAKEN,
                Ok(Err(_)) | Err(_) => false,
            }
        })
    }

    fn disconnect(&self, account: AccountId, device: DeviceId) {
        self.shared
            .registry
            .disconnect(account, device, CloseReason::Removed);
        self.shared.send((account, device), Lost::Removed);
    }

    fn status(&self) -> BusStatus {
        BusStatus::Bus {
            connected: self.is_connected(),
        }
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for task in self.tasks().drain(..) {
                task.abort();
            }
            if let Err(e) = self.shared.client.drain().await {
                tracing::debug!(error = %e, "message bus did not drain");
            }
            metrics::bus_connected(false);
            tracing::info!(node = %self.shared.node, "message bus closed");
        })
    }
}
