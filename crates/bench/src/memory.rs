//! The hub's memory, read from `/proc`.

use serde::{Deserialize, Serialize};

/// A process's resident memory, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size (shared pages divided among their users);
    /// absent where `smaps_rollup` cannot be read.
    pub pss_kib: Option<u64>,
}

/// Reads `/proc/<pid>/smaps_rollup` (RSS and PSS), or `/proc/<pid>/status`
/// (RSS only) where the first is missing.
pub fn read(pid: u32) -> std::io::Result<Memory> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(rss) = field(&text, "Rss:") {
            return Ok(Memory {
                rss_kib: rss,
                pss_kib: field(&text, "Pss:"),
            });
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = field(&text, "VmRSS:").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS in status")
    })?;
    Ok(Memory {
        rss_kib: rss,
        pss_kib: None,
    })
}

/// The number of kB on the line that starts with `name`.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft open-file cap of process `pid` (`/proc/<pid>/limits`).
pub fn open_file_cap(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory per connection in bytes: `(after - before) / connections`.
pub fn per_connection(before: u64, after: u64, connections: u64) -> Option<f64> {
    (connections > 0).then(|| (after as f64 - before as f64) * 1024.0 / connections as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        let m = read(std::process::id()).unwrap();
        assert!(m.rss_kib > 0);
        assert!(open_file_cap(std::process::id()).is_some_and(|c| c > 0));
    }

    #[test]
    fn parses_fields() {
        let text = "55d0-7ff [rollup]\nRss:              123 kB\nPss:               45 kB\n";
        assert_eq!(field(text, "Rss:"), Some(123));
        assert_eq!(field(text, "Pss:"), Some(45));
        assert_eq!(field(text, "Swap:"), None);
        assert_eq!(per_connection(1000, 2000, 1024), Some(1000.0));
        assert_eq!(per_connection(1000, 2000, 0), None);
    }
}
