//! OpenTelemetry tracing: which routes make a span per request, and where the spans go.
//!
//! Built at translation from the global ConfigMap's `enable-opentelemetry`,
//! `otlp-collector-*` and `otel-*` keys and the Ingress annotations of the same names (as
//! ingress-nginx's `internal/ingress/annotations/opentelemetry` and its template's
//! `buildOpentelemetryForLocation` combine them); only read by the proxy.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

/// How a traced route's requests get their span. A route without one is not traced at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTracing {
    /// Where the spans go and which are kept.
    pub export: Arc<TraceExport>,
    /// `opentelemetry-trust-incoming-span`: a valid `traceparent` of the request becomes the
    /// parent of its span (same trace); otherwise every request starts a new trace.
    pub trust_incoming_span: bool,
    /// `opentelemetry-operation-name`: the span's name; `None` for `HTTP <method>`.
    pub operation_name: Option<Arc<str>>,
}

/// Where spans are exported (OTLP over gRPC) and which are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExport {
    /// `otlp-collector-host`:`otlp-collector-port` (default port 4317).
    pub collector: Authority,
    /// `otel-service-name`: the `service.name` of the spans' resource (default `nginx`).
    pub service_name: Arc<str>,
    /// `otel-sampler` and `otel-sampler-ratio`: whether a new trace is recorded.
    pub sampler: Sampler,
    /// `otel-sampler-parent-based`: a trusted parent's sampling decision is followed instead.
    pub parent_based: bool,
    /// `otel-max-queuesize`: finished spans waiting for export; more are dropped.
    pub max_queue_size: usize,
    /// `otel-schedule-delay-millis`: the longest wait before a batch is exported.
    pub schedule_delay: Duration,
    /// `otel-max-export-batch-size`: the most spans in one export.
    pub max_export_batch_size: usize,
}

/// Whether a new trace is recorded (OpenTelemetry's samplers of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// `TraceIdRatioBased`: a trace is kept when the low 63 bits of its id's last 8 bytes are
    /// below `bound` (ratio × 2⁶³), so every service sampling by the same ratio keeps the same
    /// traces.
    TraceIdRatio {
        bound: u64,
    },
}

// === impl Sampler ===

impl Sampler {
    /// `TraceIdRatioBased` keeping `ratio` of the traces (clamped to 0…1).
    pub fn trace_id_ratio(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.clamp(0.0, 1.0) };
        // `as` saturates: a ratio of 1 gives 2⁶³, above every 63-bit value.
        Self::TraceIdRatio { bound: (ratio * (1u64 << 63) as f64) as u64 }
    }

    /// Whether a new trace with this id is recorded.
    pub fn samples(&self, trace_id: u128) -> bool {
        match *self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            Self::TraceIdRatio { bound } => (trace_id as u64) >> 1 < bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampler_keeps_by_the_low_bits_of_the_trace_id() {
        let half = Sampler::trace_id_ratio(0.5);
        assert!(half.samples(0xffff_0000_0000_0000_3fff_ffff_ffff_ffff));
        assert!(!half.samples(0x0000_0000_0000_0000_8000_0000_0000_0000));
        assert!(Sampler::trace_id_ratio(1.0).samples(u128::MAX));
        assert!(!Sampler::trace_id_ratio(0.0).samples(0));
        assert!(!Sampler::trace_id_ratio(f64::NAN).samples(0));
    }
}
