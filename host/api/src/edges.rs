//! What every request passes through before and after its handler: a
//! request id (the client's `X-Request-Id` if it is a sane one, else a new
//! one) on the response, in the error envelope and on every log line within
//! the request; a body refused before it is read when its declared length
//! is over the route's limit (413) or when a JSON route is sent something
//! else (415); and the framework's own refusals (a bad path, a method not
//! allowed, a body over the limit while it streams) turned into the same
//! JSON error envelope as the handlers' own.

use super::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served (a new one outside any request).
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_id())
}

fn new_id() -> String {
    format!("req_{}", oms_clock::monotonic_ulid())
}

/// A client's id is kept if it is short and plain (it goes into logs and
/// headers as it is).
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Bodies a JSON route reads: axum's default, 2 MiB.
pub const JSON_BODY_MAX: u64 = 2 << 20;

/// The largest body a route takes: a component upload, or JSON.
fn body_limit(path: &str) -> u64 {
    if is_upload(path) {
        oms_plugin_host::MAX_COMPONENT_BYTES as u64 + (1 << 20)
    } else {
        JSON_BODY_MAX
    }
}

/// `POST /api/v1/plugins/{slot}`: a component, not JSON.
fn is_upload(path: &str) -> bool {
    path.strip_prefix("/api/v1/plugins/")
        .is_some_and(|slot| !slot.is_empty() && !slot.contains('/'))
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn has_body(req: &Request) -> bool {
    declared_length(req).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// The refusal a request gets before its handler runs, if any.
fn refuse_early(req: &Request) -> Option<ApiError> {
    let path = req.uri().path();
    // NUL reaches no handler: no id or filter holds one, and PostgreSQL
    // cannot even compare text with one.
    let raw = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
    if raw.to_ascii_lowercase().contains("%00") {
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "the path or query holds a NUL character",
        ));
    }
    let limit = body_limit(path);
    if let Some(n) = declared_length(req).filter(|n| *n > limit) {
        return Some(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body is {n} bytes; this route takes at most {limit}"),
        ));
    }
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let api = path.starts_with("/api/") || path.starts_with("/admin/");
    if writes && api && !is_upload(path) && has_body(req) && !is_json(req) {
        return Some(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as Content-Type: application/json",
        ));
    }
    None
}

/// The envelope's code for a refusal the framework made itself.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE",
        s if s.is_server_error() => "INTERNAL",
        _ => "REQUEST_REFUSED",
    }
}

/// A refusal that is not in the envelope (the framework's plain text, an
/// empty 405) is put into it; its text becomes the message.
async fn enveloped(response: Response) -> Response {
    let status = response.status();
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut fixed = ApiError::new(status, code_for(status), message).into_response();
    // What the framework said besides (`Allow` on a 405) stays.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// The middleware: see the module's comment.
pub async fn edges(req: Request<Body>, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(new_id, str::to_string);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        tenant = tracing::field::Empty,
        order_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // A client's W3C trace context is continued (else the trace starts
    // here); its trace id goes on every line logged within the request.
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| oms_trace::is_traceparent(v))
        .map(str::to_owned);
    oms_trace::continue_from(&span, incoming.as_deref());
    if let Some(trace) = oms_trace::of(&span).or(incoming)
        && let Some(id) = oms_trace::trace_id(&trace)
    {
        span.record("trace_id", id);
    }
    let scoped = id.clone();
    let started = std::time::Instant::now();
    // The route's template (`/api/v1/orders/{id}`), never the raw path.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().to_string();
    let mut response = REQUEST_ID
        .scope(scoped, async move {
            let response = match refuse_early(&req) {
                Some(refusal) => refusal.into_response(),
                None => enveloped(next.run(req).await).await,
            };
            let elapsed = started.elapsed();
            let (status, ms) = (response.status().as_u16(), elapsed.as_millis() as u64);
            super::metrics::http_request(&route, &method, status, elapsed.as_secs_f64());
            // Refusals are worth a line each; successes only when asked for.
            if status >= 400 {
                tracing::info!(status, ms, "request refused");
            } else {
                tracing::debug!(status, ms, "request served");
            }
            response
        })
        .instrument(span)
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_request_ids_are_kept() {
        assert!(sane("abc-123_x.y:z"));
        assert!(!sane(""));
        assert!(!sane("has space"));
        assert!(!sane("ctl\u{1b}[31m"));
        assert!(!sane(&"x".repeat(129)));
    }

    #[test]
    fn uploads_are_told_from_json_routes() {
        assert!(is_upload("/api/v1/plugins/guardrail"));
        assert!(!is_upload("/api/v1/plugins/guardrail/versions"));
        assert!(!is_upload("/api/v1/orders"));
        assert_eq!(body_limit("/api/v1/orders"), JSON_BODY_MAX);
    }
}
