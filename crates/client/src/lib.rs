//! The Passerelle SDK: one device of one account.
//!
//! ```no_run
//! # async fn demo() -> passerelle_client::Result<()> {
//! use passerelle_client::{Address, Client, Event};
//!
//! let alice = Client::register("http://127.0.0.1:8080", "alice.db", "parley",
//!                              Some("alice"), None, "laptop").await?;
//! let bob: Address = "bob@chime".parse().expect("a valid address");
//! alice.send_text(&bob, "hello").await?;
//! for event in alice.sync_once().await? {
//!     if let Event::Message { from, body, .. } = event {
//!         println!("{from}: {body:?}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The SDK runs on tokio (any flavor): local database work goes through
//! `spawn_blocking`.
//!
//! # Layout
//!
//! | module | what it does | what it never does |
//! | --- | --- | --- |
//! | `store` | the local SQLite database: schema and migrations, passerelle-signal's store traits, history | network, async |
//! | `machine` | the core: bundles → sessions, plaintext → ciphertexts, envelope → events, each in one transaction | network, clock, RNG of its own |
//! | `keys` | prekey generation | network |
//! | [`provisioning`] | the link URI and the provisioning cipher | network, storage |
//! | `http`, `ws` | the transports: endpoints from `passerelle-proto`, problem+json → [`ClientError`] | protocol decisions |
//! | [`Client`], [`Listener`], [`PendingLink`] | drive the core with the transports | cryptography |
//!
//! # Rules
//!
//! - **Durable before acknowledged.** An envelope's session update, history
//!   entry and "processed" mark commit in one SQLite transaction (WAL,
//!   `synchronous = FULL`) before the envelope is acknowledged; a
//!   redelivered envelope is recognized by its id and dropped, so each
//!   message is reported once.
//! - **Failed decrypts change nothing.** Decryption runs in a savepoint that
//!   is rolled back on failure; an envelope that cannot be decrypted is
//!   still marked processed (it would fail again), reported as
//!   [`Event::Undecryptable`], and acknowledged. Only a failure of the
//!   local database leaves an envelope unacknowledged. A message that
//!   decrypted keeps its ratchet step whatever the plaintext holds; a
//!   newer format is reported as [`Event::Unsupported`].
//! - **No lock across an await.** The store sits behind a
//!   `std::sync::Mutex` and is used from `spawn_blocking`.
//! - **Secrets stay in.** Passwords, keys and message text never reach
//!   `Debug` output, errors or logs.
//! - **Trust on first use, until verified.** A peer's first identity key is
//!   stored as first-seen; while unverified, a changed key replaces it and
//!   is reported as [`Event::IdentityChanged`]. Apps compare
//!   [`Client::safety_number`]s and call [`Client::verify`]. A verified key
//!   is never replaced silently: a send fails with
//!   [`ClientError::UntrustedIdentity`] (and messages under the new key are
//!   [`Event::Undecryptable`]) until the user calls
//!   [`Client::accept_identity`].
//! - **Private files.** A new database is created with mode 0600 (its WAL
//!   files follow).
//! - **Prekeys rotate, replaced ones linger.** On every connection the
//!   signed prekey and the last-resort Kyber prekey are replaced when two
//!   days old (signed with the identity key, uploaded with `PUT /v1/keys`);
//!   replaced private keys are kept 30 days for PreKey messages built from
//!   older bundles, and deleted only once their successor reached the hub.
//! - **An unfinished registration is never overwritten.** The hub accepts a
//!   registration before the database records the account; if the process
//!   stops in between, [`Client::open`] and [`Client::register`] refuse the
//!   database with [`ClientError::UnfinishedRegistration`] rather than
//!   replace an identity the hub may hold. A registration the hub refused
//!   (4xx) is cleared and can be retried. Recovering an accepted one is not
//!   automated yet.
//! - **Retried sends are identical.** A send that timed out or met a 503 is
//!   sent again once with the same body; the recipient drops the copy as a
//!   replay.

mod client;
mod error;
mod http;
mod keys;
mod link;
mod machine;
pub mod provisioning;
mod receive;
mod store;
mod types;
mod ws;

pub use client::{Client, MAX_SEND_ATTEMPTS};
pub use error::{ClientError, Result};
pub use keys::ONE_TIME_BATCH;
pub use link::{MAX_LINK_WAIT_MS, PendingLink};
/// The wire types, for what the SDK does not re-export.
pub use passerelle_proto as proto;
pub use passerelle_proto::api::accounts::{AppInfo, VerificationSession};
pub use passerelle_proto::api::devices::DeviceInfo;
pub use passerelle_proto::content::{Body, MessageRef};
pub use passerelle_proto::{AccountId, Address, AppId, DeviceId, Handle};
pub use receive::{Listener, PING_INTERVAL};
pub use types::{
    Conversation, DeliveryState, Event, HistoryEntry, MessageDirection, ReceiptKind, SafetyNumber,
    SentMessage,
};
