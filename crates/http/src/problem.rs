//! Errors as RFC 9457 problem documents (`application/problem+json`), with the REST Proxy's
//! `error_code` member beside them so that its clients find the code where they look for it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One refusal: status, a stable type, a title and what exactly went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// The last part of the type URI, e.g. `idempotency-key-reused`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header (503, 409 in flight).
    pub retry_after: Option<u32>,
    /// A 401 that asks for Basic credentials (`WWW-Authenticate`), so a browser prompts for a login.
    pub challenge: bool,
}

/// The Basic challenge of every 401 that asks for credentials.
pub const CHALLENGE: &str = "Basic realm=\"once\", charset=\"UTF-8\"";

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Problem {
        assert!(status.is_client_error() || status.is_server_error(), "a problem is a 4xx or a 5xx");
        Problem { status, kind, title, detail: detail.into(), retry_after: None, challenge: false }
    }

    /// Asks for Basic credentials (a 401 only).
    pub fn challenge(mut self) -> Problem {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "only a 401 challenges");
        self.challenge = true;
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "The request is not valid", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource", detail)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("urn:once:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "error_code": self.status.as_u16(),
            "message": self.detail,
        })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_document_carries_type_status_detail_and_retry_after() {
        let problem = Problem::new(StatusCode::CONFLICT, "in-flight", "Busy", "key k").retry_after(1);
        let body = problem.body();
        assert_eq!(body["type"], "urn:once:problem:in-flight");
        assert_eq!(body["status"], 409);
        assert_eq!(body["error_code"], 409);
        assert_eq!(body["detail"], "key k");
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    #[should_panic(expected = "a problem is a 4xx or a 5xx")]
    fn a_success_is_not_a_problem() {
        let _ = Problem::new(StatusCode::OK, "ok", "fine", "");
    }
}
