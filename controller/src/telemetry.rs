//! The controller's own metrics, exposed in Prometheus text format at `/metrics`.
//!
//! Label values come only from closed sets — known HTTP methods ([`method_label`]), route
//! templates of the router, operation IDs of the table, fixed outcome names — never from what a
//! caller sent, so no request can add series or shape the exposition. [`closed`] enforces it
//! once more where values are recorded.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The label of a value outside the closed set.
pub const OTHER: &str = "other";

/// An HTTP method as a label: the standard methods, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or(OTHER)
}

/// A label value as recorded: values from the closed sets pass; anything with characters no
/// route template, operation ID or method has (quotes, newlines, `#`, spaces in odd places) or
/// longer than any of them is `other`.
pub fn closed(value: &str) -> &str {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./{}* ".contains(c);
    if !value.is_empty() && value.len() <= 96 && value.chars().all(safe) {
        value
    } else {
        OTHER
    }
}

fn label(name: &str, value: &str) -> (String, String) {
    (name.to_string(), closed(value).to_string())
}

pub struct Telemetry {
    registry: Registry,
    pub ingest_batches: Family<Labels, Counter>,
    pub ingest_samples: Counter,
    pub ingest_rejected_samples: Counter,
    pub agents_connected: Gauge,
    pub http_requests: Family<Labels, Counter>,
    /// Per (surface, operation): the same timings as `/api/v1/performance/summary`.
    pub operation_seconds: Family<Labels, Histogram>,
    pub operation_errors: Family<Labels, Counter>,
    pub rate_limited: Counter,
}

/// Cache lookups, shared with [`crate::cache::Cache`] (the counters are shared handles).
#[derive(Clone)]
pub struct CacheMetrics {
    pub lookups: Family<Labels, Counter>,
    pub lookup_seconds: Histogram,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self {
            lookups: Family::default(),
            lookup_seconds: Histogram::new(exponential_buckets(0.00001, 4.0, 10)),
        }
    }
}

impl CacheMetrics {
    pub fn count(&self, result: &str) {
        self.lookups
            .get_or_create(&vec![label("result", result)])
            .inc();
    }

    pub fn get(&self, result: &str) -> u64 {
        self.lookups
            .get_or_create(&vec![label("result", result)])
            .get()
    }
}

fn operation_histogram() -> Histogram {
    // 0.5 ms to ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("infrastructor");
        let ingest_batches = Family::<Labels, Counter>::default();
        let ingest_samples = Counter::default();
        let ingest_rejected_samples = Counter::default();
        let agents_connected = Gauge::default();
        let http_requests = Family::<Labels, Counter>::default();
        let operation_seconds =
            Family::<Labels, Histogram>::new_with_constructor(operation_histogram as fn() -> _);
        let operation_errors = Family::<Labels, Counter>::default();
        let rate_limited = Counter::default();
        registry.register(
            "ingest_batches",
            "Metric batches received from agents, by outcome (stored, duplicate)",
            ingest_batches.clone(),
        );
        registry.register(
            "ingest_samples",
            "Samples committed to storage",
            ingest_samples.clone(),
        );
        registry.register(
            "ingest_rejected_samples",
            "Samples dropped because they failed validation",
            ingest_rejected_samples.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents with an open stream",
            agents_connected.clone(),
        );
        registry.register(
            "http_requests",
            "REST requests by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "operation_seconds",
            "Time per operation (REST operation ID or MCP tool name) and surface",
            operation_seconds.clone(),
        );
        registry.register(
            "operation_errors",
            "Operations that failed with a server error, by surface and operation",
            operation_errors.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused by the per-principal rate limit",
            rate_limited.clone(),
        );
        Self {
            registry,
            operation_seconds,
            operation_errors,
            rate_limited,
            ingest_batches,
            ingest_samples,
            ingest_rejected_samples,
            agents_connected,
            http_requests,
        }
    }

    pub fn count_batch(&self, outcome: &str) {
        self.ingest_batches
            .get_or_create(&vec![label("outcome", outcome)])
            .inc();
    }

    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&vec![
                label("method", method_label(method)),
                label("route", route),
                label("status", &status.to_string()),
            ])
            .inc();
    }

    /// Exposes the cache's lookup counters and latency.
    pub fn register_cache(&mut self, metrics: &CacheMetrics) {
        self.registry.register(
            "cache_lookups",
            "Cache lookups by result (hit, miss, error)",
            metrics.lookups.clone(),
        );
        self.registry.register(
            "cache_lookup_seconds",
            "Cache lookup latency",
            metrics.lookup_seconds.clone(),
        );
    }

    pub fn count_rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn observe_operation(&self, surface: &str, operation: &str, seconds: f64, failed: bool) {
        let labels = vec![label("surface", surface), label("operation", operation)];
        self.operation_seconds
            .get_or_create(&labels)
            .observe(seconds);
        if failed {
            self.operation_errors.get_or_create(&labels).inc();
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_values_become_labels() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("FOO\n# EOF"), OTHER);
        assert_eq!(
            closed("/api/v1/devices/{device}"),
            "/api/v1/devices/{device}"
        );
        assert_eq!(closed("GET /healthz"), "GET /healthz");
        assert_eq!(closed("x\"} 1\n# EOF"), OTHER);
        assert_eq!(closed(&"a".repeat(200)), OTHER);
    }
}
