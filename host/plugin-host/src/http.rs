//! The `outbound-http` import: the payment slot's only way out, limited to
//! the origins the tenant's manifest allows, with a timeout per request and,
//! per call, a cap on the number of requests and on the bytes sent and
//! received: a call cannot turn the host into a load generator.

use super::bindings::payment::oms::plugin::outbound_http::{HttpError, Request, Response};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HttpGrant {
    /// Normalised origins: `scheme://host[:port]`, lower case.
    pub allowed_origins: Vec<String>,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    /// Requests one call may make.
    pub max_requests: u32,
    /// Bytes one call may send and receive, bodies counted.
    pub max_bytes: u64,
    /// The tenant whose calls use this grant: a label on the provider metrics.
    tenant: String,
    /// Spent so far by the call holding this grant (each call gets a copy).
    requests: u32,
    bytes: u64,
    /// One client per grant, so connections to the provider are reused.
    agent: ureq::Agent,
}

/// Requests one payment call may make: a provider call with a retry or two.
pub const MAX_REQUESTS_PER_CALL: u32 = 8;
/// Bytes one payment call may move.
pub const MAX_BYTES_PER_CALL: u64 = 2 << 20;

/// `scheme://host[:port]` of a URL, with the default port left out.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{}://{}:{port}", parsed.scheme(), host.to_ascii_lowercase()),
        None => format!("{}://{}", parsed.scheme(), host.to_ascii_lowercase()),
    })
}

impl HttpGrant {
    pub fn new(origins: &[String], timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // Redirects could lead outside the allow-list.
            .max_redirects(0)
            // ureq's default buffers are 128 KiB each way per connection,
            // fresh memory the allocator takes from the OS (and zeroes)
            // for every new connection; a payment request and its
            // response's header are a few hundred bytes.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .max_response_header_size(16 * 1024)
            // ureq keeps 3 idle connections per host by default: with more
            // payment calls at once than that, most connections were
            // closed after one request and the next call dialled again.
            .max_idle_connections(256)
            .max_idle_connections_per_host(64)
            .build();
        let agent = ureq::Agent::with_parts(
            agent,
            ureq::unversioned::transport::DefaultConnector::default(),
            crate::resolve::Resolve::default(),
        );
        Self {
            allowed_origins: origins.iter().filter_map(|o| origin_of(o)).collect(),
            timeout,
            max_response_bytes: 1 << 20,
            max_requests: MAX_REQUESTS_PER_CALL,
            max_bytes: MAX_BYTES_PER_CALL,
            tenant: String::new(),
            requests: 0,
            bytes: 0,
            agent,
        }
    }

    /// Names the tenant on this grant's provider metrics.
    pub fn for_tenant(mut self, tenant: &str) -> Self {
        self.tenant = tenant.to_string();
        self
    }

    /// Requests this grant has let through.
    pub fn requests_made(&self) -> u32 {
        self.requests
    }

    /// Sends one request if the grant allows it; its duration and outcome
    /// go to `oms_provider_request_duration_seconds{tenant, outcome}`.
    pub fn send(&mut self, mut request: Request) -> Result<Response, HttpError> {
        let started = std::time::Instant::now();
        // A span per request, a child of the plugin call's; the provider
        // receives its context as `traceparent`, replacing any the plugin set.
        let span = tracing::info_span!(
            "provider.request",
            otel.name = "provider request",
            otel.kind = "client",
            http.request.method = request.method.as_str(),
            server.address = origin_of(&request.url).unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let _entered = span.enter();
        if let Some(traceparent) = oms_trace::of(&span) {
            request
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("traceparent"));
            request.headers.push(("traceparent".into(), traceparent));
        }
        let result = self.send_unmeasured(request);
        let outcome = match &result {
            Ok(r) if r.status < 400 => "ok",
            Ok(r) if r.status < 500 => "client_error",
            Ok(_) => "server_error",
            Err(HttpError::Timeout) => "timeout",
            Err(HttpError::ForbiddenOrigin(_)) => "forbidden",
            Err(_) => "connection_error",
        };
        if let Ok(r) = &result {
            span.record("http.response.status_code", r.status);
        }
        span.record("outcome", outcome);
        metrics::histogram!(
            "oms_provider_request_duration_seconds",
            "tenant" => self.tenant.clone(),
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    fn send_unmeasured(&mut self, request: Request) -> Result<Response, HttpError> {
        let origin = origin_of(&request.url)
            .ok_or_else(|| HttpError::ForbiddenOrigin(request.url.clone()))?;
        if !self.allowed_origins.contains(&origin) {
            return Err(HttpError::ForbiddenOrigin(origin));
        }
        if self.requests >= self.max_requests {
            return Err(HttpError::Connection(format!(
                "this call's budget of {} requests is spent",
                self.max_requests
            )));
        }
        let sent = request.body.len() as u64;
        if self.bytes.saturating_add(sent) > self.max_bytes {
            return Err(HttpError::Connection(format!(
                "this call's budget of {} bytes is spent",
                self.max_bytes
            )));
        }
        self.requests += 1;
        self.bytes += sent;
        let receivable = self.max_response_bytes.min(self.max_bytes - self.bytes);
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_str())
            .uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let req = builder
            .body(request.body)
            .map_err(|e| HttpError::Connection(e.to_string()))?;
        let mut response = self.agent.run(req).map_err(|e| match e {
            ureq::Error::Timeout(_) => HttpError::Timeout,
            other => HttpError::Connection(other.to_string()),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(receivable)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => HttpError::Timeout,
                other => HttpError::Connection(other.to_string()),
            })?;
        self.bytes += body.len() as u64;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin_of("http://127.0.0.1:8090/v1/x?y").as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            origin_of("https://API.example.com/").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(
            origin_of("https://api.example.com:443/").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn other_origins_are_refused_without_a_request() {
        let grant = HttpGrant::new(
            &["http://127.0.0.1:1".to_string()],
            Duration::from_millis(10),
        );
        let request = Request {
            method: "GET".into(),
            url: "http://169.254.169.254/latest".into(),
            headers: vec![],
            body: vec![],
        };
        let mut grant = grant;
        assert!(
            matches!(grant.send(request), Err(HttpError::ForbiddenOrigin(o)) if o == "http://169.254.169.254")
        );
        assert_eq!(grant.requests_made(), 0);
    }

    #[test]
    fn a_call_runs_out_of_requests() {
        // A port nothing listens on: each request fails fast, and counts.
        let mut grant = HttpGrant::new(
            &["http://127.0.0.1:9".to_string()],
            Duration::from_millis(200),
        );
        let request = || Request {
            method: "GET".into(),
            url: "http://127.0.0.1:9/".into(),
            headers: vec![],
            body: vec![],
        };
        for _ in 0..MAX_REQUESTS_PER_CALL {
            assert!(
                !matches!(grant.send(request()), Err(HttpError::Connection(m)) if m.contains("budget"))
            );
        }
        assert!(
            matches!(grant.send(request()), Err(HttpError::Connection(m)) if m.contains("budget"))
        );
        assert_eq!(grant.requests_made(), MAX_REQUESTS_PER_CALL);
    }
}
