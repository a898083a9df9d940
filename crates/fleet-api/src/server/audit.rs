//! The audit trail: a record of every change attempted through the API, and of every request
//! refused for want of authentication or role, handed to a sink (fleetd appends them to its
//! audit log as JSON lines, with the time).

use axum::http::Method;
use serde::Serialize;

/// One request worth auditing: who, through which connection, what, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// `token NAME`, `uid N`, `client certificate`, `anonymous`; `unauthenticated` for a
    /// request refused for bearing no valid token.
    pub who: String,
    /// The caller's role, when it was known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The connection (`unix uid 0 pid 12`, `tcp 127.0.0.1:40522`, ...), when it was known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// What the request changed, when it changed something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// Where audit records go.
pub trait AuditSink: Send + Sync {
    fn record(&self, record: &AuditRecord);
}

/// What a handler changed, carried on its response to the audit.
#[derive(Debug, Clone)]
pub(super) struct Change(pub String);

/// Whether a request is audited: every one that may change something (any method but GET and
/// HEAD, refused or not), and every one refused for authentication or role.
pub(super) fn audited(method: &Method, status: u16) -> bool {
    !(*method == Method::GET || *method == Method::HEAD) || status == 401 || status == 403
}

/// A method as recorded: an invented one is cut short (it is the client's text).
pub(super) fn method_text(method: &Method) -> String {
    method.as_str().chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_refusals_are_audited_reads_are_not() {
        let rows = [
            (Method::GET, 200, false),
            (Method::GET, 404, false),
            (Method::HEAD, 200, false),
            (Method::GET, 401, true),
            (Method::GET, 403, true),
            (Method::PUT, 201, true),
            (Method::PUT, 400, true),
            (Method::DELETE, 204, true),
            (Method::PATCH, 204, true),
            (Method::POST, 405, true),
        ];
        for (method, status, expected) in rows {
            assert_eq!(audited(&method, status), expected, "{method} {status}");
        }
    }

    #[test]
    fn records_leave_out_what_is_unknown() {
        let record = AuditRecord {
            who: "uid 0".into(),
            role: Some("operate"),
            peer: None,
            method: "DELETE".into(),
            path: "/fleet/v1/units/a.service".into(),
            status: 204,
            change: Some("destroyed a.service".into()),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"who":"uid 0","role":"operate","method":"DELETE","path":"/fleet/v1/units/a.service","status":204,"change":"destroyed a.service"}"#
        );
    }
}
