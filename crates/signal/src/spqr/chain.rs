//! The per-epoch key chains that turn epoch secrets into one key per
//! message.
//!
//! Each epoch has a sending and a receiving chain, derived together with
//! the next epoch's root from the epoch secret. A chain is a symmetric
//! ratchet: step `n` of it yields key number `n`. The receiving side may
//! skip ahead (at most `max_jump`) and keeps the skipped keys, the most
//! recent `max_ooo_keys` of them, for messages that arrive late; each key
//! is handed out once.

use std::collections::VecDeque;

use zeroize::{Zeroize, Zeroizing};

use super::kdf::{ZERO_SALT, hkdf};
use super::{Direction, Error, MessageKey};

const START_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain  Start";
const ADD_EPOCH_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain Add Epoch";
const NEXT_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain Next";

/// The forward-jump limit when the caller gives zero.
pub(crate) const DEFAULT_MAX_JUMP: u32 = 25_000;
/// The late-key limit when the caller gives zero.
pub(crate) const DEFAULT_MAX_OOO_KEYS: u32 = 2_000;
/// The largest late-key limit a state may carry, to keep states bounded.
pub(crate) const MAX_MAX_OOO_KEYS: u32 = 1 << 16;
/// Epochs kept before the one we send in, for late messages.
const EPOCHS_KEPT_BEFORE_SEND: usize = 1;
/// The most epochs a state holds. Epochs advance only while this side
/// sends, and each send forgets all but one epoch before its own, so a
/// run of the protocol holds at most three or four.
pub(crate) const MAX_LINKS: usize = 8;

/// How far chains may be pushed, with zeros replaced by the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_jump: u32,
    pub(crate) max_ooo_keys: u32,
}

impl Limits {
    pub(crate) fn new(max_jump: u32, max_ooo_keys: u32) -> Result<Self, Error> {
        let limits = Self {
            max_jump: if max_jump == 0 {
                DEFAULT_MAX_JUMP
            } else {
                max_jump
            },
            max_ooo_keys: if max_ooo_keys == 0 {
                DEFAULT_MAX_OOO_KEYS
            } else {
                max_ooo_keys
            },
        };
        if limits.max_ooo_keys > MAX_MAX_OOO_KEYS {
            return Err(Error::InvalidParams("max_ooo_keys above 65536"));
        }
        Ok(limits)
    }

    /// Skipped keys held before old ones are swept out: a tenth more than
    /// the limit, so that sweeping is occasional.
    pub(crate) fn sweep_at(&self) -> usize {
        self.max_ooo_keys as usize * 11 / 10 + 1
    }
}

/// One direction of one epoch.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Half {
    /// The index of the last key derived.
    pub(crate) ctr: u32,
    /// The chain key, `None` once the chain is retired.
    pub(crate) next: Option<[u8; 32]>,
    /// Keys skipped over and not yet used, with their indices.
    pub(crate) skipped: Vec<(u32, [u8; 32])>,
}

impl Drop for Half {
    fn drop(&mut self) {
        self.next.zeroize();
        for (_, key) in &mut self.skipped {
            key.zeroize();
        }
    }
}

impl Half {
    fn new(key: &[u8]) -> Self {
        let mut next = [0u8; 32];
        next.copy_from_slice(key);
        Self {
            ctr: 0,
            next: Some(next),
            skipped: Vec::new(),
        }
    }

    /// Steps the chain once: the new index and its key.
    fn step(&mut self) -> Result<(u32, [u8; 32]), Error> {
        let next = self.next.as_mut().ok_or(Error::ChainNotAvailable)?;
        let ctr = self.ctr.checked_add(1).ok_or(Error::CounterExhausted)?;
        let mut out = Zeroizing::new([0u8; 64]);
        hkdf(
            &ZERO_SALT,
            &next[..],
            &[&ctr.to_be_bytes(), NEXT_INFO],
            &mut out[..],
        );
        next.copy_from_slice(&out[..32]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&out[32..]);
        self.ctr = ctr;
        Ok((ctr, key))
    }

    /// Drops skipped keys too old to be asked for, once there are many.
    fn sweep(&mut self, limits: &Limits) {
        if self.skipped.len() >= limits.sweep_at() {
            let horizon = self.ctr.saturating_sub(limits.max_ooo_keys);
            self.skipped.retain(|(at, _)| *at >= horizon);
        }
    }

    /// Key number `at`, whether ahead of the chain or skipped earlier.
    fn key(&mut self, at: u32, limits: &Limits) -> Result<[u8; 32], Error> {
        if at < self.ctr {
            if u64::from(at) + u64::from(limits.max_ooo_keys) < u64::from(self.ctr) {
                return Err(Error::KeyTrimmed(at));
            }
            let pos = self
                .skipped
                .iter()
                .position(|(index, _)| *index == at)
                .ok_or(Error::KeyAlreadyUsed(at))?;
            let (_, key) = self.skipped.swap_remove(pos);
            return Ok(key);
        }
        if at == self.ctr {
            return Err(Error::KeyAlreadyUsed(at));
        }
        if at - self.ctr > limits.max_jump {
            return Err(Error::KeyJump { ctr: self.ctr, at });
        }
        let ooo = u64::from(limits.max_ooo_keys);
        if u64::from(at) > u64::from(self.ctr) + ooo {
            // Every key held now would be too old once we get there.
            self.skipped.clear();
        }
        while at > self.ctr + 1 {
            let (index, key) = self.step()?;
            if u64::from(index) + ooo >= u64::from(at) {
                self.skipped.push((index, key));
            }
        }
        self.sweep(limits);
        Ok(self.step()?.1)
    }
}

/// Both directions of one epoch.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) send: Half,
    pub(crate) recv: Half,
}

/// The chains of every epoch still in use.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) direction: Direction,
    pub(crate) current_epoch: u64,
    pub(crate) send_epoch: u64,
    /// Links for epochs `current_epoch - links.len() + 1 ..= current_epoch`.
    pub(crate) links: VecDeque<Link>,
    pub(crate) next_root: Zeroizing<[u8; 32]>,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("direction", &self.direction)
            .field("current_epoch", &self.current_epoch)
            .field("send_epoch", &self.send_epoch)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// Splits 96 derived bytes into the next root and the two directions'
/// chain keys (A2B first).
fn link_from(derived: &[u8; 96], direction: Direction) -> (Zeroizing<[u8; 32]>, Link) {
    let mut root = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&derived[..32]);
    let a2b = Half::new(&derived[32..64]);
    let b2a = Half::new(&derived[64..96]);
    let link = match direction {
        Direction::A2B => Link {
            send: a2b,
            recv: b2a,
        },
        Direction::B2A => Link {
            send: b2a,
            recv: a2b,
        },
    };
    (root, link)
}

impl Chain {
    /// The chain of epoch 0, keyed from the handshake.
    pub(crate) fn new(auth_key: &[u8], direction: Direction, limits: Limits) -> Self {
        let mut derived = Zeroizing::new([0u8; 96]);
        hkdf(&ZERO_SALT, auth_key, &[START_INFO], &mut derived[..]);
        let (next_root, link) = link_from(&derived, direction);
        Self {
            direction,
            current_epoch: 0,
            send_epoch: 0,
            links: VecDeque::from([link]),
            next_root,
            limits,
        }
    }

    /// Starts epoch `epoch` from its secret; epochs come one at a time.
    pub(crate) fn add_epoch(&mut self, epoch: u64, secret: &[u8]) -> Result<(), Error> {
        if Some(epoch) != self.current_epoch.checked_add(1) {
            return Err(Error::MalformedState("epoch secret out of sequence"));
        }
        if self.links.len() >= MAX_LINKS {
            return Err(Error::MalformedState("too many epochs held"));
        }
        let mut derived = Zeroizing::new([0u8; 96]);
        hkdf(
            &self.next_root[..],
            secret,
            &[ADD_EPOCH_INFO],
            &mut derived[..],
        );
        let (next_root, link) = link_from(&derived, self.direction);
        self.current_epoch = epoch;
        self.next_root = next_root;
        self.links.push_back(link);
        Ok(())
    }

    fn link_index(&self, epoch: u64) -> Result<usize, Error> {
        if epoch > self.current_epoch {
            return Err(Error::EpochOutOfRange(epoch));
        }
        let back = self.current_epoch - epoch;
        if back >= self.links.len() as u64 {
            return Err(Error::EpochOutOfRange(epoch));
        }
        Ok(self.links.len() - 1 - back as usize)
    }

    /// The next sending key of `epoch`, with its index. Moving to a later
    /// epoch retires the sending chains before it and forgets old epochs.
    pub(crate) fn send_key(&mut self, epoch: u64) -> Result<(u32, MessageKey), Error> {
        if epoch < self.send_epoch {
            return Err(Error::SendEpochDecreased {
                from: self.send_epoch,
                to: epoch,
            });
        }
        let mut index = self.link_index(epoch)?;
        if epoch != self.send_epoch {
            self.send_epoch = epoch;
            while index > EPOCHS_KEPT_BEFORE_SEND {
                self.links.pop_front();
                index -= 1;
            }
            for link in self.links.iter_mut().take(index) {
                if let Some(mut next) = link.send.next.take() {
                    next.zeroize();
                }
            }
        }
        let (ctr, key) = self.links[index].send.step()?;
        Ok((ctr, MessageKey::new(key)))
    }

    /// Receiving key number `at` of `epoch`.
    pub(crate) fn recv_key(&mut self, epoch: u64, at: u32) -> Result<MessageKey, Error> {
        let index = self.link_index(epoch)?;
        let limits = self.limits;
        self.links[index].recv.key(at, &limits).map(MessageKey::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;
    use sha2::Sha256;

    fn limits(max_jump: u32, max_ooo_keys: u32) -> Limits {
        Limits::new(max_jump, max_ooo_keys).expect("valid")
    }

    #[test]
    fn first_key_follows_the_labels() {
        // Recomputed from the definitions: start, then one step of A2B.
        let mut start = [0u8; 96];
        Hkdf::<Sha256>::new(Some(&[0; 32]), b"auth")
            .expand(b"Signal PQ Ratchet V1 Chain  Start", &mut start)
            .expect("length");
        let mut step = [0u8; 64];
        let mut info = 1u32.to_be_bytes().to_vec();
        info.extend_from_slice(b"Signal PQ Ratchet V1 Chain Next");
        Hkdf::<Sha256>::new(Some(&[0; 32]), &start[32..64])
            .expand(&info, &mut step)
            .expect("length");
        let mut a = Chain::new(b"auth", Direction::A2B, limits(0, 0));
        let (index, key) = a.send_key(0).expect("key");
        assert_eq!(index, 1);
        assert_eq!(&key[..], &step[32..]);
    }

    #[test]
    fn directions_mirror_each_other() {
        let mut a = Chain::new(b"1", Direction::A2B, limits(0, 0));
        let mut b = Chain::new(b"1", Direction::B2A, limits(0, 0));
        let (i, k) = a.send_key(0).expect("key");
        assert_eq!(b.recv_key(0, i).expect("key"), k);
        let (i, k) = b.send_key(0).expect("key");
        assert_eq!(a.recv_key(0, i).expect("key"), k);
        a.add_epoch(1, &[2]).expect("epoch");
        b.add_epoch(1, &[2]).expect("epoch");
        let keys: Vec<_> = (0..10).map(|_| a.send_key(1).expect("key")).collect();
        assert_eq!(keys[9].0, 10);
        for (i, k) in keys.into_iter().rev() {
            assert_eq!(b.recv_key(1, i).expect("key"), k);
        }
        assert!(a.add_epoch(3, &[2]).is_err());
    }

    #[test]
    fn keys_are_given_once() {
        let mut a = Chain::new(b"1", Direction::A2B, limits(0, 0));
        a.recv_key(0, 2).expect("first time");
        assert_eq!(a.recv_key(0, 2), Err(Error::KeyAlreadyUsed(2)));
        a.recv_key(0, 1).expect("skipped key");
        assert_eq!(a.recv_key(0, 1), Err(Error::KeyAlreadyUsed(1)));
        assert_eq!(a.recv_key(0, 0), Err(Error::KeyAlreadyUsed(0)));
    }

    #[test]
    fn jumps_and_trims_are_bounded() {
        let mut a = Chain::new(b"1", Direction::A2B, limits(10, 10));
        assert_eq!(a.recv_key(0, 11), Err(Error::KeyJump { ctr: 0, at: 11 }));
        a.recv_key(0, 10).expect("within the jump");
        a.recv_key(0, 12).expect("progress");
        assert_eq!(a.recv_key(0, 1), Err(Error::KeyTrimmed(1)));
        a.recv_key(0, 2).expect("still kept");
        a.recv_key(0, 5).expect("still kept");
        assert_eq!(a.recv_key(0, 5), Err(Error::KeyAlreadyUsed(5)));
        assert!(a.links[0].recv.skipped.len() <= limits(10, 10).sweep_at());
    }

    #[test]
    fn skipped_keys_stay_bounded() {
        let l = limits(25_000, 100);
        let mut a = Chain::new(b"1", Direction::A2B, l);
        let mut at = 0;
        for _ in 0..50 {
            at += 97;
            a.recv_key(0, at).expect("key");
            assert!(a.links[0].recv.skipped.len() <= l.sweep_at());
        }
    }

    #[test]
    fn sending_in_a_new_epoch_retires_old_ones() {
        let mut a = Chain::new(b"1", Direction::A2B, limits(0, 0));
        a.send_key(0).expect("key");
        for epoch in 1..=4 {
            a.add_epoch(epoch, &[epoch as u8]).expect("epoch");
        }
        a.send_key(4).expect("key");
        assert_eq!(a.links.len(), 2);
        assert!(a.links[0].send.next.is_none());
        assert_eq!(
            a.send_key(3),
            Err(Error::SendEpochDecreased { from: 4, to: 3 })
        );
        assert_eq!(a.recv_key(2, 1), Err(Error::EpochOutOfRange(2)));
        a.recv_key(3, 1).expect("kept epoch");
        assert_eq!(a.recv_key(5, 1), Err(Error::EpochOutOfRange(5)));
    }

    #[test]
    fn out_of_order_within_the_limit() {
        let mut a = Chain::new(b"1", Direction::A2B, limits(0, 0));
        let mut b = Chain::new(b"1", Direction::B2A, limits(0, 0));
        let mut keys: Vec<_> = (0..2000).map(|_| a.send_key(0).expect("key")).collect();
        // A fixed shuffle: reverse, then interleave halves.
        keys.reverse();
        let (x, y) = keys.split_at(1000);
        for (i, k) in y.iter().chain(x.iter()) {
            assert_eq!(&b.recv_key(0, *i).expect("key"), k);
        }
    }
}
