//! Source addresses over 127.0.0.0/8.
//!
//! Linux gives one source address about 28,000 ephemeral ports
//! (`ip_local_port_range`), and a socket bound before `connect` holds its
//! port for every destination. Binding each device's socket to its own
//! loopback address lifts that limit: every address of 127.0.0.0/8 reaches
//! a hub listening on 127.0.0.1 (or on any of them) without configuration.
//!
//! Device `n` (numbered across all workers) gets `127.a.b.c` with `a` from
//! 1, and `b`, `c` from 1 to 254; HTTP clients of worker `w` use
//! `127.255.x.y`, apart from every device address.

use std::net::Ipv4Addr;

const PER_OCTET: u64 = 254;

/// The source address of device `n`.
pub fn device(n: u64) -> Ipv4Addr {
    let c = n % PER_OCTET + 1;
    let b = (n / PER_OCTET) % PER_OCTET + 1;
    // 254 * 254 * 253 devices before this wraps: far beyond any run.
    let a = (n / (PER_OCTET * PER_OCTET)) % 253 + 1;
    Ipv4Addr::new(127, octet(a), octet(b), octet(c))
}

/// The source address of the HTTP clients of worker `w`.
pub fn http(w: u32) -> Ipv4Addr {
    let w = u64::from(w);
    Ipv4Addr::new(
        127,
        255,
        octet((w / PER_OCTET) % PER_OCTET + 1),
        octet(w % PER_OCTET + 1),
    )
}

fn octet(v: u64) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_are_distinct_loopback_and_usable() {
        let mut seen = HashSet::new();
        for n in 0..200_000 {
            let a = device(n);
            assert!(a.is_loopback());
            let [_, x, y, z] = a.octets();
            assert!(
                x != 0 && x != 255 && y != 0 && y != 255 && z != 0 && z != 255,
                "{a}"
            );
            assert!(seen.insert(a), "{a} twice");
        }
        for w in 0..1000 {
            let a = http(w);
            assert!(a.is_loopback());
            assert!(seen.insert(a), "{a} twice");
        }
    }
}
