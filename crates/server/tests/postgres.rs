//! `serve` on the PostgreSQL store, named by the configuration's
//! `database`: two hub nodes share one database; an account registered on
//! one node sends to an account registered on the other, whose device
//! reads the envelope from the other node's WebSocket.
//!
//! Needs a PostgreSQL server at `PASSERELLE_TEST_POSTGRES`; skipped without
//! one, unless `CI` is set. Each run works in a schema of its own, dropped
//! at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use passerelle_server::Config;
use passerelle_server::config::DatabaseUrl;
use passerelle_store::postgres::testing::fresh_schema;

/// One node of the hub, run by `serve`.
struct Node {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

async fn start(database: &str) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        // Unused with a database: nothing may be written there.
        data_dir: data.path().join("unused"),
        database: Some(DatabaseUrl(database.to_owned())),
        database_pool_size: 4,
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        passerelle_server::serve(config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
            if r.status() == 200 {
                return Node {
                    addr,
                    stop,
                    task,
                    _data: data,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the node did not become ready");
}

impl Node {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
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
    let (hub_one, hub_two) = (Hub::detached(one.addr), Hub::detached(two.addr));

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
