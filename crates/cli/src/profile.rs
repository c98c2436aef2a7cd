//! The client's home: one database per local device, named after the
//! account's address and the device id, so that one `passerelle chat` can
//! hold accounts on several apps (and several devices of one account, for
//! trying multi-device on one machine).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use passerelle_client::Client;

/// The directory holding the local devices.
pub fn home(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_owned();
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".local/share/passerelle"),
        None => PathBuf::from(".passerelle"),
    }
}

/// Creates the home (and its missing parents) readable by its owner only:
/// it holds the devices' keys and histories. An existing directory is left
/// as it is.
pub fn create_home(home: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(home)
        .with_context(|| format!("creating {}", home.display()))
}

const SUFFIX: &str = ".sqlite3";

/// The database file of a device: `<address>#<device>.sqlite3`.
pub fn device_path(home: &Path, address: &str, device: u32) -> PathBuf {
    home.join(format!("{address}#{device}{SUFFIX}"))
}

/// A database path for a device whose address is not known yet.
pub fn pending_path(home: &Path) -> PathBuf {
    home.join(format!("pending-{}{SUFFIX}", uuid::Uuid::new_v4()))
}

/// The local devices, as `address#device` names, sorted.
pub fn list(home: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(home) else {
        return Ok(names);
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(SUFFIX) {
            if stem.contains('#') && !stem.starts_with("pending-") {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Opens the device chosen with `--as` (an address, or `address#device`),
/// or the only one there is.
pub fn open(home: &Path, chosen: Option<&str>) -> anyhow::Result<Client> {
    let all = list(home)?;
    let matching: Vec<&String> = match chosen {
        Some(who) if who.contains('#') => all.iter().filter(|n| n.as_str() == who).collect(),
        Some(who) => all
            .iter()
            .filter(|n| n.split('#').next() == Some(who))
            .collect(),
        None => all.iter().collect(),
    };
    let name = match matching.as_slice() {
        [one] => *one,
        [] if all.is_empty() => bail!("no local account yet: run `passerelle chat register`"),
        [] => bail!(
            "no local account {}; you have: {}",
            chosen.unwrap_or(""),
            all.join(", ")
        ),
        _ => bail!(
            "several local accounts; choose one with --as: {}",
            all.join(", ")
        ),
    };
    let path = home.join(format!("{name}{SUFFIX}"));
    Client::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Gives a freshly registered or linked device its final file name, and
/// reopens it there.
pub fn settle(home: &Path, pending: &Path, client: Client) -> anyhow::Result<Client> {
    let path = device_path(
        home,
        &client.address().to_string(),
        client.device_id().get(),
    );
    // Close the database first: SQLite's journal files follow its path.
    drop(client);
    std::fs::rename(pending, &path)
        .with_context(|| format!("moving the new device's database to {}", path.display()))?;
    Client::open(&path).with_context(|| format!("opening {}", path.display()))
}
