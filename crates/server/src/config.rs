//! The hub's configuration: a TOML file, then environment variables.
//!
//! With no file at all, the hub runs in development mode on
//! `127.0.0.1:8080`, keeps its data under `./passerelle-data`, and hosts
//! three demo apps, one per identifier scheme ([`Config::default`]). A file
//! starts from the same values except that it must list its own apps and
//! development mode is off unless it says so. Environment variables override
//! both: `PASSERELLE_` followed by the key, with `__` between nested keys,
//! for example `PASSERELLE_LISTEN=0.0.0.0:8080`,
//! `PASSERELLE_DATA_DIR=/var/lib/passerelle` or
//! `PASSERELLE_LIMITS__MAX_BODY_BYTES=131072`.
//!
//! Every key is documented in [`Config::example_toml`]
//! (`crates/server/examples/passerelle.toml`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use passerelle_proto::{AppId, IdentifierScheme};
use serde::{Deserialize, Serialize};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or an environment variable does not parse, or has the
    /// wrong type.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The values parse but do not make a working hub.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The hub's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the embedded database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The PostgreSQL database every node of the hub shares, instead of
    /// the embedded one under `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseUrl>,
    /// The most connections one node keeps to `database`.
    #[serde(default = "default_database_pool_size")]
    pub database_pool_size: u32,
    /// Development mode: verification codes are written to the log instead
    /// of being sent. Only allowed when `listen` is a loopback address.
    #[serde(default)]
    pub dev_mode: bool,
    /// The apps this hub hosts, by id.
    #[serde(default)]
    pub apps: BTreeMap<AppId, AppConfig>,
    /// Sizes and counts the hub accepts.
    #[serde(default)]
    pub limits: Limits,
    /// The task that deletes expired envelopes and tells their senders.
    #[serde(default)]
    pub expiry: ExpiryConfig,
    /// NATS, linking the nodes of a hub that share one store: one URL or
    /// several, comma-separated. Without it the node delivers only to its
    /// own connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    /// This node's name among the hub's nodes, for logs.
    #[serde(default = "default_node")]
    pub node: String,
}

/// A `postgres://` URL. It may hold a password, so its `Debug` shows only
/// that it is set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// One app hosted on the hub, and its policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Its display name.
    pub name: String,
    /// How it names accounts.
    pub scheme: IdentifierScheme,
    /// Whether accounts of other apps may contact its users. When `false`,
    /// they are answered `403 not-allowed`.
    #[serde(default = "yes")]
    pub third_party_contact: bool,
    /// How long an envelope for one of its users waits to be delivered
    /// before it is deleted and its sender told.
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
    /// The most devices an account may have (1 to 127).
    #[serde(default = "default_max_devices")]
    pub max_devices: u8,
}

/// Sizes and counts the hub accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest request body, in bytes; larger ones are refused with
    /// `413` before they are read whole.
    pub max_body_bytes: usize,
    /// The most messages (recipient devices) in one send.
    pub max_messages_per_send: usize,
    /// The most one-time prekeys of each kind in one upload.
    pub max_keys_per_upload: usize,
    /// Below this many one-time prekeys, devices are told to upload more.
    pub key_low_water_mark: u32,
    /// The largest provisioning message, in bytes.
    pub max_provisioning_bytes: usize,
    /// How long a request may take before the hub gives up on it.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// The largest WebSocket message a device may send, in bytes.
    pub max_ws_message_bytes: usize,
    /// How many queued envelopes a connection reads from the store at once.
    pub delivery_page_size: u32,
    /// How often the hub pings an idle WebSocket.
    #[serde(with = "duration")]
    pub ws_ping_interval: Duration,
    /// The most one-time prekeys of each kind a device may hold; an upload
    /// that would go above is refused (`400 invalid-request`).
    pub max_one_time_keys: u32,
    /// The most envelopes queued for one device; a send that would go above
    /// is refused whole (`429 rate-limited`).
    pub max_queued_envelopes: u64,
    /// Phone verification requests (`POST /v1/verifications`), per client IP.
    pub rate_verification: Rate,
    /// Registrations (`POST /v1/accounts`), per client IP.
    pub rate_registration: Rate,
    /// Provisioning mailboxes opened (`POST /v1/provisioning`), per client IP.
    pub rate_provisioning: Rate,
    /// Device links (`POST /v1/devices`), per client IP.
    pub rate_link: Rate,
    /// Directory lookups (`GET /v1/directory/{address}`), per account.
    pub rate_directory: Rate,
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`. A
/// `per_minute` of 0 turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per minute, sustained; 0: no limit.
    pub per_minute: u32,
    /// Requests at once, after a quiet spell (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `per_minute` sustained, `burst` at once.
    pub const fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst }
    }

    /// No limit.
    pub const OFF: Self = Self::new(0, 0);

    /// Whether this limits anything.
    pub fn is_on(&self) -> bool {
        self.per_minute > 0
    }
}

/// The expiry task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// How often it runs.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How many expired envelopes it takes from the store at once.
    pub batch_size: u32,
}

/// The retention of an app that does not say.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The device limit of an app that does not say.
pub const DEFAULT_MAX_DEVICES: u8 = 5;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./passerelle-data")
}

fn default_database_pool_size() -> u32 {
    passerelle_store::postgres::DEFAULT_POOL_SIZE
}

fn default_node() -> String {
    "node".to_owned()
}

fn yes() -> bool {
    true
}

fn default_retention() -> Duration {
    DEFAULT_RETENTION
}

fn default_max_devices() -> u8 {
    DEFAULT_MAX_DEVICES
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_messages_per_send: 128,
            max_keys_per_upload: 100,
            key_low_water_mark: 10,
            max_provisioning_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            max_ws_message_bytes: 64 * 1024,
            delivery_page_size: 32,
            ws_ping_interval: Duration::from_secs(30),
            max_one_time_keys: 1000,
            max_queued_envelopes: 10_000,
            rate_verification: Rate::new(10, 10),
            rate_registration: Rate::new(60, 30),
            rate_provisioning: Rate::new(60, 30),
            rate_link: Rate::new(60, 30),
            rate_directory: Rate::new(120, 60),
        }
    }
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            batch_size: 500,
        }
    }
}

impl AppConfig {
    /// An app with the default policy.
    pub fn new(name: &str, scheme: IdentifierScheme) -> Self {
        Self {
            name: name.to_owned(),
            scheme,
            third_party_contact: true,
            retention: DEFAULT_RETENTION,
            max_devices: DEFAULT_MAX_DEVICES,
        }
    }
}

impl Default for Config {
    /// The configuration of a hub started with no file: development mode,
    /// on localhost, with the demo apps `chime` (phone numbers), `parley`
    /// (usernames) and `murmur` (random ids).
    fn default() -> Self {
        let mut apps = BTreeMap::new();
        for (id, name, scheme) in [
            ("chime", "Chime", IdentifierScheme::PhoneNumber),
            ("parley", "Parley", IdentifierScheme::Username),
            ("murmur", "Murmur", IdentifierScheme::RandomId),
        ] {
            if let Ok(id) = id.parse() {
                apps.insert(id, AppConfig::new(name, scheme));
            }
        }
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            database: None,
            database_pool_size: default_database_pool_size(),
            dev_mode: true,
            apps,
            limits: Limits::default(),
            expiry: ExpiryConfig::default(),
            nats: None,
            node: default_node(),
        }
    }
}

/// The top-level keys, the only ones taken from the environment (so that
/// other `PASSERELLE_*` variables, such as the log filter, do not clash).
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database",
    "database_pool_size",
    "dev_mode",
    "apps",
    "limits",
    "expiry",
    "nats",
    "node",
];

impl Config {
    /// Loads the configuration: the defaults, then the file if one is
    /// given, then `PASSERELLE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let base = match file {
            None => Figment::from(Serialized::defaults(Self::default())),
            Some(path) => Figment::from(Serialized::defaults(Self::file_defaults()))
                .merge(Toml::file_exact(path)),
        };
        Self::finish(base.merge(Self::env()))
    }

    /// Parses a configuration from TOML text (then environment variables
    /// are not read).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::finish(
            Figment::from(Serialized::defaults(Self::file_defaults())).merge(Toml::string(text)),
        )
    }

    /// An example file that sets and explains every key.
    pub fn example_toml() -> &'static str {
        include_str!("../examples/passerelle.toml")
    }

    fn file_defaults() -> Self {
        Self {
            dev_mode: false,
            apps: BTreeMap::new(),
            ..Self::default()
        }
    }

    fn env() -> Env {
        Env::prefixed("PASSERELLE_").split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        })
    }

    fn finish(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the values make a working hub.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.dev_mode && !self.listen.ip().is_loopback() {
            // Development mode hands out verification codes in answers:
            // never to the network.
            return invalid(format!(
                "dev_mode = true would expose verification codes on {}: \
                 listen on a loopback address (such as 127.0.0.1) or set dev_mode = false",
                self.listen
            ));
        }
        if let Some(nats) = &self.nats {
            if let Err(e) = crate::delivery::nats::parse_servers(nats) {
                return invalid(e.to_string());
            }
        }
        if self.node.is_empty() || self.node.len() > 64 || self.node.chars().any(char::is_control) {
            return invalid("node must be 1 to 64 characters, none a control character".into());
        }
        if self.apps.is_empty() {
            return invalid("no apps: add at least one [apps.<id>] table".into());
        }
        if let Some(url) = &self.database {
            if let Err(e) = passerelle_store::postgres::parse_url(url.as_str()) {
                return invalid(format!("database: {e}"));
            }
        }
        if self.database_pool_size == 0 {
            return invalid("database_pool_size must be positive".into());
        }
        for (id, app) in &self.apps {
            if !(1..=passerelle_proto::DeviceId::MAX).contains(&app.max_devices) {
                return invalid(format!("apps.{id}.max_devices must be from 1 to 127"));
            }
            if app.retention.is_zero() {
                return invalid(format!("apps.{id}.retention must be positive"));
            }
        }
        let l = &self.limits;
        if l.max_body_bytes < 4096 {
            return invalid("limits.max_body_bytes must be at least 4096".into());
        }
        if l.max_messages_per_send == 0 || l.max_keys_per_upload == 0 {
            return invalid(
                "limits.max_messages_per_send and max_keys_per_upload must be positive".into(),
            );
        }
        if l.delivery_page_size == 0 || self.expiry.batch_size == 0 {
            return invalid(
                "limits.delivery_page_size and expiry.batch_size must be positive".into(),
            );
        }
        if l.max_ws_message_bytes < 1024 {
            return invalid("limits.max_ws_message_bytes must be at least 1024".into());
        }
        if usize::try_from(l.max_one_time_keys).unwrap_or(usize::MAX) < l.max_keys_per_upload {
            return invalid(
                "limits.max_one_time_keys must be at least limits.max_keys_per_upload".into(),
            );
        }
        if l.max_queued_envelopes == 0 {
            return invalid("limits.max_queued_envelopes must be positive".into());
        }
        for (name, rate) in [
            ("rate_verification", l.rate_verification),
            ("rate_registration", l.rate_registration),
            ("rate_provisioning", l.rate_provisioning),
            ("rate_link", l.rate_link),
            ("rate_directory", l.rate_directory),
        ] {
            if rate.is_on() && rate.burst == 0 {
                return invalid(format!(
                    "limits.{name}.burst must be at least 1 (or per_minute = 0 for no limit)"
                ));
            }
        }
        if l.max_provisioning_bytes == 0 {
            return invalid("limits.max_provisioning_bytes must be positive".into());
        }
        if self.expiry.interval.is_zero()
            || l.request_timeout.is_zero()
            || l.ws_ping_interval.is_zero()
        {
            return invalid("durations must be positive".into());
        }
        Ok(())
    }

    /// The app with this id.
    pub fn app(&self, id: &AppId) -> Option<&AppConfig> {
        self.apps.get(id)
    }

    /// The policy for accounts of an app: its own, or the defaults for an
    /// app this hub does not host.
    pub fn policy(&self, id: &AppId) -> Policy {
        self.app(id).map_or(
            Policy {
                retention: DEFAULT_RETENTION,
                max_devices: DEFAULT_MAX_DEVICES,
            },
            |app| Policy {
                retention: app.retention,
                max_devices: app.max_devices,
            },
        )
    }
}

/// What [`Config::policy`] says about an app's accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long envelopes for its accounts wait to be delivered.
    pub retention: Duration,
    /// The most devices an account may have.
    pub max_devices: u8,
}

/// Durations as text: a number and a unit (`ms`, `s`, `m`, `h`, `d`), for
/// example `"30d"` or `"500ms"`; a bare number is seconds.
pub mod duration {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    const UNITS: &[(&str, u64)] = &[
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];

    /// Parses `"30d"`, `"10m"`, `"500ms"` or `"5"` (seconds).
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let unit = unit.trim();
        let factor = if unit.is_empty() {
            1000
        } else {
            UNITS.iter().find(|(u, _)| *u == unit)?.1
        };
        number.checked_mul(factor).map(Duration::from_millis)
    }

    /// Writes a duration with the largest unit that divides it.
    pub fn format(d: Duration) -> String {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (unit, factor) = UNITS
            .iter()
            .rev()
            .find(|(_, f)| ms % f == 0 && ms >= *f)
            .copied()
            .unwrap_or(("ms", 1));
        format!("{}{unit}", ms / factor)
    }

    /// Serde: serialize.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Serde: deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30d\", \"10m\", \"5s\" or \"500ms\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            duration::parse("30d"),
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("5"), Some(Duration::from_secs(5)));
        assert_eq!(duration::parse("5x"), None);
        assert_eq!(duration::parse(""), None);
        assert_eq!(duration::format(Duration::from_secs(30 * 86400)), "30d");
        assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration::format(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn default_has_three_schemes() {
        let c = Config::default();
        assert!(c.dev_mode);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        let schemes: Vec<_> = c.apps.values().map(|a| a.scheme).collect();
        assert!(schemes.contains(&IdentifierScheme::PhoneNumber));
        assert!(schemes.contains(&IdentifierScheme::Username));
        assert!(schemes.contains(&IdentifierScheme::RandomId));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn example_parses_and_documents_every_key() {
        let example = Config::from_toml(Config::example_toml()).unwrap();
        assert_eq!(example.apps.len(), 3);
        // Every key of the configuration appears in the example.
        let value = toml::Value::try_from(Config::default()).unwrap();
        let text = Config::example_toml();
        fn keys(v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
        }
        let mut all = Vec::new();
        keys(&value, &mut all);
        for key in all {
            assert!(text.contains(&key), "example does not document {key}");
        }
    }

    #[test]
    fn dev_mode_only_on_loopback() {
        let mut c = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("loopback") && e.contains("dev_mode = false"),
            "{e}"
        );
        c.listen = "[::1]:8080".parse().unwrap();
        assert!(c.validate().is_ok());
        c.listen = "0.0.0.0:8080".parse().unwrap();
        c.dev_mode = false;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn database_urls_are_checked_and_never_shown() {
        let text = "database = \"postgres://hub:s3cret@db:5432/passerelle\"\n\
                    database_pool_size = 4\n[apps.x]\nname = \"X\"\nscheme = \"username\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(
            c.database.as_ref().map(DatabaseUrl::as_str),
            Some("postgres://hub:s3cret@db:5432/passerelle")
        );
        assert_eq!(c.database_pool_size, 4);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(Config::default().database, None);

        let mut c = Config {
            database: Some(DatabaseUrl("mysql://hub:s3cret@db/p".into())),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("database") && e.contains("postgres://"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        c.database = Some(DatabaseUrl("postgres://hub@db/p".into()));
        c.database_pool_size = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("database_pool_size"), "{e}");
    }

    #[test]
    fn zero_provisioning_limit_names_its_key() {
        let mut c = Config::default();
        c.limits.max_provisioning_bytes = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.max_provisioning_bytes"), "{e}");
    }

    #[test]
    fn limits_are_checked_and_read_from_files() {
        let mut c = Config::default();
        c.limits.rate_link = Rate::new(5, 0);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.rate_link.burst"), "{e}");
        c.limits.rate_link = Rate::OFF;
        assert!(c.validate().is_ok());
        c.limits.max_one_time_keys = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("limits.max_one_time_keys"), "{e}");

        let text = "[apps.x]\nname = \"X\"\nscheme = \"username\"\n[limits]\n\
                    max_queued_envelopes = 7\nrate_registration = { per_minute = 6, burst = 2 }\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.limits.max_queued_envelopes, 7);
        assert_eq!(c.limits.rate_registration, Rate::new(6, 2));
        assert_eq!(c.limits.rate_link, Limits::default().rate_link);
    }

    #[test]
    fn nats_and_node_are_checked() {
        let base = "[apps.x]\nname = \"X\"\nscheme = \"username\"\n";
        let c = Config::from_toml(base).unwrap();
        assert_eq!(c.nats, None);
        assert_eq!(c.node, "node");
        let text =
            format!("nats = \"nats://10.0.0.1:4222, nats://10.0.0.2:4222\"\nnode = \"b\"\n{base}");
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.node, "b");
        assert!(c.nats.unwrap().contains("10.0.0.2"));
        let bad = format!("nats = \"nats://host:notaport\"\n{base}");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("notaport"), "{e}");
        let bad = format!("node = \"\"\n{base}");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("node"), "{e}");
    }

    #[test]
    fn policy_falls_back_to_defaults() {
        let c = Config::default();
        let foreign = c.policy(&"elsewhere".parse().unwrap());
        assert_eq!(foreign.retention, DEFAULT_RETENTION);
        assert_eq!(foreign.max_devices, DEFAULT_MAX_DEVICES);
    }

    #[test]
    fn files_must_name_apps_and_reject_typos() {
        assert!(matches!(
            Config::from_toml(""),
            Err(ConfigError::Invalid(_))
        ));
        let typo = "[apps.x]\nname = \"X\"\nscheme = \"username\"\nretension = \"1d\"\n";
        assert!(matches!(
            Config::from_toml(typo),
            Err(ConfigError::Parse(_))
        ));
        let ok = "[apps.x]\nname = \"X\"\nscheme = \"username\"\nretention = \"1d\"\n";
        let c = Config::from_toml(ok).unwrap();
        assert!(!c.dev_mode);
        let x = c.app(&"x".parse().unwrap()).unwrap();
        assert_eq!(x.retention, Duration::from_secs(86400));
        assert_eq!(x.max_devices, DEFAULT_MAX_DEVICES);
        assert!(x.third_party_contact);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's type
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PASSERELLE_LISTEN", "0.0.0.0:9000");
            jail.set_env("PASSERELLE_DEV_MODE", "false");
            jail.set_env("PASSERELLE_LIMITS__MAX_BODY_BYTES", "131072");
            jail.set_env("PASSERELLE_APPS__PARLEY__RETENTION", "7d");
            // Not a configuration key: ignored, not refused.
            jail.set_env("PASSERELLE_LOG", "debug");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(c.limits.max_body_bytes, 131072);
            assert!(!c.dev_mode);
            assert_eq!(c.apps.len(), 3);
            let parley = c.app(&"parley".parse().unwrap()).unwrap();
            assert_eq!(parley.retention, Duration::from_secs(7 * 86400));

            jail.create_file(
                "hub.toml",
                "data_dir = \"/srv/p\"\n[apps.solo]\nname = \"Solo\"\nscheme = \"random_id\"\n",
            )?;
            let c = Config::load(Some(Path::new("hub.toml"))).map_err(|e| e.to_string());
            // parley is not in the file: the environment alone names no app.
            assert!(c.is_err());
            jail.clear_env();
            jail.set_env("PASSERELLE_DATA_DIR", "/var/lib/p");
            let c = Config::load(Some(Path::new("hub.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/p"));
            assert_eq!(
                c.apps.keys().map(AppId::as_str).collect::<Vec<_>>(),
                ["solo"]
            );
            assert!(!c.dev_mode);
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
