//! A real hub on a real port, with clients: reqwest for HTTP and
//! tokio-tungstenite for the WebSocket, and real Signal keys.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use passerelle_proto::api::accounts::{DeviceKeys, RegisterAccount, Registered, Verification};
use passerelle_proto::api::keys::{KyberPreKey, PreKey, SignedPreKey};
use passerelle_proto::api::messages::{OutgoingMessage, SendMessages};
use passerelle_proto::ws::{ClientFrame, ServerFrame};
use passerelle_proto::{
    AccountId, Address, DeviceId, Envelope, EnvelopeKind, Problem, ProblemType,
};
use passerelle_server::clock::ManualClock;
use passerelle_server::{AppState, Config};
use passerelle_signal::{IdentityKeyPair, KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};
use rand::rngs::OsRng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub mod hooked;

pub const PASSWORD: &str = "a-long-device-password-0123456789";

/// A hub run by `passerelle_server::serve`, as `passerelle serve` runs
/// it, on a free loopback port; ready when this returns.
pub struct Served {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `config` on a free port (its `listen` is replaced).
    pub async fn start(mut config: Config) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        config.listen = addr;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            passerelle_server::serve(config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
                if r.status() == 200 {
                    return Self { addr, stop, task };
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the hub did not become ready");
    }

    /// Stops it gracefully, and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

pub struct Hub {
    pub addr: SocketAddr,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _data: Option<tempfile::TempDir>,
}

impl Hub {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        let store = Arc::new(passerelle_store::memory::MemoryStore::new());
        Self::with_store(config, store, None).await
    }

    /// A hub on the real SQLite store, in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(passerelle_store::sqlite::SqliteStore::open(dir.path()).unwrap());
        Self::with_store(Config::default(), store, Some(dir)).await
    }

    pub async fn with_store(
        mut config: Config,
        store: Arc<dyn passerelle_store::Store>,
        data: Option<tempfile::TempDir>,
    ) -> Self {
        // Expiry runs every 50 ms, so that tests see it at once, unless the
        // test chose an interval of its own.
        if config.expiry.interval == passerelle_server::config::ExpiryConfig::default().interval {
            config.expiry.interval = Duration::from_millis(50);
        }
        let clock = Arc::new(ManualClock::starting_now());
        let state = AppState::builder(config, store)
            .clock(clock.clone())
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
        Self {
            addr,
            state,
            clock,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    /// A handle on a hub started elsewhere (only `addr` and `http` work).
    pub fn detached(addr: SocketAddr) -> Self {
        let store = Arc::new(passerelle_store::memory::MemoryStore::new());
        Self {
            addr,
            state: AppState::new(Config::default(), store),
            clock: Arc::new(ManualClock::starting_now()),
            http: reqwest::Client::new(),
            stop: None,
            task: None,
            _data: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the hub and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("hub stops within 10 s")
                .unwrap();
        }
    }

    pub async fn post<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, Problem> {
        answer(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get_anon<R: DeserializeOwned>(&self, path: &str) -> Result<R, Problem> {
        answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// Registers a username on parley.
    pub async fn register_username(&self, name: &str) -> Client {
        self.register("parley", Some(name), None).await.unwrap()
    }

    /// Registers a random id on murmur.
    pub async fn register_random(&self) -> Client {
        self.register("murmur", None, None).await.unwrap()
    }

    /// Registers a phone number on chime, reading the code from the store's
    /// verification through a second, known code: the test sets it.
    pub async fn register(
        &self,
        app: &str,
        handle: Option<&str>,
        verification: Option<Verification>,
    ) -> Result<Client, Problem> {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let keys = device_keys(&identity, 1, 5);
        let registration_id = 1000 + rand::random::<u32>() % 10000;
        let body = RegisterAccount {
            app: app.parse().unwrap(),
            handle: handle.map(str::to_owned),
            verification,
            password: PASSWORD.to_owned(),
            registration_id,
            device_name: "test".to_owned(),
            identity_key: identity.identity_key().serialize().to_vec().into(),
            keys,
        };
        let registered: Registered = self.post("/v1/accounts", &body).await?;
        Ok(Client {
            account_id: registered.account_id,
            address: registered.address,
            device_id: registered.device_id,
            password: PASSWORD.to_owned(),
            registration_id,
            identity: Arc::new(identity),
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Turns an answer into its body or its problem, checking the problem's
/// content type.
pub async fn answer<R: DeserializeOwned>(response: reqwest::Response) -> Result<R, Problem> {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.bytes().await.unwrap();
    if status.is_success() {
        let bytes = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        Ok(serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("bad body ({e}): {}", String::from_utf8_lossy(bytes))))
    } else {
        assert_eq!(content_type, "application/problem+json", "status {status}");
        let problem: Problem = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(problem.status, status.as_u16());
        Err(problem)
    }
}

/// Asserts an answer is a problem of this kind.
#[track_caller]
pub fn assert_problem<T: std::fmt::Debug>(
    result: Result<T, Problem>,
    kind: ProblemType,
) -> Problem {
    match result {
        Ok(v) => panic!("expected {kind:?}, got {v:?}"),
        Err(p) => {
            assert_eq!(p.kind(), Some(kind), "{p}");
            assert_eq!(p.status, kind.status());
            p
        }
    }
}

/// The keys of a new device: signed keys plus `count` one-time keys of each
/// kind, ids from `first`.
pub fn device_keys(identity: &IdentityKeyPair, first: u32, count: u32) -> DeviceKeys {
    let signed = SignedPreKeyRecord::generate(first, 0, identity, &mut OsRng);
    let last_resort = KyberPreKeyRecord::generate(first, 0, identity, &mut OsRng);
    DeviceKeys {
        signed_pre_key: SignedPreKey {
            key_id: signed.id,
            public_key: signed.key_pair.public.serialize().to_vec().into(),
            signature: signed.signature.to_vec().into(),
        },
        last_resort_kyber_pre_key: kyber(&last_resort),
        pre_keys: one_time_keys(first, count),
        kyber_pre_keys: (first + 1..first + 1 + count)
            .map(|id| kyber(&KyberPreKeyRecord::generate(id, 0, identity, &mut OsRng)))
            .collect(),
    }
}

pub fn one_time_keys(first: u32, count: u32) -> Vec<PreKey> {
    (first..first + count)
        .map(|id| {
            let record = PreKeyRecord::generate(id, &mut OsRng);
            PreKey {
                key_id: id,
                public_key: record.key_pair.public.serialize().to_vec().into(),
            }
        })
        .collect()
}

pub fn kyber(record: &KyberPreKeyRecord) -> KyberPreKey {
    KyberPreKey {
        key_id: record.id,
        public_key: record.key_pair.public.serialize().into(),
        signature: record.signature.to_vec().into(),
    }
}

/// A registered device.
#[derive(Clone)]
pub struct Client {
    pub account_id: AccountId,
    pub address: Address,
    pub device_id: DeviceId,
    pub password: String,
    pub registration_id: u32,
    pub identity: Arc<IdentityKeyPair>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, device {})", self.address, self.device_id)
    }
}

impl Client {
    pub fn user(&self) -> String {
        format!("{}.{}", self.account_id, self.device_id)
    }

    pub fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(self.user(), Some(&self.password))
    }

    pub async fn get<R: DeserializeOwned>(&self, hub: &Hub, path: &str) -> Result<R, Problem> {
        answer(self.auth(hub.http.get(hub.url(path))).send().await.unwrap()).await
    }

    pub async fn put<T: Serialize, R: DeserializeOwned>(
        &self,
        hub: &Hub,
        path: &str,
        body: &T,
    ) -> Result<R, Problem> {
        answer(
            self.auth(hub.http.put(hub.url(path)))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post<T: Serialize, R: DeserializeOwned>(
        &self,
        hub: &Hub,
        path: &str,
        body: &T,
    ) -> Result<R, Problem> {
        answer(
            self.auth(hub.http.post(hub.url(path)))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_empty<R: DeserializeOwned>(
        &self,
        hub: &Hub,
        path: &str,
    ) -> Result<R, Problem> {
        answer(
            self.auth(hub.http.post(hub.url(path)))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete<R: DeserializeOwned>(&self, hub: &Hub, path: &str) -> Result<R, Problem> {
        answer(
            self.auth(hub.http.delete(hub.url(path)))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Sends `content` to the given devices of `to` (fake ciphertext: the
    /// hub never looks inside).
    pub async fn send(
        &self,
        hub: &Hub,
        to: AccountId,
        devices: &[(DeviceId, u32)],
        content: &[u8],
        online_only: bool,
    ) -> Result<passerelle_proto::api::messages::Sent, Problem> {
        let body = SendMessages {
            timestamp: 1_700_000_000_000,
            messages: devices
                .iter()
                .map(|&(device_id, registration_id)| OutgoingMessage {
                    device_id,
                    registration_id,
                    kind: EnvelopeKind::Message,
                    content: content.to_vec().into(),
                })
                .collect(),
            online_only,
        };
        self.put(hub, &format!("/v1/messages/{to}"), &body).await
    }

    /// Sends to this client's (only, primary) device.
    pub async fn send_to(&self, hub: &Hub, to: &Client, content: &[u8]) {
        self.send(
            hub,
            to.account_id,
            &[(to.device_id, to.registration_id)],
            content,
            false,
        )
        .await
        .unwrap();
    }

    pub async fn connect(&self, hub: &Hub) -> Socket {
        let mut request = format!("ws://{}/v1/websocket", hub.addr)
            .into_client_request()
            .unwrap();
        let header =
            passerelle_server::auth::basic_header(self.account_id, self.device_id, &self.password);
        request
            .headers_mut()
            .insert("authorization", header.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Socket { ws }
    }
}

pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// The next frame, within 5 s.
    pub async fn next(&mut self) -> ServerFrame {
        self.try_next(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
    }

    /// The next frame, if one comes within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<ServerFrame> {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn envelope(&mut self) -> Envelope {
        match self.next().await {
            ServerFrame::Envelope { envelope } => *envelope,
            other => panic!("expected an envelope, got {other:?}"),
        }
    }

    /// Envelopes until `queue_empty`.
    pub async fn backlog(&mut self) -> Vec<Envelope> {
        let mut out = Vec::new();
        loop {
            match self.next().await {
                ServerFrame::Envelope { envelope } => out.push(*envelope),
                ServerFrame::QueueEmpty => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn ack(&mut self, ids: &[Uuid]) {
        let frame = ClientFrame::Ack { ids: ids.to_vec() };
        self.ws
            .send(Message::Text(serde_json::to_string(&frame).unwrap().into()))
            .await
            .unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Polls `f` until it is true, for up to 5 s.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

// ---- captured logs ----

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this test binary (everything the hub logs at
/// trace level and up).
pub fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "passerelle_server=trace,passerelle_store=trace,tower_http=trace,info",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// The last verification code the hub logged for a phone number.
pub fn logged_code(phone: &str) -> String {
    let needle = format!("verification code for {phone}: ");
    let logs = logs();
    let at = logs
        .rfind(&needle)
        .unwrap_or_else(|| panic!("no code logged for {phone}"));
    logs[at + needle.len()..at + needle.len() + 6].to_owned()
}

// ---- linking ----

impl Hub {
    /// Links a new device to `primary`'s account through the whole flow:
    /// mailbox, link token, provisioning message, link.
    pub async fn link_device(&self, primary: &Client, name: &str) -> Result<Client, Problem> {
        use passerelle_proto::api::devices::{
            LinkDevice, LinkToken, Linked, Mailbox, ProvisioningMessage,
        };
        let mailbox: Mailbox = self.post_empty("/v1/provisioning").await?;
        let token: LinkToken = primary.post_empty(self, "/v1/devices/link-tokens").await?;
        // The real message is the identity key pair and the token, encrypted
        // to the new device's key; the hub only carries bytes.
        let sealed = format!("sealed:{}", token.token).into_bytes();
        let _: passerelle_proto::api::Empty = primary
            .put(
                self,
                &format!("/v1/provisioning/{}", mailbox.id),
                &ProvisioningMessage {
                    ciphertext: sealed.into(),
                },
            )
            .await?;
        let message: ProvisioningMessage = self
            .get_anon(&format!("/v1/provisioning/{}", mailbox.id))
            .await?;
        let token = String::from_utf8(message.ciphertext.0).unwrap()["sealed:".len()..].to_owned();
        let registration_id = 1000 + rand::random::<u32>() % 10000;
        let linked: Linked = self
            .post(
                "/v1/devices",
                &LinkDevice {
                    token,
                    password: PASSWORD.to_owned(),
                    registration_id,
                    device_name: name.to_owned(),
                    keys: device_keys(&primary.identity, 1, 3),
                },
            )
            .await?;
        assert_eq!(linked.account_id, primary.account_id);
        Ok(Client {
            account_id: linked.account_id,
            address: linked.address,
            device_id: linked.device_id,
            password: PASSWORD.to_owned(),
            registration_id,
            identity: primary.identity.clone(),
        })
    }

    pub async fn post_empty<R: DeserializeOwned>(&self, path: &str) -> Result<R, Problem> {
        answer(self.http.post(self.url(path)).send().await.unwrap()).await
    }
}
