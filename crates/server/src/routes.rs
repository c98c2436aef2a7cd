//! The route table: every endpoint of `passerelle_proto::api`, its handler,
//! and what the OpenAPI document says about it. The router and the document
//! are both built from this one table, with each route's method and path
//! taken from its [`Endpoint`] type, so neither can drift from the wire.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use passerelle_proto::ProblemType::{self, *};
use passerelle_proto::api::{accounts as a, devices as d, keys as k, messages as m};
use passerelle_proto::endpoint::{Endpoint, Method};

use crate::openapi::{Doc, Op, Param};
use crate::state::AppState;
use crate::{accounts, devices, keys, messages};

fn filter(method: Method) -> MethodFilter {
    match method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Delete => MethodFilter::DELETE,
    }
}

/// Registers `handler` for the endpoint `E` at its path and method.
fn route<E: Endpoint, H, T>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    router.route(E::PATH, on(filter(E::METHOD), handler))
}

const ACCOUNT_ID: Param = Param::uuid("account_id", "The account's id.");

macro_rules! table {
    ($(
        $endpoint:ty => $handler:path {
            tag: $tag:literal,
            summary: $summary:literal,
            params: [$($param:expr),* $(,)?],
            problems: [$($problem:expr),* $(,)?] $(,)?
        }
    ),* $(,)?) => {
        /// The API's routes.
        pub(crate) fn api() -> Router<AppState> {
            let router = Router::new();
            $(let router = route::<$endpoint, _, _>(router, $handler);)*
            router
        }

        /// The API's operations, for the OpenAPI document.
        pub(crate) fn document(doc: &mut Doc) {
            $(doc.endpoint::<$endpoint>(&Op {
                tag: $tag,
                summary: $summary,
                params: &[$($param),*],
                problems: &[$($problem),*],
            });)*
        }
    };
}

table! {
    a::ListApps => accounts::list_apps_handler {
        tag: "accounts",
        summary: "The apps of this hub",
        params: [],
        problems: [],
    },
    a::RequestVerification => accounts::request_verification_handler {
        tag: "accounts",
        summary: "Send a 6-digit code to a phone number (phone-number apps); valid 10 minutes, 5 attempts",
        params: [],
        problems: [UnknownApp, RateLimited],
    },
    a::Register => accounts::register_handler {
        tag: "accounts",
        summary: "Register an account and its primary device; random-id apps draw the handle",
        params: [],
        problems: [UnknownApp, BadSignature, VerificationFailed, HandleTaken, RateLimited],
    },
    a::WhoAmI => accounts::who_am_i_handler {
        tag: "accounts",
        summary: "The caller's account and device",
        params: [],
        problems: [],
    },
    a::Lookup => accounts::lookup_handler {
        tag: "accounts",
        summary: "The account with an address (handle@app)",
        params: [Param::string("address", "The address, handle@app; the handle is canonicalized by the app's scheme.")],
        problems: [NotAllowed, NotFound, RateLimited],
    },
    k::Upload => keys::upload_handler {
        tag: "keys",
        summary: "Publish prekeys of the calling device; signatures are checked against the identity key",
        params: [],
        problems: [BadSignature],
    },
    k::Counts => keys::counts_handler {
        tag: "keys",
        summary: "How many one-time prekeys the calling device has left",
        params: [],
        problems: [],
    },
    k::FetchBundles => keys::claim_handler {
        tag: "keys",
        summary: "Claim prekey bundles of one device or of every device (*); one-time keys are never handed out twice",
        params: [ACCOUNT_ID, Param::string("device", "A device id (1 to 127), or * for every device (the caller's own device excluded).")],
        problems: [NotAllowed, NotFound],
    },
    d::ListDevices => devices::list_handler {
        tag: "devices",
        summary: "The caller's devices",
        params: [],
        problems: [],
    },
    d::RemoveDevice => devices::remove_handler {
        tag: "devices",
        summary: "Remove a device of the caller's account (not the primary one), its keys and queued envelopes",
        params: [Param::device("device_id", "The device to remove.")],
        problems: [Forbidden, NotFound],
    },
    d::CreateLinkToken => devices::link_token_handler {
        tag: "devices",
        summary: "A one-time link token for a new device (valid 10 minutes)",
        params: [],
        problems: [],
    },
    d::Link => devices::link_handler {
        tag: "devices",
        summary: "Add a device to an account with a link token; its keys must be signed by the account's identity key",
        params: [],
        problems: [Forbidden, BadSignature, TooManyDevices, RateLimited],
    },
    d::OpenMailbox => devices::open_mailbox_handler {
        tag: "devices",
        summary: "Open a provisioning mailbox for a device being linked (valid 10 minutes)",
        params: [],
        problems: [RateLimited],
    },
    d::Provision => devices::provision_handler {
        tag: "devices",
        summary: "Leave the encrypted provisioning message in a mailbox",
        params: [Param::uuid("id", "The mailbox.")],
        problems: [NotFound],
    },
    d::FetchProvisioning => devices::fetch_provisioning_handler {
        tag: "devices",
        summary: "Take the provisioning message out of a mailbox (404 until it is there; deleted once fetched)",
        params: [Param::uuid("id", "The mailbox.")],
        problems: [NotFound],
    },
    m::SendMessage => messages::send_handler {
        tag: "messages",
        summary: "Send one ciphertext to each device of an account (to the sender's own account: its other devices); answered once durably queued",
        params: [ACCOUNT_ID],
        problems: [NotFound, NotAllowed, MismatchedDevices, StaleDevices, RateLimited],
    },
}

/// Problem types every route can answer.
pub(crate) const ALWAYS: &[ProblemType] = &[Internal, Unavailable];
