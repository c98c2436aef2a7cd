//! Negotiation, state layout and two-party runs, seen from inside.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;

fn params(direction: Direction, version: Version, min_version: Version) -> Params<'static> {
    Params {
        direction,
        version,
        min_version,
        auth_key: &[41; 32],
        max_jump: 25_000,
        max_ooo_keys: 2_000,
    }
}

fn pair(min_version: Version) -> (Vec<u8>, Vec<u8>) {
    let a = initial_state(&params(Direction::A2B, Version::V1, min_version)).expect("state");
    let b = initial_state(&params(Direction::B2A, Version::V1, min_version)).expect("state");
    (a, b)
}

/// Sends from `from` to `to`, checks both keys agree, returns the key.
fn exchange(
    from: &mut Vec<u8>,
    to: &mut Vec<u8>,
    rng: &mut ChaCha20Rng,
) -> (Option<MessageKey>, Vec<u8>) {
    let sent = send(from, rng).expect("send");
    let got = recv(to, &sent.msg).expect("recv");
    assert_eq!(sent.key, got.key);
    *from = sent.state;
    *to = got.state;
    (sent.key, sent.msg)
}

fn braid_epoch(state: &[u8]) -> u64 {
    State::decode(state)
        .expect("state")
        .braid
        .map_or(0, |b| b.epoch())
}

#[test]
fn lockstep_advances_epochs_and_keys_every_message() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (mut a, mut b) = pair(Version::V1);
    for _ in 0..150 {
        let (key, _) = exchange(&mut a, &mut b, &mut rng);
        assert!(key.is_some());
        let (key, _) = exchange(&mut b, &mut a, &mut rng);
        assert!(key.is_some());
    }
    // An epoch needs the header (3 chunks), the key (36), the first
    // ciphertext (30, sent alongside the key) and the second (5): about 45
    // messages each way.
    assert!(braid_epoch(&a) >= 3, "epoch {}", braid_epoch(&a));
    assert!(braid_epoch(&b) >= 3);
    let chain = State::decode(&a).expect("state").chain.expect("chain");
    assert!(chain.current_epoch >= 2);
    assert!(chain.links.len() <= 4);
}

#[test]
fn fallback_allowed_derives_no_key_before_hearing_back() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (mut a, mut b) = pair(Version::V0);
    let (key, msg) = exchange(&mut a, &mut b, &mut rng);
    assert!(key.is_none());
    assert_eq!(msg[2], 0, "index 0 while negotiating");
    // Bob has heard from Alice: his chain exists, so his messages carry keys.
    let (key, _) = exchange(&mut b, &mut a, &mut rng);
    assert!(key.is_some());
    let (key, _) = exchange(&mut a, &mut b, &mut rng);
    assert!(key.is_some());
    assert_eq!(current_version(&a), Ok(Version::V1));
}

#[test]
fn empty_message_downgrades_when_allowed() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (a, _) = pair(Version::V0);
    let b = initial_state(&params(Direction::B2A, Version::V0, Version::V0)).expect("state");
    assert!(b.is_empty());
    let from_b = send(&b, &mut rng).expect("send");
    assert!(from_b.msg.is_empty() && from_b.key.is_none());
    let a = recv(&a, &from_b.msg).expect("downgrade");
    assert!(a.key.is_none());
    assert_eq!(current_version(&a.state), Ok(Version::V0));
    let again = send(&a.state, &mut rng).expect("send");
    assert!(again.msg.is_empty() && again.key.is_none());
    // A V0 side ignores V1 messages.
    let (v1, _) = pair(Version::V0);
    let v1_msg = send(&v1, &mut rng).expect("send").msg;
    let got = recv(&b, &v1_msg).expect("ignored");
    assert!(got.state.is_empty() && got.key.is_none());
}

#[test]
fn empty_message_is_refused_when_spqr_is_required() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (a, _) = pair(Version::V1);
    assert_eq!(recv(&a, &[]).map(|_| ()), Err(Error::MinimumVersion));
    // After negotiation, a downgrade is a mismatch.
    let (mut a2, mut b2) = pair(Version::V0);
    exchange(&mut a2, &mut b2, &mut rng);
    assert_eq!(recv(&b2, &[]).map(|_| ()), Err(Error::VersionMismatch));
}

#[test]
fn unknown_higher_version_is_ignored() {
    let (a, _) = pair(Version::V1);
    let got = recv(&a, &[2, 1, 2, 3]).expect("ignored");
    assert_eq!(got.state, a);
    assert!(got.key.is_none());
}

#[test]
fn states_round_trip_in_every_braid_state() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (mut a, mut b) = pair(Version::V1);
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..400 {
        for s in [&a, &b] {
            let decoded = State::decode(s).expect("decodes");
            assert_eq!(&decoded.encode(), s);
            seen.insert(braid_state(decoded.braid.as_ref().expect("braid")));
        }
        // Alternate, with runs, so that every state is visited.
        if step % 3 == 0 {
            exchange(&mut a, &mut b, &mut rng);
        } else {
            exchange(&mut b, &mut a, &mut rng);
        }
    }
    assert_eq!(seen.len(), 11, "braid states seen: {seen:?}");
}

fn braid_state(b: &Braid) -> &'static str {
    match b {
        Braid::KeysUnsampled { .. } => "KeysUnsampled",
        Braid::KeysSampled { .. } => "KeysSampled",
        Braid::HeaderSent { .. } => "HeaderSent",
        Braid::Ct1Received { .. } => "Ct1Received",
        Braid::EkSentCt1Received { .. } => "EkSentCt1Received",
        Braid::NoHeaderReceived { .. } => "NoHeaderReceived",
        Braid::HeaderReceived { .. } => "HeaderReceived",
        Braid::Ct1Sampled { .. } => "Ct1Sampled",
        Braid::EkReceivedCt1Sampled { .. } => "EkReceivedCt1Sampled",
        Braid::Ct1Acknowledged { .. } => "Ct1Acknowledged",
        Braid::Ct2Sampled { .. } => "Ct2Sampled",
    }
}

#[test]
fn malformed_states_are_errors() {
    let (a, _) = pair(Version::V1);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    assert!(matches!(
        send(&[9], &mut rng),
        Err(Error::MalformedState(_))
    ));
    let mut long = a.clone();
    long.push(0);
    assert!(matches!(recv(&long, &[]), Err(Error::MalformedState(_))));
    for cut in 0..a.len() {
        assert!(State::decode(&a[..cut]).is_err() || cut == 0);
    }
    let mut flipped = a.clone();
    flipped[1] |= 0x80;
    assert!(State::decode(&flipped).is_err());
}

#[test]
fn params_are_checked() {
    let mut p = params(Direction::A2B, Version::V1, Version::V1);
    p.auth_key = &[];
    assert!(matches!(initial_state(&p), Err(Error::InvalidParams(_))));
    let mut p = params(Direction::A2B, Version::V1, Version::V1);
    p.max_ooo_keys = u32::MAX;
    assert!(matches!(initial_state(&p), Err(Error::InvalidParams(_))));
    let mut p = params(Direction::A2B, Version::V1, Version::V1);
    p.max_jump = u32::MAX;
    assert!(initial_state(&p).is_ok());
}

#[test]
fn debug_output_holds_no_secret() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (a, _) = pair(Version::V1);
    let sent = send(&a, &mut rng).expect("send");
    let key = sent.key.clone().expect("key");
    let shown = format!("{sent:?} {key:?}");
    assert!(shown.contains("MessageKey(..)"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &key[..4])), "{shown}");
    assert!(!format!("{:?}", params(Direction::A2B, Version::V1, Version::V1)).contains("41"));
}
