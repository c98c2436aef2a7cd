//! The synchronous core: what the device does with bundles, outgoing
//! plaintext and incoming envelopes, given its local store. No sockets and
//! no clock or RNG of its own (`now` and `rng` are arguments), so tests
//! drive two devices against each other by passing envelopes by hand.
//!
//! Each operation runs in one SQLite transaction: an envelope's session
//! update, history entry and "processed" mark commit together, and the
//! caller acknowledges the envelope only after that.

use std::time::{Duration, SystemTime};

use passerelle_proto::api::keys::{Bundles, DeviceBundle};
use passerelle_proto::api::messages::OutgoingMessage;
use passerelle_proto::content::{Body, Content, ContentError};
use passerelle_proto::envelope::{Envelope, EnvelopeKind, ServerNotice, Source};
use passerelle_proto::{AccountId, Address, Base64Bytes, DeviceId};
use passerelle_signal::store::{IdentityKeyStore, SessionStore};
use passerelle_signal::{
    CiphertextMessage, Error as SignalError, IdentityKey, KemPublicKey, MessageType, PreKeyBundle,
    ProtocolAddress, PublicKey, message_decrypt, message_encrypt, process_prekey_bundle,
};
use rand::{CryptoRng, RngCore};
use rusqlite::Connection;

use crate::error::{ClientError, Result};
use crate::store::history::{self, Origin};
use crate::store::protocol::{self, SignalStore};
use crate::store::{self as local, LocalIdentity, LocalStore};
use crate::types::{Event, MessageDirection, ReceiptKind};

/// Who this device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    pub(crate) account: AccountId,
    pub(crate) address: Address,
    pub(crate) device: DeviceId,
}

/// What handling one envelope produced.
#[derive(Debug, Default)]
pub(crate) struct Handled {
    /// What to tell the app, in order.
    pub(crate) events: Vec<Event>,
    /// The envelope was a PreKey message that consumed prekeys.
    pub(crate) used_prekey: bool,
}

/// Ciphertexts for the devices that have sessions, and the devices that
/// need a new one first.
#[derive(Debug, Default)]
pub(crate) struct Encrypted {
    pub(crate) messages: Vec<OutgoingMessage>,
    pub(crate) need_bundles: Vec<u32>,
}

fn system_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn address_of(account: AccountId, device: u32) -> ProtocolAddress {
    ProtocolAddress::new(account.to_string(), device)
}

fn bad_bundle(what: &str) -> ClientError {
    ClientError::InvalidResponse(format!("bad prekey bundle: {what}"))
}

/// A bundle from the hub, parsed.
fn parse_bundle(identity_key: IdentityKey, d: &DeviceBundle) -> Result<PreKeyBundle> {
    let pre_key = d
        .pre_key
        .as_ref()
        .map(|k| {
            PublicKey::deserialize(k.public_key.as_slice())
                .map(|key| (k.key_id, key))
                .map_err(|_| bad_bundle("pre_key"))
        })
        .transpose()?;
    Ok(PreKeyBundle {
        registration_id: d.registration_id,
        device_id: d.device_id.get(),
        pre_key,
        signed_pre_key_id: d.signed_pre_key.key_id,
        signed_pre_key: PublicKey::deserialize(d.signed_pre_key.public_key.as_slice())
            .map_err(|_| bad_bundle("signed_pre_key"))?,
        signed_pre_key_signature: d.signed_pre_key.signature.as_slice().to_vec(),
        kyber_pre_key_id: d.kyber_pre_key.key_id,
        kyber_pre_key: KemPublicKey::deserialize(d.kyber_pre_key.public_key.as_slice())
            .map_err(|_| bad_bundle("kyber_pre_key"))?,
        kyber_pre_key_signature: d.kyber_pre_key.signature.as_slice().to_vec(),
        identity_key,
    })
}

fn identity_events(conn: &Connection, changed: &[String]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for name in changed {
        let Ok(account) = name.parse::<AccountId>() else {
            continue;
        };
        events.push(Event::IdentityChanged {
            account,
            address: history::contact_address(conn, account)?,
        });
    }
    Ok(events)
}

impl LocalStore {
    fn identity_or_unregistered(&self) -> Result<LocalIdentity> {
        self.local_identity()?.ok_or(ClientError::NotRegistered)
    }

    /// This device's own Signal address: its account UUID and device id.
    fn local_address(&self) -> Result<ProtocolAddress> {
        let credentials = self.credentials()?.ok_or(ClientError::NotRegistered)?;
        Ok(address_of(
            credentials.account_id,
            credentials.device_id.get(),
        ))
    }

    /// The devices of `account` with session records, and whether each can
    /// send now.
    pub(crate) fn session_devices(&self, account: AccountId) -> Result<Vec<(u32, bool)>> {
        protocol::session_devices(&self.conn, account)
    }

    /// Starts sessions from bundles the hub gave (skipping `skip`, this
    /// device, when the bundles are of its own account). The bundle's
    /// identity key is accepted if unverified (trust on first use; a changed
    /// one is reported as an event); a key other than a verified one is
    /// refused with [`ClientError::UntrustedIdentity`] and nothing is
    /// stored, unless `accept` (the user accepted the new key): then it is
    /// stored, unverified.
    pub(crate) fn process_bundles<R: RngCore + CryptoRng>(
        &mut self,
        bundles: &Bundles,
        skip: Option<DeviceId>,
        accept: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<Vec<Event>> {
        let identity = self.identity_or_unregistered()?;
        let local = self.local_address()?;
        let identity_key = IdentityKey::deserialize(bundles.identity_key.as_slice())
            .map_err(|_| bad_bundle("identity_key"))?;
        let account = bundles.account_id;
        let tx = self.conn.transaction()?;
        if accept {
            protocol::accept_identity(&tx, account, &identity_key, now)?;
        }
        let mut store = SignalStore::new(&tx, identity, now);
        for device in &bundles.devices {
            if Some(device.device_id) == skip {
                continue;
            }
            let bundle = parse_bundle(identity_key, device)?;
            let address = address_of(account, device.device_id.get());
            let started = store.save_identity(&address, &identity_key).and_then(|_| {
                process_prekey_bundle(&address, &local, &mut store, &bundle, system_time(now), rng)
            });
            match started {
                Ok(()) => {}
                Err(SignalError::UntrustedIdentity(_)) if !store.backend_failed() => {
                    // Dropping `tx` rolls back: nothing is stored.
                    return Err(ClientError::UntrustedIdentity {
                        account,
                        address: history::contact_address(&tx, account)?,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        let changed = std::mem::take(&mut store.changed);
        drop(store);
        let events = identity_events(&tx, &changed)?;
        tx.commit()?;
        Ok(events)
    }

    /// Encrypts `plaintext` for each of `devices` of `account`. Devices
    /// without a usable session are returned in `need_bundles`.
    pub(crate) fn encrypt_for<R: RngCore + CryptoRng>(
        &mut self,
        account: AccountId,
        devices: &[u32],
        plaintext: &[u8],
        now: u64,
        rng: &mut R,
    ) -> Result<Encrypted> {
        let identity = self.identity_or_unregistered()?;
        let local = self.local_address()?;
        let tx = self.conn.transaction()?;
        let mut store = SignalStore::new(&tx, identity, now);
        let mut out = Encrypted::default();
        for &device in devices {
            let address = address_of(account, device);
            let Some(registration_id) = store
                .load_session(&address)?
                .filter(|r| r.has_current_session())
                .and_then(|r| r.remote_registration_id())
            else {
                out.need_bundles.push(device);
                continue;
            };
            match message_encrypt(
                plaintext,
                &address,
                &local,
                &mut store,
                system_time(now),
                rng,
            ) {
                Ok(message) => out.messages.push(OutgoingMessage {
                    device_id: DeviceId::new(device).map_err(|e| bad_bundle(&e.to_string()))?,
                    registration_id,
                    kind: match message.message_type() {
                        MessageType::PreKey => EnvelopeKind::PrekeyMessage,
                        _ => EnvelopeKind::Message,
                    },
                    content: Base64Bytes(message.serialized().to_vec()),
                }),
                Err(
                    SignalError::SessionExpired(_)
                    | SignalError::SessionNotFound(_)
                    | SignalError::UntrustedIdentity(_),
                ) if !store.backend_failed() => out.need_bundles.push(device),
                Err(e) => return Err(e.into()),
            }
        }
        drop(store);
        tx.commit()?;
        Ok(out)
    }

    /// Forgets sessions with devices the account no longer has.
    pub(crate) fn drop_devices(&mut self, account: AccountId, devices: &[u32]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for &d in devices {
            protocol::delete_session(&tx, account, d)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Archives sessions with devices that re-registered.
    pub(crate) fn archive_devices(
        &mut self,
        account: AccountId,
        devices: &[u32],
        now: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for &d in devices {
            protocol::archive_session(&tx, account, d, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Files a body this device sent (after the hub accepted it).
    pub(crate) fn record_sent(
        &mut self,
        me: &Me,
        to: AccountId,
        content: &Content,
        server_timestamp: u64,
    ) -> Result<()> {
        history::apply_body(
            &self.conn,
            &Origin {
                conversation: to,
                direction: MessageDirection::Outgoing,
                author: me.account,
                author_device: me.device,
                sent_at: content.sent_at,
                server_timestamp: Some(server_timestamp),
            },
            &content.body,
        )?;
        Ok(())
    }

    /// Handles one envelope: drops it if already processed, else decrypts
    /// it, files what it says, marks it processed, and commits. An envelope
    /// that cannot be decrypted or read is marked processed too (it would
    /// fail again) and reported as [`Event::Undecryptable`]; only a failure
    /// of the local database is an error, and then nothing is committed and
    /// the envelope must not be acknowledged.
    pub(crate) fn handle_envelope<R: RngCore + CryptoRng>(
        &mut self,
        me: &Me,
        envelope: &Envelope,
        now: u64,
        rng: &mut R,
    ) -> Result<Handled> {
        let identity = self.identity_or_unregistered()?;
        let mut tx = self.conn.transaction()?;
        if local::is_processed(&tx, envelope.id)? {
            tracing::debug!(envelope = %envelope.id, "redelivered envelope dropped");
            return Ok(Handled::default());
        }
        let mut handled = Handled::default();
        match (envelope.kind, &envelope.source, &envelope.content) {
            (EnvelopeKind::ServerNotice, _, _) => {
                if let Some(event) = handle_notice(&tx, envelope)? {
                    handled.events.push(event);
                }
            }
            (kind, Some(source), Some(ciphertext)) => {
                let opened = {
                    let sp = tx.savepoint()?;
                    let opened = open(&sp, identity, me, kind, source, ciphertext, now, rng)?;
                    // Once decrypted, the ratchet step and the prekeys used
                    // stand, whatever the plaintext says.
                    if let Opened::Decrypted { .. } = opened {
                        sp.commit()?;
                    }
                    opened
                };
                match opened {
                    Opened::Decrypted { read, changed } => {
                        handled.used_prekey = kind == EnvelopeKind::PrekeyMessage;
                        handled.events.extend(identity_events(&tx, &changed)?);
                        match read {
                            Read::Content(content) => handled
                                .events
                                .extend(file_content(&tx, me, envelope, source, content, now)?),
                            Read::Unsupported(reason) => handled.events.push(dropped(
                                Dropped::Unsupported,
                                envelope,
                                source,
                                reason,
                                "content of a newer format dropped",
                            )),
                            Read::Unreadable(reason) => handled.events.push(dropped(
                                Dropped::Undecryptable,
                                envelope,
                                source,
                                reason,
                                "dropping a content that does not parse",
                            )),
                        }
                    }
                    Opened::Refused(reason) => handled.events.push(dropped(
                        Dropped::Undecryptable,
                        envelope,
                        source,
                        reason,
                        "dropping an envelope that does not decrypt",
                    )),
                    Opened::Replayed => {
                        tracing::debug!(envelope = %envelope.id, "replayed message dropped");
                    }
                }
            }
            _ => {
                tracing::info!(envelope = %envelope.id, "dropping an envelope without sender or content");
            }
        }
        local::mark_processed(&tx, envelope.id, now)?;
        tx.commit()?;
        Ok(handled)
    }
}

enum Opened {
    /// Decrypted: its ratchet step commits whatever the plaintext holds.
    Decrypted {
        read: Read,
        changed: Vec<String>,
    },
    Refused(String),
    Replayed,
}

/// What a decrypted plaintext holds.
enum Read {
    Content(Content),
    /// A newer content version, or a body type this client does not know.
    Unsupported(String),
    /// Not a content at all.
    Unreadable(String),
}

/// Parses a decrypted plaintext, telling a newer format from garbage.
fn read(plaintext: &[u8]) -> Read {
    match Content::from_padded(plaintext) {
        Ok(content) => Read::Content(content),
        Err(e @ ContentError::UnsupportedVersion(_)) => Read::Unsupported(e.to_string()),
        Err(e) => match unknown_body_type(plaintext) {
            Some(kind) => Read::Unsupported(format!("unknown body type {kind:?}")),
            None => Read::Unreadable(e.to_string()),
        },
    }
}

/// The body's `type` (or, in a transcript, the inner body's), when it is
/// one [`Body`] does not know.
fn unknown_body_type(plaintext: &[u8]) -> Option<String> {
    let end = plaintext.iter().rposition(|&b| b != 0)?;
    let value: serde_json::Value = serde_json::from_slice(plaintext.get(..end)?).ok()?;
    let mut body = value.get("body")?;
    if body.get("type")?.as_str()? == "sent_transcript" {
        body = body.get("body")?;
    }
    let kind = body.get("type")?.as_str()?;
    // Whether serde knows the tag: a known one fails on missing fields
    // instead.
    let probe = serde_json::json!({ "type": kind });
    match serde_json::from_value::<Body>(probe) {
        Err(e) if e.to_string().starts_with("unknown variant") => {
            Some(kind.chars().take(32).collect())
        }
        _ => None,
    }
}

/// Decrypts and parses; `Err` only when the database failed.
#[allow(clippy::too_many_arguments)]
fn open<R: RngCore + CryptoRng>(
    conn: &Connection,
    identity: LocalIdentity,
    me: &Me,
    kind: EnvelopeKind,
    source: &Source,
    ciphertext: &Base64Bytes,
    now: u64,
    rng: &mut R,
) -> Result<Opened> {
    let Some(message_type) = kind.signal_type() else {
        return Ok(Opened::Refused("not an encrypted kind".into()));
    };
    let message = match CiphertextMessage::deserialize(message_type, ciphertext.as_slice()) {
        Ok(m) => m,
        Err(e) => return Ok(Opened::Refused(e.to_string())),
    };
    let mut store = SignalStore::new(conn, identity, now);
    let address = address_of(source.account_id, source.device_id.get());
    let local = address_of(me.account, me.device.get());
    let plaintext = match message_decrypt(&message, &address, &local, &mut store, rng) {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(e) if store.backend_failed() => return Err(e.into()),
        Err(SignalError::DuplicateMessage { .. }) => return Ok(Opened::Replayed),
        Err(e) => return Ok(Opened::Refused(e.to_string())),
    };
    Ok(Opened::Decrypted {
        read: read(&plaintext),
        changed: std::mem::take(&mut store.changed),
    })
}

fn handle_notice(conn: &Connection, envelope: &Envelope) -> Result<Option<Event>> {
    match &envelope.notice {
        Some(ServerNotice::Expired {
            recipient,
            recipient_device,
            envelope_id,
            client_timestamp,
        }) => {
            if let Some(account) = history::contact_account(conn, recipient)? {
                history::mark_expired(conn, account, *client_timestamp)?;
            }
            Ok(Some(Event::Expired {
                recipient: recipient.clone(),
                recipient_device: *recipient_device,
                envelope_id: *envelope_id,
                sent_at: *client_timestamp,
            }))
        }
        _ => {
            tracing::debug!(envelope = %envelope.id, "unknown server notice ignored");
            Ok(None)
        }
    }
}

/// Files a decrypted content and says what to report.
fn file_content(
    conn: &Connection,
    me: &Me,
    envelope: &Envelope,
    source: &Source,
    content: Content,
    now: u64,
) -> Result<Vec<Event>> {
    let from_self = source.account_id == me.account;
    if from_self {
        if source.device_id != me.device {
            local::add_own_device(conn, source.device_id)?;
        }
    } else {
        history::upsert_contact(conn, source.account_id, &source.address, now)?;
    }
    let sent_at = content.sent_at;
    match content.body {
        Body::SentTranscript {
            destination,
            destination_account,
            body,
        } => {
            if !from_self {
                tracing::info!(sender = %source.account_id, "transcript from another account ignored");
                return Ok(Vec::new());
            }
            history::upsert_contact(conn, destination_account, &destination, now)?;
            let origin = Origin {
                conversation: destination_account,
                direction: MessageDirection::Outgoing,
                author: me.account,
                author_device: source.device_id,
                sent_at,
                server_timestamp: Some(envelope.server_timestamp),
            };
            let new = !matches!(*body, Body::SentTranscript { .. })
                && history::apply_body(conn, &origin, &body)?;
            Ok(new
                .then_some(Event::SentTranscript {
                    device: source.device_id,
                    to: destination,
                    to_account: destination_account,
                    sent_at,
                    body: *body,
                })
                .into_iter()
                .collect())
        }
        _ if from_self => {
            tracing::debug!("non-transcript content from an own device ignored");
            Ok(Vec::new())
        }
        Body::Typing { started } => Ok(vec![Event::Typing {
            from: source.address.clone(),
            started,
        }]),
        body @ (Body::DeliveryReceipt { .. } | Body::ReadReceipt { .. }) => {
            let origin = incoming(source, sent_at, envelope.server_timestamp);
            history::apply_body(conn, &origin, &body)?;
            let (kind, sent_at) = match body {
                Body::DeliveryReceipt { sent_at } => (ReceiptKind::Delivery, sent_at),
                Body::ReadReceipt { sent_at } => (ReceiptKind::Read, sent_at),
                _ => return Ok(Vec::new()),
            };
            Ok(vec![Event::Receipt {
                from: source.address.clone(),
                kind,
                sent_at,
            }])
        }
        body => {
            let origin = incoming(source, sent_at, envelope.server_timestamp);
            if !history::apply_body(conn, &origin, &body)? {
                tracing::debug!("message already in the history; not reported again");
                return Ok(Vec::new());
            }
            Ok(vec![Event::Message {
                from: source.address.clone(),
                from_account: source.account_id,
                from_device: source.device_id,
                sent_at,
                server_timestamp: envelope.server_timestamp,
                body,
            }])
        }
    }
}

fn incoming(source: &Source, sent_at: u64, server_timestamp: u64) -> Origin {
    Origin {
        conversation: source.account_id,
        direction: MessageDirection::Incoming,
        author: source.account_id,
        author_device: source.device_id,
        sent_at,
        server_timestamp: Some(server_timestamp),
    }
}

/// How a dropped envelope is reported.
enum Dropped {
    /// Decrypted, but of a content format newer than this client knows.
    Unsupported,
    /// Not decrypted, or not readable content.
    Undecryptable,
}

/// Logs an envelope that is dropped and gives the event that reports it.
fn dropped(
    kind: Dropped,
    envelope: &Envelope,
    source: &Source,
    reason: String,
    what: &'static str,
) -> Event {
    tracing::info!(envelope = %envelope.id, sender = %source.account_id, %reason, "{what}");
    let (from, from_device, envelope_id) = (source.address.clone(), source.device_id, envelope.id);
    match kind {
        Dropped::Unsupported => Event::Unsupported {
            from,
            from_device,
            envelope_id,
            reason,
        },
        Dropped::Undecryptable => Event::Undecryptable {
            from,
            from_device,
            envelope_id,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use passerelle_proto::api::keys::{KyberPreKey, PreKey, SignedPreKey};
    use rand::rngs::OsRng;
    use uuid::Uuid;

    use super::*;
    use crate::keys::{self, KeyRequest};
    use crate::store::tests::identity;

    /// A device with its own store, registered with keys, as the hub would
    /// hold them.
    struct Device {
        store: LocalStore,
        me: Me,
        keys: passerelle_proto::api::keys::UploadKeys,
        claimed: std::cell::Cell<usize>,
    }

    fn device(handle: &str, account: AccountId, device: u8) -> Device {
        let mut store = LocalStore::open_in_memory().unwrap();
        let id = identity();
        store
            .init_device("http://hub", "password-password", &id, 1)
            .unwrap();
        let address: Address = format!("{handle}@parley").parse().unwrap();
        let device_id = DeviceId::new(device.into()).unwrap();
        store.set_account(account, &address, device_id).unwrap();
        let request = KeyRequest {
            pre_keys: 2,
            kyber_pre_keys: 2,
            ..KeyRequest::new_device()
        };
        let keys = keys::generate(&store.conn, &id, request, 1, &mut OsRng).unwrap();
        Device {
            store,
            me: Me {
                account,
                address,
                device: device_id,
            },
            keys,
            claimed: std::cell::Cell::new(0),
        }
    }

    impl Device {
        /// The bundle the hub would hand out (claiming the next one-time
        /// keys).
        fn bundles(&self) -> Bundles {
            let identity = self.store.local_identity().unwrap().unwrap();
            let signed: &SignedPreKey = self.keys.signed_pre_key.as_ref().unwrap();
            let next = self.claimed.replace(self.claimed.get() + 1);
            let kyber: &KyberPreKey = &self.keys.kyber_pre_keys[next];
            let pre_key: &PreKey = &self.keys.pre_keys[next];
            Bundles {
                account_id: self.me.account,
                identity_key: Base64Bytes(identity.pair.identity_key().serialize().to_vec()),
                devices: vec![DeviceBundle {
                    device_id: self.me.device,
                    registration_id: identity.registration_id,
                    pre_key: Some(pre_key.clone()),
                    signed_pre_key: signed.clone(),
                    kyber_pre_key: kyber.clone(),
                }],
            }
        }

        fn send(&mut self, to: &Device, body: Body, sent_at: u64) -> Envelope {
            let content = Content::new(sent_at, body);
            let envelope = self.send_plaintext(to, &content.to_padded(), sent_at);
            let me = self.me.clone();
            self.store
                .record_sent(&me, to.me.account, &content, sent_at + 1)
                .unwrap();
            envelope
        }

        fn send_plaintext(&mut self, to: &Device, plaintext: &[u8], sent_at: u64) -> Envelope {
            let mut out = self
                .store
                .encrypt_for(
                    to.me.account,
                    &[to.me.device.get()],
                    plaintext,
                    sent_at,
                    &mut OsRng,
                )
                .unwrap();
            if !out.need_bundles.is_empty() {
                self.store
                    .process_bundles(&to.bundles(), None, false, sent_at, &mut OsRng)
                    .unwrap();
                out = self
                    .store
                    .encrypt_for(
                        to.me.account,
                        &[to.me.device.get()],
                        plaintext,
                        sent_at,
                        &mut OsRng,
                    )
                    .unwrap();
            }
            assert!(out.need_bundles.is_empty());
            let message = out.messages.remove(0);
            Envelope {
                id: Uuid::new_v4(),
                kind: message.kind,
                source: Some(Source {
                    address: self.me.address.clone(),
                    account_id: self.me.account,
                    device_id: self.me.device,
                }),
                destination_device: message.device_id,
                client_timestamp: sent_at,
                server_timestamp: sent_at + 1,
                content: Some(message.content),
                notice: None,
            }
        }

        fn receive(&mut self, envelope: &Envelope) -> Handled {
            let me = self.me.clone();
            self.store
                .handle_envelope(&me, envelope, envelope.server_timestamp, &mut OsRng)
                .unwrap()
        }
    }

    fn text(t: &str) -> Body {
        Body::Text { text: t.into() }
    }

    #[test]
    fn messages_flow_both_ways() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        let first = alice.send(&bob, text("hello bob"), 100);
        assert_eq!(first.kind, EnvelopeKind::PrekeyMessage);
        let handled = bob.receive(&first);
        assert!(handled.used_prekey);
        match &handled.events[..] {
            [
                Event::Message {
                    from,
                    body,
                    sent_at,
                    ..
                },
            ] => {
                assert_eq!(from, &alice.me.address);
                assert_eq!(body, &text("hello bob"));
                assert_eq!(*sent_at, 100);
            }
            other => panic!("unexpected events {other:?}"),
        }
        // Bob's one-time prekey was consumed.
        let (pre, kyber) = protocol::local_key_counts(&bob.store.conn).unwrap();
        assert_eq!((pre, kyber), (1, 1));

        let answer = bob.send(&alice, text("hi alice"), 200);
        assert_eq!(answer.kind, EnvelopeKind::Message);
        let handled = alice.receive(&answer);
        assert!(!handled.used_prekey);
        assert_eq!(handled.events.len(), 1);
        // Now alice's session is confirmed: plain messages.
        assert_eq!(
            alice.send(&bob, text("again"), 300).kind,
            EnvelopeKind::Message
        );
        let history = history::history(&bob.store.conn, alice.me.account).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].direction, MessageDirection::Incoming);
        assert_eq!(history[1].direction, MessageDirection::Outgoing);
        assert_eq!(
            bob.store.conversations_for_test(),
            vec![alice.me.address.clone()]
        );
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        let envelope = alice.send(&bob, text("once"), 100);
        assert_eq!(bob.receive(&envelope).events.len(), 1);
        // The hub redelivers the same envelope (the ack was lost).
        let again = bob.receive(&envelope);
        assert!(again.events.is_empty());
        // The same content in a new envelope (a replay under a new id) is
        // dropped by the ratchet, silently.
        let mut replay = envelope.clone();
        replay.id = Uuid::new_v4();
        let handled = bob.receive(&replay);
        assert!(handled.events.is_empty(), "{:?}", handled.events);
        assert!(bob.store.is_processed(replay.id).unwrap());
        // A retry of the same message by the sender (same timestamp, new
        // ciphertext) is filed once and not reported again.
        let retry = alice.send(&bob, text("once"), 100);
        assert!(bob.receive(&retry).events.is_empty());
        assert_eq!(
            history::history(&bob.store.conn, alice.me.account)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_changed_unverified_identity_is_replaced_and_reported() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        let first = bob.send(&alice, text("hi"), 100);
        assert_eq!(alice.receive(&first).events.len(), 1);

        // Bob reinstalls: same account, new identity key.
        let mut reinstalled = device("bob", bob.me.account, 1);
        let again = reinstalled.send(&alice, text("new phone"), 200);
        let events = alice.receive(&again).events;
        assert!(
            matches!(&events[..], [
                Event::IdentityChanged { account, address: Some(address) },
                Event::Message { .. },
            ] if *account == bob.me.account && *address == bob.me.address),
            "{events:?}"
        );
        let (current, first_seen, verified) =
            protocol::peer_identity(&alice.store.conn, bob.me.account)
                .unwrap()
                .unwrap();
        assert!(!verified);
        assert_ne!(current, first_seen);
        let new_identity = reinstalled.store.local_identity().unwrap().unwrap();
        assert_eq!(current, *new_identity.pair.identity_key());

        // Sending to the new key works; the old session is no longer used.
        let answer = alice.send(&reinstalled, text("welcome back"), 300);
        assert_eq!(reinstalled.receive(&answer).events.len(), 1);
    }

    #[test]
    fn a_verified_identity_is_not_replaced_until_accepted() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        let first = alice.send(&bob, text("hi"), 100);
        assert_eq!(bob.receive(&first).events.len(), 1);
        assert!(protocol::set_verified(&alice.store.conn, bob.me.account, true).unwrap());
        let verified = protocol::peer_identity(&alice.store.conn, bob.me.account).unwrap();
        assert!(verified.as_ref().is_some_and(|v| v.2));

        // Bob reinstalls: the hub now hands out bundles with a new key.
        let mut reinstalled = device("bob", bob.me.account, 1);
        let refused =
            alice
                .store
                .process_bundles(&reinstalled.bundles(), None, false, 200, &mut OsRng);
        assert!(
            matches!(&refused, Err(ClientError::UntrustedIdentity { account, .. })
                if *account == bob.me.account),
            "{refused:?}"
        );
        // Nothing was stored: the verified key stays.
        assert_eq!(
            protocol::peer_identity(&alice.store.conn, bob.me.account).unwrap(),
            verified
        );

        // A message under the new key is refused too, and changes nothing.
        let forged = reinstalled.send(&alice, text("trust me"), 300);
        let events = alice.receive(&forged).events;
        assert!(
            matches!(&events[..], [Event::Undecryptable { reason, .. }] if reason.contains("untrusted")),
            "{events:?}"
        );
        assert_eq!(
            protocol::peer_identity(&alice.store.conn, bob.me.account).unwrap(),
            verified
        );
        assert_eq!(
            history::history(&alice.store.conn, bob.me.account)
                .unwrap()
                .len(),
            1
        );

        // The user accepts the new key: stored unverified, and sessions work.
        alice
            .store
            .process_bundles(&reinstalled.bundles(), None, true, 400, &mut OsRng)
            .unwrap();
        let (current, _, verified) = protocol::peer_identity(&alice.store.conn, bob.me.account)
            .unwrap()
            .unwrap();
        assert!(!verified);
        let new_identity = reinstalled.store.local_identity().unwrap().unwrap();
        assert_eq!(current, *new_identity.pair.identity_key());
        let welcome = alice.send(&reinstalled, text("welcome back"), 500);
        assert_eq!(reinstalled.receive(&welcome).events.len(), 1);
    }

    #[test]
    fn a_newer_content_is_reported_and_the_session_goes_on() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        // Contents of a newer format, each the first message of a new
        // session (a PreKey message consuming one-time prekeys).
        let future_version = br#"{"version":9,"sent_at":100,"body":{"type":"text","text":"x"}}"#;
        let future_type = br#"{"version":1,"sent_at":100,"body":{"type":"poll","question":"x"}}"#;
        let cases: [(&[u8], &str); 2] = [(future_version, "version 9"), (future_type, "\"poll\"")];
        for (n, (plaintext, reason)) in cases.into_iter().enumerate() {
            let mut padded = plaintext.to_vec();
            padded.push(0x80);
            let envelope = alice.send_plaintext(&bob, &padded, 100);
            assert_eq!(envelope.kind, EnvelopeKind::PrekeyMessage);
            let handled = bob.receive(&envelope);
            assert!(handled.used_prekey);
            assert!(
                matches!(&handled.events[..], [Event::Unsupported { reason: r, .. }] if r.contains(reason)),
                "{:?}",
                handled.events
            );
            // The ratchet step and the one-time prekeys were committed.
            let left = u32::try_from(1 - n).unwrap();
            assert_eq!(
                protocol::local_key_counts(&bob.store.conn).unwrap(),
                (left, left)
            );
            // A replay under a new id is recognized as one.
            let mut replay = envelope.clone();
            replay.id = Uuid::new_v4();
            assert!(bob.receive(&replay).events.is_empty());
            // The next message on the session decrypts.
            let next = alice.send(&bob, text("still there?"), 200 + n as u64);
            assert!(
                matches!(&bob.receive(&next).events[..], [Event::Message { .. }]),
                "case {n}"
            );
            if n == 0 {
                // A new session for the next case.
                alice.store.drop_devices(bob.me.account, &[1]).unwrap();
            }
        }
        // A known type with bad fields is garbage, still committed.
        let mut padded = br#"{"version":1,"sent_at":1,"body":{"type":"text"}}"#.to_vec();
        padded.push(0x80);
        let envelope = alice.send_plaintext(&bob, &padded, 300);
        assert!(matches!(
            &bob.receive(&envelope).events[..],
            [Event::Undecryptable { .. }]
        ));
    }

    #[test]
    fn prekey_messages_from_bundles_older_than_a_rotation_still_decrypt() {
        use crate::keys::{ROTATION_INTERVAL_MS, SUPERSEDED_GRACE_MS, confirm_upload, rotate};

        let mut alice = device("alice", AccountId::random(), 1);
        let mut carol = device("carol", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        // The hub ran out of one-time Kyber keys: bundles carry the
        // last-resort one, so both rotated keys are exercised.
        let last_resort = bob.keys.last_resort_kyber_pre_key.clone().unwrap();
        bob.keys.kyber_pre_keys = vec![last_resort.clone(), last_resort];
        // Alice fetches bob's bundle before he rotates...
        let early = alice
            .store
            .encrypt_for(bob.me.account, &[1], b"x", 50, &mut OsRng);
        assert_eq!(early.unwrap().need_bundles, vec![1]);
        alice
            .store
            .process_bundles(&bob.bundles(), None, false, 50, &mut OsRng)
            .unwrap();

        // ... bob rotates two days later and the hub takes the new keys ...
        let identity = bob.store.local_identity().unwrap().unwrap();
        let rotated_at = 1 + ROTATION_INTERVAL_MS;
        let upload = rotate(&bob.store.conn, &identity, rotated_at, &mut OsRng).unwrap();
        let new_signed = upload.signed_pre_key.as_ref().unwrap().key_id;
        assert_ne!(new_signed, bob.keys.signed_pre_key.as_ref().unwrap().key_id);
        assert!(upload.last_resort_kyber_pre_key.is_some());
        confirm_upload(&bob.store.conn, &upload).unwrap();

        // ... and alice's PreKey message, built on the old keys, decrypts.
        let late = alice.send(&bob, text("built on old keys"), rotated_at + 10);
        assert_eq!(late.kind, EnvelopeKind::PrekeyMessage);
        let handled = bob.receive(&late);
        assert!(
            matches!(&handled.events[..], [Event::Message { body, .. }] if *body == text("built on old keys")),
            "{:?}",
            handled.events
        );

        // After the grace period the old keys are gone: a message built on
        // them no longer decrypts.
        let pruned_at = rotated_at + SUPERSEDED_GRACE_MS;
        let upload = rotate(&bob.store.conn, &identity, pruned_at, &mut OsRng).unwrap();
        confirm_upload(&bob.store.conn, &upload).unwrap();
        rotate(&bob.store.conn, &identity, pruned_at, &mut OsRng).unwrap();
        let too_late = carol.send(&bob, text("too late"), pruned_at + 10);
        let handled = bob.receive(&too_late);
        assert!(
            matches!(&handled.events[..], [Event::Undecryptable { .. }]),
            "{:?}",
            handled.events
        );
    }

    #[test]
    fn garbage_is_reported_and_not_retried() {
        let mut alice = device("alice", AccountId::random(), 1);
        let mut bob = device("bob", AccountId::random(), 1);
        let mut envelope = alice.send(&bob, text("x"), 100);
        let mut bytes = envelope.content.take().unwrap().into_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        envelope.content = Some(Base64Bytes(bytes));
        let handled = bob.receive(&envelope);
        assert!(matches!(&handled.events[..], [Event::Undecryptable { .. }]));
        assert!(bob.store.is_processed(envelope.id).unwrap());
        assert!(bob.receive(&envelope).events.is_empty());
        // The failed decrypt left no session behind; alice's next PreKey
        // message still works.
        let ok = alice.send(&bob, text("y"), 200);
        assert_eq!(bob.receive(&ok).events.len(), 1);
    }

    #[test]
    fn transcripts_go_to_own_devices_only() {
        let account = AccountId::random();
        let mut phone = device("alice", account, 1);
        let mut laptop = device("alice", account, 2);
        let bob = device("bob", AccountId::random(), 1);
        // Linked devices share the identity: copy the phone's.
        let identity = phone.store.local_identity().unwrap().unwrap();
        laptop
            .store
            .conn
            .execute(
                "UPDATE local_device SET identity_key_pair = ?1",
                [identity.pair.serialize().as_slice()],
            )
            .unwrap();
        laptop.keys = keys::generate(
            &laptop.store.conn,
            &laptop.store.local_identity().unwrap().unwrap(),
            KeyRequest {
                pre_keys: 2,
                kyber_pre_keys: 2,
                ..KeyRequest::new_device()
            },
            1,
            &mut OsRng,
        )
        .unwrap();
        let transcript = Body::SentTranscript {
            destination: bob.me.address.clone(),
            destination_account: bob.me.account,
            body: Box::new(text("to bob")),
        };
        let envelope = phone.send(&laptop, transcript.clone(), 100);
        let handled = laptop.receive(&envelope);
        match &handled.events[..] {
            [
                Event::SentTranscript {
                    device, to, body, ..
                },
            ] => {
                assert_eq!(*device, DeviceId::PRIMARY);
                assert_eq!(to, &bob.me.address);
                assert_eq!(body, &text("to bob"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(laptop.store.own_devices().unwrap(), vec![DeviceId::PRIMARY]);
        let history = history::history(&laptop.store.conn, bob.me.account).unwrap();
        assert_eq!(history[0].direction, MessageDirection::Outgoing);
        // A transcript from someone else is ignored.
        let mut mallory = device("mallory", AccountId::random(), 1);
        let forged = mallory.send(&laptop, transcript, 200);
        assert!(laptop.receive(&forged).events.is_empty());
    }

    #[test]
    fn notices_mark_messages_expired() {
        let mut alice = device("alice", AccountId::random(), 1);
        let bob = device("bob", AccountId::random(), 1);
        history::upsert_contact(&alice.store.conn, bob.me.account, &bob.me.address, 1).unwrap();
        let me = alice.me.clone();
        alice
            .store
            .record_sent(&me, bob.me.account, &Content::new(50, text("late")), 51)
            .unwrap();
        let notice = Envelope {
            id: Uuid::new_v4(),
            kind: EnvelopeKind::ServerNotice,
            source: None,
            destination_device: DeviceId::PRIMARY,
            client_timestamp: 0,
            server_timestamp: 99,
            content: None,
            notice: Some(ServerNotice::Expired {
                recipient: bob.me.address.clone(),
                recipient_device: DeviceId::PRIMARY,
                envelope_id: Uuid::new_v4(),
                client_timestamp: 50,
            }),
        };
        let handled = alice.receive(&notice);
        assert!(matches!(
            &handled.events[..],
            [Event::Expired { sent_at: 50, .. }]
        ));
        assert_eq!(
            history::history(&alice.store.conn, bob.me.account).unwrap()[0].state,
            crate::types::DeliveryState::Expired
        );
    }

    impl LocalStore {
        fn conversations_for_test(&self) -> Vec<Address> {
            history::conversations(&self.conn)
                .unwrap()
                .into_iter()
                .map(|c| c.address)
                .collect()
        }
    }
}
