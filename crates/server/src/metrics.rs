//! Prometheus metrics (`GET /metrics`), the request-counting middleware,
//! and the health probes `/healthz` and `/readyz`.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `passerelle_http_requests_total` | counter | `method`, `route` (the route's pattern, never the path), `status` |
//! | `passerelle_http_request_duration_seconds` | histogram | `method`, `route` |
//! | `passerelle_envelopes_enqueued_total` | counter | |
//! | `passerelle_envelopes_delivered_total` | counter | |
//! | `passerelle_envelopes_acknowledged_total` | counter | |
//! | `passerelle_envelopes_expired_total` | counter | |
//! | `passerelle_ephemeral_pushed_total` | counter | |
//! | `passerelle_connected_devices` | gauge | |
//! | `passerelle_enqueue_duration_seconds` | histogram | |
//! | `passerelle_bus_connected` | gauge (1 or 0) | |
//! | `passerelle_bus_reconnects_total` | counter | |
//! | `passerelle_bus_published_total` | counter | `kind` (`wake`, `removed`, `claim`, `ephemeral`, `wake_all`) |
//! | `passerelle_bus_received_total` | counter | `kind` |
//! | `passerelle_bus_lost_total` | counter | |
//!
//! The `bus` metrics exist on a node with `nats` configured.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use passerelle_proto::ProblemType;

use crate::delivery::BusStatus;
use crate::problem::ApiError;
use crate::state::AppState;

const REQUESTS: &str = "passerelle_http_requests_total";
const REQUEST_DURATION: &str = "passerelle_http_request_duration_seconds";
const ENQUEUED: &str = "passerelle_envelopes_enqueued_total";
const DELIVERED: &str = "passerelle_envelopes_delivered_total";
const ACKNOWLEDGED: &str = "passerelle_envelopes_acknowledged_total";
const EXPIRED: &str = "passerelle_envelopes_expired_total";
const EPHEMERAL: &str = "passerelle_ephemeral_pushed_total";
const CONNECTED: &str = "passerelle_connected_devices";
const ENQUEUE_DURATION: &str = "passerelle_enqueue_duration_seconds";
const BUS_CONNECTED: &str = "passerelle_bus_connected";
const BUS_RECONNECTS: &str = "passerelle_bus_reconnects_total";
const BUS_PUBLISHED: &str = "passerelle_bus_published_total";
const BUS_RECEIVED: &str = "passerelle_bus_received_total";
const BUS_LOST: &str = "passerelle_bus_lost_total";

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. If another
/// recorder was installed globally first, the hub's metrics go there and
/// `/metrics` renders an empty page.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "HTTP requests, by route pattern and status");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "HTTP request durations");
    describe_counter!(ENQUEUED, "envelopes durably queued");
    describe_counter!(DELIVERED, "envelopes sent to devices over WebSockets");
    describe_counter!(
        ACKNOWLEDGED,
        "envelopes acknowledged by devices and deleted"
    );
    describe_counter!(
        EXPIRED,
        "envelopes deleted undelivered after their retention"
    );
    describe_counter!(EPHEMERAL, "ephemeral envelopes pushed to connected devices");
    describe_gauge!(CONNECTED, "devices connected to this node");
    describe_histogram!(
        ENQUEUE_DURATION,
        Unit::Seconds,
        "time to queue a send durably"
    );
    describe_gauge!(BUS_CONNECTED, "1 while this node is connected to NATS");
    describe_counter!(BUS_RECONNECTS, "reconnections to NATS after a loss");
    describe_counter!(BUS_PUBLISHED, "messages this node published to other nodes");
    describe_counter!(BUS_RECEIVED, "messages this node heard from other nodes");
    describe_counter!(
        BUS_LOST,
        "wakes and removals held back because NATS was unreachable"
    );
}

pub(crate) fn bus_connected(up: bool) {
    metrics::gauge!(BUS_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn bus_reconnected() {
    metrics::counter!(BUS_RECONNECTS).increment(1);
}

pub(crate) fn bus_published(kind: &'static str) {
    metrics::counter!(BUS_PUBLISHED, "kind" => kind).increment(1);
}

pub(crate) fn bus_received(kind: &'static str) {
    metrics::counter!(BUS_RECEIVED, "kind" => kind).increment(1);
}

pub(crate) fn bus_lost() {
    metrics::counter!(BUS_LOST).increment(1);
}

pub(crate) fn set_connected(n: usize) {
    metrics::gauge!(CONNECTED).set(n as f64);
}

pub(crate) fn enqueued(n: usize, took: Duration) {
    metrics::counter!(ENQUEUED).increment(n as u64);
    metrics::histogram!(ENQUEUE_DURATION).record(took.as_secs_f64());
}

pub(crate) fn delivered(n: u64) {
    metrics::counter!(DELIVERED).increment(n);
}

pub(crate) fn acknowledged(n: u64) {
    metrics::counter!(ACKNOWLEDGED).increment(n);
}

pub(crate) fn expired(n: usize) {
    metrics::counter!(EXPIRED).increment(n as u64);
}

pub(crate) fn ephemeral(n: usize) {
    metrics::counter!(EPHEMERAL).increment(n as u64);
}

/// Middleware: counts requests by route pattern and status.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn render() -> Response {
    let handle = handle();
    handle.run_upkeep();
    let body = handle.render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /healthz`: the process runs.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store answers and, on a node of several, the
/// message bus is connected.
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<(StatusCode, &'static str), ApiError> {
    let unavailable = |what| ApiError::new(ProblemType::Unavailable, what);
    match tokio::time::timeout(Duration::from_secs(2), state.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store ping failed");
            return Err(unavailable("the store does not answer"));
        }
        Err(_) => {
            tracing::warn!("store ping timed out");
            return Err(unavailable("the store does not answer"));
        }
    }
    match state.delivery().status() {
        BusStatus::SingleNode | BusStatus::Bus { connected: true } => {
            Ok((StatusCode::OK, "ready\n"))
        }
        BusStatus::Bus { connected: false } => Err(unavailable(
            "the message bus (NATS) is not connected: devices on other nodes are not woken",
        )),
    }
}
