//! The erasure code that splits a key or ciphertext into 32-byte chunks, any
//! `n` of which rebuild it (`n` = length / 32).
//!
//! The message is read as big-endian 16-bit words. Word `k` is the value at
//! x = `k / 16` of polynomial number `k % 16`, so each of the sixteen
//! polynomials has degree below `n`. Chunk `i` carries the sixteen values
//! at x = `i`: the first `n` chunks are the message itself, every later one
//! is fresh redundancy. Chunk indices are 16-bit, so the stream repeats
//! after 65536 chunks.

use super::gf16::Gf16;

/// Bytes in one chunk.
pub(crate) const CHUNK_LEN: usize = 32;
/// Polynomials, hence field elements per chunk.
const POLYS: usize = CHUNK_LEN / 2;

/// One piece of an encoded message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Chunk {
    pub(crate) index: u16,
    pub(crate) data: [u8; CHUNK_LEN],
}

impl Chunk {
    fn word(&self, poly: usize) -> Gf16 {
        Gf16(u16::from_be_bytes([
            self.data[2 * poly],
            self.data[2 * poly + 1],
        ]))
    }
}

/// Whether a message of `len` bytes can be chunked: a whole number of
/// chunks, at least one, and no more than there are chunk indices.
pub(crate) fn valid_len(len: usize) -> bool {
    len > 0 && len % CHUNK_LEN == 0 && len / CHUNK_LEN <= 1 << 16
}

/// The coefficients `c` such that `P(x) = sum(c[i] * P(xs[i]))` for every
/// polynomial of degree below `xs.len()`; the `xs` are distinct and `x` is
/// none of them.
fn lagrange_weights(xs: &[Gf16], x: Gf16) -> Vec<Gf16> {
    xs.iter()
        .enumerate()
        .map(|(i, &xi)| {
            let mut numerator = Gf16::ONE;
            let mut denominator = Gf16::ONE;
            for (k, &xk) in xs.iter().enumerate() {
                if k != i {
                    numerator = numerator.mul(x.add(xk));
                    denominator = denominator.mul(xi.add(xk));
                }
            }
            numerator.div(denominator)
        })
        .collect()
}

/// Produces chunk after chunk of one message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Encoder {
    message: Vec<u8>,
    next: u32,
}

impl Encoder {
    /// Starts encoding `message`, whose length passes [`valid_len`].
    pub(crate) fn new(message: Vec<u8>) -> Self {
        debug_assert!(valid_len(message.len()));
        Self { message, next: 0 }
    }

    /// Restores an encoder; `None` when the length cannot be chunked.
    pub(crate) fn restore(message: Vec<u8>, next: u32) -> Option<Self> {
        valid_len(message.len()).then_some(Self { message, next })
    }

    pub(crate) fn message(&self) -> &[u8] {
        &self.message
    }

    pub(crate) fn next_index(&self) -> u32 {
        self.next
    }

    /// The next chunk in the stream.
    pub(crate) fn next_chunk(&mut self) -> Chunk {
        let chunk = self.chunk_at(self.next as u16);
        self.next = self.next.wrapping_add(1);
        chunk
    }

    /// The chunk with index `index`.
    pub(crate) fn chunk_at(&self, index: u16) -> Chunk {
        let n = self.message.len() / CHUNK_LEN;
        let mut data = [0u8; CHUNK_LEN];
        if usize::from(index) < n {
            let start = usize::from(index) * CHUNK_LEN;
            data.copy_from_slice(&self.message[start..start + CHUNK_LEN]);
        } else {
            let xs: Vec<Gf16> = (0..n).map(|i| Gf16(i as u16)).collect();
            let weights = lagrange_weights(&xs, Gf16(index));
            for poly in 0..POLYS {
                let mut y = Gf16::ZERO;
                for (i, w) in weights.iter().enumerate() {
                    let at = 2 * (i * POLYS + poly);
                    let word = Gf16(u16::from_be_bytes([self.message[at], self.message[at + 1]]));
                    y = y.add(w.mul(word));
                }
                data[2 * poly..2 * poly + 2].copy_from_slice(&y.0.to_be_bytes());
            }
        }
        Chunk { index, data }
    }
}

/// Collects chunks of one message until it can be rebuilt.
///
/// It keeps at most `n` chunks with distinct indices, the first seen for
/// each index: `n` are enough, and the state machine moves on as soon as
/// they are there.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Decoder {
    len: usize,
    chunks: Vec<Chunk>,
}

impl Decoder {
    /// Waits for a message of `len` bytes, which passes [`valid_len`].
    pub(crate) fn new(len: usize) -> Self {
        debug_assert!(valid_len(len));
        Self {
            len,
            chunks: Vec::new(),
        }
    }

    /// Restores a decoder; `None` when the chunks could not have been
    /// collected by one (too many, or a repeated index).
    pub(crate) fn restore(len: usize, chunks: Vec<Chunk>) -> Option<Self> {
        let mut decoder = Self::new(len);
        if !valid_len(len) || chunks.len() > decoder.needed() {
            return None;
        }
        for chunk in chunks {
            if decoder.has(chunk.index) {
                return None;
            }
            decoder.chunks.push(chunk);
        }
        Some(decoder)
    }

    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    fn needed(&self) -> usize {
        self.len / CHUNK_LEN
    }

    fn has(&self, index: u16) -> bool {
        self.chunks.iter().any(|c| c.index == index)
    }

    /// Takes a chunk in; repeated indices and chunks beyond need are dropped.
    pub(crate) fn add(&mut self, chunk: &Chunk) {
        if self.chunks.len() < self.needed() && !self.has(chunk.index) {
            self.chunks.push(*chunk);
        }
    }

    /// The message, once enough chunks are in.
    pub(crate) fn decoded(&self) -> Option<Vec<u8>> {
        let n = self.needed();
        if self.chunks.len() < n {
            return None;
        }
        let xs: Vec<Gf16> = self.chunks.iter().map(|c| Gf16(c.index)).collect();
        let mut out = Vec::with_capacity(self.len);
        for x in 0..n {
            let x = x as u16;
            if let Some(chunk) = self.chunks.iter().find(|c| c.index == x) {
                out.extend_from_slice(&chunk.data);
                continue;
            }
            let weights = lagrange_weights(&xs, Gf16(x));
            for poly in 0..POLYS {
                let mut y = Gf16::ZERO;
                for (w, chunk) in weights.iter().zip(&self.chunks) {
                    y = y.add(w.mul(chunk.word(poly)));
                }
                out.extend_from_slice(&y.0.to_be_bytes());
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn first_chunks_are_the_message() {
        let msg = message(96, 7);
        let mut enc = Encoder::new(msg.clone());
        for i in 0..3 {
            let c = enc.next_chunk();
            assert_eq!(c.index, i);
            assert_eq!(
                &c.data[..],
                &msg[usize::from(i) * 32..usize::from(i + 1) * 32]
            );
        }
    }

    #[test]
    fn redundancy_lies_on_the_same_polynomials() {
        // With n = 1 every polynomial is constant: all chunks are equal.
        let msg = message(32, 1);
        let enc = Encoder::new(msg.clone());
        assert_eq!(&enc.chunk_at(500).data[..], &msg[..]);
        // With n = 2 each polynomial is a line a + b*x, whose value at
        // x = 2 is a + 2b (field product).
        let msg = message(64, 9);
        let enc = Encoder::new(msg.clone());
        let c2 = enc.chunk_at(2);
        for poly in 0..POLYS {
            let a = Gf16(u16::from_be_bytes([msg[2 * poly], msg[2 * poly + 1]]));
            let at1 = Gf16(u16::from_be_bytes([msg[32 + 2 * poly], msg[33 + 2 * poly]]));
            let b = at1.add(a);
            assert_eq!(c2.word(poly), a.add(Gf16(2).mul(b)));
        }
    }

    #[test]
    fn rebuilds_from_redundancy_only() {
        for len in [96, 160, 960, 1152] {
            let msg = message(len, len as u8);
            let enc = Encoder::new(msg.clone());
            let n = len / 32;
            let mut dec = Decoder::new(len);
            for i in n..2 * n {
                assert_eq!(dec.decoded(), None);
                dec.add(&enc.chunk_at(i as u16));
            }
            assert_eq!(dec.decoded(), Some(msg));
        }
    }

    #[test]
    fn chunk_indices_wrap() {
        let msg = message(64, 3);
        let mut enc = Encoder::restore(msg, u32::from(u16::MAX)).expect("valid");
        assert_eq!(enc.next_chunk().index, u16::MAX);
        assert_eq!(enc.next_chunk().index, 0);
    }

    #[test]
    fn repeated_indices_count_once() {
        let msg = message(96, 2);
        let enc = Encoder::new(msg.clone());
        let mut dec = Decoder::new(96);
        dec.add(&enc.chunk_at(5));
        dec.add(&enc.chunk_at(5));
        dec.add(&enc.chunk_at(1));
        assert_eq!(dec.decoded(), None);
        dec.add(&enc.chunk_at(9));
        assert_eq!(dec.decoded(), Some(msg));
        assert!(Decoder::restore(96, vec![enc.chunk_at(1), enc.chunk_at(1)]).is_none());
        assert!(Decoder::restore(96, (0..4).map(|i| enc.chunk_at(i)).collect()).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any n distinct chunk indices rebuild the message.
        #[test]
        fn any_n_chunks_rebuild(
            seed: u8,
            n in 1usize..=36,
            indices in proptest::collection::hash_set(any::<u16>(), 36),
        ) {
            let msg = message(n * 32, seed);
            let enc = Encoder::new(msg.clone());
            let mut dec = Decoder::new(n * 32);
            for &i in indices.iter().take(n) {
                dec.add(&enc.chunk_at(i));
            }
            prop_assert_eq!(dec.decoded(), Some(msg));
        }
    }
}
