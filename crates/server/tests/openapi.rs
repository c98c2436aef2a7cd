//! The checked-in OpenAPI document (`docs/openapi.json`) is the one the
//! code generates: run with `UPDATE_OPENAPI=1` to write it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::path::PathBuf;

use passerelle_proto::Endpoint;
use passerelle_proto::api::{accounts, devices, keys, messages};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_checked_in_document_is_current() {
    let generated = passerelle_server::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path(), &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(path()).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p passerelle-server --test openapi`"
    );
}

fn has(doc: &serde_json::Value, path: &str, method: &str) -> bool {
    doc["paths"][path][method].is_object()
}

fn method<E: Endpoint>() -> &'static str {
    match E::METHOD {
        passerelle_proto::Method::Get => "get",
        passerelle_proto::Method::Post => "post",
        passerelle_proto::Method::Put => "put",
        passerelle_proto::Method::Delete => "delete",
    }
}

#[test]
fn every_endpoint_is_documented_with_its_problems() {
    let doc = serde_json::to_value(passerelle_server::openapi()).unwrap();
    macro_rules! check {
        ($($e:ty),*) => {$(
            assert!(has(&doc, <$e>::PATH, method::<$e>()), "{} missing", <$e>::PATH);
            let op = &doc["paths"][<$e>::PATH][method::<$e>()];
            assert!(op["responses"]["500"].is_object());
            assert_eq!(
                op["security"].is_array(),
                <$e>::AUTHENTICATED,
                "security of {}", <$e>::PATH
            );
            if <$e>::AUTHENTICATED {
                assert!(op["responses"]["401"].is_object());
            }
        )*};
    }
    check!(
        accounts::ListApps,
        accounts::RequestVerification,
        accounts::Register,
        accounts::WhoAmI,
        accounts::Lookup,
        keys::Upload,
        keys::Counts,
        keys::FetchBundles,
        devices::ListDevices,
        devices::RemoveDevice,
        devices::CreateLinkToken,
        devices::Link,
        devices::OpenMailbox,
        devices::Provision,
        devices::FetchProvisioning,
        messages::SendMessage
    );
    assert!(has(&doc, "/v1/websocket", "get"));
    let send = &doc["paths"]["/v1/messages/{account_id}"]["put"]["responses"];
    for status in ["400", "401", "403", "404", "409", "410", "413", "415"] {
        assert!(send[status].is_object(), "send lacks {status}");
    }
    for schema in [
        "Envelope",
        "ServerFrame",
        "ClientFrame",
        "Problem",
        "MismatchedDevices",
        "RegisterAccount",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}
