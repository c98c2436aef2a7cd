//! [`Client`]: one device of one account, its local store and its hub.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use passerelle_proto::api::Empty;
use passerelle_proto::api::accounts::{
    AppInfo, ListApps, Lookup, Register, RegisterAccount, Registered, RequestVerification,
    Verification, VerificationRequest, VerificationSession,
};
use passerelle_proto::api::devices::{DeviceInfo, ListDevices, RemoveDevice};
use passerelle_proto::api::keys::{Bundles, Counts, FetchBundles, Upload};
use passerelle_proto::api::messages::{MismatchedDevices, SendMessage, SendMessages, StaleDevices};
use passerelle_proto::content::{Body, Content, MessageRef};
use passerelle_proto::{AccountId, Address, AppId, Base64Bytes, DeviceId, ProblemType};
use passerelle_signal::fingerprint::{ITERATIONS, VERSION};
use passerelle_signal::{Fingerprint, IdentityKeyPair, generate_registration_id};
use rand::RngCore as _;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::http::{BasicAuth, Http, parse_server_url};
use crate::keys::{self, KeyRequest, ONE_TIME_BATCH};
use crate::machine::{Handled, Me};
use crate::store::history;
use crate::store::protocol;
use crate::store::{LocalIdentity, LocalStore, meta};
use crate::types::{Conversation, Event, HistoryEntry, ReceiptKind, SafetyNumber, SentMessage};

/// How many times a send is retried after the hub corrected the device
/// list (409 / 410).
pub const MAX_SEND_ATTEMPTS: u32 = 4;
/// How long the list of the account's other devices is trusted before the
/// hub is asked again (when it is empty: a non-empty list is corrected by
/// the hub on every send).
const OWN_DEVICES_TTL_MS: u64 = 60_000;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A fresh device password: 24 random bytes, base64url (32 characters).
pub(crate) fn random_password() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 24]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// One device of an account: its local store, and its connection to the
/// hub. Cheap to clone (all clones share the store); use one clone to
/// [`listen`](Client::listen) and others to send.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<Mutex<LocalStore>>,
    pub(crate) http: Http,
    pub(crate) me: Me,
    /// Events raised outside the receive loop (an identity change seen in a
    /// bundle while sending), handed out by the next receive.
    pub(crate) notices: Mutex<Vec<Event>>,
    /// Sends run one at a time: each may rebuild sessions.
    send_lock: tokio::sync::Mutex<()>,
    last_sent_at: AtomicU64,
    /// The clock prekey rotation reads (the system clock unless a test
    /// replaced it).
    clock: Mutex<Clock>,
}

/// A clock: milliseconds since the Unix epoch.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.me.address)
            .field("account_id", &self.inner.me.account)
            .field("device_id", &self.inner.me.device)
            .finish()
    }
}

/// Locks the store; a poisoned lock (a panic while it was held) is a
/// storage error.
fn lock_store(store: &Mutex<LocalStore>) -> Result<std::sync::MutexGuard<'_, LocalStore>> {
    store
        .lock()
        .map_err(|_| ClientError::Storage("local store lock poisoned".into()))
}

/// Runs `f` in a blocking task.
async fn spawn_store_task<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Storage(format!("store task failed: {e}")))?
}

/// Runs `f` on the store in a blocking task.
pub(crate) async fn blocking<T, F>(store: &Arc<Mutex<LocalStore>>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut LocalStore) -> Result<T> + Send + 'static,
{
    let store = Arc::clone(store);
    spawn_store_task(move || f(&mut *lock_store(&store)?)).await
}

impl Client {
    // ---- Setting up ------------------------------------------------------

    /// The apps a hub hosts.
    pub async fn apps(server_url: &str) -> Result<Vec<AppInfo>> {
        let http = Http::new(parse_server_url(server_url)?, None)?;
        Ok(http.call::<ListApps>(&[], &Empty {}).await?.apps)
    }

    /// Asks the hub to send a verification code to a phone number, for
    /// apps that name accounts by phone number. Pass the session id and
    /// the code to [`Client::register`].
    pub async fn request_verification(
        server_url: &str,
        app: &str,
        phone: &str,
    ) -> Result<VerificationSession> {
        let http = Http::new(parse_server_url(server_url)?, None)?;
        let request = VerificationRequest {
            app: parse_app(app)?,
            handle: phone.to_owned(),
        };
        http.call::<RequestVerification>(&[], &request).await
    }

    /// Registers a new account and this device as its first one, with a
    /// fresh identity, and keeps everything in a new database at `db_path`.
    ///
    /// A database that already holds a device is refused
    /// ([`ClientError::AlreadyRegistered`]), and so is one left by a
    /// registration that did not finish
    /// ([`ClientError::UnfinishedRegistration`]): the hub may have accepted
    /// that identity, and registering again would replace it. When the hub
    /// refuses the registration (a 4xx problem: handle taken, wrong code,
    /// ...), nothing was created there and the database is cleared, so the
    /// call can be retried with the same path.
    ///
    /// `handle` is the phone number or username (none for apps that issue
    /// random ids); `verification` is the (session id, code) of
    /// [`Client::request_verification`] for phone-number apps.
    pub async fn register(
        server_url: &str,
        db_path: impl AsRef<Path>,
        app: &str,
        handle: Option<&str>,
        verification: Option<(uuid::Uuid, String)>,
        device_name: &str,
    ) -> Result<Client> {
        let base = parse_server_url(server_url)?;
        let app = parse_app(app)?;
        let password = random_password();
        let identity = LocalIdentity {
            pair: IdentityKeyPair::generate(&mut OsRng),
            registration_id: generate_registration_id(&mut OsRng),
        };
        let (store, upload) = new_device_store(
            db_path.as_ref(),
            base.as_str(),
            &password,
            &identity,
            NewDevice::Register,
        )
        .await?;
        let request = RegisterAccount {
            app,
            handle: handle.map(str::to_owned),
            verification: verification.map(|(session_id, code)| Verification { session_id, code }),
            password: password.to_string(),
            registration_id: identity.registration_id,
            device_name: device_name.to_owned(),
            identity_key: Base64Bytes(identity.pair.identity_key().serialize().to_vec()),
            keys: upload,
        };
        let http = Http::new(base, None)?;
        let store = Arc::new(Mutex::new(store));
        let registered: Registered = match http.call::<Register>(&[], &request).await {
            Ok(registered) => registered,
            Err(e) => {
                // A 4xx is a definite refusal: the hub holds nothing of this
                // identity. Anything else (no answer, 5xx) may have been
                // accepted, and the database stays unfinished.
                if e.problem().is_some_and(|p| (400..500).contains(&p.status)) {
                    blocking(&store, LocalStore::forget_unfinished).await?;
                }
                return Err(e);
            }
        };
        blocking(&store, move |s| {
            s.set_account(
                registered.account_id,
                &registered.address,
                registered.device_id,
            )
        })
        .await?;
        tracing::info!(app = %request.app, "registered a new account");
        Self::from_store(store)
    }

    /// Opens the device kept in the database at `db_path`.
    pub fn open(db_path: impl AsRef<Path>) -> Result<Client> {
        let path = db_path.as_ref();
        if !path.exists() {
            return Err(ClientError::NotRegistered);
        }
        let store = LocalStore::open(path)?;
        if store.is_unfinished()? {
            return Err(ClientError::UnfinishedRegistration);
        }
        Self::from_store(Arc::new(Mutex::new(store)))
    }

    pub(crate) fn from_store(store: Arc<Mutex<LocalStore>>) -> Result<Client> {
        let credentials = lock_store(&store)?
            .credentials()?
            .ok_or(ClientError::NotRegistered)?;
        let base = parse_server_url(&credentials.server_url)?;
        let auth = BasicAuth {
            user: format!("{}.{}", credentials.account_id, credentials.device_id),
            password: credentials.password.clone(),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                http: Http::new(base, Some(auth))?,
                me: Me {
                    account: credentials.account_id,
                    address: credentials.address,
                    device: credentials.device_id,
                },
                notices: Mutex::new(Vec::new()),
                send_lock: tokio::sync::Mutex::new(()),
                last_sent_at: AtomicU64::new(0),
                clock: Mutex::new(Arc::new(now_ms)),
            }),
        })
    }

    // ---- Who --------------------------------------------------------------

    /// This account's address.
    pub fn address(&self) -> &Address {
        &self.inner.me.address
    }

    /// This account's stable id.
    pub fn account_id(&self) -> AccountId {
        self.inner.me.account
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.inner.me.device
    }

    /// The URL of the hub node in use.
    pub fn server_url(&self) -> String {
        self.inner.http.base().to_string()
    }

    /// Names the nodes of the hub this device may use, in the order to try
    /// them (for all clones of this client); the URL the device registered
    /// with need not be among them. From then on a request that cannot
    /// reach a node goes to the next one, and a [`Listener`] whose
    /// connection is lost (a node stopping, a network failure) reconnects
    /// by itself, to the next node, and reads what was queued meanwhile.
    /// One URL behind which nodes change works too.
    ///
    /// [`Listener`]: crate::Listener
    pub fn set_servers(&self, urls: &[&str]) -> Result<()> {
        if urls.is_empty() {
            return Err(ClientError::InvalidInput("no server URL".into()));
        }
        let urls = urls
            .iter()
            .map(|u| parse_server_url(u))
            .collect::<Result<Vec<_>>>()?;
        self.inner.http.servers().set(urls);
        Ok(())
    }

    /// Replaces the clock that prekey rotation reads (milliseconds since the
    /// Unix epoch; the system clock by default), for all clones of this
    /// client. Meant for tests and simulations: message timestamps keep the
    /// system clock.
    pub fn set_rotation_clock(&self, clock: impl Fn() -> u64 + Send + Sync + 'static) {
        if let Ok(mut c) = self.inner.clock.lock() {
            *c = Arc::new(clock);
        }
    }

    /// The time by the rotation clock.
    fn rotation_now(&self) -> u64 {
        self.inner
            .clock
            .lock()
            .map(|c| c())
            .unwrap_or_else(|_| now_ms())
    }

    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut LocalStore, &Me) -> Result<T> + Send + 'static,
    {
        let me = self.inner.me.clone();
        blocking(&self.inner.store, move |s| f(s, &me)).await
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LocalStore>> {
        lock_store(&self.inner.store)
    }

    pub(crate) fn take_notices(&self) -> Vec<Event> {
        self.inner
            .notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn push_notices(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut n) = self.inner.notices.lock() {
            n.extend(events);
        }
    }

    // ---- Directory ----------------------------------------------------------

    /// The account an address names, asked of the hub (and remembered).
    pub async fn lookup(&self, address: &Address) -> Result<AccountId> {
        let entry = self
            .inner
            .http
            .call::<Lookup>(&[&address.to_string()], &Empty {})
            .await?;
        let (account, address) = (entry.account_id, entry.address);
        self.with_store(move |s, _| history::upsert_contact(&s.conn, account, &address, now_ms()))
            .await?;
        Ok(account)
    }

    /// The account of an address: from the contacts, else from the hub.
    async fn resolve(&self, address: &Address) -> Result<AccountId> {
        let a = address.clone();
        let known = self
            .with_store(move |s, _| history::contact_account(&s.conn, &a))
            .await?;
        match known {
            Some(account) => Ok(account),
            None => self.lookup(address).await,
        }
    }

    // ---- Sending -------------------------------------------------------------

    /// Sends a text message.
    pub async fn send_text(&self, to: &Address, text: &str) -> Result<SentMessage> {
        self.send(to, Body::Text { text: text.into() }).await
    }

    /// Sends a text that answers the message `quote`.
    pub async fn send_reply(
        &self,
        to: &Address,
        text: &str,
        quote: MessageRef,
    ) -> Result<SentMessage> {
        let text = text.into();
        self.send(to, Body::Reply { text, quote }).await
    }

    /// Reacts to a message with an emoji, or takes the reaction back.
    pub async fn react(
        &self,
        to: &Address,
        target: MessageRef,
        emoji: &str,
        remove: bool,
    ) -> Result<SentMessage> {
        let emoji = emoji.into();
        let body = Body::Reaction {
            target,
            emoji,
            remove,
        };
        self.send(to, body).await
    }

    /// Replaces the text of a message this account sent at `sent_at`.
    pub async fn edit(&self, to: &Address, sent_at: u64, text: &str) -> Result<SentMessage> {
        let target = MessageRef {
            author: self.account_id(),
            sent_at,
        };
        let text = text.into();
        self.send(to, Body::Edit { target, text }).await
    }

    /// Deletes for everyone a message this account sent at `sent_at`.
    pub async fn delete(&self, to: &Address, sent_at: u64) -> Result<SentMessage> {
        let target = MessageRef {
            author: self.account_id(),
            sent_at,
        };
        self.send(to, Body::Delete { target }).await
    }

    /// Tells `to` that their messages sent at `sent_at` were delivered or
    /// read.
    pub async fn send_receipt(
        &self,
        to: &Address,
        kind: ReceiptKind,
        sent_at: Vec<u64>,
    ) -> Result<SentMessage> {
        let body = match kind {
            ReceiptKind::Delivery => Body::DeliveryReceipt { sent_at },
            ReceiptKind::Read => Body::ReadReceipt { sent_at },
        };
        self.send(to, body).await
    }

    /// Tells `to` that typing started or stopped (delivered only to devices
    /// online now; never stored).
    pub async fn typing(&self, to: &Address, started: bool) -> Result<SentMessage> {
        self.send(to, Body::Typing { started }).await
    }

    /// Sends a body to every device of `to`'s account, and a copy
    /// (`SentTranscript`) to this account's other devices.
    ///
    /// Sessions are started from prekey bundles where there are none. When
    /// the hub answers that the device list is wrong (409
    /// `mismatched-devices`) or that devices re-registered (410
    /// `stale-devices`), the sessions are corrected and the send retried,
    /// up to [`MAX_SEND_ATTEMPTS`] times. A failed sync copy does not fail
    /// the send; it is logged.
    pub async fn send(&self, to: &Address, body: Body) -> Result<SentMessage> {
        let _one_at_a_time = self.inner.send_lock.lock().await;
        let account = self.resolve(to).await?;
        if account == self.account_id() {
            return Err(ClientError::InvalidInput(
                "sending to this account itself is not supported".into(),
            ));
        }
        let sent_at = self.next_timestamp();
        let online_only = matches!(body, Body::Typing { .. });
        let content = Content::new(sent_at, body);
        let server_timestamp = self
            .deliver(account, false, &content, online_only)
            .await?
            .ok_or_else(|| ClientError::InvalidResponse("no device to send to".into()))?;
        let record = content.clone();
        self.with_store(move |s, me| s.record_sent(me, account, &record, server_timestamp))
            .await?;

        let sync = !matches!(
            content.body,
            Body::Typing { .. } | Body::DeliveryReceipt { .. }
        );
        if sync {
            let transcript = Content::new(
                sent_at,
                Body::SentTranscript {
                    destination: to.clone(),
                    destination_account: account,
                    body: Box::new(content.body),
                },
            );
            if let Err(e) = self.send_sync_copy(&transcript).await {
                tracing::warn!(error = %e, "sync copy to own devices not sent");
            }
        }
        Ok(SentMessage {
            sent_at,
            server_timestamp,
        })
    }

    /// Timestamps name messages: keep them strictly increasing per device.
    fn next_timestamp(&self) -> u64 {
        let now = now_ms();
        let mut last = self.inner.last_sent_at.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.inner.last_sent_at.compare_exchange(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    async fn send_sync_copy(&self, transcript: &Content) -> Result<()> {
        let refreshed = self
            .with_store(|s, _| {
                Ok((
                    s.own_devices()?,
                    s.meta(meta::OWN_DEVICES_REFRESHED_AT)?.unwrap_or(0),
                ))
            })
            .await?;
        let (mut own, refreshed_at) = refreshed;
        if own.is_empty() && now_ms().saturating_sub(refreshed_at) > OWN_DEVICES_TTL_MS {
            self.devices().await?;
            own = self.with_store(|s, _| s.own_devices()).await?;
        }
        if own.is_empty() {
            return Ok(());
        }
        self.deliver(self.account_id(), true, transcript, false)
            .await
            .map(|_| ())
    }

    /// Encrypts `content` for every device of `account` (for this account,
    /// its other devices) and sends it, correcting the device list as the
    /// hub says. `None` when there was no device to send to (own account
    /// only).
    async fn deliver(
        &self,
        account: AccountId,
        own: bool,
        content: &Content,
        online_only: bool,
    ) -> Result<Option<u64>> {
        let plaintext = Arc::new(Zeroizing::new(content.to_padded()));
        let my_device = self.device_id();
        for attempt in 1..=MAX_SEND_ATTEMPTS {
            let devices = if own {
                self.with_store(|s, _| s.own_devices()).await?
            } else {
                let mut sessions = self
                    .with_store(move |s, _| s.session_devices(account))
                    .await?;
                if sessions.is_empty() {
                    self.fetch_bundles(account, None, false).await?;
                    sessions = self
                        .with_store(move |s, _| s.session_devices(account))
                        .await?;
                }
                sessions
                    .into_iter()
                    .filter_map(|(d, _)| DeviceId::new(d).ok())
                    .collect()
            };
            let devices: Vec<u32> = devices
                .into_iter()
                .filter(|d| !own || *d != my_device)
                .map(DeviceId::get)
                .collect();
            if own && devices.is_empty() {
                return Ok(None);
            }

            let mut messages = Vec::new();
            let mut pending = devices;
            for round in 0..2 {
                let pt = Arc::clone(&plaintext);
                let targets = std::mem::take(&mut pending);
                let encrypted = self
                    .with_store(move |s, _| {
                        s.encrypt_for(account, &targets, &pt, now_ms(), &mut OsRng)
                    })
                    .await?;
                messages.extend(encrypted.messages);
                if encrypted.need_bundles.is_empty() || round == 1 {
                    break;
                }
                for device in &encrypted.need_bundles {
                    if let Ok(d) = DeviceId::new(*device) {
                        self.fetch_bundles(account, Some(d), false).await?;
                    }
                }
                pending = encrypted.need_bundles;
            }

            let request = SendMessages {
                timestamp: content.sent_at,
                messages,
                online_only,
            };
            // Sent again as is after a timeout or a 503: the same
            // ciphertexts, which the recipient drops as replays if the first
            // one arrived.
            let result = self
                .inner
                .http
                .call_retrying_once::<SendMessage>(&[&account.to_string()], &request)
                .await;
            let error = match result {
                Ok(sent) => return Ok(Some(sent.server_timestamp)),
                Err(e) => e,
            };
            match error.problem_kind() {
                Some(ProblemType::MismatchedDevices) => {
                    let m: MismatchedDevices = error
                        .problem()
                        .and_then(|p| p.extension())
                        .unwrap_or_default();
                    tracing::debug!(
                        attempt,
                        missing = m.missing_devices.len(),
                        extra = m.extra_devices.len(),
                        "hub corrected the device list"
                    );
                    let extra: Vec<u32> = m.extra_devices.iter().map(|d| d.get()).collect();
                    let missing = m.missing_devices.clone();
                    self.with_store(move |s, me| {
                        s.drop_devices(account, &extra)?;
                        if own {
                            let mut list = s.own_devices()?;
                            list.retain(|d| !m.extra_devices.contains(d));
                            list.extend(m.missing_devices.iter().filter(|d| **d != me.device));
                            list.sort();
                            list.dedup();
                            s.set_own_devices(&list, now_ms())?;
                        }
                        Ok(())
                    })
                    .await?;
                    for device in missing {
                        self.fetch_bundles(account, Some(device), false).await?;
                    }
                }
                Some(ProblemType::StaleDevices) => {
                    let stale: StaleDevices = error
                        .problem()
                        .and_then(|p| p.extension())
                        .unwrap_or_default();
                    tracing::debug!(attempt, stale = stale.stale_devices.len(), "stale sessions");
                    let ids: Vec<u32> = stale.stale_devices.iter().map(|d| d.get()).collect();
                    self.with_store(move |s, _| s.archive_devices(account, &ids, now_ms()))
                        .await?;
                    for device in stale.stale_devices {
                        self.fetch_bundles(account, Some(device), false).await?;
                    }
                }
                _ => return Err(error),
            }
        }
        Err(ClientError::DevicesUnsettled(MAX_SEND_ATTEMPTS))
    }

    /// Fetches bundles (one device, or all with `None`) and starts
    /// sessions. A device the hub no longer has loses its session. With
    /// `accept`, the bundles' identity key replaces the stored one even if
    /// verified (see [`Client::accept_identity`]).
    async fn fetch_bundles(
        &self,
        account: AccountId,
        device: Option<DeviceId>,
        accept: bool,
    ) -> Result<()> {
        let which = device.map_or_else(|| "*".to_owned(), |d| d.to_string());
        let result = self
            .inner
            .http
            .call::<FetchBundles>(&[&account.to_string(), &which], &Empty {})
            .await;
        let bundles: Bundles = match result {
            Ok(b) => b,
            Err(e) if e.problem_kind() == Some(ProblemType::NotFound) && device.is_some() => {
                let gone: Vec<u32> = device.into_iter().map(DeviceId::get).collect();
                return self
                    .with_store(move |s, _| s.drop_devices(account, &gone))
                    .await;
            }
            Err(e) => return Err(e),
        };
        if bundles.account_id != account {
            return Err(ClientError::InvalidResponse(
                "bundles are of another account".into(),
            ));
        }
        let skip = (account == self.account_id()).then_some(self.device_id());
        let events = self
            .with_store(move |s, _| s.process_bundles(&bundles, skip, accept, now_ms(), &mut OsRng))
            .await?;
        self.push_notices(events);
        Ok(())
    }

    // ---- Receiving: see `receive.rs` -------------------------------------------

    pub(crate) async fn handle_envelope(
        &self,
        envelope: passerelle_proto::Envelope,
    ) -> Result<Handled> {
        self.with_store(move |s, me| s.handle_envelope(me, &envelope, now_ms(), &mut OsRng))
            .await
    }

    /// Keeps this device's prekeys on the hub fresh, and returns whether
    /// keys were uploaded:
    ///
    /// - asks the hub how many one-time prekeys this device has left and,
    ///   below its low-water mark, generates a new batch of
    ///   [`ONE_TIME_BATCH`] of that kind;
    /// - replaces the signed prekey and the last-resort Kyber prekey when
    ///   they are two days old (each signed with the identity key), keeping
    ///   replaced ones 30 days for PreKey messages already on their way,
    ///   then deleting them.
    ///
    /// Everything goes up in one `PUT /v1/keys`. A rotated key that did not
    /// reach the hub is uploaded again next time. [`Client::listen`] calls
    /// this on every connection.
    pub async fn refresh_prekeys(&self) -> Result<bool> {
        let counts = self.inner.http.call::<Counts>(&[], &Empty {}).await?;
        // Below the mark, one more batch (the hub takes at most a batch per
        // upload; Signal's apps do the same).
        let top_up = |have: u32| {
            if have < counts.low_water_mark {
                ONE_TIME_BATCH
            } else {
                0
            }
        };
        let request = KeyRequest {
            pre_keys: top_up(counts.pre_keys),
            kyber_pre_keys: top_up(counts.kyber_pre_keys),
            ..KeyRequest::default()
        };
        let now = self.rotation_now();
        let upload = self
            .with_store(move |s, _| {
                let identity = s.local_identity()?.ok_or(ClientError::NotRegistered)?;
                let tx = s.conn.transaction()?;
                let mut upload = keys::rotate(&tx, &identity, now, &mut OsRng)?;
                let one_time = keys::generate(&tx, &identity, request, now, &mut OsRng)?;
                upload.pre_keys = one_time.pre_keys;
                upload.kyber_pre_keys = one_time.kyber_pre_keys;
                tx.commit()?;
                Ok(upload)
            })
            .await?;
        if upload.signed_pre_key.is_none()
            && upload.last_resort_kyber_pre_key.is_none()
            && upload.pre_keys.is_empty()
            && upload.kyber_pre_keys.is_empty()
        {
            return Ok(false);
        }
        tracing::info!(
            signed = upload.signed_pre_key.is_some(),
            last_resort = upload.last_resort_kyber_pre_key.is_some(),
            pre_keys = upload.pre_keys.len(),
            kyber_pre_keys = upload.kyber_pre_keys.len(),
            "uploading prekeys"
        );
        self.inner.http.call::<Upload>(&[], &upload).await?;
        self.with_store(move |s, _| keys::confirm_upload(&s.conn, &upload))
            .await?;
        Ok(true)
    }

    // ---- Devices ------------------------------------------------------------------

    /// This account's devices (and remembers the others, for sync copies).
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let list = self
            .inner
            .http
            .call::<ListDevices>(&[], &Empty {})
            .await?
            .devices;
        let others: Vec<DeviceId> = list
            .iter()
            .map(|d| d.device_id)
            .filter(|d| *d != self.device_id())
            .collect();
        self.with_store(move |s, _| s.set_own_devices(&others, now_ms()))
            .await?;
        Ok(list)
    }

    /// Removes another device of this account.
    pub async fn remove_device(&self, device: DeviceId) -> Result<()> {
        if device == self.device_id() {
            return Err(ClientError::InvalidInput(
                "a device cannot remove itself".into(),
            ));
        }
        self.inner
            .http
            .call::<RemoveDevice>(&[&device.to_string()], &Empty {})
            .await?;
        self.with_store(move |s, me| {
            s.drop_devices(me.account, &[device.get()])?;
            let mut list = s.own_devices()?;
            list.retain(|d| *d != device);
            s.set_own_devices(&list, now_ms())
        })
        .await
    }

    // ---- Safety numbers -------------------------------------------------------------

    /// The safety number of the conversation with `address`: 60 digits in
    /// groups of five, and the bytes of its QR code. Both sides see the
    /// same digits. Starts sessions first if this device never talked to
    /// the account.
    pub async fn safety_number(&self, address: &Address) -> Result<SafetyNumber> {
        let fingerprint = self.fingerprint(address).await?;
        Ok(SafetyNumber {
            displayable: fingerprint.display.grouped(),
            scannable: fingerprint.scannable.serialize(),
        })
    }

    /// Whether bytes scanned from the peer's screen match this device's
    /// view of the conversation.
    pub async fn compare_scanned(&self, address: &Address, scanned: &[u8]) -> Result<bool> {
        Ok(self
            .fingerprint(address)
            .await?
            .scannable
            .compare(scanned)?)
    }

    async fn fingerprint(&self, address: &Address) -> Result<Fingerprint> {
        let account = self.resolve(address).await?;
        let peer = move |s: &mut LocalStore, _: &Me| protocol::peer_identity(&s.conn, account);
        if self.with_store(peer).await?.is_none() {
            self.fetch_bundles(account, None, false).await?;
        }
        self.with_store(move |s, me| {
            let (theirs, _, _) = protocol::peer_identity(&s.conn, account)?.ok_or_else(|| {
                ClientError::InvalidInput("no identity key known for this account".into())
            })?;
            let ours = s.local_identity()?.ok_or(ClientError::NotRegistered)?;
            Ok(Fingerprint::new(
                VERSION,
                ITERATIONS,
                me.account.0.as_bytes(),
                ours.pair.identity_key(),
                account.0.as_bytes(),
                &theirs,
            )?)
        })
        .await
    }

    /// Marks the identity key of `address`'s account verified (after the
    /// user compared safety numbers). The flag is cleared if the key ever
    /// changes, with an [`Event::IdentityChanged`].
    pub async fn verify(&self, address: &Address) -> Result<()> {
        let account = self.resolve(address).await?;
        let found = self
            .with_store(move |s, _| protocol::set_verified(&s.conn, account, true))
            .await?;
        if !found {
            return Err(ClientError::InvalidInput(
                "no identity key known for this account: compute the safety number first".into(),
            ));
        }
        Ok(())
    }

    /// Accepts the identity key `address`'s account now presents, after the
    /// user was told that it changed (a send failed with
    /// [`ClientError::UntrustedIdentity`]): the hub's current key is stored,
    /// unverified, and sessions are started with it. Compare safety numbers
    /// and [`verify`](Client::verify) again.
    pub async fn accept_identity(&self, address: &Address) -> Result<()> {
        let _one_at_a_time = self.inner.send_lock.lock().await;
        let account = self.resolve(address).await?;
        if account == self.account_id() {
            return Err(ClientError::InvalidInput(
                "this account's own identity cannot be replaced".into(),
            ));
        }
        self.fetch_bundles(account, None, true).await?;
        tracing::info!(peer = %account, "new identity key accepted");
        Ok(())
    }

    // ---- History -------------------------------------------------------------------------

    /// Every contact, most recent conversation first.
    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        history::conversations(&self.lock()?.conn)
    }

    /// The history of the conversation with `address`, oldest first (empty
    /// for an address this device never talked to).
    pub fn history(&self, address: &Address) -> Result<Vec<HistoryEntry>> {
        let store = self.lock()?;
        match history::contact_account(&store.conn, address)? {
            Some(account) => history::history(&store.conn, account),
            None => Ok(Vec::new()),
        }
    }
}

fn parse_app(app: &str) -> Result<AppId> {
    app.parse()
        .map_err(|e| ClientError::InvalidInput(format!("app: {e}")))
}

/// Why a device database is being set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NewDevice {
    /// A new account: an unfinished earlier registration is refused.
    Register,
    /// A linked device: whatever an unfinished link left is replaced (its
    /// token is spent either way; a device the hub did accept shows in the
    /// account's device list and can be removed there).
    Link,
}

/// Opens a new database for a device being registered or linked, stores its
/// identity and password, and generates its first prekeys (in a blocking
/// task).
pub(crate) async fn new_device_store(
    path: &Path,
    server_url: &str,
    password: &str,
    identity: &LocalIdentity,
    purpose: NewDevice,
) -> Result<(LocalStore, passerelle_proto::api::accounts::DeviceKeys)> {
    let path = path.to_owned();
    let server_url = server_url.to_owned();
    let password = Zeroizing::new(password.to_owned());
    let identity = identity.clone();
    spawn_store_task(move || {
        let mut store = LocalStore::open(&path)?;
        if purpose == NewDevice::Register && store.is_unfinished()? {
            return Err(ClientError::UnfinishedRegistration);
        }
        let now = now_ms();
        store.init_device(&server_url, &password, &identity, now)?;
        let tx = store.conn.transaction()?;
        let upload = keys::generate(&tx, &identity, KeyRequest::new_device(), now, &mut OsRng)?;
        tx.commit()?;
        let keys = keys::device_keys(upload)
            .ok_or_else(|| ClientError::Storage("new device keys incomplete".into()))?;
        Ok((store, keys))
    })
    .await
}

/// How long to wait between two looks at a provisioning mailbox.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::identity;

    /// A registration the hub may have accepted, whose answer was never
    /// recorded (the process stopped in between).
    fn half_registered(path: &Path) {
        let mut store = LocalStore::open(path).unwrap();
        store
            .init_device("http://127.0.0.1:1", "p4ssw0rd-p4ssw0rd", &identity(), 7)
            .unwrap();
    }

    #[tokio::test]
    async fn a_half_registered_database_is_neither_opened_nor_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        assert!(matches!(
            Client::open(&path),
            Err(ClientError::NotRegistered)
        ));
        half_registered(&path);
        let before = LocalStore::open(&path)
            .unwrap()
            .local_identity()
            .unwrap()
            .unwrap();
        let opened = Client::open(&path);
        assert!(
            matches!(opened, Err(ClientError::UnfinishedRegistration)),
            "{opened:?}"
        );
        assert!(
            ClientError::UnfinishedRegistration
                .to_string()
                .contains("unfinished registration")
        );
        // Refused before anything reaches the (unreachable) hub.
        let again = Client::register(
            "http://127.0.0.1:1",
            &path,
            "parley",
            Some("alice"),
            None,
            "phone",
        )
        .await;
        assert!(
            matches!(again, Err(ClientError::UnfinishedRegistration)),
            "{again:?}"
        );
        // The identity is still the one the hub may hold.
        let after = LocalStore::open(&path)
            .unwrap()
            .local_identity()
            .unwrap()
            .unwrap();
        assert_eq!(after.pair.identity_key(), before.pair.identity_key());
    }
}
