//! What every handler and task shares: the configuration, the store, the
//! clock, the delivery fan-out, the rate limiters and the shutdown signal.

use std::sync::Arc;

use passerelle_store::{Millis, Store};
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::delivery::{Delivery, InProcessDelivery, Registry};
use crate::ratelimit::RateLimits;

/// The hub's shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    delivery: Arc<dyn Delivery>,
    rate_limits: RateLimits,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.0.config.listen)
            .finish_non_exhaustive()
    }
}

/// Builds an [`AppState`].
pub struct AppStateBuilder {
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    delivery: Option<Arc<dyn Delivery>>,
    registry: Registry,
}

impl AppStateBuilder {
    /// Uses this clock instead of the system's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this fan-out instead of the in-process one. It should hand
    /// wakes for devices connected to this node to [`Self::registry`].
    pub fn delivery(mut self, delivery: Arc<dyn Delivery>) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// The registry of this node's connected devices.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The state.
    pub fn build(self) -> AppState {
        let delivery = self
            .delivery
            .unwrap_or_else(|| Arc::new(InProcessDelivery::new(self.registry.clone())));
        let (shutdown, _) = watch::channel(false);
        AppState(Arc::new(Inner {
            rate_limits: RateLimits::new(&self.config.limits),
            config: self.config,
            store: self.store,
            clock: self.clock,
            registry: self.registry,
            delivery,
            shutdown,
        }))
    }
}

impl AppState {
    /// State with the system clock and in-process delivery.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        Self::builder(config, store).build()
    }

    /// A builder, to choose the clock or the delivery fan-out.
    pub fn builder(config: Config, store: Arc<dyn Store>) -> AppStateBuilder {
        AppStateBuilder {
            config,
            store,
            clock: Arc::new(SystemClock),
            delivery: None,
            registry: Registry::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    /// Now, by the hub's clock.
    pub fn now(&self) -> Millis {
        self.0.clock.now()
    }

    /// The registry of this node's connected devices.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// The delivery fan-out.
    pub fn delivery(&self) -> &dyn Delivery {
        self.0.delivery.as_ref()
    }

    /// The rate limiters.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.0.rate_limits
    }

    /// Tells long-running tasks and connections to stop.
    pub fn shut_down(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// A receiver that changes to `true` when the hub shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }
}
