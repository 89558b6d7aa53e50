//! Trace context for the platform: the W3C `traceparent` of the current
//! span (to store with an order, put on a message or an outbound request),
//! spans continued from one, and the OTLP/HTTP exporter the binary installs
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Without an exporter no OpenTelemetry layer is installed: spans carry no
//! OpenTelemetry context, `current()` is `None` and continuing a span only
//! records the parent's traceparent as a field, so tracing costs what it
//! cost before.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A W3C traceparent as it travels: `00-<trace id>-<span id>-<flags>`.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2)
}

/// The trace id of a traceparent.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

fn context_of(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The traceparent of `span`, if it is part of an exported trace.
pub fn of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The traceparent of the current span, if it is part of an exported trace.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// Makes `span` a child of `traceparent` (a client's, an order's, a
/// message's). Call it before the span is entered: spans started inside it
/// earlier would belong to another trace.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(parent) = traceparent.filter(|t| is_traceparent(t)) else {
        return;
    };
    // Without the OpenTelemetry layer there is nothing to continue; the
    // error says so and is expected.
    let _ = span.set_parent(context_of(parent));
}

/// The exporter, kept to flush what is buffered when the process stops.
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("building the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl Exporter {
    /// An OTLP/HTTP (protobuf) exporter to `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`/v1/traces` appended), with the SDK's batching and its
    /// `OTEL_BSP_*` settings, and the layer that feeds it.
    pub fn otlp<S>(
        service: &'static str,
    ) -> Result<(Self, impl tracing_subscriber::Layer<S>), ExportError>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    // OTEL_SERVICE_NAME tells hosts apart where it is set.
                    .with_service_name(
                        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.into()),
                    )
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            // Every span the platform makes on purpose has a name; the
            // location of the code that made it is in the log, not the trace.
            .with_location(false)
            .with_threads(false);
        Ok((Self { provider }, layer))
    }

    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_continued() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("00-4bf92f35-00f067aa0ba902b7-01"));
        assert!(!is_traceparent("garbage"));
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
