//! What the SDK hands to apps: events, history entries, conversations,
//! safety numbers.

use std::fmt;

use passerelle_proto::content::{Body, MessageRef};
use passerelle_proto::{AccountId, Address, AppId, DeviceId, Handle};
use uuid::Uuid;

/// Something that happened, as the receive loop reports it. Events are
/// emitted once the state behind them is committed to the local store.
///
/// Its `Debug` output names bodies by type and length only: no message
/// text.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message from someone: text, reply, reaction, edit or delete.
    Message {
        /// The sender's address.
        from: Address,
        /// The sender's account.
        from_account: AccountId,
        /// The sending device.
        from_device: DeviceId,
        /// The sender's timestamp: with the sender, it names the message.
        sent_at: u64,
        /// When the hub accepted it.
        server_timestamp: u64,
        /// What it says.
        body: Body,
    },
    /// A delivery or read receipt for messages this account sent.
    Receipt {
        /// Who sent the receipt.
        from: Address,
        /// Delivered or read.
        kind: ReceiptKind,
        /// The timestamps of the messages it is about.
        sent_at: Vec<u64>,
    },
    /// Someone started or stopped typing.
    Typing {
        /// Who.
        from: Address,
        /// Whether typing started.
        started: bool,
    },
    /// Another device of this account sent something.
    SentTranscript {
        /// The device that sent it.
        device: DeviceId,
        /// Who it went to.
        to: Address,
        /// Their account.
        to_account: AccountId,
        /// The sender's timestamp of the original.
        sent_at: u64,
        /// What was sent.
        body: Body,
    },
    /// A message this device sent expired on the hub before the recipient's
    /// device fetched it.
    Expired {
        /// The recipient.
        recipient: Address,
        /// The recipient's device that missed it.
        recipient_device: DeviceId,
        /// The expired envelope.
        envelope_id: Uuid,
        /// The timestamp of the message (see [`HistoryEntry::sent_at`]).
        sent_at: u64,
    },
    /// A peer's identity key changed (they reinstalled, or someone is
    /// intercepting): its verified flag was cleared. Compare safety numbers
    /// again.
    IdentityChanged {
        /// The account.
        account: AccountId,
        /// Its address, when known.
        address: Option<Address>,
    },
    /// An envelope that could not be decrypted or read; it was dropped.
    Undecryptable {
        /// The sender.
        from: Address,
        /// The sending device.
        from_device: DeviceId,
        /// The envelope.
        envelope_id: Uuid,
        /// Why, with nothing secret in it.
        reason: String,
    },
    /// A message that decrypted but is of a newer format (content version or
    /// body type) than this SDK reads; it was dropped. The session goes on.
    Unsupported {
        /// The sender.
        from: Address,
        /// The sending device.
        from_device: DeviceId,
        /// The envelope.
        envelope_id: Uuid,
        /// What is not supported, with nothing secret in it.
        reason: String,
    },
    /// Every envelope queued while this device was offline has been
    /// processed (only from [`Listener`](crate::Listener)s).
    QueueEmpty,
}

/// Delivered or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// The recipient's device received the messages.
    Delivery,
    /// The recipient read them.
    Read,
}

/// Who wrote a history entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageDirection {
    /// The peer wrote it.
    Incoming,
    /// This account wrote it (on this device or another one).
    Outgoing,
}

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Outgoing: the hub stored it for every recipient device.
    Sent,
    /// Outgoing: a recipient device received it.
    Delivered,
    /// Outgoing: the recipient read it; incoming: this account read it.
    Read,
    /// Outgoing: it expired on the hub before a recipient device fetched it.
    Expired,
    /// Incoming: received, not yet read.
    Received,
}

impl DeliveryState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Expired => "expired",
            Self::Received => "received",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "expired" => Self::Expired,
            "received" => Self::Received,
            _ => return None,
        })
    }
}

/// One message of a conversation's history. Its `Debug` output names the
/// body by type and length only.
#[derive(Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Who wrote it.
    pub direction: MessageDirection,
    /// The author's account.
    pub author: AccountId,
    /// The author's device.
    pub author_device: DeviceId,
    /// The author's timestamp, in milliseconds since the Unix epoch.
    pub sent_at: u64,
    /// When the hub accepted it, when known.
    pub server_timestamp: Option<u64>,
    /// What it says (its latest edit); `None` once deleted for everyone.
    pub body: Option<Body>,
    /// Its delivery or read state.
    pub state: DeliveryState,
    /// When it was last edited (the edit's timestamp).
    pub edited_at: Option<u64>,
    /// Reactions: (reactor's account, emoji).
    pub reactions: Vec<(AccountId, String)>,
}

impl HistoryEntry {
    /// The name other messages use for this one (quotes, reactions, edits).
    pub fn message_ref(&self) -> MessageRef {
        MessageRef {
            author: self.author,
            sent_at: self.sent_at,
        }
    }
}

/// A body for `Debug`: its type and the length of its text, never the text.
struct Redacted<'a>(&'a Body);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Body::Text { text } => write!(f, "Text({} bytes)", text.len()),
            Body::Reply { text, .. } => write!(f, "Reply({} bytes)", text.len()),
            Body::Reaction { remove, .. } => write!(f, "Reaction {{ remove: {remove} }}"),
            Body::Edit { text, .. } => write!(f, "Edit({} bytes)", text.len()),
            Body::Delete { .. } => f.write_str("Delete"),
            Body::DeliveryReceipt { sent_at } => write!(f, "DeliveryReceipt({})", sent_at.len()),
            Body::ReadReceipt { sent_at } => write!(f, "ReadReceipt({})", sent_at.len()),
            Body::Typing { started } => write!(f, "Typing({started})"),
            Body::SentTranscript { body, .. } => write!(f, "SentTranscript({:?})", Redacted(body)),
            _ => f.write_str(".."),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message {
                from,
                from_account,
                from_device,
                sent_at,
                server_timestamp,
                body,
            } => f
                .debug_struct("Message")
                .field("from", from)
                .field("from_account", from_account)
                .field("from_device", from_device)
                .field("sent_at", sent_at)
                .field("server_timestamp", server_timestamp)
                .field("body", &Redacted(body))
                .finish(),
            Self::Receipt {
                from,
                kind,
                sent_at,
            } => f
                .debug_struct("Receipt")
                .field("from", from)
                .field("kind", kind)
                .field("sent_at", sent_at)
                .finish(),
            Self::Typing { from, started } => f
                .debug_struct("Typing")
                .field("from", from)
                .field("started", started)
                .finish(),
            Self::SentTranscript {
                device,
                to,
                to_account,
                sent_at,
                body,
            } => f
                .debug_struct("SentTranscript")
                .field("device", device)
                .field("to", to)
                .field("to_account", to_account)
                .field("sent_at", sent_at)
                .field("body", &Redacted(body))
                .finish(),
            Self::Expired {
                recipient,
                recipient_device,
                envelope_id,
                sent_at,
            } => f
                .debug_struct("Expired")
                .field("recipient", recipient)
                .field("recipient_device", recipient_device)
                .field("envelope_id", envelope_id)
                .field("sent_at", sent_at)
                .finish(),
            Self::IdentityChanged { account, address } => f
                .debug_struct("IdentityChanged")
                .field("account", account)
                .field("address", address)
                .finish(),
            Self::Undecryptable {
                from,
                from_device,
                envelope_id,
                reason,
            } => f
                .debug_struct("Undecryptable")
                .field("from", from)
                .field("from_device", from_device)
                .field("envelope_id", envelope_id)
                .field("reason", reason)
                .finish(),
            Self::Unsupported {
                from,
                from_device,
                envelope_id,
                reason,
            } => f
                .debug_struct("Unsupported")
                .field("from", from)
                .field("from_device", from_device)
                .field("envelope_id", envelope_id)
                .field("reason", reason)
                .finish(),
            Self::QueueEmpty => f.write_str("QueueEmpty"),
        }
    }
}

impl fmt::Debug for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryEntry")
            .field("direction", &self.direction)
            .field("author", &self.author)
            .field("author_device", &self.author_device)
            .field("sent_at", &self.sent_at)
            .field("server_timestamp", &self.server_timestamp)
            .field("body", &self.body.as_ref().map(Redacted))
            .field("state", &self.state)
            .field("edited_at", &self.edited_at)
            .field("reactions", &self.reactions.len())
            .finish()
    }
}

/// A contact this device knows, with what the app shows about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The peer's account.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
    /// Its app.
    pub app: AppId,
    /// Its handle.
    pub handle: Handle,
    /// Whether the user verified its safety number (cleared when its
    /// identity key changes).
    pub verified: bool,
    /// The timestamp of the newest message, if any.
    pub last_message_at: Option<u64>,
}

/// The safety number of a conversation, in its two forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 digits in 12 groups of 5, the same on both sides.
    pub displayable: String,
    /// The bytes to show as a QR code (libsignal's `CombinedFingerprints`).
    pub scannable: Vec<u8>,
}

/// A message the hub accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// Its timestamp: with this account, it names the message.
    pub sent_at: u64,
    /// When the hub accepted it.
    pub server_timestamp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_message_text() {
        let secret = "the eagle lands at dawn";
        let from: Address = "alice@parley".parse().unwrap();
        let text = Body::Text {
            text: secret.into(),
        };
        let events = [
            Event::Message {
                from: from.clone(),
                from_account: AccountId::random(),
                from_device: DeviceId::PRIMARY,
                sent_at: 1,
                server_timestamp: 2,
                body: text.clone(),
            },
            Event::SentTranscript {
                device: DeviceId::PRIMARY,
                to: from,
                to_account: AccountId::random(),
                sent_at: 1,
                body: Body::SentTranscript {
                    destination: "bob@parley".parse().unwrap(),
                    destination_account: AccountId::random(),
                    body: Box::new(Body::Reply {
                        text: secret.into(),
                        quote: MessageRef {
                            author: AccountId::random(),
                            sent_at: 1,
                        },
                    }),
                },
            },
        ];
        for event in &events {
            let debug = format!("{event:?}");
            assert!(!debug.contains("eagle"), "{debug}");
            assert!(debug.contains("23 bytes"), "{debug}");
        }
        let entry = HistoryEntry {
            direction: MessageDirection::Incoming,
            author: AccountId::random(),
            author_device: DeviceId::PRIMARY,
            sent_at: 1,
            server_timestamp: None,
            body: Some(Body::Edit {
                target: MessageRef {
                    author: AccountId::random(),
                    sent_at: 1,
                },
                text: secret.into(),
            }),
            state: DeliveryState::Received,
            edited_at: None,
            reactions: vec![(AccountId::random(), "🤫".into())],
        };
        let debug = format!("{entry:?}");
        assert!(!debug.contains("eagle") && !debug.contains('🤫'), "{debug}");
    }
}
