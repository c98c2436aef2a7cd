//! Several hub nodes sharing one store, linked by NATS: each node is a
//! real server on its own port with its own NATS delivery; devices connect
//! to different nodes.
//!
//! NATS comes from `PASSERELLE_TEST_NATS` (default
//! `nats://127.0.0.1:4222`); when it cannot be reached the tests say so and
//! pass, unless `CI` is set. The outage test starts its own `nats-server`
//! (`PASSERELLE_TEST_NATS_SERVER`, default `/usr/sbin/nats-server`) on a
//! free port, and kills and restarts it.
//!
//! Every scenario takes the store as a parameter: each backend gets its
//! own `#[tokio::test]` wrappers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Hub, Socket};
use futures_util::StreamExt as _;
use passerelle_proto::ws::ServerFrame;
use passerelle_server::delivery::nats::NatsDelivery;
use passerelle_server::{AppState, Config};
use passerelle_store::Store;
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

fn memory_store() -> Arc<dyn Store> {
    Arc::new(passerelle_store::memory::MemoryStore::new())
}

// ---- nodes ----

/// One node: a real server with a NATS delivery over a shared store.
struct Node {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(name: &str, store: Arc<dyn Store>, nats: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, name, store, nats).await
    }

    async fn start_on(
        listener: tokio::net::TcpListener,
        name: &str,
        store: Arc<dyn Store>,
        nats: &str,
    ) -> Self {
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
async fn messages_cross_nodes(store: Arc<dyn Store>, nats: &str) {
    let a = Node::start("a", store.clone(), nats).await;
    let b = Node::start("b", store, nats).await;
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
async fn reconnecting_elsewhere_replaces(store: Arc<dyn Store>, nats: &str) {
    let a = Node::start("a", store.clone(), nats).await;
    let b = Node::start("b", store.clone(), nats).await;
    let c = Node::start("c", store, nats).await;
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
async fn removal_closes_remote_connections(store: Arc<dyn Store>, nats: &str) {
    let a = Node::start("a", store.clone(), nats).await;
    let b = Node::start("b", store, nats).await;
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
async fn devices_fail_over_when_a_node_stops(store: Arc<dyn Store>, nats: &str) {
    use passerelle_client::{Body, Client as Sdk, Event};

    let a = Node::start("a", store.clone(), nats).await;
    let b = Node::start("b", store, nats).await;
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
async fn nats_outage_loses_nothing(store: Arc<dyn Store>, binary: &str) {
    let mut nats = NatsServer::start(binary).await;
    let a = Node::start("a", store.clone(), &nats.url()).await;
    let b = Node::start("b", store, &nats.url()).await;
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

// ---- the in-memory store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_messages_cross_nodes() {
    if let Some(nats) = nats_url().await {
        messages_cross_nodes(memory_store(), &nats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_reconnecting_elsewhere_replaces() {
    if let Some(nats) = nats_url().await {
        reconnecting_elsewhere_replaces(memory_store(), &nats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_removal_closes_remote_connections() {
    if let Some(nats) = nats_url().await {
        removal_closes_remote_connections(memory_store(), &nats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_devices_fail_over_when_a_node_stops() {
    if let Some(nats) = nats_url().await {
        devices_fail_over_when_a_node_stops(memory_store(), &nats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_nats_outage_loses_nothing() {
    if let Some(binary) = nats_server_binary() {
        nats_outage_loses_nothing(memory_store(), &binary).await;
    }
}
