//! What travels inside the encryption. The hub never sees it.
//!
//! A [`Content`] is JSON, padded before encryption so that ciphertext
//! lengths tell little: the JSON, then one `0x80` byte, then zero bytes up
//! to a multiple of [`PADDING_BLOCK`]. Every content carries its format
//! version; a receiver refuses versions it does not know rather than
//! guessing.
//!
//! Messages are named as Signal clients name them: by author and the
//! author's timestamp ([`MessageRef`]).

use serde::{Deserialize, Serialize};

use crate::address::{AccountId, Address};

/// The content format this crate writes.
pub const CONTENT_VERSION: u32 = 1;
/// Plaintext is padded to a multiple of this many bytes.
pub const PADDING_BLOCK: usize = 160;

/// Why a decrypted content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The padding is not `0x80` followed by zeros.
    #[error("bad padding")]
    BadPadding,
    /// The JSON does not decode as content.
    #[error("invalid content: {0}")]
    Invalid(String),
    /// The content's version is newer than this client knows.
    #[error("unsupported content version {0}")]
    UnsupportedVersion(u32),
}

/// Names a message: its author and the author's timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageRef {
    /// The author's account.
    pub author: AccountId,
    /// The author's timestamp, in milliseconds since the Unix epoch.
    pub sent_at: u64,
}

/// What a message says or does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Body {
    /// A text message.
    Text {
        /// The text.
        text: String,
    },
    /// A text message that answers another.
    Reply {
        /// The text.
        text: String,
        /// The message it answers.
        quote: MessageRef,
    },
    /// An emoji reaction to a message, or its removal.
    Reaction {
        /// The message reacted to.
        target: MessageRef,
        /// The emoji.
        emoji: String,
        /// Whether this takes the reaction back.
        #[serde(default)]
        remove: bool,
    },
    /// A new text for an earlier message of the same author.
    Edit {
        /// The message edited.
        target: MessageRef,
        /// Its new text.
        text: String,
    },
    /// Deletes an earlier message of the same author for everyone.
    Delete {
        /// The message deleted.
        target: MessageRef,
    },
    /// The recipient's device received these messages.
    DeliveryReceipt {
        /// The author's timestamps of the messages.
        sent_at: Vec<u64>,
    },
    /// The recipient read these messages.
    ReadReceipt {
        /// The author's timestamps of the messages.
        sent_at: Vec<u64>,
    },
    /// The sender started or stopped typing. Sent online-only: the hub
    /// never stores it.
    Typing {
        /// Whether typing started.
        started: bool,
    },
    /// A copy, for the sender's other devices, of what it sent to someone.
    SentTranscript {
        /// Who the original went to.
        destination: Address,
        /// The destination's account.
        destination_account: AccountId,
        /// What was sent.
        body: Box<Body>,
    },
}

/// One decrypted message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Content {
    /// The content format version.
    pub version: u32,
    /// The author's timestamp, in milliseconds since the Unix epoch; with the
    /// author it names the message.
    pub sent_at: u64,
    /// What it says.
    pub body: Body,
}

impl Content {
    /// A content of the current version.
    pub fn new(sent_at: u64, body: Body) -> Self {
        Self {
            version: CONTENT_VERSION,
            sent_at,
            body,
        }
    }

    /// The padded plaintext to encrypt.
    pub fn to_padded(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(0x80);
        let padded = out.len().div_ceil(PADDING_BLOCK) * PADDING_BLOCK;
        out.resize(padded, 0);
        out
    }

    /// Decodes a decrypted plaintext.
    pub fn from_padded(plaintext: &[u8]) -> Result<Self, ContentError> {
        let end = plaintext
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(ContentError::BadPadding)?;
        if plaintext[end] != 0x80 {
            return Err(ContentError::BadPadding);
        }
        let json = &plaintext[..end];
        let probe: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| ContentError::Invalid(e.to_string()))?;
        let version = probe
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ContentError::Invalid("missing version".into()))?;
        if version > u64::from(CONTENT_VERSION) {
            return Err(ContentError::UnsupportedVersion(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        serde_json::from_value(probe).map_err(|e| ContentError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padding_round_trip() {
        let content = Content::new(
            1,
            Body::Text {
                text: "hello".into(),
            },
        );
        let padded = content.to_padded();
        assert_eq!(padded.len() % PADDING_BLOCK, 0);
        assert_eq!(Content::from_padded(&padded), Ok(content));
        assert_eq!(
            Content::from_padded(&[0; 160]),
            Err(ContentError::BadPadding)
        );
        assert_eq!(
            Content::from_padded(b"{}\x81"),
            Err(ContentError::BadPadding)
        );
        let future = br#"{"version":9,"sent_at":1,"body":{"type":"text","text":"x"}}"#;
        let mut future = future.to_vec();
        future.push(0x80);
        assert_eq!(
            Content::from_padded(&future),
            Err(ContentError::UnsupportedVersion(9))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_plaintext_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Content::from_padded(&bytes);
        }

        #[test]
        fn texts_round_trip(text in ".*", sent_at in any::<u64>()) {
            let content = Content::new(sent_at, Body::Text { text });
            prop_assert_eq!(Content::from_padded(&content.to_padded()), Ok(content));
        }
    }
}
