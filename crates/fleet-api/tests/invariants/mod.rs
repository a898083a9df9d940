//! The API's request-decoding invariant, shared by the property test and the fuzz target
//! (`fuzz/fuzz_targets/api_request.rs`): whatever a client sends, the API answers without a
//! panic and never with a server error; a unit it accepts reads back with exactly the options
//! sent (grouped by section); and the listing stays readable after every request.

use axum::body::{to_bytes, Body};
use axum::http::Request;
use tower::ServiceExt;

/// One request as a client may send it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Sends `request` to `router`: the status and body of the answer, or why it could not be
/// sent (a method or path no HTTP client could send, which is no finding).
pub async fn exchange(router: &axum::Router, sent: &Sent) -> Option<(u16, Vec<u8>)> {
    let mut request = Request::builder()
        .method(sent.method.as_bytes())
        .uri(sent.path.as_str());
    if let Some(content_type) = &sent.content_type {
        request = request.header("content-type", content_type.as_bytes());
    }
    let request = request.body(Body::from(sent.body.clone())).ok()?;
    let response = router.clone().oneshot(request).await.ok()?;
    let status = response.status().as_u16();
    let body = to_bytes(response.into_body(), usize::MAX).await.ok()?;
    Some((status, body.to_vec()))
}

/// What is wrong with how the API answered `sent`, if anything. A unit it created is
/// destroyed again, so that cases do not pile up.
pub async fn check_request(router: &axum::Router, sent: &Sent) -> Result<(), String> {
    let Some((status, answer)) = exchange(router, sent).await else {
        return Ok(());
    };
    let said = || String::from_utf8_lossy(&answer).into_owned();
    if status >= 500 {
        return Err(format!("{sent:?} answered {status}: {}", said()));
    }
    // A HEAD answer has no body, whatever it refuses (fleet answered HEAD as any other
    // method that is not GET).
    let bodiless = sent.method == "HEAD";
    if (400..500).contains(&status)
        && status != 404
        && status != 405
        && answer.is_empty()
        && !bodiless
    {
        return Err(format!("{sent:?} refused ({status}) without a word"));
    }
    let reading = sent.method == "GET" || sent.method == "HEAD";
    let metrics = sent.path == "/metrics" || sent.path.starts_with("/metrics?");
    if !reading && metrics && status != 405 {
        return Err(format!("{sent:?} answered {status}, not 405"));
    }
    let unit_path = sent.path.starts_with("/fleet/v1/units/");
    if sent.method == "PUT" && unit_path && status == 201 {
        check_read_back(router, sent).await?;
    }
    let listing = Sent {
        method: "GET".into(),
        path: "/fleet/v1/units".into(),
        content_type: None,
        body: Vec::new(),
    };
    match exchange(router, &listing).await {
        Some((200, body)) if serde_json::from_slice::<serde_json::Value>(&body).is_ok() => {}
        other => return Err(format!("after {sent:?} the listing answered {other:?}")),
    }
    Ok(())
}

/// A unit created by `sent` has exactly the options sent; it is then destroyed.
async fn check_read_back(router: &axum::Router, sent: &Sent) -> Result<(), String> {
    let given: serde_json::Value = serde_json::from_slice(&sent.body)
        .map_err(|e| format!("{sent:?} created a unit from a body that is not JSON: {e}"))?;
    let read = Sent {
        method: "GET".into(),
        body: Vec::new(),
        content_type: None,
        ..sent.clone()
    };
    let Some((200, stored)) = exchange(router, &read).await else {
        return Err(format!(
            "{sent:?} answered 201, but the unit cannot be read"
        ));
    };
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap_or_default();
    let triples = |unit: &serde_json::Value| -> Vec<(String, String, String)> {
        let text = |o: &serde_json::Value, k: &str| o[k].as_str().unwrap_or_default().to_owned();
        unit["options"]
            .as_array()
            .map(|options| {
                options
                    .iter()
                    .map(|o| (text(o, "section"), text(o, "name"), text(o, "value")))
                    .collect()
            })
            .unwrap_or_default()
    };
    let given = triples(&given);
    // Grouped by section in order of first appearance, as the stored file is.
    let mut order: Vec<&String> = Vec::new();
    for (section, _, _) in &given {
        if !order.contains(&section) {
            order.push(section);
        }
    }
    let expected: Vec<_> = order
        .iter()
        .flat_map(|s| given.iter().filter(move |o| &o.0 == *s).cloned())
        .collect();
    let stored_options = triples(&stored);
    if stored_options != expected {
        return Err(format!(
            "{sent:?} stored {stored_options:?}, not the options sent"
        ));
    }
    let destroy = Sent {
        method: "DELETE".into(),
        body: Vec::new(),
        content_type: None,
        ..sent.clone()
    };
    match exchange(router, &destroy).await {
        Some((204, _)) => Ok(()),
        other => Err(format!(
            "{sent:?}: the unit created cannot be destroyed: {other:?}"
        )),
    }
}
