//! End to end through a real `passerelle serve` process, the real SQLite
//! store and real clients: users of all three demo apps talk to each other,
//! an undelivered message expires and its sender is told, the hub never
//! writes a message's text anywhere, and the command-line client works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use passerelle_client::{Client, Event};
use passerelle_proto::content::Body;

/// A hub process, killed on drop.
struct Hub {
    child: Child,
    url: String,
    data_dir: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hub {
    /// Starts a hub whose `murmur` app keeps undelivered envelopes only
    /// briefly, so that expiry can be seen.
    fn start() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir = dir.path().join("data");
        let log = dir.path().join("hub.log");
        let config = dir.path().join("passerelle.toml");
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{port}"
data_dir = "{}"
dev_mode = true

[apps.chime]
name = "Chime"
scheme = "phone_number"

[apps.parley]
name = "Parley"
scheme = "username"

[apps.murmur]
name = "Murmur"
scheme = "random_id"
retention = "2s"

[expiry]
interval = "200ms"
"#,
                data_dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("PASSERELLE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let hub = Hub {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            log,
            _dir: dir,
        };
        hub.wait_ready();
        hub
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if probe::answers_2xx(&format!("{}/readyz", self.url)).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the hub did not become ready; log:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod probe {
    /// A blocking HTTP/1.0 GET, enough to poll readiness before the async
    /// runtime starts: true on a 2xx answer.
    pub fn answers_2xx(url: &str) -> std::io::Result<bool> {
        use std::io::{Read as _, Write as _};
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2"))
    }
}

async fn register(hub: &Hub, dir: &Path, app: &str, handle: Option<&str>) -> Client {
    let db = dir.join(format!("{app}-{}.sqlite3", handle.unwrap_or("random")));
    let verification = if app == "chime" {
        let phone = handle.unwrap();
        let session = Client::request_verification(&hub.url, app, phone)
            .await
            .unwrap();
        Some((
            session.session_id,
            session.dev_code.expect("dev mode gives the code"),
        ))
    } else {
        None
    };
    Client::register(&hub.url, &db, app, handle, verification, "test")
        .await
        .unwrap()
}

fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                from,
                body: Body::Text { text },
                ..
            } => Some((from.to_string(), text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apps_talk_and_the_hub_sees_no_plaintext() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let carol = register(&hub, dir.path(), "chime", Some("+15550100001")).await;
    let alice = register(&hub, dir.path(), "parley", Some("alice")).await;
    let rae = register(&hub, dir.path(), "murmur", None).await;
    assert!(rae.address().to_string().ends_with("@murmur"));

    // Everyone writes to everyone else.
    const PHRASE: &str = "the heron flies at midnight over Lake Ontario";
    let users = [&alice, &carol, &rae];
    for from in users {
        for to in users {
            if from.account_id() != to.account_id() {
                let text = format!("{PHRASE} ({} to {})", from.address(), to.address());
                from.send_text(to.address(), &text).await.unwrap();
            }
        }
    }
    for me in users {
        let got = texts(&me.sync_once().await.unwrap());
        assert_eq!(got.len(), 2, "{} got {got:?}", me.address());
        for (from, text) in got {
            assert_eq!(text, format!("{PHRASE} ({from} to {})", me.address()));
        }
    }

    // The phrase is nowhere in the hub's files or its (debug-level) log.
    let mut files = vec![hub.log.clone()];
    let mut stack = vec![hub.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.len() >= 2,
        "expected the database and the log: {files:?}"
    );
    for file in files {
        let mut bytes = Vec::new();
        std::fs::File::open(&file)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let found = bytes.windows(PHRASE.len()).any(|w| w == PHRASE.as_bytes());
        assert!(!found, "the phrase appears in {}", file.display());
        assert!(
            !bytes.windows(5).any(|w| w == b"heron"),
            "part of the phrase appears in {}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_message_expires_and_its_sender_is_told() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    let alice = register(&hub, dir.path(), "parley", Some("alice")).await;
    let rae = register(&hub, dir.path(), "murmur", None).await;

    let sent = alice
        .send_text(rae.address(), "are you there?")
        .await
        .unwrap();
    // Murmur keeps undelivered envelopes for 2 s; the expiry task runs
    // every 200 ms. Wait for the notice rather than for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let notice = loop {
        let events = alice.sync_once().await.unwrap();
        if let Some(e) = events
            .into_iter()
            .find(|e| matches!(e, Event::Expired { .. }))
        {
            break e;
        }
        assert!(Instant::now() < deadline, "no expiry notice arrived");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let Event::Expired {
        recipient, sent_at, ..
    } = notice
    else {
        unreachable!()
    };
    assert_eq!(&recipient, rae.address());
    assert_eq!(sent_at, sent.sent_at);
    // The message is gone: Rae never gets it.
    assert!(texts(&rae.sync_once().await.unwrap()).is_empty());
}

fn cli(hub: &Hub, home: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("chat")
        .args(args)
        .env("PASSERELLE_SERVER", &hub.url)
        .env("PASSERELLE_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "passerelle chat {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_command_line_client_registers_sends_and_listens() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().unwrap();
    // A home that does not exist yet: the CLI creates it.
    let home = &dir.path().join("passerelle");
    assert!(cli(&hub, home, &["apps"]).contains("phone number"));
    cli(
        &hub,
        home,
        &["register", "--app", "parley", "--handle", "ada"],
    );
    cli(
        &hub,
        home,
        &["register", "--app", "chime", "--handle", "+15550100200"],
    );
    let accounts = cli(&hub, home, &["accounts"]);
    assert!(accounts.contains("ada@parley#1"), "{accounts}");
    assert!(accounts.contains("+15550100200@chime#1"), "{accounts}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(home), 0o700);
        for entry in std::fs::read_dir(home).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }

    cli(
        &hub,
        home,
        &[
            "--as",
            "ada@parley",
            "send",
            "+15550100200@chime",
            "hello",
            "Chime",
        ],
    );
    let got = cli(
        &hub,
        home,
        &["--as", "+15550100200@chime", "listen", "--once"],
    );
    assert!(got.contains("ada@parley: hello Chime"), "{got}");
    let conversations = cli(&hub, home, &["--as", "+15550100200@chime", "conversations"]);
    assert!(conversations.contains("ada@parley"), "{conversations}");
    assert!(conversations.contains("not verified"), "{conversations}");

    let theirs = cli(
        &hub,
        home,
        &["--as", "ada@parley", "safety-number", "+15550100200@chime"],
    );
    let ours = cli(
        &hub,
        home,
        &["--as", "+15550100200@chime", "safety-number", "ada@parley"],
    );
    let digits = |s: &str| s.lines().nth(2).unwrap_or_default().to_owned();
    assert_eq!(digits(&theirs), digits(&ours));
    assert_eq!(digits(&ours).split(' ').count(), 12);
    cli(
        &hub,
        home,
        &["--as", "+15550100200@chime", "verify", "ada@parley"],
    );
    let conversations = cli(&hub, home, &["--as", "+15550100200@chime", "conversations"]);
    assert!(
        conversations.contains("verified") && !conversations.contains("not verified"),
        "{conversations}"
    );
    // Accepting the key the hub holds (here the same one) leaves the contact
    // unverified until compared again.
    let accepted = cli(
        &hub,
        home,
        &[
            "--as",
            "+15550100200@chime",
            "accept-identity",
            "ada@parley",
        ],
    );
    assert!(accepted.contains("accepted"), "{accepted}");
    let conversations = cli(&hub, home, &["--as", "+15550100200@chime", "conversations"]);
    assert!(conversations.contains("not verified"), "{conversations}");
}
