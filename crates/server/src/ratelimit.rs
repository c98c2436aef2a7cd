//! Rate limits: token buckets per client IP (unauthenticated routes that
//! cost writes) and per account (directory lookups).
//!
//! Hand-written rather than `governor`: the hub needs one small keyed
//! bucket map per route class with a configurable rate, a `Retry-After`
//! and periodic cleanup; that is a few dozen lines over a
//! `Mutex<HashMap>`, easy to read and to test, with no new dependency.
//! The lock is held only for one map lookup, never across an await.
//!
//! A bucket holds up to `burst` tokens and gains `per_minute / 60` tokens
//! a second; a request takes one or is refused with how long until one is
//! there. A full bucket is the same as no bucket, so the map drops full
//! buckets once a minute and stays as small as the set of recent clients.
//!
//! The client IP is the TCP peer's address (axum's `ConnectInfo`), IPv6
//! grouped by its /64 (one host usually holds a whole /64). Behind a
//! reverse proxy every client shares the proxy's bucket; forwarded headers
//! are not trusted.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use passerelle_proto::AccountId;

use crate::config::{Limits, Rate};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// How often full buckets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Token buckets keyed by `K`.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    state: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    buckets: HashMap<K, Bucket>,
    last_sweep: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Eq + Hash> Limiter<K> {
    /// A limiter at `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new(Buckets {
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.rate.per_minute) / 60.0
    }

    fn burst(&self) -> f64 {
        f64::from(self.rate.burst)
    }

    /// Takes a token for `key` at `now`, or says how long until one is
    /// there.
    pub fn check_at(&self, key: K, now: Instant) -> Result<(), Duration> {
        if !self.rate.is_on() {
            return Ok(());
        }
        let (rate, burst) = (self.per_second(), self.burst());
        // A poisoned lock only means a panic elsewhere mid-update of a
        // counter: the map is still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(state.last_sweep) >= SWEEP_EVERY {
            state.last_sweep = now;
            state
                .buckets
                .retain(|_, b| refilled(b, now, rate, burst) < burst);
        }
        let bucket = state.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, rate, burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// How many keys have a bucket (for tests).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .buckets
            .len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// The route classes limited per client IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpClass {
    /// `POST /v1/verifications`.
    Verification,
    /// `POST /v1/accounts`.
    Registration,
    /// `POST /v1/provisioning`.
    Provisioning,
    /// `POST /v1/devices`.
    Link,
}

impl IpClass {
    fn what(self) -> &'static str {
        match self {
            Self::Verification => "verification requests",
            Self::Registration => "registrations",
            Self::Provisioning => "provisioning mailboxes",
            Self::Link => "device links",
        }
    }
}

/// Every limiter of a hub.
#[derive(Debug)]
pub struct RateLimits {
    verification: Limiter<IpAddr>,
    registration: Limiter<IpAddr>,
    provisioning: Limiter<IpAddr>,
    link: Limiter<IpAddr>,
    directory: Limiter<AccountId>,
}

fn refused(what: &str, retry_after: Duration) -> ApiError {
    ApiError::rate_limited(format!("too many {what}: try again later"), retry_after)
}

impl RateLimits {
    /// The limiters of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            verification: Limiter::new(limits.rate_verification),
            registration: Limiter::new(limits.rate_registration),
            provisioning: Limiter::new(limits.rate_provisioning),
            link: Limiter::new(limits.rate_link),
            directory: Limiter::new(limits.rate_directory),
        }
    }

    /// Takes a token of `class` for a client IP (`429` when none is left).
    pub fn check_ip(&self, class: IpClass, ip: IpAddr) -> ApiResult<()> {
        let limiter = match class {
            IpClass::Verification => &self.verification,
            IpClass::Registration => &self.registration,
            IpClass::Provisioning => &self.provisioning,
            IpClass::Link => &self.link,
        };
        limiter
            .check_at(client_key(ip), Instant::now())
            .map_err(|after| refused(class.what(), after))
    }

    /// Takes a directory lookup token of an account.
    pub fn check_directory(&self, account: AccountId) -> ApiResult<()> {
        self.directory
            .check_at(account, Instant::now())
            .map_err(|after| refused("directory lookups", after))
    }
}

/// The bucket key of an IP: IPv4 as is, IPv6 by its /64 (an IPv4-mapped
/// IPv6 address as its IPv4 address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// An extractor that takes a token of class `C` for the client's IP
/// before the handler (and its body) runs. A request with no peer address
/// (the router driven without a socket, as in-process tests do) is not
/// limited.
pub struct PerIp<C>(PhantomData<C>);

/// A route class limited per IP, as a type for [`PerIp`].
pub trait Class {
    /// The class.
    const CLASS: IpClass;
}

macro_rules! classes {
    ($($name:ident => $class:ident),* $(,)?) => {$(
        #[doc = concat!("[`IpClass::", stringify!($class), "`] for [`PerIp`].")]
        pub struct $name;
        impl Class for $name {
            const CLASS: IpClass = IpClass::$class;
        }
    )*};
}

classes! {
    Verifications => Verification,
    Registrations => Registration,
    Mailboxes => Provisioning,
    Links => Link,
}

impl<C: Class + Send> FromRequestParts<AppState> for PerIp<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            state.rate_limits().check_ip(C::CLASS, peer.ip())?;
        }
        Ok(Self(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let limiter = Limiter::new(Rate::new(60, 3));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Another key has its own bucket.
        assert!(limiter.check_at("b", t0).is_ok());
        // One token a second comes back.
        assert!(limiter.check_at("a", t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at("a", t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn full_buckets_are_swept() {
        let limiter = Limiter::new(Rate::new(60, 2));
        let t0 = Instant::now();
        assert!(limiter.check_at(1, t0).is_ok());
        assert!(limiter.check_at(2, t0).is_ok());
        assert_eq!(limiter.len(), 2);
        // Two minutes on, both are full again: the sweep drops them.
        assert!(limiter.check_at(3, t0 + Duration::from_secs(120)).is_ok());
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn off_limits_nothing() {
        let limiter = Limiter::new(Rate::OFF);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check_at((), t0).is_ok());
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn ipv6_is_grouped_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
