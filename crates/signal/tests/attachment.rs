//! Attachment encryption: round trips, tampering, a known-answer comparison
//! with a one-shot construction from the raw aes/cbc/hmac/sha2 crates, and a
//! 64 MiB streaming run in bounded memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use passerelle_signal::attachment::{
    AttachmentError, AttachmentKey, BLOCK_LEN, Decryptor, Digest, EncryptionSummary, Encryptor,
    IV_LEN, KEY_LEN, MAC_LEN, MIN_CIPHERTEXT_LEN, Verifier, ciphertext_len, decrypt_stream,
    encrypt_stream, generate_iv, padded_size,
};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};

const SIZES: &[usize] = &[
    0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 540, 541, 542, 543, 1000, 4096, 4099, 70_001,
];

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn random_bytes(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn fixed_key() -> AttachmentKey {
    let mut bytes = [0; KEY_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    AttachmentKey::from_bytes(bytes)
}

fn fixed_iv() -> [u8; IV_LEN] {
    let mut iv = [0; IV_LEN];
    for (i, b) in iv.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    iv
}

/// Signal's construction in one shot, with the raw crates: pad with zeros to
/// `padded_len`, AES-256-CBC with PKCS#7, HMAC-SHA256 over IV || CBC, and
/// SHA-256 over the result.
fn one_shot(
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
    padded_len: usize,
) -> (Vec<u8>, [u8; 32]) {
    let mut padded = plaintext.to_vec();
    padded.resize(padded_len, 0);
    let body = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key[..32], iv)
        .unwrap()
        .encrypt_padded_vec_mut::<Pkcs7>(&padded);
    seal(key, iv, &body)
}

/// IV || body || HMAC(IV || body), and its SHA-256.
fn seal(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN], body: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key[32..]).unwrap();
    mac.update(iv);
    mac.update(body);
    let mut out = iv.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&mac.finalize().into_bytes());
    let digest = Sha256::digest(&out).into();
    (out, digest)
}

/// Feeds `data` to `f` in chunks whose sizes cycle through `chunks`.
fn in_chunks<'a>(data: &'a [u8], chunks: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = chunks.iter().copied().filter(|&c| c > 0).cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

fn encrypt_chunked(
    key: &AttachmentKey,
    iv: [u8; IV_LEN],
    plaintext: &[u8],
    chunks: &[usize],
    bucket_padding: bool,
) -> (Vec<u8>, EncryptionSummary) {
    let mut encryptor = Encryptor::new(key, iv);
    let mut ciphertext = Vec::new();
    for chunk in in_chunks(plaintext, chunks) {
        let before = ciphertext.len();
        encryptor.update(chunk, &mut ciphertext);
        assert!(ciphertext.len() - before <= chunk.len() + IV_LEN + BLOCK_LEN);
    }
    let summary = if bucket_padding {
        encryptor.finish_padded(&mut ciphertext)
    } else {
        encryptor.finish(&mut ciphertext)
    };
    (ciphertext, summary)
}

fn decrypt_chunked(
    key: &AttachmentKey,
    ciphertext: &[u8],
    digest: &Digest,
    plaintext_len: u64,
    chunks: &[usize],
) -> Result<Vec<u8>, AttachmentError> {
    let mut verifier = Verifier::new(key);
    for chunk in in_chunks(ciphertext, chunks) {
        verifier.update(chunk);
    }
    let verified = verifier.finish(digest)?;
    let mut decryptor = Decryptor::new(&verified, plaintext_len)?;
    let mut plaintext = Vec::new();
    for chunk in in_chunks(ciphertext, chunks) {
        let before = plaintext.len();
        decryptor.update(chunk, &mut plaintext);
        assert!(plaintext.len() - before <= chunk.len() + BLOCK_LEN);
    }
    let len = decryptor.finish()?;
    assert_eq!(len, plaintext.len() as u64);
    Ok(plaintext)
}

fn decrypt_all(
    key: &AttachmentKey,
    ciphertext: &[u8],
    digest: &Digest,
    plaintext_len: u64,
) -> Result<Vec<u8>, AttachmentError> {
    let mut plaintext = Vec::new();
    let written = decrypt_stream(
        Cursor::new(ciphertext),
        &mut plaintext,
        key,
        digest,
        plaintext_len,
    )?;
    assert_eq!(written, plaintext.len() as u64);
    Ok(plaintext)
}

// ---------------------------------------------------------------------------
// Known answers

#[test]
fn streaming_output_equals_one_shot_construction() {
    let mut rng = rng(1);
    for &len in SIZES {
        let key = AttachmentKey::generate(&mut rng);
        let iv = generate_iv(&mut rng);
        let plaintext = random_bytes(&mut rng, len);
        for (bucket_padding, padded_len) in [(true, padded_size(len as u64) as usize), (false, len)]
        {
            let (expected, expected_digest) = one_shot(key.as_bytes(), &iv, &plaintext, padded_len);
            for chunks in [&[1][..], &[16], &[7, 100, 3], &[65_536]] {
                let (ciphertext, summary) =
                    encrypt_chunked(&key, iv, &plaintext, chunks, bucket_padding);
                assert_eq!(ciphertext, expected, "len {len}, chunks {chunks:?}");
                assert_eq!(summary.digest.as_bytes(), &expected_digest);
                assert_eq!(summary.plaintext_len, len as u64);
                assert_eq!(summary.padded_len, padded_len as u64);
                assert_eq!(summary.ciphertext_len, expected.len() as u64);
                assert_eq!(ciphertext_len(padded_len as u64), expected.len() as u64);
            }
        }
        // encrypt_stream is the bucket-padded variant.
        let mut ciphertext = Vec::new();
        let summary =
            encrypt_stream(&plaintext[..], &mut ciphertext, &key, iv, len as u64).unwrap();
        let (expected, expected_digest) = one_shot(
            key.as_bytes(),
            &iv,
            &plaintext,
            padded_size(len as u64) as usize,
        );
        assert_eq!(ciphertext, expected);
        assert_eq!(summary.digest.as_bytes(), &expected_digest);
    }
}

#[test]
fn pinned_vector() {
    // Key 00..3f, IV a0..af, plaintext "hello", bucket-padded to 541 bytes.
    // The expected values were computed outside Rust, with the OpenSSL CLI:
    //   printf 'hello' + 536 zero bytes > pt.bin
    //   openssl enc -aes-256-cbc -K 000102..1f -iv a0a1..af -in pt.bin -out body.bin
    //   (iv; body.bin) > ivbody.bin
    //   openssl dgst -sha256 -mac HMAC -macopt hexkey:2021..3f -binary ivbody.bin > mac.bin
    //   sha256sum ivbody.bin+mac.bin
    let (ciphertext, summary) = encrypt_chunked(&fixed_key(), fixed_iv(), b"hello", &[5], true);
    let (expected, _) = one_shot(fixed_key().as_bytes(), &fixed_iv(), b"hello", 541);
    assert_eq!(ciphertext, expected);
    assert_eq!(ciphertext.len(), 16 + 544 + 32);
    assert_eq!(hex::encode(&ciphertext[..32]), PINNED_PREFIX);
    assert_eq!(
        hex::encode(&ciphertext[ciphertext.len() - 32..]),
        PINNED_MAC
    );
    assert_eq!(hex::encode(summary.digest.as_bytes()), PINNED_DIGEST);
}

const PINNED_PREFIX: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0f746795d537cf1831b61fa683be3870";
const PINNED_MAC: &str = "bc48592d62f43fb586fa287a07d284930fa944c8c557fd20c4120d15da38b5c4";
const PINNED_DIGEST: &str = "ad5cefa747d7958b3543d8369d479a3da46a1efd6154255a65212ee28b1b35d9";

#[test]
fn one_shot_ciphertexts_decrypt() {
    let mut rng = rng(2);
    for &len in SIZES {
        let key = AttachmentKey::generate(&mut rng);
        let iv = generate_iv(&mut rng);
        let plaintext = random_bytes(&mut rng, len);
        let (ciphertext, digest) = one_shot(
            key.as_bytes(),
            &iv,
            &plaintext,
            padded_size(len as u64) as usize,
        );
        let digest = Digest::from_bytes(digest);
        assert_eq!(
            decrypt_all(&key, &ciphertext, &digest, len as u64).unwrap(),
            plaintext
        );
        for chunks in [&[1][..], &[5, 16, 33]] {
            assert_eq!(
                decrypt_chunked(&key, &ciphertext, &digest, len as u64, chunks).unwrap(),
                plaintext
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_every_small_size_and_chunking() {
    let mut rng = rng(3);
    let key = AttachmentKey::generate(&mut rng);
    for len in 0..=70 {
        let plaintext = random_bytes(&mut rng, len);
        for bucket_padding in [false, true] {
            for chunks in [&[1][..], &[2, 3], &[15], &[16], &[17], &[1000]] {
                let iv = generate_iv(&mut rng);
                let (ciphertext, summary) =
                    encrypt_chunked(&key, iv, &plaintext, chunks, bucket_padding);
                let decrypted =
                    decrypt_chunked(&key, &ciphertext, &summary.digest, len as u64, chunks)
                        .unwrap();
                assert_eq!(decrypted, plaintext, "len {len}, chunks {chunks:?}");
            }
        }
    }
}

#[test]
fn announced_size_truncates_and_larger_is_refused() {
    let mut rng = rng(4);
    let key = AttachmentKey::generate(&mut rng);
    let plaintext = random_bytes(&mut rng, 40);

    // Without bucket padding the ciphertext holds exactly 40 bytes.
    let (ciphertext, summary) = encrypt_chunked(&key, [3; 16], &plaintext, &[40], false);
    for n in 0..=40 {
        let out = decrypt_all(&key, &ciphertext, &summary.digest, n).unwrap();
        assert_eq!(out, plaintext[..n as usize]);
    }
    // 41..=47 fit the CBC length (48) but not the PKCS#7-unpadded data: the
    // error comes from `finish`, after the final block.
    for n in 41..=47 {
        assert!(matches!(
            decrypt_all(&key, &ciphertext, &summary.digest, n),
            Err(AttachmentError::SizeMismatch { expected, actual: 40 }) if expected == n
        ));
    }
    // 48 and more cannot fit at all: refused before decrypting.
    for n in [48, 49, 1000, u64::MAX] {
        assert!(matches!(
            decrypt_all(&key, &ciphertext, &summary.digest, n),
            Err(AttachmentError::SizeMismatch { actual: 47, .. })
        ));
    }

    // With bucket padding the receiver cannot tell padding from data (Signal
    // does not check the zeros): sizes up to the padded size succeed.
    let (ciphertext, summary) = encrypt_chunked(&key, [3; 16], &plaintext, &[7], true);
    let out = decrypt_all(&key, &ciphertext, &summary.digest, 541).unwrap();
    assert_eq!(out[..40], plaintext[..]);
    assert!(out[40..].iter().all(|&b| b == 0));
    assert!(matches!(
        decrypt_all(&key, &ciphertext, &summary.digest, 542),
        Err(AttachmentError::SizeMismatch {
            expected: 542,
            actual: 541
        })
    ));
}

#[test]
fn nonzero_bucket_padding_is_accepted_and_truncated() {
    // Signal clients do not check that the padding is zeros; neither do we.
    let key = fixed_key();
    let iv = fixed_iv();
    let mut padded = b"real data".to_vec();
    padded.resize(541, 0xee);
    let (ciphertext, digest) = one_shot(key.as_bytes(), &iv, &padded, 541);
    let out = decrypt_all(&key, &ciphertext, &Digest::from_bytes(digest), 9).unwrap();
    assert_eq!(out, b"real data");
}

#[test]
fn padding_encryptor_writes_in_bounded_steps() {
    let key = fixed_key();
    let plaintext = vec![0x5a; 300_000];
    let mut encryptor = Encryptor::new(&key, fixed_iv());
    let mut ciphertext = Vec::new();
    encryptor.update(&plaintext, &mut ciphertext);
    let mut padding = encryptor.start_padding();
    assert_eq!(padding.plaintext_len(), 300_000);
    assert_eq!(padding.padded_len(), padded_size(300_000));
    assert!(padding.padded_len() > 300_000 + 4096);
    let mut steps = 0;
    while padding.remaining() > 0 {
        let before = ciphertext.len();
        let remaining = padding.remaining();
        let left = padding.pad(4096, &mut ciphertext);
        assert_eq!(left, remaining.saturating_sub(4096));
        assert!(ciphertext.len() - before <= 4096 + BLOCK_LEN);
        steps += 1;
    }
    assert!(steps > 1);
    let summary = padding.finish(&mut ciphertext);
    let (expected, digest) = one_shot(
        key.as_bytes(),
        &fixed_iv(),
        &plaintext,
        padded_size(300_000) as usize,
    );
    assert_eq!(ciphertext, expected);
    assert_eq!(summary.digest.as_bytes(), &digest);
    assert_eq!(summary.plaintext_len, 300_000);
}

#[test]
fn decrypt_stream_starts_at_the_readers_position() {
    let key = fixed_key();
    let plaintext = b"attachment after a header".to_vec();
    let (ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), &plaintext, &[4], true);
    let mut file = b"HEADER".to_vec();
    file.extend_from_slice(&ciphertext);
    let mut reader = Cursor::new(file);
    reader.seek(SeekFrom::Start(6)).unwrap();
    let mut out = Vec::new();
    decrypt_stream(
        &mut reader,
        &mut out,
        &key,
        &summary.digest,
        plaintext.len() as u64,
    )
    .unwrap();
    assert_eq!(out, plaintext);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_round_trip(
        plaintext in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..3000),
        ],
        enc_chunks in proptest::collection::vec(1usize..700, 1..6),
        dec_chunks in proptest::collection::vec(1usize..700, 1..6),
        bucket_padding in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = rng(seed);
        let key = AttachmentKey::generate(&mut rng);
        let iv = generate_iv(&mut rng);
        let (ciphertext, summary) = encrypt_chunked(&key, iv, &plaintext, &enc_chunks, bucket_padding);
        let padded_len = if bucket_padding { padded_size(plaintext.len() as u64) as usize } else { plaintext.len() };
        let (expected, digest) = one_shot(key.as_bytes(), &iv, &plaintext, padded_len);
        prop_assert_eq!(&ciphertext, &expected);
        prop_assert_eq!(summary.digest.as_bytes(), &digest);
        let decrypted = decrypt_chunked(&key, &ciphertext, &summary.digest, plaintext.len() as u64, &dec_chunks).unwrap();
        prop_assert_eq!(&decrypted, &plaintext);
        let decrypted = decrypt_all(&key, &ciphertext, &summary.digest, plaintext.len() as u64).unwrap();
        prop_assert_eq!(&decrypted, &plaintext);
    }

    #[test]
    fn prop_tampering_is_detected(
        plaintext in proptest::collection::vec(any::<u8>(), 0..700),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        chunks in proptest::collection::vec(1usize..100, 1..4),
    ) {
        let key = fixed_key();
        let (mut ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), &plaintext, &[64], true);
        let i = position.index(ciphertext.len());
        ciphertext[i] ^= flip;
        let mut out = Vec::new();
        let result = decrypt_stream(Cursor::new(&ciphertext), &mut out, &key, &summary.digest, plaintext.len() as u64);
        prop_assert!(matches!(result, Err(AttachmentError::BadMac)));
        prop_assert!(out.is_empty(), "no plaintext may be released before verification");
        let result = decrypt_chunked(&key, &ciphertext, &summary.digest, plaintext.len() as u64, &chunks);
        prop_assert!(matches!(result, Err(AttachmentError::BadMac)));
    }

    #[test]
    fn prop_arbitrary_ciphertext_never_panics(
        ciphertext in proptest::collection::vec(any::<u8>(), 0..400),
        digest in any::<[u8; 32]>(),
        plaintext_len in prop_oneof![0u64..400, any::<u64>()],
    ) {
        let key = fixed_key();
        let result = decrypt_all(&key, &ciphertext, &Digest::from_bytes(digest), plaintext_len);
        prop_assert!(result.is_err());
    }
}

// ---------------------------------------------------------------------------
// Tampering and malformed input

#[test]
fn every_byte_and_bit_flip_is_rejected() {
    let key = fixed_key();
    for len in [0, 17, 100] {
        let plaintext = vec![0x42; len];
        let (ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), &plaintext, &[5], false);
        for i in 0..ciphertext.len() {
            for bit in 0..8 {
                let mut tampered = ciphertext.clone();
                tampered[i] ^= 1 << bit;
                let result = decrypt_all(&key, &tampered, &summary.digest, len as u64);
                assert!(
                    matches!(result, Err(AttachmentError::BadMac)),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn wrong_digest_or_key_is_rejected() {
    let key = fixed_key();
    let (ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), b"data", &[4], true);
    for i in 0..32 {
        let mut digest = *summary.digest.as_bytes();
        digest[i] ^= 0x10;
        assert!(matches!(
            decrypt_all(&key, &ciphertext, &Digest::from_bytes(digest), 4),
            Err(AttachmentError::BadDigest)
        ));
    }
    for i in [0, 31, 32, 63] {
        let mut bytes = *key.as_bytes();
        bytes[i] ^= 1;
        let result = decrypt_all(
            &AttachmentKey::from_bytes(bytes),
            &ciphertext,
            &summary.digest,
            4,
        );
        if i < 32 {
            // A different AES key with the right MAC key: authenticates, then
            // decrypts to garbage whose padding is almost surely invalid.
            assert!(result.is_err() || result.unwrap() != b"data");
        } else {
            assert!(matches!(result, Err(AttachmentError::BadMac)));
        }
    }
}

#[test]
fn truncated_and_extended_ciphertexts_are_rejected() {
    let key = fixed_key();
    let (ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), &[7; 50], &[50], false);
    assert_eq!(ciphertext.len(), 16 + 64 + 32);
    for cut in 0..ciphertext.len() {
        let result = decrypt_all(&key, &ciphertext[..cut], &summary.digest, 0);
        match cut {
            c if c < MIN_CIPHERTEXT_LEN => {
                assert!(matches!(result, Err(AttachmentError::TooShort(n)) if n == c as u64));
            }
            c if (c - IV_LEN - MAC_LEN) % BLOCK_LEN != 0 => {
                assert!(matches!(result, Err(AttachmentError::NotBlockAligned(_))));
            }
            _ => assert!(matches!(result, Err(AttachmentError::BadMac))),
        }
    }
    for extra in [1, 16, 32, 100] {
        let mut longer = ciphertext.clone();
        longer.extend(std::iter::repeat_n(0, extra));
        assert!(decrypt_all(&key, &longer, &summary.digest, 50).is_err());
    }
}

#[test]
fn bad_pkcs7_padding_is_reported_after_authentication() {
    let key = fixed_key();
    let iv = fixed_iv();
    let bad_final_blocks: [[u8; 16]; 4] = [
        [0; 16],                                              // pad byte 0
        [17; 16],                                             // pad byte > 16
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 3, 2, 3], // inconsistent
        [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0x10],  // 16, not all 16
    ];
    for final_block in bad_final_blocks {
        let mut padded = vec![0x33; 32];
        padded.extend_from_slice(&final_block);
        let body = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key.as_bytes()[..32], &iv)
            .unwrap()
            .encrypt_padded_vec_mut::<NoPadding>(&padded);
        let (ciphertext, digest) = seal(key.as_bytes(), &iv, &body);
        let digest = Digest::from_bytes(digest);
        assert!(matches!(
            decrypt_all(&key, &ciphertext, &digest, 0),
            Err(AttachmentError::BadPadding)
        ));
        assert!(matches!(
            decrypt_chunked(&key, &ciphertext, &digest, 10, &[3]),
            Err(AttachmentError::BadPadding)
        ));
    }
}

/// A reader that returns other bytes after it has been rewound once, as a
/// file changed between the verifying and the decrypting pass would.
struct ChangingReader {
    first: Cursor<Vec<u8>>,
    second: Cursor<Vec<u8>>,
    rewound: bool,
}

impl Read for ChangingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rewound {
            self.second.read(buf)
        } else {
            self.first.read(buf)
        }
    }
}

impl Seek for ChangingReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        if pos == SeekFrom::Current(0) {
            return if self.rewound {
                self.second.stream_position()
            } else {
                self.first.stream_position()
            };
        }
        self.rewound = true;
        self.second.seek(pos)
    }
}

#[test]
fn ciphertext_changed_between_passes_is_detected() {
    let key = fixed_key();
    let plaintext = vec![0x11; 200];
    let (ciphertext, summary) = encrypt_chunked(&key, fixed_iv(), &plaintext, &[64], false);
    let other = encrypt_chunked(&key, fixed_iv(), &[0x22; 200], &[64], false).0;

    let mut flipped = ciphertext.clone();
    flipped[40] ^= 0xff;
    let mut cut = ciphertext.clone();
    cut.truncate(ciphertext.len() - 1);
    let mut longer = ciphertext.clone();
    longer.push(0);
    let mut new_iv = ciphertext.clone();
    new_iv[0] ^= 1;

    for second in [flipped, cut, longer, new_iv, other, Vec::new()] {
        let mut reader = ChangingReader {
            first: Cursor::new(ciphertext.clone()),
            second: Cursor::new(second),
            rewound: false,
        };
        let mut out = Vec::new();
        let result = decrypt_stream(&mut reader, &mut out, &key, &summary.digest, 200);
        assert!(
            matches!(result, Err(AttachmentError::Changed)),
            "{result:?}"
        );
    }
}

#[test]
fn encrypt_stream_requires_the_announced_size() {
    let key = fixed_key();
    let data = [1u8; 100];
    let mut sink = Vec::new();
    assert!(matches!(
        encrypt_stream(&data[..], &mut sink, &key, fixed_iv(), 101),
        Err(AttachmentError::SizeMismatch {
            expected: 101,
            actual: 100
        })
    ));
    assert!(matches!(
        encrypt_stream(&data[..], &mut sink, &key, fixed_iv(), 99),
        Err(AttachmentError::SizeMismatch {
            expected: 99,
            actual: 100
        })
    ));
    let mut sink = Vec::new();
    let summary = encrypt_stream(&data[..], &mut sink, &key, fixed_iv(), 100).unwrap();
    assert_eq!(summary.ciphertext_len, sink.len() as u64);
}

#[test]
fn io_errors_are_reported() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Broken {
        fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
            Ok(0)
        }
    }
    let key = fixed_key();
    assert!(matches!(
        encrypt_stream(Broken, Vec::new(), &key, fixed_iv(), 10),
        Err(AttachmentError::Io(_))
    ));
    assert!(matches!(
        encrypt_stream(&[0u8; 10][..], Broken, &key, fixed_iv(), 10),
        Err(AttachmentError::Io(_))
    ));
    assert!(matches!(
        decrypt_stream(Broken, Vec::new(), &key, &Digest::from_bytes([0; 32]), 10),
        Err(AttachmentError::Io(_))
    ));
}

// ---------------------------------------------------------------------------
// Keys, digests, sizes

#[test]
fn keys() {
    let mut rng = rng(5);
    let a = AttachmentKey::generate(&mut rng);
    let b = AttachmentKey::generate(&mut rng);
    assert_ne!(a.as_bytes(), b.as_bytes());
    assert_eq!(
        AttachmentKey::from_slice(a.as_bytes()).unwrap().as_bytes(),
        a.as_bytes()
    );
    assert_eq!(
        AttachmentKey::try_from(&a.as_bytes()[..])
            .unwrap()
            .as_bytes(),
        a.as_bytes()
    );
    assert_eq!(AttachmentKey::from(*a.as_bytes()).as_bytes(), a.as_bytes());
    for len in [0, 1, 32, 63, 65, 128] {
        assert!(matches!(
            AttachmentKey::from_slice(&vec![0; len]),
            Err(AttachmentError::BadKeyLength(n)) if n == len
        ));
    }

    let key = AttachmentKey::from_bytes([0xab; 64]);
    let debug = format!("{key:?} {:?}", Verifier::new(&key));
    assert!(!debug.to_lowercase().contains("ab"), "{debug}");
    assert!(!debug.contains("171"), "{debug}");
    let (ciphertext, summary) = encrypt_chunked(&key, [0; 16], b"x", &[1], true);
    let mut verifier = Verifier::new(&key);
    verifier.update(&ciphertext);
    let verified = verifier.finish(&summary.digest).unwrap();
    let decryptor = Decryptor::new(&verified, 1).unwrap();
    let debug = format!(
        "{verified:?} {decryptor:?} {:?}",
        Encryptor::new(&key, [0; 16])
    );
    assert!(!debug.contains(&"ab".repeat(4)), "{debug}");
}

#[test]
fn digests() {
    let digest = Digest::from_bytes([0x0f; 32]);
    assert_eq!(
        format!("{digest:?}"),
        format!("Digest({})", "0f".repeat(32))
    );
    assert_eq!(Digest::from_slice(&[0x0f; 32]), Some(digest));
    assert_eq!(Digest::from_slice(&[0x0f; 31]), None);
    assert_ne!(Digest::from([0x0e; 32]), digest);
}

#[test]
fn padded_sizes() {
    assert_eq!(padded_size(0), 541);
    assert_eq!(padded_size(1), 541);
    assert_eq!(padded_size(541), 541);
    let mut previous = 0;
    for len in 1..=2_000_000u64 {
        let padded = padded_size(len);
        assert!(padded >= len && padded >= 541);
        // Buckets are at most 5 % apart.
        assert!(padded <= 541.max(len + len / 20 + 1), "{len} -> {padded}");
        assert!(padded >= previous, "not monotonic at {len}");
        previous = padded;
    }
    // A bucket size is its own bucket.
    for len in [541, 568, 1000, 65_536, 1_000_000, 104_857_600] {
        let bucket = padded_size(len);
        assert_eq!(padded_size(bucket), bucket);
    }
    // Large sizes, as a 1 GiB video has, do not overflow.
    let gib = 1u64 << 30;
    assert!(padded_size(gib) >= gib && padded_size(gib) <= gib + gib / 20);
}

// ---------------------------------------------------------------------------
// 64 MiB in bounded memory

const BIG: u64 = 64 << 20;
const CHUNK: usize = 64 * 1024;

/// A deterministic pseudo-random plaintext of `len` bytes, generated as it is
/// read.
struct PatternReader {
    state: u64,
    left: u64,
}

impl PatternReader {
    fn new(len: u64) -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            left: len,
        }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for word in buf[..n].chunks_mut(8) {
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            word.copy_from_slice(&self.state.to_le_bytes()[..word.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that keeps only a SHA-256 and a count of what it is given.
#[derive(Default)]
struct HashingWriter {
    hash: Sha256,
    len: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The ciphertext of a [`PatternReader`] plaintext, produced by an
/// [`Encryptor`] as it is read, so that it never exists whole. Seeking
/// supports what `decrypt_stream` needs: the current position, and back to
/// the start (which restarts the encryption).
struct CiphertextReader {
    key: AttachmentKey,
    iv: [u8; IV_LEN],
    len: u64,
    plaintext: PatternReader,
    stage: Stage,
    pending: Vec<u8>,
    offset: usize,
    position: u64,
    largest_pending: usize,
}

enum Stage {
    Data(Encryptor),
    Padding(passerelle_signal::attachment::PaddingEncryptor),
    Done,
}

impl CiphertextReader {
    fn new(key: AttachmentKey, iv: [u8; IV_LEN], len: u64) -> Self {
        let stage = Stage::Data(Encryptor::new(&key, iv));
        Self {
            key,
            iv,
            len,
            plaintext: PatternReader::new(len),
            stage,
            pending: Vec::with_capacity(CHUNK + 64),
            offset: 0,
            position: 0,
            largest_pending: 0,
        }
    }

    fn refill(&mut self) {
        self.pending.clear();
        self.offset = 0;
        let mut buf = [0; 16 * 1024];
        self.stage = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Data(mut encryptor) => {
                let n = self.plaintext.read(&mut buf).unwrap();
                if n == 0 {
                    Stage::Padding(encryptor.start_padding())
                } else {
                    encryptor.update(&buf[..n], &mut self.pending);
                    Stage::Data(encryptor)
                }
            }
            Stage::Padding(mut padding) => {
                if padding.remaining() > 0 {
                    padding.pad(buf.len(), &mut self.pending);
                    Stage::Padding(padding)
                } else {
                    padding.finish(&mut self.pending);
                    Stage::Done
                }
            }
            Stage::Done => Stage::Done,
        };
        self.largest_pending = self.largest_pending.max(self.pending.len());
    }
}

impl Read for CiphertextReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.pending.len() {
            if matches!(self.stage, Stage::Done) {
                return Ok(0);
            }
            self.refill();
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for CiphertextReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::Current(0) => Ok(self.position),
            SeekFrom::Start(0) => {
                let largest = self.largest_pending;
                *self = Self::new(self.key.clone(), self.iv, self.len);
                self.largest_pending = largest;
                Ok(0)
            }
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "only rewinding")),
        }
    }
}

/// A writer that checks what it is given against a [`PatternReader`]
/// plaintext, without storing it.
struct ComparingWriter {
    expected: PatternReader,
    len: u64,
}

impl Write for ComparingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut expected = vec![0; buf.len()];
        let n = self.expected.read(&mut expected)?;
        assert!(
            n == buf.len() && expected == buf,
            "plaintext differs near offset {}",
            self.len
        );
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn stream_64_mib_in_bounded_memory() {
    // Nothing here holds more than a 64 KiB buffer: the plaintext is generated
    // as it is read, the ciphertext is hashed as it is written, and the
    // decrypting side reads a ciphertext regenerated on each pass.
    let key = AttachmentKey::generate(&mut rng(6));
    let iv = generate_iv(&mut rng(7));

    let mut ciphertext_hash = HashingWriter::default();
    let summary =
        encrypt_stream(PatternReader::new(BIG), &mut ciphertext_hash, &key, iv, BIG).unwrap();
    assert_eq!(summary.plaintext_len, BIG);
    assert_eq!(summary.padded_len, padded_size(BIG));
    assert_eq!(summary.ciphertext_len, ciphertext_hash.len);
    assert_eq!(summary.ciphertext_len, ciphertext_len(padded_size(BIG)));
    assert_eq!(
        summary.digest.as_bytes()[..],
        ciphertext_hash.hash.finalize()[..]
    );

    let mut source = CiphertextReader::new(key.clone(), iv, BIG);
    let mut plaintext = ComparingWriter {
        expected: PatternReader::new(BIG),
        len: 0,
    };
    let written = decrypt_stream(&mut source, &mut plaintext, &key, &summary.digest, BIG).unwrap();
    assert_eq!(written, BIG);
    assert_eq!(plaintext.len, BIG);
    // The ciphertext was produced 16 KiB of plaintext at a time, both passes.
    assert!(source.largest_pending <= 16 * 1024 + IV_LEN + BLOCK_LEN);
}
