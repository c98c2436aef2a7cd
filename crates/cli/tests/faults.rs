//! The fault drill: two hub nodes on PostgreSQL and NATS carry steady
//! traffic between real clients while a node is killed with SIGKILL again
//! and again, PostgreSQL crashes and restarts, and NATS crashes and
//! restarts. Afterwards every message the hub acknowledged is in its
//! recipient's history exactly once, and no sender's history shows a message
//! the hub did not acknowledge.
//!
//! The drill starts its own PostgreSQL cluster and NATS server (so it can
//! crash them without touching anything else on the machine) and is run by
//! `scripts/fault-drill KILLS`, not by a plain `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passerelle_client::{Body, Client, Event, MessageDirection};
use passerelle_proto::Address;

const USERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the fault drill; run it with scripts/fault-drill"]
async fn acknowledged_messages_survive_node_database_and_broker_crashes() {
    let kills: usize = std::env::var("PASSERELLE_FAULT_KILLS")
        .ok()
        .map(|k| k.parse().expect("PASSERELLE_FAULT_KILLS is a number"))
        .unwrap_or(3);
    let Some(tools) = Tools::find() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    eprintln!(
        "drill: working in {} (node logs: node*.log)",
        work.path().display()
    );
    let mut postgres = Postgres::start(&tools, work.path());
    let mut nats = Nats::start(&tools, work.path());
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| Node::start(i, work.path(), &postgres.url(), &nats.url()))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();

    // Users alternate between the nodes; each may fail over to the other.
    let mut users = Vec::new();
    for i in 0..USERS {
        let home = &urls[i % 2];
        let db = work.path().join(format!("user{i}.sqlite3"));
        let handle = format!("drill{i}");
        let client = Client::register(home, &db, "parley", Some(&handle), None, "drill")
            .await
            .unwrap();
        let other = &urls[(i + 1) % 2];
        client.set_servers(&[home, other]).unwrap();
        users.push(client);
    }

    let ledger = Arc::new(Ledger::default());
    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_listening = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, client) in users.iter().enumerate() {
        let to = users[(i + 1) % USERS].address().clone();
        tasks.push(tokio::spawn(send_steadily(
            client.clone(),
            to,
            ledger.clone(),
            stop_sending.clone(),
        )));
    }
    let listeners: Vec<_> = users
        .iter()
        .map(|client| {
            tokio::spawn(listen_until(
                client.clone(),
                ledger.clone(),
                stop_listening.clone(),
            ))
        })
        .collect();

    // The faults, with traffic flowing between them.
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(400 + 150 * (k as u64 % 5))).await;
        let node = &mut nodes[k % 2];
        node.kill();
        eprintln!("drill: kill {} of {kills}: node {} killed", k + 1, k % 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.restart();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    postgres.crash_and_restart();
    eprintln!("drill: PostgreSQL crashed and restarted");
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.crash_and_restart();
    eprintln!("drill: NATS crashed and restarted");
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop_sending.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    // Everything acknowledged must arrive; give the queues time to drain.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ledger.all_acknowledged_received() {
        assert!(
            Instant::now() < deadline,
            "acknowledged messages never arrived: {:?}",
            ledger.missing()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_listening.store(true, Ordering::SeqCst);
    for listener in listeners {
        listener.await.unwrap();
    }

    // The users' own view: their histories.
    let acknowledged = ledger.acknowledged.lock().unwrap().clone();
    let failed = ledger.failed.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 10 * USERS,
        "too little traffic to prove anything: {} acknowledged",
        acknowledged.len()
    );
    let mut delivered_unacknowledged = 0;
    for (i, me) in users.iter().enumerate() {
        let sender = &users[(i + USERS - 1) % USERS];
        let recipient = &users[(i + 1) % USERS];
        let incoming = history_texts(me, sender.address(), MessageDirection::Incoming);
        for (text, count) in &incoming {
            assert_eq!(*count, 1, "{text} shows {count} times to {}", me.address());
            if !acknowledged.contains(text) {
                assert!(failed.contains(text), "{text} was never sent");
                delivered_unacknowledged += 1;
            }
        }
        for text in acknowledged.iter().filter(|t| is_from(t, i + USERS - 1)) {
            assert!(
                incoming.contains_key(text),
                "{text} was acknowledged but is not in {}'s history",
                me.address()
            );
        }
        let outgoing = history_texts(me, recipient.address(), MessageDirection::Outgoing);
        for text in outgoing.keys() {
            assert!(
                acknowledged.contains(text),
                "{}'s history shows {text} as sent, but the hub never acknowledged it",
                me.address()
            );
        }
    }
    eprintln!(
        "drill: {kills} node kills, a PostgreSQL crash and a NATS crash; {} messages acknowledged \
         and each delivered once; {} sends failed, {delivered_unacknowledged} of them delivered \
         anyway (committed, answer lost) and never shown as sent",
        acknowledged.len(),
        failed.len(),
    );
}

/// Texts name their sender and a sequence number: `drill-<user>-<n>`.
fn is_from(text: &str, user: usize) -> bool {
    text.starts_with(&format!("drill-{}-", user % USERS))
}

fn history_texts(
    client: &Client,
    peer: &Address,
    direction: MessageDirection,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in client.history(peer).unwrap() {
        if entry.direction != direction {
            continue;
        }
        if let Some(Body::Text { text }) = entry.body {
            *counts.entry(text).or_insert(0) += 1;
        }
    }
    counts
}

/// What the senders were told and what the recipients saw.
#[derive(Default)]
struct Ledger {
    acknowledged: Mutex<BTreeSet<String>>,
    failed: Mutex<BTreeSet<String>>,
    received: Mutex<BTreeSet<String>>,
}

impl Ledger {
    fn missing(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .filter(|t| !received.contains(*t))
            .take(10)
            .cloned()
            .collect()
    }

    fn all_acknowledged_received(&self) -> bool {
        self.missing().is_empty()
    }
}

async fn send_steadily(client: Client, to: Address, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let me = client
        .address()
        .handle
        .as_str()
        .trim_start_matches("drill")
        .to_owned();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let text = format!("drill-{me}-{n}");
        match client.send_text(&to, &text).await {
            Ok(_) => {
                ledger.acknowledged.lock().unwrap().insert(text);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            Err(e) => {
                ledger.failed.lock().unwrap().insert(text);
                eprintln!("drill: {} send failed: {e}", client.address());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn listen_until(client: Client, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let mut listener = match client.listen().await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("drill: {} cannot listen yet: {e}", client.address());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let event =
                match tokio::time::timeout(Duration::from_millis(200), listener.next()).await {
                    Err(_) => continue,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        eprintln!("drill: {} listener: {e}", client.address());
                        break;
                    }
                    Ok(Some(Ok(event))) => event,
                };
            if let Event::Message {
                body: Body::Text { text },
                ..
            } = event
            {
                ledger.received.lock().unwrap().insert(text);
            }
        }
    }
}

/// The programs the drill runs, or `None` (and a note) when one is missing
/// outside CI.
struct Tools {
    pg_bin: PathBuf,
    nats_server: PathBuf,
}

impl Tools {
    fn find() -> Option<Tools> {
        let pg_bin = std::env::var_os("PASSERELLE_PG_BINDIR")
            .map(PathBuf::from)
            .or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| Some(e.ok()?.path().join("bin")))
                    .filter(|bin| bin.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop()
            });
        let nats_server = std::env::var_os("PASSERELLE_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.exists()));
        match (pg_bin, nats_server) {
            (Some(pg_bin), Some(nats_server)) => Some(Tools {
                pg_bin,
                nats_server,
            }),
            _ => {
                let note = "the fault drill needs PostgreSQL's server programs \
                            (PASSERELLE_PG_BINDIR) and nats-server (PASSERELLE_NATS_SERVER)";
                assert!(std::env::var_os("CI").is_none(), "{note}");
                eprintln!("skipped: {note}");
                None
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private PostgreSQL cluster. PostgreSQL refuses to run as root, so as
/// root its programs run as the `postgres` user.
struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(tools: &Tools, work: &Path) -> Postgres {
        let dir = work.join("postgres");
        std::fs::create_dir(&dir).unwrap();
        let pg = Postgres {
            bin: tools.pg_bin.clone(),
            dir,
            port: free_port(),
        };
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(&pg.dir));
            // The postgres user must be able to reach the folder.
            run(Command::new("chmod").arg("755").arg(work));
        }
        run(&mut pg.command(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
            ],
        ));
        pg.up();
        run(&mut pg.command(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "passerelle",
            ],
        ));
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/passerelle", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.args(args).stdout(Stdio::null());
        command
    }

    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        run(&mut self.command(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        ));
        wait_for_port(self.port, "PostgreSQL");
    }

    /// Stops the server as a crash would (no shutdown checkpoint; it
    /// recovers from its write-ahead log when it starts), then starts it.
    fn crash_and_restart(&mut self) {
        self.stop_immediately();
        self.up();
    }

    fn stop_immediately(&self) {
        let _ = self
            .command(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            )
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_immediately();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A private NATS server with JetStream.
struct Nats {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Nats {
    fn start(tools: &Tools, work: &Path) -> Nats {
        let mut nats = Nats {
            program: tools.nats_server.clone(),
            dir: work.join("nats"),
            port: free_port(),
            child: None,
        };
        nats.up();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new(&self.program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, "NATS");
    }

    fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.up();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `passerelle serve` process.
struct Node {
    config: PathBuf,
    log: PathBuf,
    url: String,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(index: usize, work: &Path, database: &str, nats: &str) -> Node {
        let port = free_port();
        let config = work.join(format!("node{index}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{port}"
data_dir = "{data}"
database = "{database}"
nats = "{nats}"
node = "node{index}"
dev_mode = true

[apps.parley]
name = "Parley"
scheme = "username"

[limits]
rate_registration = {{ per_minute = 0, burst = 0 }}
"#,
                data = work.join(format!("node{index}-data")).display(),
            ),
        )
        .unwrap();
        let mut node = Node {
            config,
            log: work.join(format!("node{index}.log")),
            url: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
        };
        node.restart();
        node
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, "the hub node");
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
