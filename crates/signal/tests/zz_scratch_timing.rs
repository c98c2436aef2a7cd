#![allow(clippy::unwrap_used)]
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use std::time::Instant;
#[test]
fn timing() {
    let mut blocks = vec![aes::Block::default(); 64];
    let mut c = cbc::Encryptor::<aes::Aes256>::new_from_slices(&[1; 32], &[0; 16]).unwrap();
    let t = Instant::now();
    for _ in 0..(16 * 1024 * 1024 / 1024) {
        c.encrypt_blocks_mut(&mut blocks);
    }
    println!("cbc enc 16MiB: {:?}", t.elapsed());
    let mut c = cbc::Decryptor::<aes::Aes256>::new_from_slices(&[1; 32], &[0; 16]).unwrap();
    let t = Instant::now();
    for _ in 0..(16 * 1024 * 1024 / 1024) {
        c.decrypt_blocks_mut(&mut blocks);
    }
    println!("cbc dec 16MiB: {:?}", t.elapsed());
    let buf = vec![7u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(70000);
    let t = Instant::now();
    for _ in 0..256 {
        let mut input = &buf[..];
        while input.len() >= 16 {
            let count = (input.len() / 16).min(64);
            let (whole, rest) = input.split_at(count * 16);
            for (block, bytes) in blocks.iter_mut().zip(whole.chunks_exact(16)) {
                block.copy_from_slice(bytes);
            }
            for block in blocks[..count].iter() {
                out.extend_from_slice(block);
            }
            input = rest;
        }
        out.clear();
    }
    println!("copies 16MiB: {:?}", t.elapsed());
}
