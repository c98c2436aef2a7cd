//! Attachment encryption as Signal clients do it, streaming.
//!
//! # Format
//!
//! An attachment (image, voice note, video, file) is encrypted under a fresh
//! random 64-byte [`AttachmentKey`]: its first 32 bytes are an AES-256 key, its
//! last 32 bytes an HMAC-SHA256 key. With a fresh random 16-byte IV:
//!
//! ```text
//! padded     = plaintext || zeros, up to padded_size(len(plaintext))
//! ciphertext = IV || AES-256-CBC-PKCS#7(padded) || HMAC-SHA256(mac_key, IV || CBC)
//! digest     = SHA-256(ciphertext)
//! ```
//!
//! The sender puts the key, the digest and the true plaintext size in the
//! (end-to-end encrypted) attachment pointer and uploads the ciphertext. The
//! receiver checks the MAC and the digest in constant time before it trusts
//! any byte, then decrypts, strips PKCS#7 and truncates to the announced size.
//! Like Signal clients, it does not require the bucket padding to be zeros.
//!
//! # Streaming, in bounded memory
//!
//! Every type here works incrementally with a buffer of a few blocks, so a
//! 1 GiB video never has to sit in memory: [`Encryptor`] (and
//! [`PaddingEncryptor`] for the bucket padding), [`Verifier`] and
//! [`Decryptor`] consume chunks of any size and append at most one chunk plus
//! a block to the caller's output buffer per call. [`encrypt_stream`] and
//! [`decrypt_stream`] drive them over [`std::io::Read`] and
//! [`std::io::Write`] with a fixed 64 KiB buffer.
//!
//! # Why decryption takes two passes
//!
//! The MAC sits at the end of the ciphertext, so a single streaming pass can
//! only authenticate the data after it has already handed out plaintext. CBC
//! is malleable: an attacker who can flip ciphertext bits flips the matching
//! plaintext bits of the next block, and a consumer that parses, displays or
//! decodes the plaintext before the final check (a media decoder, an image
//! thumbnailer, a decompressor) acts on attacker-chosen bytes even if it later
//! learns that they were forged. "Release, then maybe retract" also makes the
//! careless call sequence the easy one.
//!
//! So this module does what libsignal does for message backups (its
//! `ReaderFactory` opens the input once to verify the HMAC, then again to
//! decrypt) and what Signal-Android's `AttachmentCipherInputStream` does for
//! attachments (MAC and digest over the whole file before the first decrypted
//! byte): **verify first, decrypt second**. The two stages are separate types
//! joined by a proof token:
//!
//! 1. [`Verifier`] consumes the ciphertext and releases nothing; its
//!    [`finish`](Verifier::finish) checks the length, the MAC and the digest
//!    and only then returns a [`VerifiedCiphertext`].
//! 2. A [`Decryptor`] can only be built from a [`VerifiedCiphertext`]. It
//!    carries the key, IV, length and digest that were verified, so there is
//!    no way to decrypt bytes that no verifier has accepted, or to mix up keys.
//!
//! The second pass reads the ciphertext again, and storage can change between
//! passes (another process, a modified cache file). The [`Decryptor`] therefore
//! hashes what it decrypts and its [`finish`](Decryptor::finish) fails with
//! [`AttachmentError::Changed`] unless those are exactly the verified bytes.
//! It reports padding and size errors only from `finish`, after that check,
//! so changed bytes cannot be used as a padding oracle. Plaintext that the
//! second pass produces is the verified plaintext unless `finish` fails; a
//! caller that writes it somewhere must delete it if `finish` returns `Err`.
//!
//! A single-pass design that buffers the whole ciphertext would need memory
//! proportional to the attachment; one that streams unauthenticated plaintext
//! (as matrix-sdk's attachment decryptor does, checking a hash at the end)
//! is the failure mode described above. Two passes cost reading the input
//! twice, which for a downloaded file on local storage is cheap.
//!
//! # Example
//!
//! ```
//! use passerelle_signal::attachment::*;
//!
//! let mut rng = rand::rngs::OsRng;
//! let key = AttachmentKey::generate(&mut rng);
//! let voice_note = b"a voice note".to_vec();
//!
//! // Sender: encrypt, with bucket padding, into the upload.
//! let mut upload = Vec::new();
//! let iv = generate_iv(&mut rng);
//! let sent = encrypt_stream(&voice_note[..], &mut upload, &key, iv, voice_note.len() as u64)?;
//! // ...key, sent.digest and sent.plaintext_len go into the attachment pointer.
//!
//! // Receiver, first pass: verify, releasing nothing.
//! let mut verifier = Verifier::new(&key);
//! for chunk in upload.chunks(100) {
//!     verifier.update(chunk);
//! }
//! let verified = verifier.finish(&sent.digest)?;
//!
//! // Second pass: decrypt the same bytes.
//! let mut decryptor = verified.decryptor(sent.plaintext_len)?;
//! let mut plaintext = Vec::new();
//! for chunk in upload.chunks(100) {
//!     decryptor.update(chunk, &mut plaintext);
//! }
//! decryptor.finish()?; // discard `plaintext` if this fails
//! assert_eq!(plaintext, voice_note);
//! # Ok::<(), AttachmentError>(())
//! ```

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use aes::Aes256;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Digest as _;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The length of an [`AttachmentKey`]: a 32-byte AES-256 key, then a 32-byte
/// HMAC-SHA256 key.
pub const KEY_LEN: usize = 64;
/// The length of the AES-256 key part of an [`AttachmentKey`].
pub const AES_KEY_LEN: usize = 32;
/// The length of the HMAC-SHA256 key part of an [`AttachmentKey`].
pub const MAC_KEY_LEN: usize = 32;
/// The length of the CBC initialization vector that starts a ciphertext.
pub const IV_LEN: usize = 16;
/// The AES block length.
pub const BLOCK_LEN: usize = 16;
/// The length of the HMAC-SHA256 tag that ends a ciphertext.
pub const MAC_LEN: usize = 32;
/// The length of a [`Digest`] (SHA-256).
pub const DIGEST_LEN: usize = 32;
/// The shortest possible ciphertext: IV, one (padding) block and MAC.
pub const MIN_CIPHERTEXT_LEN: usize = IV_LEN + BLOCK_LEN + MAC_LEN;
/// The smallest bucket [`padded_size`] pads to.
pub const MIN_PADDED_SIZE: u64 = 541;

/// AES blocks handed to the cipher per call (1 KiB), for AES-NI parallelism
/// on decryption and fewer calls on encryption.
const BATCH_BLOCKS: usize = 64;
/// The I/O buffer of [`encrypt_stream`] and [`decrypt_stream`].
const STREAM_BUF_LEN: usize = 64 * 1024;
/// Zeros for the bucket padding.
const ZEROS: [u8; 1024] = [0; 1024];

type HmacSha256 = Hmac<Sha256>;
type Block = aes::Block;

/// Everything that can go wrong encrypting or decrypting an attachment.
///
/// No variant carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// An attachment key was not [`KEY_LEN`] (64) bytes long; the length seen.
    #[error("bad attachment key length {0} (expected 64)")]
    BadKeyLength(usize),
    /// A ciphertext was shorter than IV, one block and MAC
    /// ([`MIN_CIPHERTEXT_LEN`] bytes); the length seen.
    #[error("attachment ciphertext too short ({0} bytes)")]
    TooShort(u64),
    /// The CBC part of a ciphertext (between IV and MAC) was not a whole number
    /// of AES blocks; the total ciphertext length seen.
    #[error("attachment ciphertext length {0} is not IV + whole blocks + MAC")]
    NotBlockAligned(u64),
    /// The HMAC-SHA256 tag did not verify: wrong key, or the ciphertext was
    /// damaged or forged.
    #[error("bad attachment MAC")]
    BadMac,
    /// The SHA-256 digest of the ciphertext was not the one the sender
    /// announced.
    #[error("bad attachment digest")]
    BadDigest,
    /// The authenticated ciphertext did not end in valid PKCS#7 padding (the
    /// sender produced it so).
    #[error("bad attachment padding")]
    BadPadding,
    /// A plaintext size did not match: on decryption, the announced size is
    /// larger than what the ciphertext holds; on [`encrypt_stream`], the
    /// reader did not yield exactly the announced number of bytes.
    #[error("attachment size mismatch: expected {expected} bytes, found {actual}")]
    SizeMismatch {
        /// The size announced by the caller.
        expected: u64,
        /// The size found: on decryption, the unpadded plaintext size (or,
        /// when refused before decrypting, the most the ciphertext can hold);
        /// when a reader yielded too much, the count up to the first extra
        /// byte.
        actual: u64,
    },
    /// The ciphertext given to a [`Decryptor`] was not the one its
    /// [`Verifier`] accepted (different length or digest): the input changed
    /// between the two passes. Plaintext produced by that pass must be
    /// discarded.
    #[error("attachment ciphertext changed after verification")]
    Changed,
    /// Reading or writing failed in [`encrypt_stream`] or [`decrypt_stream`].
    #[error("attachment I/O error: {0}")]
    Io(#[from] io::Error),
}

// ---------------------------------------------------------------------------
// Sizes

/// The size an attachment of `len` bytes is padded to before encryption, by
/// Signal's rule: `max(541, floor(1.05^ceil(log(len) / log(1.05))))`.
///
/// Sizes are thereby rounded up to one of a series of buckets 5 % apart, so
/// the ciphertext length reveals less about the content. This is computed
/// with `f64` like Signal's clients do; it never returns less than `len`
/// (which floating-point rounding could otherwise produce at a bucket
/// boundary) and saturates instead of overflowing. A bucket that differs from
/// another client's at such a boundary is harmless: the receiver truncates to
/// the announced size and does not check the padding.
pub fn padded_size(len: u64) -> u64 {
    if len == 0 {
        // log(0) is -inf, pow(1.05, -inf) is 0: Signal's formula gives 541.
        return MIN_PADDED_SIZE;
    }
    // `as` from f64 to u64 saturates (and maps NaN to 0), so this cannot
    // overflow or panic.
    #[allow(clippy::cast_precision_loss)]
    let exponent = ((len as f64).ln() / 1.05_f64.ln()).ceil();
    let bucket = 1.05_f64.powf(exponent).floor() as u64;
    bucket.max(len).max(MIN_PADDED_SIZE)
}

/// The length of the ciphertext (IV, CBC with PKCS#7, MAC) for a padded
/// plaintext of `padded_len` bytes: pass [`padded_size`] of the true size for
/// a bucket-padded attachment. Saturates at `u64::MAX`.
pub fn ciphertext_len(padded_len: u64) -> u64 {
    let blocks = (padded_len / BLOCK_LEN as u64).saturating_add(1);
    blocks
        .saturating_mul(BLOCK_LEN as u64)
        .saturating_add((IV_LEN + MAC_LEN) as u64)
}

// ---------------------------------------------------------------------------
// Keys and digests

/// The 64-byte secret of one attachment: AES-256 key, then HMAC-SHA256 key.
///
/// Zeroized on drop. Its `Debug` output shows no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey([u8; KEY_LEN]);

impl AttachmentKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its 64 bytes (AES-256 key, then HMAC-SHA256 key).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A key from a slice, which must be exactly [`KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AttachmentError> {
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| AttachmentError::BadKeyLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// The key's 64 bytes, as they go into an attachment pointer.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn aes_key(&self) -> &[u8] {
        &self.0[..AES_KEY_LEN]
    }

    fn mac_key(&self) -> &[u8] {
        &self.0[AES_KEY_LEN..]
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC pads a key shorter than the hash's block with zeros (RFC 2104,
        // section 2), so the 32-byte MAC key zero-padded to SHA-256's 64-byte
        // block is the same key. This avoids the error path of
        // `new_from_slice`, which cannot happen but would need handling.
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        block[..MAC_KEY_LEN].copy_from_slice(self.mac_key());
        let mac = <HmacSha256 as KeyInit>::new(&block);
        block.as_mut_slice().zeroize();
        mac
    }

    fn cbc_encryptor(&self, iv: &[u8; IV_LEN]) -> cbc::Encryptor<Aes256> {
        cbc::Encryptor::new(
            GenericArray::from_slice(self.aes_key()),
            GenericArray::from_slice(iv),
        )
    }

    fn cbc_decryptor(&self, iv: &[u8; IV_LEN]) -> cbc::Decryptor<Aes256> {
        cbc::Decryptor::new(
            GenericArray::from_slice(self.aes_key()),
            GenericArray::from_slice(iv),
        )
    }
}

impl From<[u8; KEY_LEN]> for AttachmentKey {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        Self::from_bytes(bytes)
    }
}

impl TryFrom<&[u8]> for AttachmentKey {
    type Error = AttachmentError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_slice(bytes)
    }
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

/// A fresh random IV for [`Encryptor::new`] or [`encrypt_stream`].
///
/// Never encrypt twice with the same key and IV.
pub fn generate_iv<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; IV_LEN] {
    let mut iv = [0; IV_LEN];
    rng.fill_bytes(&mut iv);
    iv
}

/// The SHA-256 digest of a whole attachment ciphertext, as the sender puts it
/// in the attachment pointer.
///
/// Not secret; equality is nonetheless constant-time.
#[derive(Clone, Copy, Eq)]
pub struct Digest([u8; DIGEST_LEN]);

impl Digest {
    /// A digest from its 32 bytes.
    pub fn from_bytes(bytes: [u8; DIGEST_LEN]) -> Self {
        Self(bytes)
    }

    /// A digest from a slice, which must be exactly [`DIGEST_LEN`] bytes long
    /// (`None` otherwise).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The digest's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }
}

impl From<[u8; DIGEST_LEN]> for Digest {
    fn from(bytes: [u8; DIGEST_LEN]) -> Self {
        Self(bytes)
    }
}

impl ConstantTimeEq for Digest {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(")?;
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// What an encryption produced, besides the ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncryptionSummary {
    /// SHA-256 over the whole ciphertext, for the attachment pointer.
    pub digest: Digest,
    /// The true plaintext size, for the attachment pointer.
    pub plaintext_len: u64,
    /// The plaintext size after bucket padding (equal to `plaintext_len` when
    /// no padding was applied).
    pub padded_len: u64,
    /// The ciphertext size (IV, CBC, MAC), for the upload.
    pub ciphertext_len: u64,
}

// ---------------------------------------------------------------------------
// Encryption

/// Up to one block of bytes that are not yet whole; zeroized on drop since it
/// may hold plaintext.
#[derive(Zeroize, ZeroizeOnDrop)]
struct PartialBlock {
    bytes: [u8; BLOCK_LEN],
    len: usize,
}

impl PartialBlock {
    fn new() -> Self {
        Self {
            bytes: [0; BLOCK_LEN],
            len: 0,
        }
    }

    /// Moves bytes from the front of `input` until the block is full or the
    /// input is empty; returns the rest of the input.
    fn fill<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let take = (BLOCK_LEN - self.len).min(input.len());
        let (head, rest) = input.split_at(take);
        self.bytes[self.len..self.len + take].copy_from_slice(head);
        self.len += take;
        rest
    }

    fn is_full(&self) -> bool {
        self.len == BLOCK_LEN
    }
}

/// Incremental attachment encryption: IV, AES-256-CBC with PKCS#7, then
/// HMAC-SHA256, hashing the output with SHA-256 as it goes.
///
/// Feed plaintext with [`update`](Self::update) in chunks of any size; each
/// call appends at most the chunk's length plus [`IV_LEN`] + [`BLOCK_LEN`]
/// bytes to `out`, so memory stays bounded by the chunk size. Then either
/// [`finish_padded`](Self::finish_padded) (Signal's bucket padding, what an
/// attachment upload needs) or [`start_padding`](Self::start_padding) to
/// write the padding in bounded steps, or [`finish`](Self::finish) for no
/// padding at all.
///
/// ```
/// # use passerelle_signal::attachment::*;
/// # let mut rng = rand::rngs::OsRng;
/// let key = AttachmentKey::generate(&mut rng);
/// let mut encryptor = Encryptor::new(&key, generate_iv(&mut rng));
/// let mut ciphertext = Vec::new();
/// for chunk in [&b"hello, "[..], b"world"] {
///     encryptor.update(chunk, &mut ciphertext); // (upload and clear `ciphertext` here)
/// }
/// let summary = encryptor.finish_padded(&mut ciphertext);
/// assert_eq!(summary.plaintext_len, 12);
/// assert_eq!(summary.padded_len, 541);
/// assert_eq!(summary.ciphertext_len, ciphertext.len() as u64);
/// ```
pub struct Encryptor {
    cipher: cbc::Encryptor<Aes256>,
    mac: HmacSha256,
    hash: Sha256,
    iv: [u8; IV_LEN],
    iv_written: bool,
    partial: PartialBlock,
    /// Bytes fed through `update`, padding included.
    fed: u64,
}

impl Encryptor {
    /// An encryptor for one attachment under `key` with a fresh random `iv`
    /// (see [`generate_iv`]). Writes nothing yet: the IV is written by the
    /// first `update` or `finish`.
    pub fn new(key: &AttachmentKey, iv: [u8; IV_LEN]) -> Self {
        Self {
            cipher: key.cbc_encryptor(&iv),
            mac: key.hmac(),
            hash: Sha256::new(),
            iv,
            iv_written: false,
            partial: PartialBlock::new(),
            fed: 0,
        }
    }

    /// How many plaintext bytes have been fed so far.
    pub fn plaintext_len(&self) -> u64 {
        self.fed
    }

    /// Encrypts the next chunk of plaintext, appending whatever ciphertext is
    /// complete to `out` (whole blocks; up to 15 bytes wait for the next call).
    pub fn update(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        self.write_iv(out);
        self.fed = self.fed.saturating_add(plaintext.len() as u64);
        let mut input = plaintext;
        if self.partial.len > 0 {
            input = self.partial.fill(input);
            if !self.partial.is_full() {
                return;
            }
            let mut block = [Block::clone_from_slice(&self.partial.bytes)];
            self.partial.bytes.zeroize();
            self.partial.len = 0;
            self.encrypt_blocks(&mut block, out);
        }
        let mut blocks = [Block::default(); BATCH_BLOCKS];
        while input.len() >= BLOCK_LEN {
            let count = (input.len() / BLOCK_LEN).min(BATCH_BLOCKS);
            let (whole, rest) = input.split_at(count * BLOCK_LEN);
            for (block, bytes) in blocks.iter_mut().zip(whole.chunks_exact(BLOCK_LEN)) {
                block.copy_from_slice(bytes);
            }
            self.encrypt_blocks(&mut blocks[..count], out);
            input = rest;
        }
        self.partial.fill(input);
    }

    /// Freezes the plaintext size and switches to writing Signal's bucket
    /// padding: zeros up to [`padded_size`] of the bytes fed so far.
    pub fn start_padding(self) -> PaddingEncryptor {
        let plaintext_len = self.fed;
        PaddingEncryptor {
            inner: self,
            plaintext_len,
            padded_len: padded_size(plaintext_len),
        }
    }

    /// Applies Signal's bucket padding and finishes: appends the padding
    /// zeros (encrypted), the final block and the MAC to `out`.
    ///
    /// The padding is up to 5 % of the plaintext size and is appended in one
    /// go; to keep `out` small for a large attachment, use
    /// [`start_padding`](Self::start_padding) and
    /// [`PaddingEncryptor::pad`] instead.
    pub fn finish_padded(self, out: &mut Vec<u8>) -> EncryptionSummary {
        self.start_padding().finish(out)
    }

    /// Finishes without bucket padding (for callers that padded the plaintext
    /// themselves, or formats that do not pad): appends the final PKCS#7 block
    /// and the MAC to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> EncryptionSummary {
        let len = self.fed;
        self.finish_with(len, out)
    }

    fn finish_with(mut self, plaintext_len: u64, out: &mut Vec<u8>) -> EncryptionSummary {
        self.write_iv(out);
        // PKCS#7: 1 to 16 bytes, each the count; a full block if none is
        // pending.
        let pad = BLOCK_LEN - self.partial.len;
        self.partial.bytes[self.partial.len..].fill(pad as u8);
        let mut block = [Block::clone_from_slice(&self.partial.bytes)];
        self.partial.zeroize();
        self.encrypt_blocks(&mut block, out);
        let tag = self.mac.finalize().into_bytes();
        out.extend_from_slice(&tag);
        self.hash.update(tag);
        let padded_len = self.fed;
        EncryptionSummary {
            digest: Digest(self.hash.finalize().into()),
            plaintext_len,
            padded_len,
            ciphertext_len: ciphertext_len(padded_len),
        }
    }

    fn write_iv(&mut self, out: &mut Vec<u8>) {
        if !self.iv_written {
            self.iv_written = true;
            out.extend_from_slice(&self.iv);
            self.mac.update(&self.iv);
            self.hash.update(self.iv);
        }
    }

    /// Encrypts plaintext blocks in place and appends them to `out`, the MAC
    /// and the digest.
    fn encrypt_blocks(&mut self, blocks: &mut [Block], out: &mut Vec<u8>) {
        self.cipher.encrypt_blocks_mut(blocks);
        let start = out.len();
        for block in blocks.iter() {
            out.extend_from_slice(block);
        }
        self.mac.update(&out[start..]);
        self.hash.update(&out[start..]);
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("plaintext_len", &self.fed)
            .finish_non_exhaustive()
    }
}

/// The padding stage of an [`Encryptor`]: the plaintext size is fixed, and
/// what remains is zeros up to [`padded_size`] of it, then the final block and
/// the MAC.
///
/// [`pad`](Self::pad) writes the padding in steps of bounded size;
/// [`finish`](Self::finish) writes whatever padding is left and ends.
///
/// ```
/// # use passerelle_signal::attachment::*;
/// # let key = AttachmentKey::from_bytes([7; 64]);
/// let mut encryptor = Encryptor::new(&key, [9; 16]);
/// let mut out = Vec::new();
/// encryptor.update(&[1; 100_000], &mut out);
/// out.clear(); // (sent)
/// let mut padding = encryptor.start_padding();
/// while padding.remaining() > 0 {
///     padding.pad(16 * 1024, &mut out);
///     assert!(out.len() <= 16 * 1024 + 16);
///     out.clear(); // (sent)
/// }
/// let summary = padding.finish(&mut out);
/// assert_eq!(summary.padded_len, padded_size(100_000));
/// ```
pub struct PaddingEncryptor {
    inner: Encryptor,
    plaintext_len: u64,
    padded_len: u64,
}

impl PaddingEncryptor {
    /// The true plaintext size.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The padded size the plaintext is brought to.
    pub fn padded_len(&self) -> u64 {
        self.padded_len
    }

    /// How many padding bytes are still to be written.
    pub fn remaining(&self) -> u64 {
        self.padded_len.saturating_sub(self.inner.fed)
    }

    /// Encrypts up to `max` more padding bytes, appending the complete blocks
    /// to `out`; returns how many padding bytes remain.
    pub fn pad(&mut self, max: usize, out: &mut Vec<u8>) -> u64 {
        let mut todo = usize::try_from(self.remaining()).map_or(max, |r| r.min(max));
        while todo > 0 {
            let step = todo.min(ZEROS.len());
            self.inner.update(&ZEROS[..step], out);
            todo -= step;
        }
        self.remaining()
    }

    /// Writes the remaining padding, the final block and the MAC to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> EncryptionSummary {
        while self.pad(usize::MAX, out) > 0 {}
        self.inner.finish_with(self.plaintext_len, out)
    }
}

impl fmt::Debug for PaddingEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaddingEncryptor")
            .field("plaintext_len", &self.plaintext_len)
            .field("padded_len", &self.padded_len)
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Verification

/// The first pass of decryption: checks a ciphertext's length, MAC and digest
/// without decrypting anything.
///
/// Feed the whole ciphertext with [`update`](Self::update) in chunks of any
/// size (it keeps only the last [`MAC_LEN`] bytes back), then call
/// [`finish`](Self::finish) with the digest from the attachment pointer. Only
/// a successful `finish` yields the [`VerifiedCiphertext`] a [`Decryptor`]
/// needs. See the [module documentation](self) for why.
pub struct Verifier {
    key: AttachmentKey,
    mac: HmacSha256,
    hash: Sha256,
    /// The last bytes seen, not yet fed to the MAC: they may be the tag.
    tail: [u8; MAC_LEN],
    tail_len: usize,
    iv: [u8; IV_LEN],
    len: u64,
}

impl Verifier {
    /// A verifier for a ciphertext encrypted under `key`.
    pub fn new(key: &AttachmentKey) -> Self {
        Self {
            key: key.clone(),
            mac: key.hmac(),
            hash: Sha256::new(),
            tail: [0; MAC_LEN],
            tail_len: 0,
            iv: [0; IV_LEN],
            len: 0,
        }
    }

    /// How many ciphertext bytes have been fed so far.
    pub fn ciphertext_len(&self) -> u64 {
        self.len
    }

    /// Feeds the next chunk of ciphertext.
    pub fn update(&mut self, ciphertext: &[u8]) {
        if self.len < IV_LEN as u64 {
            let start = self.len as usize;
            let take = (IV_LEN - start).min(ciphertext.len());
            self.iv[start..start + take].copy_from_slice(&ciphertext[..take]);
        }
        self.len = self.len.saturating_add(ciphertext.len() as u64);
        self.hash.update(ciphertext);

        // Everything but the last MAC_LEN bytes seen goes into the MAC.
        let total = self.tail_len + ciphertext.len();
        if total <= MAC_LEN {
            self.tail[self.tail_len..total].copy_from_slice(ciphertext);
            self.tail_len = total;
            return;
        }
        let to_mac = total - MAC_LEN;
        let from_tail = to_mac.min(self.tail_len);
        let from_input = to_mac - from_tail;
        self.mac.update(&self.tail[..from_tail]);
        self.mac.update(&ciphertext[..from_input]);
        let kept = self.tail_len - from_tail;
        self.tail.copy_within(from_tail..self.tail_len, 0);
        self.tail[kept..].copy_from_slice(&ciphertext[from_input..]);
        self.tail_len = MAC_LEN;
    }

    /// Checks what was fed: long enough, whole blocks, MAC and then
    /// `expected_digest`, both compared in constant time.
    ///
    /// # Errors
    ///
    /// [`AttachmentError::TooShort`], [`AttachmentError::NotBlockAligned`],
    /// [`AttachmentError::BadMac`] or [`AttachmentError::BadDigest`].
    pub fn finish(self, expected_digest: &Digest) -> Result<VerifiedCiphertext, AttachmentError> {
        let len = self.len;
        if len < MIN_CIPHERTEXT_LEN as u64 {
            return Err(AttachmentError::TooShort(len));
        }
        if (len - (IV_LEN + MAC_LEN) as u64) % BLOCK_LEN as u64 != 0 {
            return Err(AttachmentError::NotBlockAligned(len));
        }
        let tag = self.mac.finalize().into_bytes();
        let mac_ok = tag.as_slice().ct_eq(&self.tail);
        let digest = Digest(self.hash.finalize().into());
        let digest_ok = digest.ct_eq(expected_digest);
        if !bool::from(mac_ok) {
            return Err(AttachmentError::BadMac);
        }
        if !bool::from(digest_ok) {
            return Err(AttachmentError::BadDigest);
        }
        Ok(VerifiedCiphertext {
            key: self.key,
            iv: self.iv,
            digest,
            ciphertext_len: len,
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("ciphertext_len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Proof that a ciphertext passed a [`Verifier`]: its key, IV, length and
/// digest, from which a [`Decryptor`] is built. Only
/// [`Verifier::finish`] makes one.
#[derive(Clone)]
pub struct VerifiedCiphertext {
    key: AttachmentKey,
    iv: [u8; IV_LEN],
    digest: Digest,
    ciphertext_len: u64,
}

impl VerifiedCiphertext {
    /// The digest of the verified ciphertext.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The length of the verified ciphertext.
    pub fn ciphertext_len(&self) -> u64 {
        self.ciphertext_len
    }

    /// An upper bound on the plaintext size it can hold (the CBC length
    /// minus one byte of PKCS#7).
    pub fn max_plaintext_len(&self) -> u64 {
        self.body_len() - 1
    }

    /// The CBC part's length; at least one block, as `Verifier::finish` made
    /// sure.
    fn body_len(&self) -> u64 {
        self.ciphertext_len - (IV_LEN + MAC_LEN) as u64
    }

    /// A [`Decryptor`] for this ciphertext that yields its first
    /// `plaintext_len` bytes (the size announced in the attachment pointer).
    ///
    /// # Errors
    ///
    /// [`AttachmentError::SizeMismatch`] if `plaintext_len` is more than the
    /// ciphertext can hold.
    pub fn decryptor(&self, plaintext_len: u64) -> Result<Decryptor, AttachmentError> {
        Decryptor::new(self, plaintext_len)
    }
}

impl fmt::Debug for VerifiedCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCiphertext")
            .field("digest", &self.digest)
            .field("ciphertext_len", &self.ciphertext_len)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Decryption

/// Why a [`Decryptor`] will fail at `finish`, recorded when it is noticed.
#[derive(Clone, Copy, Debug)]
enum Failure {
    BadPadding,
    SizeMismatch { unpadded_len: u64 },
}

/// The second pass of decryption: streams out the plaintext of a
/// [`VerifiedCiphertext`], truncated to the announced size.
///
/// Feed the same ciphertext again, from its first byte (the IV) to its last
/// (the MAC), with [`update`](Self::update) in chunks of any size; each call
/// appends at most the chunk's length plus [`BLOCK_LEN`] bytes of plaintext
/// to `out`. Then call [`finish`](Self::finish): it checks that the bytes
/// fed were exactly the verified ones (else [`AttachmentError::Changed`]),
/// then the PKCS#7 padding and the size. If it fails, discard the plaintext
/// (see the [module documentation](self)).
pub struct Decryptor {
    cipher: cbc::Decryptor<Aes256>,
    hash: Sha256,
    expected_digest: Digest,
    ciphertext_len: u64,
    body_len: u64,
    plaintext_len: u64,
    /// Ciphertext bytes fed so far.
    fed: u64,
    /// More bytes than the verified ciphertext were fed.
    overrun: bool,
    /// CBC bytes decrypted so far: the offset of the next plaintext block.
    body_done: u64,
    partial: PartialBlock,
    emitted: u64,
    failure: Option<Failure>,
}

impl Decryptor {
    /// A decryptor for `verified` that yields its first `plaintext_len` bytes
    /// (the size announced in the attachment pointer).
    ///
    /// # Errors
    ///
    /// [`AttachmentError::SizeMismatch`] if `plaintext_len` is more than the
    /// ciphertext can hold.
    pub fn new(verified: &VerifiedCiphertext, plaintext_len: u64) -> Result<Self, AttachmentError> {
        let max = verified.max_plaintext_len();
        if plaintext_len > max {
            return Err(AttachmentError::SizeMismatch {
                expected: plaintext_len,
                actual: max,
            });
        }
        Ok(Self {
            cipher: verified.key.cbc_decryptor(&verified.iv),
            hash: Sha256::new(),
            expected_digest: verified.digest,
            ciphertext_len: verified.ciphertext_len,
            body_len: verified.body_len(),
            plaintext_len,
            fed: 0,
            overrun: false,
            body_done: 0,
            partial: PartialBlock::new(),
            emitted: 0,
            failure: None,
        })
    }

    /// How many plaintext bytes have been appended to output so far.
    pub fn plaintext_emitted(&self) -> u64 {
        self.emitted
    }

    /// Feeds the next chunk of ciphertext, appending the plaintext it
    /// completes to `out`. Bytes past the verified length are not decrypted;
    /// they make [`finish`](Self::finish) fail.
    pub fn update(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) {
        if self.overrun {
            return;
        }
        let room = self.ciphertext_len - self.fed;
        let input = match usize::try_from(room) {
            Ok(room) if room < ciphertext.len() => {
                self.overrun = true;
                &ciphertext[..room]
            }
            _ => ciphertext,
        };
        self.hash.update(input);
        let start = self.fed;
        self.fed += input.len() as u64;

        // The CBC part is [IV_LEN, IV_LEN + body_len) of the ciphertext.
        let body_start = IV_LEN as u64;
        let body_end = body_start + self.body_len;
        let from = start.clamp(body_start, body_end);
        let to = self.fed.clamp(body_start, body_end);
        if from < to {
            // Both offsets lie within `input`, whose length is a usize.
            let lo = (from - start) as usize;
            let hi = (to - start) as usize;
            self.decrypt_body(&input[lo..hi], out);
        }
    }

    /// Checks that the ciphertext fed was exactly the verified one, and that
    /// its padding and size were right; returns the plaintext size.
    ///
    /// # Errors
    ///
    /// [`AttachmentError::Changed`] if the bytes fed were not the verified
    /// ciphertext (checked first), else [`AttachmentError::BadPadding`] or
    /// [`AttachmentError::SizeMismatch`].
    pub fn finish(self) -> Result<u64, AttachmentError> {
        let digest = Digest(self.hash.finalize().into());
        let same = !self.overrun
            && self.fed == self.ciphertext_len
            && bool::from(digest.ct_eq(&self.expected_digest));
        if !same {
            return Err(AttachmentError::Changed);
        }
        match self.failure {
            Some(Failure::BadPadding) => Err(AttachmentError::BadPadding),
            Some(Failure::SizeMismatch { unpadded_len }) => Err(AttachmentError::SizeMismatch {
                expected: self.plaintext_len,
                actual: unpadded_len,
            }),
            None if self.emitted == self.plaintext_len => Ok(self.emitted),
            // Unreachable once the whole verified ciphertext was fed; kept so
            // that a logic error cannot turn into a short Ok.
            None => Err(AttachmentError::SizeMismatch {
                expected: self.plaintext_len,
                actual: self.emitted,
            }),
        }
    }

    fn decrypt_body(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let mut input = body;
        if self.partial.len > 0 {
            input = self.partial.fill(input);
            if !self.partial.is_full() {
                return;
            }
            let mut block = [Block::clone_from_slice(&self.partial.bytes)];
            self.partial.len = 0;
            self.decrypt_blocks(&mut block, out);
        }
        let mut blocks = [Block::default(); BATCH_BLOCKS];
        while input.len() >= BLOCK_LEN {
            let count = (input.len() / BLOCK_LEN).min(BATCH_BLOCKS);
            let (whole, rest) = input.split_at(count * BLOCK_LEN);
            for (block, bytes) in blocks.iter_mut().zip(whole.chunks_exact(BLOCK_LEN)) {
                block.copy_from_slice(bytes);
            }
            self.decrypt_blocks(&mut blocks[..count], out);
            input = rest;
        }
        self.partial.fill(input);
    }

    /// Decrypts ciphertext blocks in place and appends the part of them that
    /// lies within the announced size to `out`; strips the padding of the
    /// final block.
    fn decrypt_blocks(&mut self, blocks: &mut [Block], out: &mut Vec<u8>) {
        self.cipher.decrypt_blocks_mut(blocks);
        for block in blocks.iter_mut() {
            let offset = self.body_done;
            self.body_done += BLOCK_LEN as u64;
            let mut usable = BLOCK_LEN;
            if self.body_done == self.body_len {
                // The final block. The MAC was verified, so nobody can probe
                // this check with chosen ciphertexts; and `finish` reports it
                // only after making sure these are the verified bytes.
                match pkcs7_data_len(block) {
                    None => {
                        self.failure = Some(Failure::BadPadding);
                        usable = 0;
                    }
                    Some(data_len) => {
                        let unpadded_len = offset + data_len as u64;
                        if unpadded_len < self.plaintext_len {
                            self.failure = Some(Failure::SizeMismatch { unpadded_len });
                        }
                        usable = data_len;
                    }
                }
            }
            if offset < self.plaintext_len {
                let wanted = self.plaintext_len - offset;
                let take = usize::try_from(wanted).map_or(usable, |w| w.min(usable));
                out.extend_from_slice(&block[..take]);
                self.emitted += take as u64;
            }
            block.as_mut_slice().zeroize();
        }
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("ciphertext_len", &self.ciphertext_len)
            .field("plaintext_len", &self.plaintext_len)
            .field("fed", &self.fed)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

/// The number of data bytes in a final block with PKCS#7 padding, or `None`
/// if the padding is invalid.
fn pkcs7_data_len(block: &Block) -> Option<usize> {
    let pad = usize::from(block[BLOCK_LEN - 1]);
    if pad == 0 || pad > BLOCK_LEN {
        return None;
    }
    let data_len = BLOCK_LEN - pad;
    block[data_len..]
        .iter()
        .all(|&byte| usize::from(byte) == pad)
        .then_some(data_len)
}

// ---------------------------------------------------------------------------
// Streams

/// Reads into `buf` until it is full or the reader is at its end, retrying on
/// [`io::ErrorKind::Interrupted`]; returns how many bytes were read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Encrypts exactly `plaintext_len` bytes from `reader` with Signal's bucket
/// padding, writing the ciphertext to `writer`, with a fixed 64 KiB buffer.
///
/// Put the returned digest and `plaintext_len` into the attachment pointer;
/// the returned `ciphertext_len` is the upload size.
///
/// # Errors
///
/// [`AttachmentError::SizeMismatch`] if the reader ends before
/// `plaintext_len` bytes or has more after them (then a partial ciphertext
/// has been written), and [`AttachmentError::Io`].
pub fn encrypt_stream<R: Read, W: Write>(
    mut reader: R,
    mut writer: W,
    key: &AttachmentKey,
    iv: [u8; IV_LEN],
    plaintext_len: u64,
) -> Result<EncryptionSummary, AttachmentError> {
    let mut buf = Zeroizing::new(vec![0; STREAM_BUF_LEN]);
    let mut out = Zeroizing::new(Vec::with_capacity(STREAM_BUF_LEN + IV_LEN + BLOCK_LEN));
    let mut encryptor = Encryptor::new(key, iv);
    let mut read = 0;
    while read < plaintext_len {
        let want = usize::try_from(plaintext_len - read).map_or(buf.len(), |r| r.min(buf.len()));
        let n = read_full(&mut reader, &mut buf[..want])?;
        if n == 0 {
            return Err(AttachmentError::SizeMismatch {
                expected: plaintext_len,
                actual: read,
            });
        }
        read += n as u64;
        encryptor.update(&buf[..n], &mut out);
        writer.write_all(&out)?;
        out.clear();
    }
    if read_full(&mut reader, &mut buf[..1])? != 0 {
        return Err(AttachmentError::SizeMismatch {
            expected: plaintext_len,
            actual: plaintext_len.saturating_add(1),
        });
    }
    let mut padding = encryptor.start_padding();
    while padding.remaining() > 0 {
        padding.pad(STREAM_BUF_LEN, &mut out);
        writer.write_all(&out)?;
        out.clear();
    }
    let summary = padding.finish(&mut out);
    writer.write_all(&out)?;
    writer.flush()?;
    Ok(summary)
}

/// Verifies and decrypts an attachment from `reader` into `writer` in two
/// passes with a fixed 64 KiB buffer: the first checks length, MAC and
/// `expected_digest` and writes nothing; the second seeks back to where the
/// reader was and decrypts, writing the first `plaintext_len` bytes of
/// plaintext. Returns the number of bytes written.
///
/// # Errors
///
/// Every [`AttachmentError`] but `BadKeyLength`. Errors of the first pass
/// come before anything is written. If the second pass fails (the reader
/// returned other bytes than the first time, [`AttachmentError::Changed`];
/// padding or size errors; I/O), `writer` may have received plaintext, which
/// must be discarded.
pub fn decrypt_stream<R: Read + Seek, W: Write>(
    mut reader: R,
    mut writer: W,
    key: &AttachmentKey,
    expected_digest: &Digest,
    plaintext_len: u64,
) -> Result<u64, AttachmentError> {
    let start = reader.stream_position()?;
    let mut buf = vec![0; STREAM_BUF_LEN];

    let mut verifier = Verifier::new(key);
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
    }
    let verified = verifier.finish(expected_digest)?;
    let mut decryptor = Decryptor::new(&verified, plaintext_len)?;

    reader.seek(SeekFrom::Start(start))?;
    let mut out = Zeroizing::new(Vec::with_capacity(STREAM_BUF_LEN + BLOCK_LEN));
    // Read at most one byte past the verified length: enough to notice that
    // the input grew, without reading an unbounded input to its end.
    let mut left = verified.ciphertext_len().saturating_add(1);
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = read_full(&mut reader, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        decryptor.update(&buf[..n], &mut out);
        writer.write_all(&out)?;
        out.clear();
    }
    let written = decryptor.finish()?;
    writer.flush()?;
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn key() -> AttachmentKey {
        let mut bytes = [0; KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        AttachmentKey::from_bytes(bytes)
    }

    #[test]
    fn hmac_with_zero_padded_key_is_hmac_with_short_key() {
        let key = key();
        let mut ours = key.hmac();
        let mut reference = <HmacSha256 as Mac>::new_from_slice(&key.as_bytes()[32..]).unwrap();
        ours.update(b"attachment");
        reference.update(b"attachment");
        assert_eq!(
            ours.finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn verifier_tail_holds_back_exactly_the_mac() {
        // Feed the same bytes in every split into at most three chunks; the
        // MAC must see all but the last 32 bytes, whatever the split.
        let data: Vec<u8> = (0..80u8).collect();
        let expected = {
            let mut mac = key().hmac();
            mac.update(&data[..48]);
            mac.finalize().into_bytes()
        };
        for a in 0..=data.len() {
            for b in a..=data.len() {
                let mut verifier = Verifier::new(&key());
                verifier.update(&data[..a]);
                verifier.update(&data[a..b]);
                verifier.update(&data[b..]);
                assert_eq!(verifier.tail, data[48..]);
                assert_eq!(verifier.iv, data[..16]);
                assert_eq!(verifier.mac.finalize().into_bytes(), expected);
            }
        }
    }

    #[test]
    fn pkcs7() {
        let mut block = Block::default();
        assert_eq!(pkcs7_data_len(&block), None);
        block.fill(16);
        assert_eq!(pkcs7_data_len(&block), Some(0));
        block.fill(17);
        assert_eq!(pkcs7_data_len(&block), None);
        block.fill(0xaa);
        block[15] = 1;
        assert_eq!(pkcs7_data_len(&block), Some(15));
        block[14] = 2;
        block[15] = 2;
        assert_eq!(pkcs7_data_len(&block), Some(14));
        block[14] = 3;
        block[15] = 3;
        assert_eq!(pkcs7_data_len(&block), None);
    }

    #[test]
    fn sizes_do_not_overflow() {
        assert_eq!(padded_size(u64::MAX), u64::MAX);
        assert!(padded_size(u64::MAX - 1) >= u64::MAX - 1);
        assert_eq!(ciphertext_len(u64::MAX), u64::MAX);
        assert_eq!(ciphertext_len(0), 64);
        assert_eq!(ciphertext_len(15), 64);
        assert_eq!(ciphertext_len(16), 80);
        assert_eq!(ciphertext_len(541), 16 + 544 + 32);
    }

    #[test]
    fn small_padded_sizes() {
        for len in 0..=541 {
            assert_eq!(padded_size(len), 541);
        }
        assert_eq!(padded_size(542), 568);
    }

    #[test]
    fn decryptor_rejects_size_beyond_ciphertext_up_front() {
        let key = key();
        let mut ct = Vec::new();
        let summary = Encryptor::new(&key, [1; 16]).finish(&mut ct);
        let mut verifier = Verifier::new(&key);
        verifier.update(&ct);
        let verified = verifier.finish(&summary.digest).unwrap();
        assert_eq!(verified.max_plaintext_len(), 15);
        assert!(matches!(
            verified.decryptor(16),
            Err(AttachmentError::SizeMismatch {
                expected: 16,
                actual: 15
            })
        ));
    }
}
