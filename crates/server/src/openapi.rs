//! The OpenAPI 3.1 document of the hub, generated from the route table
//! ([`crate::routes`]) and the wire types of `passerelle_proto`; checked
//! into `docs/openapi.json` (a test fails when the two differ).

use std::any::TypeId;
use std::collections::BTreeMap;

use passerelle_proto::api::Empty;
use passerelle_proto::api::messages::{MismatchedDevices, StaleDevices};
use passerelle_proto::endpoint::{Endpoint, Method};
use passerelle_proto::ws::{ClientFrame, ServerFrame};
use passerelle_proto::{Problem, ProblemType};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, Paths, Ref,
    RefOr, Required, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::routes;

const BASIC: &str = "device";
const JSON: &str = "application/json";

/// The hub's OpenAPI document.
pub fn openapi() -> OpenApi {
    let mut doc = Doc::default();
    routes::document(&mut doc);
    doc.extras();
    doc.finish()
}

/// A path parameter of an operation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param {
    name: &'static str,
    description: &'static str,
    kind: ParamKind,
}

#[derive(Clone, Copy, Debug)]
enum ParamKind {
    String,
    Uuid,
    Device,
}

impl Param {
    pub(crate) const fn string(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            kind: ParamKind::String,
        }
    }
    pub(crate) const fn uuid(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            kind: ParamKind::Uuid,
        }
    }
    pub(crate) const fn device(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            kind: ParamKind::Device,
        }
    }

    fn schema(self) -> Schema {
        match self.kind {
            ParamKind::String => ObjectBuilder::new().schema_type(Type::String).into(),
            ParamKind::Uuid => ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                )))
                .into(),
            ParamKind::Device => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(127))
                .into(),
        }
    }
}

/// What the route table says about one operation.
#[derive(Debug)]
pub(crate) struct Op<'a> {
    pub(crate) tag: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) params: &'a [Param],
    pub(crate) problems: &'a [ProblemType],
}

/// The document being built.
#[derive(Default)]
pub(crate) struct Doc {
    paths: Paths,
    schemas: BTreeMap<String, RefOr<Schema>>,
}

fn http_method(method: Method) -> HttpMethod {
    match method {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Put => HttpMethod::Put,
        Method::Delete => HttpMethod::Delete,
    }
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn operation_id(type_name: &str) -> String {
    let name = type_name.rsplit("::").next().unwrap_or(type_name);
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

impl Doc {
    fn schema<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        for (name, schema) in nested {
            self.schemas.entry(name).or_insert(schema);
        }
        let name = T::name().into_owned();
        self.schemas.entry(name.clone()).or_insert_with(T::schema);
        schema_ref(&name)
    }

    /// Adds an endpoint's operation.
    pub(crate) fn endpoint<E>(&mut self, op: &Op<'_>)
    where
        E: Endpoint + 'static,
        E::Request: ToSchema + 'static,
        E::Response: ToSchema + 'static,
    {
        let mut b = OperationBuilder::new()
            .operation_id(Some(operation_id(std::any::type_name::<E>())))
            .summary(Some(op.summary))
            .tag(op.tag);
        for p in op.params {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(p.name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(p.description))
                    .schema(Some(p.schema())),
            );
        }
        let mut problems: Vec<ProblemType> = op.problems.to_vec();
        let has_body = matches!(E::METHOD, Method::Post | Method::Put)
            && TypeId::of::<E::Request>() != TypeId::of::<Empty>();
        if has_body {
            let schema = self.schema::<E::Request>();
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
                    .build(),
            ));
            problems.extend([
                ProblemType::MalformedJson,
                ProblemType::InvalidRequest,
                ProblemType::BodyTooLarge,
                ProblemType::UnsupportedMediaType,
            ]);
        } else if matches!(E::METHOD, Method::Post) {
            // Body-less POSTs still validate what they get.
            problems.push(ProblemType::InvalidRequest);
        }
        if !op.params.is_empty() {
            problems.push(ProblemType::InvalidParameter);
        }
        if E::AUTHENTICATED {
            problems.push(ProblemType::Unauthorized);
            b = b.security(SecurityRequirement::new(BASIC, Vec::<String>::new()));
        }
        problems.extend_from_slice(routes::ALWAYS);

        if TypeId::of::<E::Response>() == TypeId::of::<Empty>() {
            b = b.response("204", ResponseBuilder::new().description("Done; no body."));
        } else {
            let schema = self.schema::<E::Response>();
            b = b.response(
                "200",
                ResponseBuilder::new()
                    .description("Success.")
                    .content(JSON, ContentBuilder::new().schema(Some(schema)).build()),
            );
        }
        b = self.problem_responses(b, &problems);
        self.add(E::PATH, http_method(E::METHOD), b);
    }

    fn add(&mut self, path: &str, method: HttpMethod, op: OperationBuilder) {
        let item = PathItem::new(method, op.build());
        let mut paths = std::mem::take(&mut self.paths);
        match paths.paths.get_mut(path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                paths.paths.insert(path.to_owned(), item);
            }
        }
        self.paths = paths;
    }

    fn problem_responses(
        &mut self,
        mut b: OperationBuilder,
        problems: &[ProblemType],
    ) -> OperationBuilder {
        let problem = self.schema::<Problem>();
        let mismatched = self.schema::<MismatchedDevices>();
        let stale = self.schema::<StaleDevices>();
        let mut by_status: BTreeMap<u16, Vec<ProblemType>> = BTreeMap::new();
        for &p in problems {
            let list = by_status.entry(p.status()).or_default();
            if !list.contains(&p) {
                list.push(p);
            }
        }
        for (status, kinds) in by_status {
            let description = kinds
                .iter()
                .map(|k| format!("`{}` ({})", k.urn(), k.title()))
                .collect::<Vec<_>>()
                .join(", ");
            let extension = match kinds.as_slice() {
                [ProblemType::MismatchedDevices] => Some(mismatched.clone()),
                [ProblemType::StaleDevices] => Some(stale.clone()),
                _ => None,
            };
            let schema: RefOr<Schema> = match extension {
                Some(ext) => AllOfBuilder::new().item(problem.clone()).item(ext).into(),
                None => problem.clone(),
            };
            b = b.response(
                status.to_string(),
                ResponseBuilder::new().description(description).content(
                    passerelle_proto::problem::CONTENT_TYPE,
                    ContentBuilder::new().schema(Some(schema)).build(),
                ),
            );
        }
        b
    }

    /// The routes that are not JSON endpoints: the WebSocket and the
    /// operational probes.
    fn extras(&mut self) {
        // The frames are documented as schemas; OpenAPI cannot describe
        // what travels on a WebSocket.
        let _ = self.schema::<ServerFrame>();
        let _ = self.schema::<ClientFrame>();
        let ws = OperationBuilder::new()
            .operation_id(Some("websocket"))
            .tag("delivery")
            .summary(Some("The delivery WebSocket"))
            .description(Some(
                "Upgrade to a WebSocket. The hub sends `ServerFrame`s as JSON text frames: every \
                 queued envelope oldest first, then `queue_empty`, then new envelopes as they \
                 arrive. The device sends `ClientFrame`s: `ack` with the ids of envelopes it has \
                 stored; unacknowledged envelopes are sent again on the next connection. A second \
                 connection of the same device replaces the first (close code 4000); a removed \
                 device is closed with 4001.",
            ))
            .security(SecurityRequirement::new(BASIC, Vec::<String>::new()))
            .response(
                "101",
                ResponseBuilder::new().description("Switching to the WebSocket protocol."),
            );
        let ws = self.problem_responses(
            ws,
            &[
                ProblemType::InvalidRequest,
                ProblemType::Unauthorized,
                ProblemType::Internal,
                ProblemType::Unavailable,
            ],
        );
        self.add(passerelle_proto::ws::PATH, HttpMethod::Get, ws);

        let text = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "text/plain",
                ContentBuilder::new().schema(Some(String::schema())).build(),
            )
        };
        let healthz = OperationBuilder::new()
            .operation_id(Some("healthz"))
            .tag("operations")
            .summary(Some("Liveness: 200 while the process runs"))
            .response("200", text("Alive."));
        self.add("/healthz", HttpMethod::Get, healthz);
        let readyz = OperationBuilder::new()
            .operation_id(Some("readyz"))
            .tag("operations")
            .summary(Some("Readiness: 200 when the store answers"))
            .response("200", text("Ready."));
        let readyz = self.problem_responses(readyz, &[ProblemType::Unavailable]);
        self.add("/readyz", HttpMethod::Get, readyz);
        let metrics = OperationBuilder::new()
            .operation_id(Some("metrics"))
            .tag("operations")
            .summary(Some("Metrics in the Prometheus text format"))
            .response("200", text("The metrics."));
        self.add("/metrics", HttpMethod::Get, metrics);
    }

    fn finish(self) -> OpenApi {
        let mut components = ComponentsBuilder::new().security_scheme(
            BASIC,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "HTTP Basic: `account_id.device_id` as the user name, the device's \
                         password as the password.",
                    ))
                    .build(),
            ),
        );
        for (name, schema) in self.schemas {
            components = components.schema(name, schema);
        }
        let tags = [
            (
                "accounts",
                "Apps, phone verification, registration and the directory.",
            ),
            ("keys", "Prekeys up, bundles down."),
            (
                "devices",
                "Listing, linking and removing devices; provisioning mailboxes.",
            ),
            ("messages", "Sending envelopes."),
            ("delivery", "Receiving envelopes."),
            ("operations", "Health and metrics."),
        ]
        .map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        });
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("Passerelle hub")
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(
                        "The HTTP API of a Passerelle hub. Every error is an RFC 9457 problem \
                         document (application/problem+json) with a stable `type` URN.",
                    ))
                    .build(),
            )
            .paths(self.paths)
            .components(Some(components.build()))
            .tags(Some(tags))
            .build()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn operation_ids() {
        assert_eq!(
            super::operation_id("passerelle_proto::api::keys::FetchBundles"),
            "fetchBundles"
        );
    }
}
