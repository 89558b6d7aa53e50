//! The one error shape every endpoint answers with:
//! `{"error":{"code","message","details","requestId","timestamp"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable.
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for `Retry-After` (429 and 503 say 1 unless told).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send X-Tenant-Id and Authorization: Bearer <tenant API key>",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    /// A store failure: a stored record that does not read back is the
    /// platform's fault (500, logged); anything else is worth a retry.
    pub fn store(e: oms_store::StoreError) -> Self {
        match e {
            oms_store::StoreError::Corrupt(what) => {
                tracing::error!(%what, "a stored record is unreadable");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "CORRUPT_RECORD",
                    "a stored record could not be read; operators have been told",
                )
            }
            other => Self::unavailable(other),
        }
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed on an internal error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the service could not complete the request; retry it",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request's own id: the same in the envelope, the header and its logs.
        let request_id = super::edges::request_id();
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "requestId": request_id,
                "timestamp": oms_clock::now_rfc3339(),
            }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            let seconds = self.retry_after.unwrap_or(1);
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
