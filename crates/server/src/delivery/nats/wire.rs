//! What nodes say to each other on the bus: subjects and payloads.
//!
//! Subjects (every token is plain ASCII without `.`, `*`, `>` or spaces):
//!
//! | subject | who listens | what goes there |
//! | --- | --- | --- |
//! | `passerelle.device.<account>.<device>` | the node(s) holding the device's connection | wakes, claims, removals, ephemeral pushes |
//! | `passerelle.nodes` | every node | "wake every connection" after a node lost wakes |
//!
//! `<account>` is the account id, hyphenated; `<device>` the device id in
//! decimal.
//!
//! A payload is a version byte (1), a kind byte, then the kind's body:
//!
//! | kind | body | meaning |
//! | --- | --- | --- |
//! | `W` | none | envelopes were queued for the device |
//! | `R` | none | the device was removed: close its connection |
//! | `C` | stamp, node, conn: three u64, big-endian (24 bytes) | a connection of the device registered with this [`Generation`]: close any that ranks below |
//! | `E` | the envelope, JSON | an ephemeral envelope; sent as a request, answered `1` (taken) or `0` |
//! | `A` | none | (on `passerelle.nodes`) wake every connection |

use passerelle_proto::{AccountId, DeviceId, Envelope};

use crate::delivery::Generation;

/// The version of the payloads this node writes and reads.
pub const VERSION: u8 = 1;
/// The largest ephemeral envelope body this node accepts from the bus.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// The prefix of every subject.
const ROOT: &str = "passerelle";

/// The subject of one device.
pub fn device_subject(account: AccountId, device: DeviceId) -> String {
    format!("{ROOT}.device.{account}.{device}")
}

/// The subject every node listens on.
pub fn nodes_subject() -> String {
    format!("{ROOT}.nodes")
}

/// The reply to an ephemeral push.
pub const TAKEN: &[u8] = b"1";
/// The reply to an ephemeral push no connection took.
pub const NOT_TAKEN: &[u8] = b"0";

/// One message between nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum BusMessage {
    /// Envelopes were queued for the device.
    Wake,
    /// The device was removed.
    Removed,
    /// A connection of the device registered with this rank.
    Claim(Generation),
    /// An ephemeral envelope for the device.
    Ephemeral(Box<Envelope>),
    /// Wake every connection (on the nodes subject).
    WakeAll,
}

/// Why a payload from the bus was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The payload is empty or has no kind byte.
    #[error("bus message too short")]
    TooShort,
    /// Written by a node of another version.
    #[error("bus message of version {0}, this node reads version {VERSION}")]
    Version(u8),
    /// A kind this node does not know.
    #[error("bus message of unknown kind {0:#04x}")]
    UnknownKind(u8),
    /// The body does not have the kind's length.
    #[error("bus message of kind {kind} has a body of {len} bytes")]
    BadLength {
        /// The kind, as a character.
        kind: char,
        /// The body's length.
        len: usize,
    },
    /// The envelope of an ephemeral push does not parse.
    #[error("bus message carries a bad envelope: {0}")]
    Envelope(String),
}

impl BusMessage {
    /// The payload.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = vec![VERSION];
        match self {
            Self::Wake => out.push(b'W'),
            Self::Removed => out.push(b'R'),
            Self::WakeAll => out.push(b'A'),
            Self::Claim(g) => {
                out.push(b'C');
                out.extend_from_slice(&g.stamp.to_be_bytes());
                out.extend_from_slice(&g.node.to_be_bytes());
                out.extend_from_slice(&g.conn.to_be_bytes());
            }
            Self::Ephemeral(envelope) => {
                out.push(b'E');
                serde_json::to_writer(&mut out, envelope)?;
            }
        }
        Ok(out)
    }

    /// Reads a payload; the version first, then the kind, then a body of
    /// exactly the kind's length.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&version, rest) = bytes.split_first().ok_or(WireError::TooShort)?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let (&kind, body) = rest.split_first().ok_or(WireError::TooShort)?;
        let bad_length = || WireError::BadLength {
            kind: char::from(kind),
            len: body.len(),
        };
        match kind {
            b'W' | b'R' | b'A' if !body.is_empty() => Err(bad_length()),
            b'W' => Ok(Self::Wake),
            b'R' => Ok(Self::Removed),
            b'A' => Ok(Self::WakeAll),
            b'C' => {
                let words: [u8; 24] = body.try_into().map_err(|_| bad_length())?;
                let word = |i: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&words[i * 8..i * 8 + 8]);
                    u64::from_be_bytes(w)
                };
                Ok(Self::Claim(Generation {
                    stamp: word(0),
                    node: word(1),
                    conn: word(2),
                }))
            }
            b'E' if body.len() > MAX_ENVELOPE_BYTES => Err(bad_length()),
            b'E' => serde_json::from_slice(body)
                .map(|e| Self::Ephemeral(Box::new(e)))
                .map_err(|e| WireError::Envelope(e.to_string())),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_proto::EnvelopeKind;
    use rand::{Rng as _, SeedableRng as _};

    fn envelope() -> Envelope {
        Envelope {
            id: uuid::Uuid::new_v4(),
            kind: EnvelopeKind::Message,
            source: None,
            destination_device: DeviceId::PRIMARY,
            client_timestamp: 1,
            server_timestamp: 2,
            content: Some(vec![1, 2, 3].into()),
            notice: None,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let claim = Generation {
            stamp: 1_700_000_000_000,
            node: u64::MAX,
            conn: 7,
        };
        for message in [
            BusMessage::Wake,
            BusMessage::Removed,
            BusMessage::WakeAll,
            BusMessage::Claim(claim),
            BusMessage::Ephemeral(Box::new(envelope())),
        ] {
            let bytes = message.encode().unwrap();
            assert_eq!(bytes[0], VERSION);
            assert_eq!(BusMessage::decode(&bytes).unwrap(), message);
        }
    }

    #[test]
    fn bad_payloads_have_their_own_errors() {
        assert_eq!(BusMessage::decode(b""), Err(WireError::TooShort));
        assert_eq!(BusMessage::decode(&[VERSION]), Err(WireError::TooShort));
        assert_eq!(BusMessage::decode(&[2, b'W']), Err(WireError::Version(2)));
        assert_eq!(
            BusMessage::decode(&[VERSION, b'Z']),
            Err(WireError::UnknownKind(b'Z'))
        );
        assert_eq!(
            BusMessage::decode(&[VERSION, b'W', 0]),
            Err(WireError::BadLength { kind: 'W', len: 1 })
        );
        assert_eq!(
            BusMessage::decode(&[VERSION, b'C', 0, 0]),
            Err(WireError::BadLength { kind: 'C', len: 2 })
        );
        assert!(matches!(
            BusMessage::decode(&[VERSION, b'E', b'{']),
            Err(WireError::Envelope(_))
        ));
    }

    /// Random and mutated payloads are refused or read, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seeds: Vec<Vec<u8>> = [
            BusMessage::Claim(Generation {
                stamp: 1,
                node: 2,
                conn: 3,
            }),
            BusMessage::Ephemeral(Box::new(envelope())),
        ]
        .iter()
        .map(|m| m.encode().unwrap())
        .collect();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let len = rng.gen_range(0..64);
                (0..len).map(|_| rng.r#gen()).collect::<Vec<u8>>()
            } else {
                seeds[round % seeds.len()].clone()
            };
            if !bytes.is_empty() {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = rng.r#gen();
                if round % 3 == 0 {
                    bytes.truncate(at);
                }
            }
            let _ = BusMessage::decode(&bytes);
        }
    }

    #[test]
    fn subjects_are_plain_tokens() {
        let account = AccountId::random();
        let subject = device_subject(account, DeviceId::PRIMARY);
        assert_eq!(subject, format!("passerelle.device.{account}.1"));
        assert!(!subject.contains(['*', '>', ' ']));
        assert_eq!(subject.split('.').count(), 4);
    }
}
