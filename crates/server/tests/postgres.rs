//! `serve` on the PostgreSQL store, named by the configuration's
//! `database`: two hub nodes share one database; an account registered on
//! one node sends to an account registered on the other, whose device
//! reads the envelope from the other node's WebSocket.
//!
//! While the database cannot be reached, requests are answered `503
//! unavailable` with `Retry-After`, and work again once it is back.
//!
//! Needs a PostgreSQL server at `PASSERELLE_TEST_POSTGRES`; skipped without
//! one, unless `CI` is set. Each run works in a schema of its own, dropped
//! at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use passerelle_proto::api::messages::{OutgoingMessage, SendMessages};
use passerelle_proto::{EnvelopeKind, ProblemType};
use passerelle_server::Config;
use passerelle_server::config::DatabaseUrl;
use passerelle_store::postgres::testing::fresh_schema;

/// One node of the hub, run by `serve`.
struct Node {
    served: Served,
    _data: tempfile::TempDir,
}

async fn start(database: &str) -> Node {
    let data = tempfile::tempdir().unwrap();
    let served = Served::start(Config {
        // Unused with a database: nothing may be written there.
        data_dir: data.path().join("unused"),
        database: Some(DatabaseUrl(database.to_owned())),
        database_pool_size: 4,
        ..Config::default()
    })
    .await;
    Node {
        served,
        _data: data,
    }
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.served.addr
    }

    async fn stop(self) {
        self.served.stop().await;
        assert!(
            !self._data.path().join("unused").exists(),
            "a node with a database wrote an embedded one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_register_send_and_receive() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let one = start(&schema.url()).await;
    let two = start(&schema.url()).await;
    let (hub_one, hub_two) = (Hub::detached(one.addr()), Hub::detached(two.addr()));

    let alice = hub_one.register_username("alice").await;
    let bob = hub_two.register_username("bob").await;
    // Each node knows the account the other registered.
    let taken = hub_two.register("parley", Some("alice"), None).await;
    assert!(taken.is_err(), "alice was registered twice");

    bob.send_to(&hub_two, &alice, b"ciphertext from bob").await;
    bob.send_to(&hub_one, &alice, b"second, through the other node")
        .await;

    let mut socket = alice.connect(&hub_one).await;
    let backlog = socket.backlog().await;
    let contents: Vec<&[u8]> = backlog
        .iter()
        .map(|e| e.content.as_ref().unwrap().0.as_slice())
        .collect();
    assert_eq!(
        contents,
        [
            b"ciphertext from bob".as_slice(),
            b"second, through the other node".as_slice()
        ]
    );
    let source = backlog[0].source.as_ref().unwrap();
    assert_eq!(source.account_id, bob.account_id);
    let ids: Vec<_> = backlog.iter().map(|e| e.id).collect();
    socket.ack(&ids).await;
    socket.close().await;

    // Acknowledged on one node, gone on the other.
    eventually_empty(&alice, &hub_two).await;
    one.stop().await;
    two.stop().await;
}

/// Connects until the backlog is empty: the acknowledgement is processed
/// after the socket closed, at the hub's pace.
async fn eventually_empty(client: &Client, hub: &Hub) {
    for _ in 0..100 {
        let mut socket = client.connect(hub).await;
        let empty = socket.backlog().await.is_empty();
        socket.close().await;
        if empty {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the acknowledged envelopes stayed queued");
}

/// A TCP relay between the hub and PostgreSQL that can be cut: while cut,
/// it refuses new connections and has dropped every open one, as a
/// database host that went down would.
struct Gate {
    listen: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    async fn new(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Self {
            listen: listener.local_addr().unwrap(),
            upstream,
            tasks: Arc::default(),
        };
        gate.serve(listener);
        gate
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    tasks.lock().unwrap().push(relay.abort_handle());
                }
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Drops every connection and stops listening.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again, on the same port.
    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(self.listen).await.unwrap();
        self.serve(listener);
    }

    /// `url` with its host and port replaced by the gate's.
    fn url(&self, url: &str) -> String {
        url.replace(&self.upstream.to_string(), &self.listen.to_string())
    }
}

/// The host and port of a `postgres://user@host:port/...` URL.
fn host_port(url: &str) -> SocketAddr {
    let rest = url.split_once('@').map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap();
    authority
        .parse()
        .expect("the test server URL names an IP address and port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_503_with_retry_after_until_it_is_back() {
    let Some(schema) = fresh_schema().await else {
        return;
    };
    let gate = Gate::new(host_port(&schema.url())).await;
    let node = start(&gate.url(&schema.url())).await;
    let hub = Hub::detached(node.addr());
    let alice = hub.register_username("alice").await;
    let bob = hub.register_username("bob").await;
    bob.send_to(&hub, &alice, b"before").await;

    let send = |content: &'static [u8]| {
        let body = SendMessages {
            timestamp: 1_700_000_000_000,
            messages: vec![OutgoingMessage {
                device_id: alice.device_id,
                registration_id: alice.registration_id,
                kind: EnvelopeKind::Message,
                content: content.to_vec().into(),
            }],
            online_only: false,
        };
        bob.auth(
            hub.http
                .put(hub.url(&format!("/v1/messages/{}", alice.account_id))),
        )
        .json(&body)
        .send()
    };

    gate.cut();
    let response = send(b"while down").await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        response.headers()["content-type"],
        passerelle_proto::problem::CONTENT_TYPE
    );
    let problem: passerelle_proto::Problem = response.json().await.unwrap();
    assert_eq!(problem.kind(), Some(ProblemType::Unavailable));
    // A registration, which writes, is answered the same way.
    let refused = hub
        .register("parley", Some("carol"), None)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), Some(ProblemType::Unavailable));

    gate.restore().await;
    let mut status = 0;
    for _ in 0..200 {
        status = send(b"after").await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while the pool reconnects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the hub did not recover");
    // Nothing refused was stored: alice has exactly what was accepted.
    let mut socket = alice.connect(&hub).await;
    let contents: Vec<Vec<u8>> = socket
        .backlog()
        .await
        .into_iter()
        .map(|e| e.content.unwrap().0)
        .collect();
    assert_eq!(contents, [b"before".to_vec(), b"after".to_vec()]);
    socket.close().await;
    node.stop().await;
}
