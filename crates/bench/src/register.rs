//! Registering the bench's devices through the hub's real API.
//!
//! Each device is a real account with its own password and registration
//! id, registered with `POST /v1/accounts` (after a phone verification for
//! phone-number apps, with the code a development-mode hub returns). The
//! hub checks every registration's prekey signatures against its identity
//! key. What is reused: a small pool of identity keys and their signed
//! prekeys (generating a Kyber key per device would cost the bench more CPU
//! than the hub spends checking it, on the same machine), and the HTTP
//! connections, kept alive across registrations.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use passerelle_proto::api::accounts::{
    DeviceKeys, RegisterAccount, Registered, Verification, VerificationRequest, VerificationSession,
};
use passerelle_proto::api::keys::{KyberPreKey, SignedPreKey};
use passerelle_proto::{AccountId, Base64Bytes, IdentifierScheme};
use passerelle_signal::{IdentityKeyPair, KyberPreKeyRecord, SignedPreKeyRecord};
use rand::Rng as _;
use rand::rngs::OsRng;

/// Distinct identity keys per worker.
const KEY_POOL: usize = 16;
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// A registered device, as the bench needs it.
#[derive(Clone)]
pub struct Device {
    /// Its account.
    pub account: AccountId,
    /// Its Signal registration id.
    pub registration_id: u32,
    /// `Basic ...` for its requests and WebSocket.
    pub authorization: String,
    /// Its source address, when sockets are spread.
    pub source: Option<Ipv4Addr>,
    /// The hub node it registered with and talks to (an index into the
    /// job's nodes).
    pub node: usize,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("account", &self.account)
            .field("registration_id", &self.registration_id)
            .finish_non_exhaustive()
    }
}

/// An identity key and the prekeys it signed, in wire form.
struct KeySet {
    identity: Base64Bytes,
    keys: DeviceKeys,
}

fn key_set() -> KeySet {
    let mut rng = OsRng;
    let identity = IdentityKeyPair::generate(&mut rng);
    let now = passerelle_now();
    let signed = SignedPreKeyRecord::generate(1, now, &identity, &mut rng);
    let kyber = KyberPreKeyRecord::generate(1, now, &identity, &mut rng);
    KeySet {
        identity: Base64Bytes(identity.identity_key().serialize().to_vec()),
        keys: DeviceKeys {
            signed_pre_key: SignedPreKey {
                key_id: signed.id,
                public_key: Base64Bytes(signed.key_pair.public.serialize().to_vec()),
                signature: Base64Bytes(signed.signature.to_vec()),
            },
            last_resort_kyber_pre_key: KyberPreKey {
                key_id: kyber.id,
                public_key: Base64Bytes(kyber.key_pair.public.serialize()),
                signature: Base64Bytes(kyber.signature.to_vec()),
            },
            pre_keys: Vec::new(),
            kyber_pre_keys: Vec::new(),
        },
    }
}

fn passerelle_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An HTTP client for the bench, from `source` when given.
pub fn http_client(source: Option<Ipv4Addr>, pool: usize) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .user_agent(concat!("passerelle-bench/", env!("CARGO_PKG_VERSION")));
    if let Some(source) = source {
        builder = builder.local_address(std::net::IpAddr::V4(source));
    }
    Ok(builder.build()?)
}

/// What to register.
pub struct Registrar {
    /// The base URLs of the hub's nodes, each ending in `/`.
    pub nodes: Vec<url::Url>,
    /// The app.
    pub app: String,
    /// Its scheme.
    pub scheme: IdentifierScheme,
    /// The run's tag.
    pub run: String,
    /// The worker.
    pub worker: u32,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Registrar {
    /// Registers `count` devices, `concurrency` at a time; `done` counts
    /// them as they finish. Device `i` gets source address `source(i)` and
    /// registers with node `node(i)`.
    pub async fn register_all(
        &self,
        count: u64,
        concurrency: usize,
        source: impl Fn(u64) -> Option<Ipv4Addr>,
        node: impl Fn(u64) -> usize,
        done: &AtomicU64,
    ) -> anyhow::Result<Vec<Device>> {
        let pool: Arc<Vec<KeySet>> = Arc::new(
            tokio::task::spawn_blocking(|| (0..KEY_POOL).map(|_| key_set()).collect())
                .await
                .context("generating keys")?,
        );
        let results: Vec<anyhow::Result<Device>> = futures_util::stream::iter(0..count)
            .map(|i| {
                let pool = pool.clone();
                let (source, node) = (source(i), node(i) % self.nodes.len().max(1));
                async move {
                    let keys = &pool[usize::try_from(i).unwrap_or(0) % pool.len()];
                    let device = self.register_one(i, keys, source, node).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    device
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn register_one(
        &self,
        i: u64,
        keys: &KeySet,
        source: Option<Ipv4Addr>,
        node: usize,
    ) -> anyhow::Result<Device> {
        let base = self.nodes.get(node).context("no such hub node")?;
        let password: String = {
            let mut rng = OsRng;
            (0..32)
                .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                .collect()
        };
        let registration_id = OsRng.gen_range(1..=16380);
        let (handle, verification) = match self.scheme {
            IdentifierScheme::Username => {
                (Some(format!("b{}w{}n{i}", self.run, self.worker)), None)
            }
            IdentifierScheme::RandomId => (None, None),
            IdentifierScheme::PhoneNumber => {
                // +1 then 14 digits: run (4), worker (3), device (7).
                let run: u64 = self
                    .run
                    .bytes()
                    .fold(0, |a, b| (a * 31 + u64::from(b)) % 10_000);
                let handle = format!("+1{run:04}{:03}{:07}", self.worker % 1000, i % 10_000_000);
                let verification = self.verify(base, &handle).await?;
                (Some(handle), Some(verification))
            }
        };
        let request = RegisterAccount {
            app: self.app.parse().context("app id")?,
            handle,
            verification,
            password: password.clone(),
            registration_id,
            device_name: "bench".into(),
            identity_key: keys.identity.clone(),
            keys: keys.keys.clone(),
        };
        let registered: Registered = self.post(base, "v1/accounts", &request).await?;
        let user = format!("{}.{}", registered.account_id, registered.device_id);
        Ok(Device {
            account: registered.account_id,
            registration_id,
            authorization: format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
            source,
            node,
        })
    }

    async fn verify(&self, base: &url::Url, handle: &str) -> anyhow::Result<Verification> {
        let session: VerificationSession = self
            .post(
                base,
                "v1/verifications",
                &VerificationRequest {
                    app: self.app.parse().context("app id")?,
                    handle: handle.to_owned(),
                },
            )
            .await?;
        let Some(code) = session.dev_code else {
            bail!(
                "the hub sent a verification code elsewhere: phone-number apps work only on a \
                 hub in development mode; use a username app (see `passerelle bench hub-config`)"
            );
        };
        Ok(Verification {
            session_id: session.session_id,
            code,
        })
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        base: &url::Url,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        let url = base.join(path)?;
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST /{path}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            bail!(
                "the hub refused a registration with 429 (its per-address rate limits): run it \
                 with limits for a load test (`passerelle bench hub-config`) or use --spawn-hub"
            );
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("POST /{path} answered {status}: {text}");
        }
        Ok(response.json().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sets_are_well_formed() {
        let k = key_set();
        assert_eq!(k.identity.0.len(), 33);
        assert_eq!(k.keys.signed_pre_key.signature.0.len(), 64);
        assert_eq!(k.keys.last_resort_kyber_pre_key.public_key.0.len(), 1569);
    }
}
