//! What the SDK hands to apps: events, history entries, conversations,
//! safety numbers.

use passerelle_proto::content::{Body, MessageRef};
use passerelle_proto::{AccountId, Address, AppId, DeviceId, Handle};
use uuid::Uuid;

/// Something that happened, as the receive loop reports it. Events are
/// emitted once the state behind them is committed to the local store.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One message of a conversation's history.
#[derive(Clone, Debug, PartialEq, Eq)]
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
