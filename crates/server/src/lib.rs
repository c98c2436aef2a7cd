//! The Passerelle hub: the HTTP and WebSocket API over the store.
//!
//! [`app`] builds the router from an [`AppState`] (tests call it directly
//! or serve it on a port); [`serve`] opens the store, binds, runs the
//! expiry task and serves until told to stop.
//!
//! | module | concern |
//! | --- | --- |
//! | [`config`] | the TOML file and environment overrides |
//! | [`auth`] | HTTP Basic device authentication, password hashes |
//! | [`problem`] | the one error type, answered as problem+json |
//! | [`accounts`] | apps, verification, registration, who-am-i, directory, contact policy |
//! | [`keys`] | prekey upload, counts, bundle claims, signature checks |
//! | [`devices`] | device list and removal, link tokens, linking, provisioning mailboxes |
//! | [`messages`] | sending |
//! | [`delivery`] | the WebSocket and the fan-out behind the [`delivery::Delivery`] trait |
//! | [`ratelimit`] | token buckets per client IP and per account |
//! | [`retention`] | the expiry task |
//! | [`metrics`] | Prometheus metrics and health probes |
//! | [`openapi`] | the generated OpenAPI document |
//!
//! The hub never decrypts anything: it checks prekey signatures and moves
//! ciphertext.
//!
//! ## Conventions of the API
//!
//! - Every route is an `Endpoint` of `passerelle_proto::api`, registered at
//!   its `PATH` with its `METHOD` (see the route table in `routes.rs`).
//! - Success is `200` with the endpoint's JSON response, or `204` with no
//!   body when the response type is `Empty`.
//! - Every 4xx and 5xx is `application/problem+json` ([`problem`]); a `500`
//!   says nothing about its cause, which goes to the log.
//! - Request bodies must be `application/json` and at most
//!   `limits.max_body_bytes`; requests time out after
//!   `limits.request_timeout` (`503 unavailable`).
//! - Logs carry structured fields (account and device ids, counts, routes)
//!   and never passwords, tokens, codes (except the development-mode code
//!   log), keys or message content; request spans name the route pattern,
//!   not the path.

pub mod accounts;
pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod devices;
pub mod extract;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod retention;
mod routes;
mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use passerelle_proto::ProblemType;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use openapi::openapi;
pub use problem::ApiError;
pub use state::{AppState, AppStateBuilder};

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] passerelle_store::StoreError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The message bus linking the nodes could not start.
    #[error(transparent)]
    Bus(#[from] delivery::nats::BusError),
    /// Serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The hub's router, with every route, the fallbacks and the middleware.
pub fn app(state: AppState) -> Router {
    metrics::handle();
    let limits = state.config().limits.clone();
    routes::api()
        .route(
            passerelle_proto::ws::PATH,
            get(delivery::websocket::handler),
        )
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::render))
        .fallback(problem::no_such_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // The route's pattern, never the path: paths hold ids.
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str());
            tracing::debug_span!("request", method = %req.method(), route)
        }))
        .with_state(state)
}

/// Middleware: a request that takes too long is answered `503`.
async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(ProblemType::Unavailable, "the request took too long").into_response()
        }
    }
}

/// A handler that panicked: `500`, logged, nothing disclosed.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// Runs the hub: opens its store (the PostgreSQL `config.database`, or
/// else SQLite under `config.data_dir`), joins the other nodes over NATS if
/// `config.nats` is set, binds `config.listen`, and serves until `shutdown`
/// completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    let store = open_store(&config).await?;
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bus = config.nats.clone().map(|nats| (nats, config.node.clone()));
    let mut builder = AppState::builder(config, store);
    if let Some((nats, node)) = bus {
        let delivery =
            delivery::nats::NatsDelivery::start(&nats, &node, builder.registry()).await?;
        builder = builder.delivery(Arc::new(delivery));
    }
    serve_on(listener, builder.build(), shutdown).await
}

/// The store the configuration names.
async fn open_store(config: &Config) -> Result<Arc<dyn passerelle_store::Store>, ServeError> {
    Ok(match &config.database {
        Some(url) => {
            let store = passerelle_store::postgres::PostgresStore::connect(
                url.as_str(),
                config.database_pool_size,
            )
            .await?;
            tracing::info!(pool = config.database_pool_size, "store: PostgreSQL");
            Arc::new(store)
        }
        None => {
            let store = passerelle_store::sqlite::SqliteStore::open(&config.data_dir)?;
            tracing::info!(path = %store.path().display(), "store: SQLite");
            Arc::new(store)
        }
    })
}

/// Serves `state` on a bound listener until `shutdown` completes (or
/// [`AppState::shut_down`] is called), with the expiry task running. On
/// shutdown, WebSockets are closed (`1001`), requests in flight finish,
/// the expiry task stops, and the delivery fan-out is closed (a NATS
/// delivery leaves the bus).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, apps = state.config().apps.len(), "hub listening");
    let expiry = tokio::spawn(retention::run(state.clone()));
    let signal = state.clone();
    let mut stopped = state.shutdown_signal();
    // With the peer's address, for the rate limits per client IP.
    let service = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => signal.shut_down(),
                () = delivery::websocket::stopping(&mut stopped) => {}
            }
            tracing::info!("hub shutting down");
        })
        .await;
    state.shut_down();
    if let Err(e) = expiry.await {
        tracing::error!(error = %e, "the expiry task failed");
    }
    state.delivery().close().await;
    tracing::info!("hub stopped");
    result.map_err(ServeError::Io)
}
