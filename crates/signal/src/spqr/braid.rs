//! The braid: the state machine that exchanges one ML-KEM key and one
//! ciphertext per epoch, a chunk per message, and yields each epoch's
//! secret.
//!
//! The two parties take turns: in odd epochs the PQXDH initiator sends the
//! key (the "send_ek" side) and the responder the ciphertext ("send_ct");
//! after each epoch they swap. The send_ek side walks
//! `KeysUnsampled → KeysSampled → HeaderSent → Ct1Received →
//! EkSentCt1Received`, then becomes the send_ct side of the next epoch;
//! the send_ct side walks `NoHeaderReceived → HeaderReceived → Ct1Sampled →
//! (EkReceivedCt1Sampled | Ct1Acknowledged) → Ct2Sampled`, then becomes the
//! send_ek side of the next epoch once it sees a message of that epoch.
//!
//! The header (the key's first 64 bytes) is MACed, so the ciphertext side
//! can encapsulate before the rest of the key arrives; the rest must match
//! the header. The ciphertext is MACed under a key that already mixes in
//! the new secret, which both confirms the secret and authenticates the
//! ciphertext.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::Error;
use super::auth::{Authenticator, MAC_LEN};
use super::erasure::{Decoder, Encoder};
use super::kdf::{ZERO_SALT, hkdf};
use super::kem::{self, CT1_LEN, CT2_LEN, EK_LEN, HEADER_LEN};
use super::wire::Payload;

const SCKA_KEY_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:SCKA Key";

/// Bytes of the header message: the header and its MAC.
pub(crate) const HEADER_MSG_LEN: usize = HEADER_LEN + MAC_LEN;
/// Bytes of the second ciphertext message: the part and the MAC.
pub(crate) const CT2_MSG_LEN: usize = CT2_LEN + MAC_LEN;

/// An epoch's shared secret, to start that epoch's key chains.
pub(crate) struct EpochSecret {
    pub(crate) epoch: u64,
    pub(crate) secret: Zeroizing<[u8; 32]>,
}

/// Where one party is in the current epoch. Field names follow the
/// protocol: `dk`/`ek` the KEM key halves, `es` the encapsulation state,
/// `hdr` the key header.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Braid {
    KeysUnsampled {
        epoch: u64,
        auth: Authenticator,
    },
    KeysSampled {
        epoch: u64,
        auth: Authenticator,
        ek: Vec<u8>,
        dk: Zeroizing<Vec<u8>>,
        sending_hdr: Encoder,
    },
    HeaderSent {
        epoch: u64,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        sending_ek: Encoder,
        receiving_ct1: Decoder,
    },
    Ct1Received {
        epoch: u64,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        sending_ek: Encoder,
    },
    EkSentCt1Received {
        epoch: u64,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        receiving_ct2: Decoder,
    },
    NoHeaderReceived {
        epoch: u64,
        auth: Authenticator,
        receiving_hdr: Decoder,
    },
    HeaderReceived {
        epoch: u64,
        auth: Authenticator,
        hdr: Vec<u8>,
        receiving_ek: Decoder,
    },
    Ct1Sampled {
        epoch: u64,
        auth: Authenticator,
        hdr: Vec<u8>,
        es: Zeroizing<Vec<u8>>,
        sending_ct1: Encoder,
        receiving_ek: Decoder,
    },
    EkReceivedCt1Sampled {
        epoch: u64,
        auth: Authenticator,
        es: Zeroizing<Vec<u8>>,
        ek: Vec<u8>,
        sending_ct1: Encoder,
    },
    Ct1Acknowledged {
        epoch: u64,
        auth: Authenticator,
        hdr: Vec<u8>,
        es: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        receiving_ek: Decoder,
    },
    Ct2Sampled {
        epoch: u64,
        auth: Authenticator,
        sending_ct2: Encoder,
    },
}

/// The epoch key both sides derive from the KEM's shared secret.
fn epoch_key(shared: &[u8], epoch: u64) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf(
        &ZERO_SALT,
        shared,
        &[SCKA_KEY_INFO, &epoch.to_be_bytes()],
        &mut key[..],
    );
    key
}

/// Finishes the ciphertext and MACs it: the last step of the send_ct side.
fn sample_ct2(
    epoch: u64,
    auth: Authenticator,
    es: &[u8],
    ek: &[u8],
    ct1: &[u8],
) -> Result<Braid, Error> {
    let ct2 = kem::encapsulate2(es, ek).ok_or(Error::MalformedState("encapsulation state"))?;
    let mut whole = ct1.to_vec();
    whole.extend_from_slice(&ct2);
    let mac = auth.mac_ciphertext(epoch, &whole);
    let mut msg = ct2;
    msg.extend_from_slice(&mac);
    Ok(Braid::Ct2Sampled {
        epoch,
        auth,
        sending_ct2: Encoder::new(msg),
    })
}

impl Braid {
    /// The initiator's start: it sends the first key.
    pub(crate) fn new_send_ek(auth_key: &[u8]) -> Self {
        Braid::KeysUnsampled {
            epoch: 1,
            auth: Authenticator::new(auth_key, 1),
        }
    }

    /// The responder's start: it waits for the first header.
    pub(crate) fn new_send_ct(auth_key: &[u8]) -> Self {
        Braid::NoHeaderReceived {
            epoch: 1,
            auth: Authenticator::new(auth_key, 1),
            receiving_hdr: Decoder::new(HEADER_MSG_LEN),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        match self {
            Braid::KeysUnsampled { epoch, .. }
            | Braid::KeysSampled { epoch, .. }
            | Braid::HeaderSent { epoch, .. }
            | Braid::Ct1Received { epoch, .. }
            | Braid::EkSentCt1Received { epoch, .. }
            | Braid::NoHeaderReceived { epoch, .. }
            | Braid::HeaderReceived { epoch, .. }
            | Braid::Ct1Sampled { epoch, .. }
            | Braid::EkReceivedCt1Sampled { epoch, .. }
            | Braid::Ct1Acknowledged { epoch, .. }
            | Braid::Ct2Sampled { epoch, .. } => *epoch,
        }
    }

    /// What the next outgoing message carries, the state after it, and the
    /// epoch secret if sending completes one. The message's epoch is the
    /// epoch before the call.
    pub(crate) fn send(
        self,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, Payload, Option<EpochSecret>), Error> {
        Ok(match self {
            Braid::KeysUnsampled { epoch, auth } => {
                let pair = kem::generate(rng);
                let mut msg = pair.header;
                let mac = auth.mac_header(epoch, &msg);
                msg.extend_from_slice(&mac);
                let mut sending_hdr = Encoder::new(msg);
                let chunk = sending_hdr.next_chunk();
                let next = Braid::KeysSampled {
                    epoch,
                    auth,
                    ek: pair.ek,
                    dk: pair.dk,
                    sending_hdr,
                };
                (next, Payload::Hdr(chunk), None)
            }
            Braid::KeysSampled {
                epoch,
                auth,
                ek,
                dk,
                mut sending_hdr,
            } => {
                let chunk = sending_hdr.next_chunk();
                let next = Braid::KeysSampled {
                    epoch,
                    auth,
                    ek,
                    dk,
                    sending_hdr,
                };
                (next, Payload::Hdr(chunk), None)
            }
            Braid::HeaderSent {
                epoch,
                auth,
                dk,
                mut sending_ek,
                receiving_ct1,
            } => {
                let chunk = sending_ek.next_chunk();
                let next = Braid::HeaderSent {
                    epoch,
                    auth,
                    dk,
                    sending_ek,
                    receiving_ct1,
                };
                (next, Payload::Ek(chunk), None)
            }
            Braid::Ct1Received {
                epoch,
                auth,
                dk,
                ct1,
                mut sending_ek,
            } => {
                let chunk = sending_ek.next_chunk();
                let next = Braid::Ct1Received {
                    epoch,
                    auth,
                    dk,
                    ct1,
                    sending_ek,
                };
                (next, Payload::EkCt1Ack(chunk), None)
            }
            state @ Braid::EkSentCt1Received { .. } => (state, Payload::Ct1Ack, None),
            state @ (Braid::NoHeaderReceived { .. } | Braid::Ct1Acknowledged { .. }) => {
                (state, Payload::None, None)
            }
            Braid::HeaderReceived {
                epoch,
                mut auth,
                hdr,
                receiving_ek,
            } => {
                let enc = kem::encapsulate1(&hdr, rng)
                    .ok_or(Error::MalformedState("key header length"))?;
                let secret = epoch_key(&enc.secret[..], epoch);
                auth.update(epoch, &secret[..]);
                let mut sending_ct1 = Encoder::new(enc.ct1);
                let chunk = sending_ct1.next_chunk();
                let next = Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es: enc.state,
                    sending_ct1,
                    receiving_ek,
                };
                (
                    next,
                    Payload::Ct1(chunk),
                    Some(EpochSecret { epoch, secret }),
                )
            }
            Braid::Ct1Sampled {
                epoch,
                auth,
                hdr,
                es,
                mut sending_ct1,
                receiving_ek,
            } => {
                let chunk = sending_ct1.next_chunk();
                let next = Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es,
                    sending_ct1,
                    receiving_ek,
                };
                (next, Payload::Ct1(chunk), None)
            }
            Braid::EkReceivedCt1Sampled {
                epoch,
                auth,
                es,
                ek,
                mut sending_ct1,
            } => {
                let chunk = sending_ct1.next_chunk();
                let next = Braid::EkReceivedCt1Sampled {
                    epoch,
                    auth,
                    es,
                    ek,
                    sending_ct1,
                };
                (next, Payload::Ct1(chunk), None)
            }
            Braid::Ct2Sampled {
                epoch,
                auth,
                mut sending_ct2,
            } => {
                let chunk = sending_ct2.next_chunk();
                let next = Braid::Ct2Sampled {
                    epoch,
                    auth,
                    sending_ct2,
                };
                (next, Payload::Ct2(chunk), None)
            }
        })
    }

    /// Takes in the braid part of an incoming message of epoch
    /// `msg_epoch`: the state after it, and the epoch secret if it
    /// completes one. Messages of past epochs change nothing.
    pub(crate) fn recv(
        self,
        msg_epoch: u64,
        payload: &Payload,
    ) -> Result<(Self, Option<EpochSecret>), Error> {
        let epoch = self.epoch();
        if msg_epoch < epoch {
            return Ok((self, None));
        }
        if msg_epoch > epoch {
            // Only the send_ct side, done with its epoch, may see the next
            // one begin: the peer has its ciphertext and now waits for a key.
            return match self {
                Braid::Ct2Sampled { epoch, auth, .. }
                    if epoch.checked_add(1) == Some(msg_epoch) =>
                {
                    Ok((
                        Braid::KeysUnsampled {
                            epoch: msg_epoch,
                            auth,
                        },
                        None,
                    ))
                }
                _ => Err(Error::EpochOutOfRange(msg_epoch)),
            };
        }
        Ok(match (self, payload) {
            (
                Braid::KeysSampled {
                    epoch,
                    auth,
                    ek,
                    dk,
                    ..
                },
                Payload::Ct1(chunk),
            ) => {
                let mut receiving_ct1 = Decoder::new(CT1_LEN);
                receiving_ct1.add(chunk);
                let next = Braid::HeaderSent {
                    epoch,
                    auth,
                    dk,
                    sending_ek: Encoder::new(ek),
                    receiving_ct1,
                };
                (next, None)
            }
            (
                Braid::HeaderSent {
                    epoch,
                    auth,
                    dk,
                    sending_ek,
                    mut receiving_ct1,
                },
                Payload::Ct1(chunk),
            ) => {
                receiving_ct1.add(chunk);
                let next = match receiving_ct1.decoded() {
                    Some(ct1) => Braid::Ct1Received {
                        epoch,
                        auth,
                        dk,
                        ct1,
                        sending_ek,
                    },
                    None => Braid::HeaderSent {
                        epoch,
                        auth,
                        dk,
                        sending_ek,
                        receiving_ct1,
                    },
                };
                (next, None)
            }
            (
                Braid::Ct1Received {
                    epoch,
                    auth,
                    dk,
                    ct1,
                    ..
                },
                Payload::Ct2(chunk),
            ) => {
                let mut receiving_ct2 = Decoder::new(CT2_MSG_LEN);
                receiving_ct2.add(chunk);
                let next = Braid::EkSentCt1Received {
                    epoch,
                    auth,
                    dk,
                    ct1,
                    receiving_ct2,
                };
                (next, None)
            }
            (
                Braid::EkSentCt1Received {
                    epoch,
                    mut auth,
                    dk,
                    ct1,
                    mut receiving_ct2,
                },
                Payload::Ct2(chunk),
            ) => {
                receiving_ct2.add(chunk);
                let Some(msg) = receiving_ct2.decoded() else {
                    let next = Braid::EkSentCt1Received {
                        epoch,
                        auth,
                        dk,
                        ct1,
                        receiving_ct2,
                    };
                    return Ok((next, None));
                };
                let (ct2, mac) = msg.split_at(CT2_LEN);
                let shared = kem::decapsulate(&dk, &ct1, ct2)
                    .ok_or(Error::MalformedState("decapsulation key length"))?;
                let secret = epoch_key(&shared[..], epoch);
                auth.update(epoch, &secret[..]);
                let mut whole = ct1;
                whole.extend_from_slice(ct2);
                auth.verify_ciphertext(epoch, &whole, mac)?;
                let next_epoch = epoch.checked_add(1).ok_or(Error::EpochOutOfRange(epoch))?;
                let next = Braid::NoHeaderReceived {
                    epoch: next_epoch,
                    auth,
                    receiving_hdr: Decoder::new(HEADER_MSG_LEN),
                };
                (next, Some(EpochSecret { epoch, secret }))
            }
            (
                Braid::NoHeaderReceived {
                    epoch,
                    auth,
                    mut receiving_hdr,
                },
                Payload::Hdr(chunk),
            ) => {
                receiving_hdr.add(chunk);
                let next = match receiving_hdr.decoded() {
                    Some(msg) => {
                        let (hdr, mac) = msg.split_at(HEADER_LEN);
                        auth.verify_header(epoch, hdr, mac)?;
                        Braid::HeaderReceived {
                            epoch,
                            auth,
                            hdr: hdr.to_vec(),
                            receiving_ek: Decoder::new(EK_LEN),
                        }
                    }
                    None => Braid::NoHeaderReceived {
                        epoch,
                        auth,
                        receiving_hdr,
                    },
                };
                (next, None)
            }
            (
                Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es,
                    sending_ct1,
                    mut receiving_ek,
                },
                Payload::Ek(chunk) | Payload::EkCt1Ack(chunk),
            ) => {
                let acked = matches!(payload, Payload::EkCt1Ack(_));
                receiving_ek.add(chunk);
                let next = match (receiving_ek.decoded(), acked) {
                    (Some(ek), acked) => {
                        if !kem::ek_matches_header(&ek, &hdr) {
                            return Err(Error::KeyMismatch);
                        }
                        if acked {
                            sample_ct2(epoch, auth, &es, &ek, sending_ct1.message())?
                        } else {
                            Braid::EkReceivedCt1Sampled {
                                epoch,
                                auth,
                                es,
                                ek,
                                sending_ct1,
                            }
                        }
                    }
                    (None, true) => Braid::Ct1Acknowledged {
                        epoch,
                        auth,
                        hdr,
                        es,
                        ct1: sending_ct1.message().to_vec(),
                        receiving_ek,
                    },
                    (None, false) => Braid::Ct1Sampled {
                        epoch,
                        auth,
                        hdr,
                        es,
                        sending_ct1,
                        receiving_ek,
                    },
                };
                (next, None)
            }
            (
                Braid::EkReceivedCt1Sampled {
                    epoch,
                    auth,
                    es,
                    ek,
                    sending_ct1,
                },
                Payload::Ct1Ack | Payload::EkCt1Ack(_),
            ) => (
                sample_ct2(epoch, auth, &es, &ek, sending_ct1.message())?,
                None,
            ),
            (
                Braid::Ct1Acknowledged {
                    epoch,
                    auth,
                    hdr,
                    es,
                    ct1,
                    mut receiving_ek,
                },
                Payload::Ek(chunk) | Payload::EkCt1Ack(chunk),
            ) => {
                receiving_ek.add(chunk);
                let next = match receiving_ek.decoded() {
                    Some(ek) => {
                        if !kem::ek_matches_header(&ek, &hdr) {
                            return Err(Error::KeyMismatch);
                        }
                        sample_ct2(epoch, auth, &es, &ek, &ct1)?
                    }
                    None => Braid::Ct1Acknowledged {
                        epoch,
                        auth,
                        hdr,
                        es,
                        ct1,
                        receiving_ek,
                    },
                };
                (next, None)
            }
            (state, _) => (state, None),
        })
    }
}
