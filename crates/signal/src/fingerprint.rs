//! Safety numbers: the numeric and scannable fingerprints two users compare
//! to check that they see each other's real identity keys.
//!
//! The algorithm and both encodings are libsignal's, so a safety number
//! computed here equals the one a Signal app shows, and a QR code scanned from
//! a Signal app compares true against ours.
//!
//! Each side's fingerprint is an iterated SHA-512 over its identity key and a
//! stable identifier (the account's UUID bytes, or its service-id string):
//!
//! ```text
//! h_1     = SHA-512(0x00 0x00 || key || id || key)
//! h_(i+1) = SHA-512(h_i || key)            for i in 1..iterations
//! ```
//!
//! where `key` is the 33-byte serialized identity key. The first 30 bytes of
//! the last hash give 30 decimal digits (six 5-byte big-endian numbers, each
//! reduced modulo 100 000); the displayable safety number is the two halves in
//! ascending order, so both parties see the same 60 digits. The scannable form
//! is a `CombinedFingerprints` protobuf holding a version and the first 32
//! bytes of each hash.
//!
//! ```
//! # use passerelle_signal::{IdentityKey, fingerprint::{Fingerprint, ITERATIONS, VERSION}};
//! # fn main() -> passerelle_signal::Result<()> {
//! # let mut bytes = [7u8; 33];
//! # bytes[0] = 5;
//! # let alice_key = IdentityKey::deserialize(&bytes)?;
//! # bytes[1] = 8;
//! # let bob_key = IdentityKey::deserialize(&bytes)?;
//! let alice = Fingerprint::new(VERSION, ITERATIONS, b"alice", &alice_key, b"bob", &bob_key)?;
//! let bob = Fingerprint::new(VERSION, ITERATIONS, b"bob", &bob_key, b"alice", &alice_key)?;
//! assert_eq!(alice.display.to_string(), bob.display.to_string());
//! assert!(alice.scannable.compare(&bob.scannable.serialize())?);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use prost::Message as _;
use sha2::{Digest as _, Sha512};
use subtle::ConstantTimeEq as _;

use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::proto;

/// The scannable fingerprint version Signal's apps use today.
///
/// The version only enters the scannable form; the displayable digits are the
/// same for every version.
pub const VERSION: u32 = 2;

/// The number of hash iterations Signal's apps use.
pub const ITERATIONS: u32 = 5200;

/// The fewest iterations accepted (libsignal refuses 0 and 1).
pub const MIN_ITERATIONS: u32 = 2;

/// The most iterations accepted (libsignal's limit).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Digits in one party's half of the displayable fingerprint.
const HALF_DIGITS: usize = 30;

/// Digits in the displayable fingerprint.
pub const DISPLAY_DIGITS: usize = 2 * HALF_DIGITS;

/// Bytes of each party's hash kept in the scannable fingerprint.
const SCANNABLE_LEN: usize = 32;

/// The 0x0000 prefix of the first hash ("fingerprint version" in libsignal,
/// unrelated to the scannable version).
const HASH_PREFIX: [u8; 2] = [0, 0];

/// The length of a serialized identity key.
const KEY_LEN: usize = 33;

/// A pair of safety-number fingerprints: ours and our peer's, in the two forms
/// users compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The 60 digits to read aloud or compare by eye.
    pub display: DisplayableFingerprint,
    /// The form encoded in a QR code, to scan from the peer's screen.
    pub scannable: ScannableFingerprint,
}

impl Fingerprint {
    /// Computes the fingerprints of a conversation between the local party
    /// (`local_id`, `local_key`) and the remote party (`remote_id`,
    /// `remote_key`).
    ///
    /// `version` goes into the scannable form only ([`VERSION`] today);
    /// `iterations` is the hash iteration count ([`ITERATIONS`] in Signal's
    /// apps) and must lie in [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]. The
    /// identifiers are the parties' stable identifiers as bytes: an account
    /// UUID's 16 bytes, or a service-id string.
    ///
    /// The cost is `2 * iterations` single-block SHA-512 compressions.
    pub fn new(
        version: u32,
        iterations: u32,
        local_id: &[u8],
        local_key: &IdentityKey,
        remote_id: &[u8],
        remote_key: &IdentityKey,
    ) -> Result<Self> {
        check_iterations(iterations)?;
        let local = iterated_hash(iterations, local_id, local_key);
        let remote = iterated_hash(iterations, remote_id, remote_key);
        Ok(Self {
            display: DisplayableFingerprint::from_hashes(&local, &remote),
            scannable: ScannableFingerprint::from_hashes(version, &local, &remote),
        })
    }

    /// The 60-digit displayable fingerprint, as libsignal's
    /// `display_string`.
    pub fn display_string(&self) -> String {
        self.display.to_string()
    }
}

fn check_iterations(iterations: u32) -> Result<()> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(Error::InvalidFingerprint(
            "iteration count must be between 2 and 1000000",
        ))
    }
}

/// One party's iterated hash. Every hash input after the first is exactly
/// 64 + 33 = 97 bytes, which SHA-512 pads into a single block, so each
/// iteration costs one compression.
fn iterated_hash(iterations: u32, id: &[u8], key: &IdentityKey) -> [u8; 64] {
    let key: [u8; KEY_LEN] = key.serialize();
    let mut hasher = Sha512::new();
    hasher.update(HASH_PREFIX);
    hasher.update(key);
    hasher.update(id);
    hasher.update(key);
    let mut hash = hasher.finalize_reset();
    for _ in 1..iterations {
        hasher.update(hash);
        hasher.update(key);
        // Reusing the hasher and the output buffer keeps the loop free of
        // anything but copying 97 bytes and one compression.
        hasher.finalize_into_reset(&mut hash);
    }
    hash.into()
}

/// The 60-digit displayable fingerprint (safety number).
///
/// [`Display`](fmt::Display) writes the 60 digits with no separators;
/// [`grouped`](Self::grouped) writes them as 12 groups of 5. Both parties of a
/// conversation get the same digits: the two 30-digit halves are ordered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisplayableFingerprint {
    /// ASCII digits, the smaller half first.
    digits: [u8; DISPLAY_DIGITS],
}

impl DisplayableFingerprint {
    fn from_hashes(local: &[u8; 64], remote: &[u8; 64]) -> Self {
        let local = encode_half(local);
        let remote = encode_half(remote);
        let (first, second) = if local < remote {
            (local, remote)
        } else {
            (remote, local)
        };
        let mut digits = [0u8; DISPLAY_DIGITS];
        digits[..HALF_DIGITS].copy_from_slice(&first);
        digits[HALF_DIGITS..].copy_from_slice(&second);
        Self { digits }
    }

    /// The 60 digits, with no separators.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.digits).unwrap_or_default()
    }

    /// The 60 digits as 12 groups of 5 separated by single spaces, the way
    /// Signal's apps lay them out.
    pub fn grouped(&self) -> String {
        group_digits(self.as_str())
    }
}

impl fmt::Display for DisplayableFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DisplayableFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DisplayableFingerprint")
            .field(&self.as_str())
            .finish()
    }
}

/// Thirty digits from the first 30 bytes of a hash: six big-endian 40-bit
/// numbers, each reduced modulo 100 000 and written as 5 zero-padded digits.
fn encode_half(hash: &[u8; 64]) -> [u8; HALF_DIGITS] {
    let mut out = [0u8; HALF_DIGITS];
    for (chunk, digits) in hash.chunks_exact(5).zip(out.chunks_exact_mut(5)) {
        let mut n = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) % 100_000;
        for d in digits.iter_mut().rev() {
            // n % 10 < 10, so the cast is lossless.
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    out
}

/// Lays out a safety number for display: groups of 5 characters separated by
/// single spaces (12 groups for the 60 digits of a safety number).
///
/// Whitespace in the input is dropped first, so an already grouped string is
/// regrouped unchanged. Any other characters are kept as they are.
pub fn group_digits(digits: &str) -> String {
    let mut out = String::with_capacity(DISPLAY_DIGITS + DISPLAY_DIGITS / 5);
    for (i, c) in digits.chars().filter(|c| !c.is_whitespace()).enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The scannable fingerprint: what a QR code carries.
///
/// It holds a version and the first 32 bytes of both parties' hashes, ours
/// first. [`serialize`](Self::serialize) gives libsignal's
/// `CombinedFingerprints` protobuf; [`compare`](Self::compare) checks a form
/// scanned from the peer's screen against ours.
#[derive(Clone, PartialEq, Eq)]
pub struct ScannableFingerprint {
    version: u32,
    local: [u8; SCANNABLE_LEN],
    remote: [u8; SCANNABLE_LEN],
}

impl ScannableFingerprint {
    fn from_hashes(version: u32, local: &[u8; 64], remote: &[u8; 64]) -> Self {
        let mut ours = Self {
            version,
            local: [0; SCANNABLE_LEN],
            remote: [0; SCANNABLE_LEN],
        };
        ours.local.copy_from_slice(&local[..SCANNABLE_LEN]);
        ours.remote.copy_from_slice(&remote[..SCANNABLE_LEN]);
        ours
    }

    /// The version this fingerprint was computed with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The `CombinedFingerprints` protobuf to put in a QR code, byte for byte
    /// libsignal's.
    pub fn serialize(&self) -> Vec<u8> {
        proto::CombinedFingerprints {
            version: Some(self.version),
            local_fingerprint: Some(proto::LogicalFingerprint {
                content: Some(self.local.to_vec()),
            }),
            remote_fingerprint: Some(proto::LogicalFingerprint {
                content: Some(self.remote.to_vec()),
            }),
        }
        .encode_to_vec()
    }

    /// Compares a scanned `CombinedFingerprints` (the peer's
    /// [`serialize`](Self::serialize) output) against ours.
    ///
    /// Returns `Ok(true)` if the peer's local fingerprint is our remote one and
    /// the peer's remote fingerprint is our local one, `Ok(false)` if either
    /// differs. The contents are compared in constant time.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFingerprint`] if the bytes are not a
    /// `CombinedFingerprints` or lack either fingerprint;
    /// [`Error::FingerprintVersionMismatch`] if the scanned version (0 when
    /// absent) is not ours, which usually means one side's app is out of date.
    pub fn compare(&self, scanned: &[u8]) -> Result<bool> {
        let theirs = proto::CombinedFingerprints::decode(scanned)
            .map_err(|_| Error::InvalidFingerprint("scanned bytes do not decode"))?;
        let their_version = theirs.version.unwrap_or(0);
        if their_version != self.version {
            return Err(Error::FingerprintVersionMismatch {
                theirs: their_version,
                ours: self.version,
            });
        }
        let their_local =
            theirs
                .local_fingerprint
                .and_then(|f| f.content)
                .ok_or(Error::InvalidFingerprint(
                    "scanned local fingerprint missing",
                ))?;
        let their_remote =
            theirs
                .remote_fingerprint
                .and_then(|f| f.content)
                .ok_or(Error::InvalidFingerprint(
                    "scanned remote fingerprint missing",
                ))?;
        // Slices of different lengths compare unequal (on length alone, which
        // is public).
        let same = their_local.as_slice().ct_eq(&self.remote[..])
            & their_remote.as_slice().ct_eq(&self.local[..]);
        Ok(same.into())
    }
}

impl fmt::Debug for ScannableFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScannableFingerprint")
            .field("version", &self.version)
            .field("local", &Hex(&self.local))
            .field("remote", &Hex(&self.remote))
            .finish()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn encode_half_pads_and_reduces() {
        let mut hash = [0u8; 64];
        // 0xff_ffff_ffff = 1_099_511_627_775, mod 100 000 = 27 775.
        hash[..5].copy_from_slice(&[0xff; 5]);
        // 7 stays 00007.
        hash[9] = 7;
        let half = encode_half(&hash);
        assert_eq!(&half, b"277750000700000000000000000000");
    }

    #[test]
    fn grouping() {
        let digits: String = (0..60).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
        let grouped = group_digits(&digits);
        assert_eq!(grouped.split(' ').count(), 12);
        assert!(grouped.split(' ').all(|g| g.len() == 5));
        assert_eq!(group_digits(&grouped), grouped);
        assert_eq!(group_digits(""), "");
        assert_eq!(group_digits("1234567"), "12345 67");
    }

    #[test]
    fn iteration_bounds() {
        assert!(check_iterations(0).is_err());
        assert!(check_iterations(1).is_err());
        assert!(check_iterations(2).is_ok());
        assert!(check_iterations(MAX_ITERATIONS).is_ok());
        assert!(check_iterations(MAX_ITERATIONS + 1).is_err());
    }
}
