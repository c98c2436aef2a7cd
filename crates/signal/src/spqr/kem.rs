//! Incremental ML-KEM-768: the encapsulation key travels in two parts (a
//! 64-byte header, then the 1152-byte vector), and the ciphertext in two
//! parts (960 bytes that need only the header, then 128 bytes).

use libcrux_ml_kem::mlkem768::incremental;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// The header (first part of the encapsulation key).
pub(crate) const HEADER_LEN: usize = 64;
/// The encapsulation key's second part.
pub(crate) const EK_LEN: usize = 1152;
/// The decapsulation key, in libcrux's compressed key-pair form.
pub(crate) const DK_LEN: usize = 2400;
/// The first ciphertext part.
pub(crate) const CT1_LEN: usize = 960;
/// The second ciphertext part.
pub(crate) const CT2_LEN: usize = 128;
/// What the encapsulating side keeps between the two ciphertext parts.
pub(crate) const ENCAPS_STATE_LEN: usize = 2080;

const _: () = {
    assert!(incremental::pk1_len() == HEADER_LEN);
    assert!(incremental::pk2_len() == EK_LEN);
    assert!(incremental::key_pair_compressed_len() == DK_LEN);
    assert!(incremental::Ciphertext1::len() == CT1_LEN);
    assert!(incremental::Ciphertext2::len() == CT2_LEN);
    assert!(incremental::encaps_state_len() == ENCAPS_STATE_LEN);
};

/// A fresh key pair, split for sending.
pub(crate) struct KeyPair {
    pub(crate) header: Vec<u8>,
    pub(crate) ek: Vec<u8>,
    pub(crate) dk: Zeroizing<Vec<u8>>,
}

pub(crate) fn generate(rng: &mut (impl CryptoRng + RngCore)) -> KeyPair {
    let mut seed = Zeroizing::new([0u8; libcrux_ml_kem::KEY_GENERATION_SEED_SIZE]);
    rng.fill_bytes(&mut seed[..]);
    let pair = incremental::KeyPairCompressedBytes::from_seed(*seed);
    KeyPair {
        header: pair.pk1().to_vec(),
        ek: pair.pk2().to_vec(),
        dk: Zeroizing::new(pair.sk().to_vec()),
    }
}

/// Whether `ek` is the key whose header is `header`.
pub(crate) fn ek_matches_header(ek: &[u8], header: &[u8]) -> bool {
    incremental::validate_pk_bytes(header, ek).is_ok()
}

/// The first ciphertext part, the state kept for the second, and the
/// shared secret.
pub(crate) struct Encapsulated {
    pub(crate) ct1: Vec<u8>,
    pub(crate) state: Zeroizing<Vec<u8>>,
    pub(crate) secret: Zeroizing<[u8; 32]>,
}

/// Encapsulates against a header; `None` only if the header is not 64
/// bytes, which the state machine never lets happen.
pub(crate) fn encapsulate1(
    header: &[u8],
    rng: &mut (impl CryptoRng + RngCore),
) -> Option<Encapsulated> {
    let mut randomness = Zeroizing::new([0u8; libcrux_ml_kem::SHARED_SECRET_SIZE]);
    rng.fill_bytes(&mut randomness[..]);
    let mut state = Zeroizing::new(vec![0u8; ENCAPS_STATE_LEN]);
    let mut secret = Zeroizing::new([0u8; 32]);
    let ct1 = incremental::encapsulate1(header, *randomness, &mut state, &mut secret[..]).ok()?;
    Some(Encapsulated {
        ct1: ct1.value.to_vec(),
        state,
        secret,
    })
}

/// The second ciphertext part; `None` on wrong lengths.
pub(crate) fn encapsulate2(state: &[u8], ek: &[u8]) -> Option<Vec<u8>> {
    let state: &[u8; ENCAPS_STATE_LEN] = state.try_into().ok()?;
    let ek: &[u8; EK_LEN] = ek.try_into().ok()?;
    Some(incremental::encapsulate2(state, ek).value.to_vec())
}

/// The shared secret; `None` on wrong lengths. A wrong ciphertext yields
/// ML-KEM's implicit-rejection secret, caught later by the MAC.
pub(crate) fn decapsulate(dk: &[u8], ct1: &[u8], ct2: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let dk: &[u8; DK_LEN] = dk.try_into().ok()?;
    let ct1 = incremental::Ciphertext1 {
        value: ct1.try_into().ok()?,
    };
    let ct2 = incremental::Ciphertext2 {
        value: ct2.try_into().ok()?,
    };
    Some(Zeroizing::new(incremental::decapsulate_compressed_key(
        dk, &ct1, &ct2,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_header_check() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let pair = generate(&mut rng);
        assert_eq!(pair.header.len(), HEADER_LEN);
        assert_eq!(pair.ek.len(), EK_LEN);
        assert_eq!(pair.dk.len(), DK_LEN);
        assert!(ek_matches_header(&pair.ek, &pair.header));
        let other = generate(&mut rng);
        assert!(!ek_matches_header(&other.ek, &pair.header));

        let enc = encapsulate1(&pair.header, &mut rng).expect("encapsulates");
        let ct2 = encapsulate2(&enc.state, &pair.ek).expect("encapsulates");
        let secret = decapsulate(&pair.dk, &enc.ct1, &ct2).expect("decapsulates");
        assert_eq!(*secret, *enc.secret);
        let wrong = decapsulate(&other.dk, &enc.ct1, &ct2).expect("decapsulates");
        assert_ne!(*wrong, *enc.secret);
    }
}
