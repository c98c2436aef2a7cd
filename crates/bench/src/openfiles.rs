//! The open-file cap of a process, and how many connections a worker may
//! hold under it.

/// Files a worker keeps beyond its connections: the runtime, standard
/// streams, the resolver, and slack for sockets closing.
const RESERVE: u64 = 128;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns
/// the cap now in force.
pub fn raise_and_read() -> u64 {
    // Raising can be refused (a hard limit lower than asked is fine): the
    // cap read afterwards is what counts.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// How many WebSocket connections one worker may hold under `cap`, when it
/// also keeps up to `http` HTTP connections open.
pub fn connections_per_worker(cap: u64, http: u64) -> u64 {
    cap.saturating_sub(RESERVE + http).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_http_and_reserve() {
        assert_eq!(connections_per_worker(20_000, 512), 20_000 - 128 - 512);
        assert_eq!(connections_per_worker(100, 512), 1);
        assert!(raise_and_read() >= 1);
    }
}
