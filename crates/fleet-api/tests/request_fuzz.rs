//! Hostile requests, generated: methods, paths (escapes, slashes, dots), content types and
//! bodies (broken JSON, wrong types, hostile option text) against the API over an in-memory
//! registry. Whatever comes, no panic, no server error, an accepted unit reads back exactly,
//! and the listing stays readable (`invariants::check_request`, which the fuzz target
//! `fuzz/fuzz_targets/api_request.rs` checks too, without bound).

mod invariants;

use std::sync::Arc;

use fleet_api::server::{router, ApiState};
use fleet_registry::local::LocalStore;
use fleet_registry::{KvStore, Registry};
use invariants::{check_request, Sent};
use proptest::prelude::*;

fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => "[A-Za-z0-9]{1,3}",
        1 => prop::sample::select(vec![
            "[", "]", "=", "\\", "\n", "\r", " ", "\t", "#", ";", "\"", "'", "%", "\u{0}", "é",
            "\\\n", "]\n[", "/", "..", "%2F", "%00", "%zz", "@", ".service", "?", "&",
        ])
        .prop_map(str::to_owned),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn path() -> impl Strategy<Value = String> {
    let collection = prop_oneof![
        6 => Just("/fleet/v1/units/"),
        1 => prop::sample::select(vec![
            "/fleet/v1/units",
            "/fleet/v1/state/",
            "/fleet/v1/state",
            "/fleet/v1/machines",
            "/fleet/v1/discovery",
            "/v1-alpha/units/",
            "/metrics",
            "/",
        ]),
    ];
    let name = prop_oneof![
        4 => "[a-z]{1,6}(@[a-z0-9]{0,3})?\\.(service|socket|timer)",
        1 => hostile(),
    ];
    let query = prop_oneof![
        6 => Just(String::new()),
        1 => hostile().prop_map(|t| format!("?nextPageToken={t}")),
        1 => hostile().prop_map(|q| format!("?{q}")),
    ];
    (collection, name, query).prop_map(|(c, n, q)| format!("{c}{n}{q}"))
}

fn json_text(text: String) -> serde_json::Value {
    serde_json::Value::String(text)
}

/// A body: a unit as fleetctl sends one with hostile parts, JSON of the wrong shape, or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let state = prop_oneof![
        3 => prop::sample::select(vec!["launched", "loaded", "inactive", ""]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let section = prop_oneof![
        3 => prop::sample::select(vec!["Unit", "Service", "X-Fleet"]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let name = prop_oneof![
        3 => prop::sample::select(vec!["ExecStart", "Description", "MachineOf", "Global"]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let option = (section, name, hostile()).prop_map(|(s, n, v)| {
        serde_json::json!({"section": json_text(s), "name": json_text(n), "value": json_text(v)})
    });
    let unit = (state, proptest::collection::vec(option, 0..6)).prop_map(|(state, options)| {
        serde_json::to_vec(&serde_json::json!({"desiredState": state, "options": options})).unwrap()
    });
    let wrong_shape = prop::sample::select(vec![
        r#"[]"#,
        r#""unit""#,
        r#"42"#,
        r#"null"#,
        r#"{"options":{}}"#,
        r#"{"options":[{"section":1}]}"#,
        r#"{"desiredState":7}"#,
        r#"{"options":[null]}"#,
        r#"[{"op":"add","path":"/m1/metadata/a","value":"b"}]"#,
        r#"{"#,
        "",
    ])
    .prop_map(|text| text.as_bytes().to_vec());
    prop_oneof![
        6 => unit,
        2 => wrong_shape,
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    let method = prop_oneof![
        6 => Just("PUT".to_owned()),
        3 => prop::sample::select(vec!["GET", "DELETE", "PATCH"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["POST", "HEAD", "OPTIONS", "BREW"]).prop_map(str::to_owned),
    ];
    let content_type = prop_oneof![
        6 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => hostile().prop_map(Some),
    ];
    (method, path(), content_type, body()).prop_map(|(method, path, content_type, body)| Sent {
        method,
        path,
        content_type,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn hostile_requests_get_answers_never_a_server_error(sent in sent()) {
        thread_local! {
            static SERVED: (tokio::runtime::Runtime, axum::Router) = {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let router = runtime.block_on(async {
                    let store: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
                    let registry = Registry::open(store).await.unwrap();
                    router(ApiState::new(registry, 100, "test"))
                });
                (runtime, router)
            };
        }
        SERVED.with(|(runtime, router)| runtime.block_on(check_request(router, &sent)))
            .map_err(TestCaseError::fail)?;
    }
}
