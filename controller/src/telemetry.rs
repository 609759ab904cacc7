//! The controller's own metrics, exposed in Prometheus text format at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Telemetry {
    registry: Registry,
    pub ingest_batches: Family<Labels, Counter>,
    pub ingest_samples: Counter,
    pub ingest_rejected_samples: Counter,
    pub agents_connected: Gauge,
    pub http_requests: Family<Labels, Counter>,
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
        Self {
            registry,
            ingest_batches,
            ingest_samples,
            ingest_rejected_samples,
            agents_connected,
            http_requests,
        }
    }

    pub fn count_batch(&self, outcome: &str) {
        self.ingest_batches
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&vec![
                ("method".to_string(), method.to_string()),
                ("route".to_string(), route.to_string()),
                ("status".to_string(), status.to_string()),
            ])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
