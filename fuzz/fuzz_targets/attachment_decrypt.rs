//! Attachment decryption under a fixed key: arbitrary bytes as ciphertext
//! (and as digest and announced size) give a typed error, never a panic; and
//! arbitrary bytes as plaintext round-trip, while any byte flipped in their
//! ciphertext is rejected.
//!
//! Input layout: byte 0 picks the chunk size the ciphertext is fed in,
//! bytes 1..9 are the announced plaintext size (little endian), bytes 9..11
//! pick a byte to flip and the XOR mask for the round-trip check, and the rest
//! is the ciphertext (first check) and the plaintext (second check).

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use passerelle_signal::attachment::{
    AttachmentError, AttachmentKey, Digest, Encryptor, Verifier, decrypt_stream,
};

const KEY: [u8; 64] = [0x5a; 64];
const IV: [u8; 16] = [0xa5; 16];

fuzz_target!(|input: &[u8]| {
    let Some((header, data)) = input.split_first_chunk::<11>() else {
        return;
    };
    let chunk = usize::from(header[0]) + 1;
    let announced = u64::from_le_bytes([
        header[1], header[2], header[3], header[4], header[5], header[6], header[7], header[8],
    ]);
    let flip_at = usize::from(header[9]);
    let flip = header[10];
    let key = AttachmentKey::from_bytes(KEY);

    // 1. Arbitrary bytes as ciphertext, with a digest taken from the input:
    //    the MAC cannot verify (that would be an HMAC forgery), and nothing may
    //    be written before it does.
    //    (That digest would have to be a SHA-256 of bytes that begin with it.)
    let digest = data
        .get(..32)
        .and_then(Digest::from_slice)
        .unwrap_or(Digest::from_bytes([0; 32]));
    let mut out = Vec::new();
    let result = decrypt_stream(Cursor::new(data), &mut out, &key, &digest, announced);
    assert!(result.is_err(), "forged attachment accepted");
    assert!(out.is_empty(), "plaintext released before verification");
    let mut verifier = Verifier::new(&key);
    for piece in data.chunks(chunk) {
        verifier.update(piece);
    }
    assert!(verifier.finish(&digest).is_err());

    // 2. The same bytes as plaintext: encrypt in chunks, then decrypt.
    let mut encryptor = Encryptor::new(&key, IV);
    let mut ciphertext = Vec::new();
    for piece in data.chunks(chunk) {
        encryptor.update(piece, &mut ciphertext);
    }
    let summary = if flip_at % 2 == 0 {
        encryptor.finish_padded(&mut ciphertext)
    } else {
        encryptor.finish(&mut ciphertext)
    };
    let len = data.len() as u64;

    let mut out = Vec::new();
    let result = decrypt_stream(
        Cursor::new(&ciphertext),
        &mut out,
        &key,
        &summary.digest,
        len,
    );
    assert_eq!(result.ok(), Some(len));
    assert_eq!(out, data);

    // Any announced size: Ok with a prefix if it fits, else SizeMismatch.
    let mut out = Vec::new();
    match decrypt_stream(
        Cursor::new(&ciphertext),
        &mut out,
        &key,
        &summary.digest,
        announced,
    ) {
        Ok(n) => {
            assert!(n == announced && n <= summary.padded_len);
            let common = data.len().min(out.len());
            assert_eq!(out[..common], data[..common]);
            assert!(out[common..].iter().all(|&b| b == 0));
        }
        Err(AttachmentError::SizeMismatch { .. }) => assert!(announced > summary.padded_len),
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // A flipped byte is rejected, in the first pass...
    let mut tampered = ciphertext.clone();
    let at = flip_at * 7 % tampered.len();
    tampered[at] ^= flip;
    let mut out = Vec::new();
    let result = decrypt_stream(Cursor::new(&tampered), &mut out, &key, &summary.digest, len);
    if flip == 0 {
        assert!(result.is_ok());
    } else {
        assert!(matches!(result, Err(AttachmentError::BadMac)));
        assert!(out.is_empty());
    }

    // ...and, fed to a decryptor after the original passed verification, in
    // the second.
    let mut verifier = Verifier::new(&key);
    verifier.update(&ciphertext);
    let Ok(verified) = verifier.finish(&summary.digest) else {
        panic!("genuine ciphertext rejected");
    };
    let Ok(mut decryptor) = verified.decryptor(len) else {
        panic!("genuine size rejected");
    };
    let mut out = Vec::new();
    for piece in tampered.chunks(chunk) {
        decryptor.update(piece, &mut out);
    }
    match decryptor.finish() {
        Ok(n) => assert!(flip == 0 && n == len && out == data),
        Err(AttachmentError::Changed) => assert!(flip != 0),
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
