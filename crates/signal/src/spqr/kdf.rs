//! HKDF-SHA-256, the one key derivation SPQR uses, and its labels.

use hkdf::Hkdf;
use sha2::Sha256;

/// The salt of every derivation that has no key to salt it with.
pub(crate) const ZERO_SALT: [u8; 32] = [0; 32];

/// Fills `out` with HKDF-SHA-256 output.
pub(crate) fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let info = info.concat();
    // Every caller asks for at most 96 bytes, far below 255 * 32.
    if Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(&info, out)
        .is_err()
    {
        out.fill(0);
        debug_assert!(false, "HKDF output too long");
    }
}
