//! Several hub nodes sharing one store, linked by NATS: each node is a
//! real server on its own port with its own NATS delivery; devices connect
//! to different nodes.
//!
//! Every scenario runs twice: over one in-memory store all nodes hold
//! (`<scenario>::memory`), and over PostgreSQL, where each node opens its
//! own pool on one shared schema, as separate processes would
//! (`<scenario>::postgres`).
//!
//! NATS comes from `PASSERELLE_TEST_NATS` (default
//! `nats://127.0.0.1:4222`), PostgreSQL from `PASSERELLE_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, a fresh schema
//! per test); when either cannot be reached the tests say so and pass,
//! unless `CI` is set. The outage test starts its own `nats-server`
//! (`PASSERELLE_TEST_NATS_SERVER`, default `/usr/sbin/nats-server`) on a
//! free port, and kills and restarts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, Hub, Socket};
use futures_util::StreamExt as _;
use passerelle_client::{Address, Client as Sdk};
use passerelle_proto::ws::ServerFrame;
use passerelle_server::delivery::nats::NatsDelivery;
use passerelle_server::{AppState, Config};
use passerelle_store::Store;
use passerelle_store::postgres::testing::TestSchema;
use tokio_tungstenite::tungstenite::Message;

// ---- the environment ----

fn must_run() -> bool {
    std::env::var_os("CI").is_some()
}

/// The NATS URL to test against, or `None` (after saying so) when it
/// cannot be reached outside CI.
async fn nats_url() -> Option<String> {
    let url = std::env::var("PASSERELLE_TEST_NATS")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let host = url
        .trim_start_matches("nats://")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    let reachable = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(host.as_str()),
    )
    .await
    .is_ok_and(|c| c.is_ok());
    if reachable {
        return Some(url);
    }
    assert!(!must_run(), "NATS at {url} is unreachable and CI is set");
    println!("skipped: NATS at {url} is unreachable (set PASSERELLE_TEST_NATS)");
    None
}

/// Where the nodes of one test keep their data.
enum Shared {
    /// One in-memory store, held by every node of the process.
    Memory(Arc<dyn Store>),
    /// One schema of a PostgreSQL database; each node connects on its own.
    Postgres(TestSchema),
}

/// Connections per node: a test's requests are few at a time, and every
/// test's nodes share the server's `max_connections`.
const POOL_SIZE: u32 = 4;

impl Shared {
    fn memory() -> Self {
        Self::Memory(Arc::new(passerelle_store::memory::MemoryStore::new()))
    }

    /// A fresh schema, or `None` when PostgreSQL cannot be reached outside
    /// CI (after saying so).
    async fn postgres() -> Option<Self> {
        passerelle_store::postgres::testing::fresh_schema()
            .await
            .map(Self::Postgres)
    }

    /// The store a new node works with.
    async fn store_for_node(&self) -> Arc<dyn Store> {
        match self {
            Self::Memory(store) => store.clone(),
            Self::Postgres(schema) => Arc::new(schema.store(POOL_SIZE).await),
        }
    }
}

// ---- nodes ----

/// One node: a real server with a NATS delivery and its own handle on the
/// shared data.
struct Node {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(name: &str, shared: &Shared, nats: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = shared.store_for_node().await;
        let config = Config {
            node: name.to_owned(),
            nats: Some(nats.to_owned()),
            ..Config::default()
        };
        let builder = AppState::builder(config, store);
        let delivery = NatsDelivery::start(nats, name, builder.registry())
            .await
            .unwrap();
        let state = builder.delivery(Arc::new(delivery)).build();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        let task = tokio::spawn(async move {
            passerelle_server::serve_on(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let node = Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        };
        node.until_ready().await;
        node
    }

    /// A handle the test helpers of `common` take.
    fn hub(&self) -> Hub {
        Hub::detached(self.addr)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn readyz(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.url()))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits (up to 30 s) until the node says it is ready: store and bus.
    async fn until_ready(&self) {
        for _ in 0..300 {
            if self.readyz().await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {} not ready within 30 s", self.addr);
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("node stops within 10 s")
                .unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh username.
fn name(prefix: &str) -> String {
    format!("{prefix}{}", rand::random::<u32>())
}

/// Connects and reads the (empty) backlog.
async fn online(client: &Client, node: &Node) -> Socket {
    let mut socket = client.connect(&node.hub()).await;
    assert!(socket.backlog().await.is_empty());
    socket
}

/// The next envelope within 30 s (deliveries after a NATS outage wait for
/// the reconnection).
async fn envelope_within(socket: &mut Socket, wait: Duration) -> passerelle_proto::Envelope {
    match socket.try_next(wait).await {
        Some(ServerFrame::Envelope { envelope }) => *envelope,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

/// The close code the hub ends a socket with.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.ws.next())
            .await
            .expect("the socket closes within 10 s");
        match next {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return None,
        }
    }
}

/// Sends an ephemeral envelope until the recipient's socket shows one:
/// until the recipient's node has subscribed, nobody answers the push.
async fn ephemeral_arrives(from: &Client, node: &Node, to: &Client, socket: &mut Socket) {
    for _ in 0..50 {
        from.send(
            &node.hub(),
            to.account_id,
            &[(to.device_id, to.registration_id)],
            b"typing",
            true,
        )
        .await
        .unwrap();
        if let Some(frame) = socket.try_next(Duration::from_millis(200)).await {
            match frame {
                ServerFrame::Envelope { envelope } => {
                    assert_eq!(envelope.content.unwrap().0, b"typing");
                    return;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    panic!("no ephemeral envelope crossed nodes");
}

// ---- scenarios ----

/// Messages cross both ways between two nodes, each sender on its own
/// node; ephemeral pushes cross too.
async fn messages_cross_nodes(shared: &Shared, nats: &str) {
    let a = Node::start("a", shared, nats).await;
    let b = Node::start("b", shared, nats).await;
    let alice = a.hub().register_username(&name("alice")).await;
    let bob = b.hub().register_username(&name("bob")).await;
    let mut alice_ws = online(&alice, &a).await;
    let mut bob_ws = online(&bob, &b).await;

    alice.send_to(&a.hub(), &bob, b"a to b").await;
    let got = bob_ws.envelope().await;
    assert_eq!(got.content.as_ref().unwrap().0, b"a to b");
    bob_ws.ack(&[got.id]).await;

    bob.send_to(&b.hub(), &alice, b"b to a").await;
    let got = alice_ws.envelope().await;
    assert_eq!(got.content.as_ref().unwrap().0, b"b to a");
    alice_ws.ack(&[got.id]).await;

    ephemeral_arrives(&alice, &a, &bob, &mut bob_ws).await;
    ephemeral_arrives(&bob, &b, &alice, &mut alice_ws).await;

    // Many in a row, both ways at once: all arrive, in order.
    for i in 0..20u8 {
        alice.send_to(&a.hub(), &bob, &[b'x', i]).await;
        bob.send_to(&b.hub(), &alice, &[b'y', i]).await;
    }
    for i in 0..20u8 {
        assert_eq!(bob_ws.envelope().await.content.unwrap().0, [b'x', i]);
        assert_eq!(alice_ws.envelope().await.content.unwrap().0, [b'y', i]);
    }
    a.stop().await;
    b.stop().await;
}

/// A device that connects to another node replaces its connection on the
/// first (4000), and later envelopes go to the new connection only.
async fn reconnecting_elsewhere_replaces(shared: &Shared, nats: &str) {
    let a = Node::start("a", shared, nats).await;
    let b = Node::start("b", shared, nats).await;
    let c = Node::start("c", shared, nats).await;
    let alice = a.hub().register_username(&name("alice")).await;
    let bob = a.hub().register_username(&name("bob")).await;
    let mut old = online(&bob, &a).await;
    let mut new = online(&bob, &b).await;
    assert_eq!(close_code(&mut old).await, Some(4000));
    common::eventually(|| {
        !a.state
            .registry()
            .is_connected(bob.account_id, bob.device_id)
    })
    .await;
    assert!(
        b.state
            .registry()
            .is_connected(bob.account_id, bob.device_id)
    );

    // From a third node: the new connection gets it.
    alice.send_to(&c.hub(), &bob, b"after").await;
    assert_eq!(new.envelope().await.content.unwrap().0, b"after");

    // And back on the first node: the connection there replaces the one
    // on the second.
    let mut newest = bob.connect(&a.hub()).await;
    // "after" was not acknowledged: it comes again on the new connection.
    let backlog: Vec<Vec<u8>> = newest
        .backlog()
        .await
        .into_iter()
        .map(|e| e.content.unwrap().0)
        .collect();
    assert_eq!(backlog, [b"after".to_vec()]);
    assert_eq!(close_code(&mut new).await, Some(4000));
    alice.send_to(&c.hub(), &bob, b"again").await;
    assert_eq!(newest.envelope().await.content.unwrap().0, b"again");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// Removing a device on one node closes its connection on another (4001).
async fn removal_closes_remote_connections(shared: &Shared, nats: &str) {
    let a = Node::start("a", shared, nats).await;
    let b = Node::start("b", shared, nats).await;
    let alice = a.hub().register_username(&name("alice")).await;
    let laptop = a.hub().link_device(&alice, "laptop").await.unwrap();
    let mut socket = online(&laptop, &b).await;
    // Until b subscribed, the removal's message may find nobody; b has,
    // once an ephemeral push reaches the socket.
    ephemeral_arrives(&alice, &a, &laptop, &mut socket).await;
    let _: passerelle_proto::api::Empty = alice
        .delete(&a.hub(), &format!("/v1/devices/{}", laptop.device_id))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4001));
    a.stop().await;
    b.stop().await;
}

/// A node stops while its devices are connected: they fail over (client
/// SDK) to the other node and read everything, once each, including what
/// was sent while they were moving.
async fn devices_fail_over_when_a_node_stops(shared: &Shared, nats: &str) {
    use passerelle_client::{Body, Event};

    let a = Node::start("a", shared, nats).await;
    let b = Node::start("b", shared, nats).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_name, bob_name) = (name("alice"), name("bob"));
    let alice = Sdk::register(
        &a.url(),
        dir.path().join("alice.db"),
        "parley",
        Some(&alice_name),
        None,
        "phone",
    )
    .await
    .unwrap();
    let bob = Sdk::register(
        &b.url(),
        dir.path().join("bob.db"),
        "parley",
        Some(&bob_name),
        None,
        "phone",
    )
    .await
    .unwrap();
    // Bob knows both nodes, his own first.
    bob.set_servers(&[&b.url(), &a.url()]).unwrap();
    let bob_address = bob.address().clone();

    let mut listener = bob.listen().await.unwrap();
    assert!(matches!(
        listener.next().await.unwrap().unwrap(),
        Event::QueueEmpty
    ));
    const COUNT: usize = 30;
    let sender = tokio::spawn({
        let alice = alice.clone();
        async move {
            for i in 0..COUNT {
                alice
                    .send_text(&bob_address, &format!("m{i}"))
                    .await
                    .unwrap();
            }
        }
    });
    let mut seen = Vec::new();
    let mut stopping = Some(b);
    let mut queue_empties = 0;
    while seen.len() < COUNT {
        let event = tokio::time::timeout(Duration::from_secs(30), listener.next())
            .await
            .expect("an event within 30 s")
            .expect("the listener goes on")
            .unwrap();
        match event {
            Event::Message {
                body: Body::Text { text },
                ..
            } => {
                seen.push(text);
                // Midway, bob's node stops.
                if seen.len() == COUNT / 3 {
                    stopping.take().unwrap().stop().await;
                }
            }
            Event::QueueEmpty => queue_empties += 1,
            _ => {}
        }
    }
    sender.await.unwrap();
    let expected: Vec<String> = (0..COUNT).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected, "every message once, in order");
    assert!(queue_empties >= 1, "the reconnection read the queue");
    assert_eq!(bob.server_url(), format!("{}/", a.url()));
    assert!(
        a.state
            .registry()
            .is_connected(bob.account_id(), bob.device_id())
    );
    // Every envelope was acknowledged (the last acks may still be on
    // their way).
    let mut queued = u64::MAX;
    for _ in 0..100 {
        queued = a
            .state
            .store()
            .queued_count(bob.account_id(), bob.device_id())
            .await
            .unwrap();
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 0);
    listener.close().await;
    a.stop().await;
}

/// Registers a device of a fresh account on `node` (SDK, state in `dir`)
/// that knows the nodes `servers`, in that order.
async fn device_on(node: &Node, dir: &std::path::Path, who: &str, servers: &[&Node]) -> Sdk {
    let handle = name(who);
    let client = Sdk::register(
        &node.url(),
        dir.join(format!("{handle}.db")),
        "parley",
        Some(&handle),
        None,
        "phone",
    )
    .await
    .unwrap();
    let urls: Vec<String> = servers.iter().map(|n| n.url()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    client.set_servers(&urls).unwrap();
    client
}

/// The last text each sender sends.
const END: &str = "end";
/// Rounds each sender sends once the node has stopped.
const ROUNDS_AFTER_STOP: usize = 5;

/// What one sender sent to one recipient: the texts whose send returned,
/// and those whose send failed (the hub may or may not have queued them).
#[derive(Default)]
struct Sent {
    acknowledged: Vec<String>,
    failed: Vec<String>,
}

/// Sends rounds of numbered texts (one to each of `to` per round) until
/// `stopped` is set and [`ROUNDS_AFTER_STOP`] more rounds went, then
/// [`END`] to each.
async fn keep_sending(from: Sdk, to: Vec<Address>, stopped: Arc<AtomicBool>) -> Vec<Sent> {
    let mut sent: Vec<Sent> = to.iter().map(|_| Sent::default()).collect();
    let mut after_stop = 0;
    for round in 0.. {
        if stopped.load(Ordering::SeqCst) {
            if after_stop == ROUNDS_AFTER_STOP {
                break;
            }
            after_stop += 1;
        }
        for (address, sent) in to.iter().zip(&mut sent) {
            let text = round.to_string();
            match from.send_text(address, &text).await {
                Ok(_) => sent.acknowledged.push(text),
                Err(e) => {
                    println!("a send to {address} failed: {e}");
                    sent.failed.push(text);
                }
            }
        }
    }
    for address in &to {
        from.send_text(address, END).await.unwrap();
    }
    sent
}

/// Reads texts until [`END`] came from each of `senders`; counts every
/// text in `count` as it arrives. Returns the listener (still connected)
/// and the texts of each sender, in the order they came.
async fn read_until_end(
    mut listener: passerelle_client::Listener,
    senders: Vec<Address>,
    count: Arc<AtomicUsize>,
) -> (passerelle_client::Listener, Vec<Vec<String>>) {
    use passerelle_client::{Body, Event};

    let mut texts: Vec<Vec<String>> = senders.iter().map(|_| Vec::new()).collect();
    let ended = |texts: &[Vec<String>]| texts.iter().all(|t| t.iter().any(|t| t == END));
    while !ended(&texts) {
        let event = tokio::time::timeout(Duration::from_secs(60), listener.next())
            .await
            .expect("an event within 60 s")
            .expect("the listener goes on")
            .unwrap();
        if let Event::Message {
            from,
            body: Body::Text { text },
            ..
        } = event
        {
            let sender = senders.iter().position(|s| *s == from).unwrap();
            texts[sender].push(text);
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
    (listener, texts)
}

/// What one recipient got from one sender is what was sent: every
/// acknowledged text once, a failed one at most once, in the order sent,
/// then [`END`].
fn check_received(route: &str, sent: &Sent, received: &[String]) {
    let (end, texts) = received.split_last().unwrap();
    assert_eq!(end, END, "{route}: nothing after the end");
    let numbers: Vec<usize> = texts.iter().map(|t| t.parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "{route}: each text once, in order: {numbers:?}"
    );
    for text in &sent.acknowledged {
        assert!(
            texts.contains(text),
            "{route}: acknowledged {text} never came"
        );
    }
    for text in texts {
        assert!(
            sent.acknowledged.contains(text) || sent.failed.contains(text),
            "{route}: {text} was never sent"
        );
    }
}

/// A node stops while its devices are sending and receiving: every device
/// ends up on the surviving node, and every message whose send was
/// acknowledged reaches its recipient exactly once, in order, whether it
/// was sent before, during or after the stop, to or from the node that
/// stopped.
async fn node_stops_with_messages_in_flight(shared: &Shared, nats: &str) {
    let a = Node::start("a", shared, nats).await;
    let b = Node::start("b", shared, nats).await;
    let dir = tempfile::tempdir().unwrap();
    // Alice stays on the node that stays; bob and carol are on the one
    // that stops.
    let alice = device_on(&a, dir.path(), "alice", &[&a, &b]).await;
    let bob = device_on(&b, dir.path(), "bob", &[&b, &a]).await;
    let carol = device_on(&b, dir.path(), "carol", &[&b, &a]).await;
    let address = |c: &Sdk| c.address().clone();

    let stopped = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for (device, senders) in [
        (&alice, vec![address(&bob), address(&carol)]),
        (&bob, vec![address(&alice)]),
        (&carol, vec![address(&alice)]),
    ] {
        let mut listener = device.listen().await.unwrap();
        assert!(matches!(
            listener.next().await.unwrap().unwrap(),
            passerelle_client::Event::QueueEmpty
        ));
        let count = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(read_until_end(listener, senders, count.clone()));
        readers.push((count, reader));
    }
    let senders = [
        tokio::spawn(keep_sending(
            alice.clone(),
            vec![address(&bob), address(&carol)],
            stopped.clone(),
        )),
        tokio::spawn(keep_sending(
            bob.clone(),
            vec![address(&alice)],
            stopped.clone(),
        )),
        tokio::spawn(keep_sending(
            carol.clone(),
            vec![address(&alice)],
            stopped.clone(),
        )),
    ];

    // Once messages flow every way, bob's and carol's node stops.
    let mut flowing = false;
    for _ in 0..600 {
        flowing = readers
            .iter()
            .all(|(count, _)| count.load(Ordering::SeqCst) >= 3);
        if flowing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(flowing, "messages flow every way within 60 s");
    b.stop().await;
    stopped.store(true, Ordering::SeqCst);

    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.unwrap());
    }
    let mut received = Vec::new();
    for (_, reader) in readers {
        received.push(reader.await.unwrap());
    }
    let failed: usize = sent.iter().flatten().map(|s| s.failed.len()).sum();
    let acknowledged: usize = sent.iter().flatten().map(|s| s.acknowledged.len()).sum();
    println!("{acknowledged} sends acknowledged, {failed} failed");
    // sent[0] is alice's (to bob, to carol); received[0] alice's (from
    // bob, from carol).
    check_received("alice to bob", &sent[0][0], &received[1].1[0]);
    check_received("alice to carol", &sent[0][1], &received[2].1[0]);
    check_received("bob to alice", &sent[1][0], &received[0].1[0]);
    check_received("carol to alice", &sent[2][0], &received[0].1[1]);

    for device in [&alice, &bob, &carol] {
        assert_eq!(device.server_url(), format!("{}/", a.url()));
        assert!(
            a.state
                .registry()
                .is_connected(device.account_id(), device.device_id())
        );
        // Every envelope was acknowledged (the last acks may still be on
        // their way).
        let mut queued = u64::MAX;
        for _ in 0..100 {
            queued = a
                .state
                .store()
                .queued_count(device.account_id(), device.device_id())
                .await
                .unwrap();
            if queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(queued, 0, "{} has nothing left queued", device.address());
    }
    for (listener, _) in received {
        listener.close().await;
    }
    a.stop().await;
}

// ---- a NATS server of the test's own ----

struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn nats_server_binary() -> Option<String> {
    let path = std::env::var("PASSERELLE_TEST_NATS_SERVER")
        .unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(!must_run(), "no nats-server at {path} and CI is set");
    println!("skipped: no nats-server at {path} (set PASSERELLE_TEST_NATS_SERVER)");
    None
}

impl NatsServer {
    async fn start(binary: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(binary, port, &dir).await;
        Self { child, port, dir }
    }

    async fn spawn(binary: &str, port: u16, dir: &tempfile::TempDir) -> Child {
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nats-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self, binary: &str) {
        self.child = Self::spawn(binary, self.port, &self.dir).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// NATS goes away while messages are sent across nodes; once it is back,
/// every one of them is delivered, and the nodes said they were unready
/// meanwhile.
async fn nats_outage_loses_nothing(shared: &Shared, binary: &str) {
    let mut nats = NatsServer::start(binary).await;
    let a = Node::start("a", shared, &nats.url()).await;
    let b = Node::start("b", shared, &nats.url()).await;
    let alice = a.hub().register_username(&name("alice")).await;
    let bob = b.hub().register_username(&name("bob")).await;
    let mut bob_ws = online(&bob, &b).await;
    // The link works before the outage.
    ephemeral_arrives(&alice, &a, &bob, &mut bob_ws).await;

    nats.kill();
    // Both nodes notice, and say so.
    for node in [&a, &b] {
        let mut unready = false;
        for _ in 0..300 {
            if node.readyz().await == 503 {
                unready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(unready, "a node cut from NATS says it is not ready");
    }
    let metrics = reqwest::get(format!("{}/metrics", a.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("passerelle_bus_connected"), "{metrics}");

    const COUNT: u8 = 5;
    for i in 0..COUNT {
        alice.send_to(&a.hub(), &bob, &[b'o', i]).await;
    }
    // Nothing can reach bob's node now: the queue holds them.
    assert!(bob_ws.try_next(Duration::from_millis(300)).await.is_none());

    nats.restart(binary).await;
    a.until_ready().await;
    b.until_ready().await;
    let mut got = BTreeSet::new();
    for _ in 0..COUNT {
        let envelope = envelope_within(&mut bob_ws, Duration::from_secs(30)).await;
        got.insert(envelope.content.unwrap().0);
    }
    let expected: BTreeSet<Vec<u8>> = (0..COUNT).map(|i| vec![b'o', i]).collect();
    assert_eq!(got, expected);

    // And the link works again.
    alice.send_to(&a.hub(), &bob, b"after").await;
    let envelope = envelope_within(&mut bob_ws, Duration::from_secs(30)).await;
    assert_eq!(envelope.content.unwrap().0, b"after");
    a.stop().await;
    b.stop().await;
}

// ---- every scenario on every store ----

/// Two tests for a scenario, `memory` and `postgres`: `$needs` is what it
/// takes besides the store (a NATS URL, a `nats-server` binary), `None`
/// when that is missing outside CI.
macro_rules! on_every_store {
    ($scenario:ident, $needs:expr) => {
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                if let Some(needs) = $needs {
                    super::$scenario(&Shared::memory(), &needs).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(needs) = $needs else { return };
                if let Some(shared) = Shared::postgres().await {
                    super::$scenario(&shared, &needs).await;
                }
            }
        }
    };
}

on_every_store!(messages_cross_nodes, nats_url().await);
on_every_store!(reconnecting_elsewhere_replaces, nats_url().await);
on_every_store!(removal_closes_remote_connections, nats_url().await);
on_every_store!(devices_fail_over_when_a_node_stops, nats_url().await);
on_every_store!(node_stops_with_messages_in_flight, nats_url().await);
on_every_store!(nats_outage_loses_nothing, nats_server_binary());
