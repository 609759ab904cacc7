//! Operation timing: every REST route and MCP tool call is recorded here, aggregated in memory
//! into latency histograms per (surface, operation), and flushed to the `operation_metrics`
//! table. Summaries merge the stored windows with what is not flushed yet, so a call is
//! visible at once.
//!
//! Latencies are counted in log-spaced buckets (each 25 % wider than the last, 0.1 ms to
//! ~2 min), so windows merge exactly and a percentile is off by at most one bucket's width.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const FIRST_BOUND_MS: f64 = 0.1;
const GROWTH: f64 = 1.25;
const BUCKETS: usize = 64;

/// Upper bound in milliseconds of bucket `index`.
fn bucket_bound_ms(index: usize) -> f64 {
    FIRST_BOUND_MS * GROWTH.powi(index as i32)
}

fn bucket_of(ms: f64) -> usize {
    if ms <= FIRST_BOUND_MS {
        return 0;
    }
    let index = ((ms / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil() as usize;
    index.min(BUCKETS - 1)
}

/// One (surface, operation) over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Aggregate {
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub max_ms: f64,
    /// Bucket index → count (sparse).
    pub buckets: BTreeMap<usize, u64>,
}

impl Aggregate {
    fn record(&mut self, ms: f64, failed: bool) {
        self.count += 1;
        self.errors += u64::from(failed);
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
        *self.buckets.entry(bucket_of(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.errors += other.errors;
        self.sum_ms += other.sum_ms;
        self.max_ms = self.max_ms.max(other.max_ms);
        for (bucket, count) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += count;
        }
    }

    /// The latency under which `quantile` of the calls finished (a bucket's upper bound,
    /// capped by the slowest call seen).
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        let rank = (quantile * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return bucket_bound_ms(*bucket).min(self.max_ms);
            }
        }
        self.max_ms
    }
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct OperationKey {
    /// `rest` or `mcp`.
    pub surface: String,
    /// The operation ID (REST routes of the operation table and MCP tools), or the route
    /// template for routes outside the table (`GET /healthz`).
    pub operation: String,
}

/// Calls recorded since the last flush.
#[derive(Default)]
pub struct OperationTimings {
    current: Mutex<HashMap<OperationKey, Aggregate>>,
}

impl OperationTimings {
    pub fn record(&self, surface: &str, operation: &str, elapsed: Duration, failed: bool) {
        let key = OperationKey {
            surface: surface.to_string(),
            operation: operation.to_string(),
        };
        let ms = elapsed.as_secs_f64() * 1000.0;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.entry(key).or_default().record(ms, failed);
    }

    /// Takes everything recorded so far, for a flush.
    pub fn take(&self) -> HashMap<OperationKey, Aggregate> {
        std::mem::take(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts back what a failed flush took, so nothing is lost.
    pub fn restore(&self, taken: HashMap<OperationKey, Aggregate>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for (key, aggregate) in taken {
            current.entry(key).or_default().merge(&aggregate);
        }
    }

    pub fn snapshot(&self) -> HashMap<OperationKey, Aggregate> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `GET /api/v1/performance/summary`: one line per (surface, operation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperationSummary {
    pub surface: String,
    pub operation: String,
    pub count: u64,
    pub errors: u64,
    /// errors / count.
    pub error_rate: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PerformanceSummary {
    /// The window covered, e.g. `1h`.
    pub window: String,
    pub operations: Vec<OperationSummary>,
}

/// Merges windows into one summary line per operation, busiest first.
pub fn summarize(
    window: String,
    windows: impl IntoIterator<Item = (OperationKey, Aggregate)>,
) -> PerformanceSummary {
    let mut merged: BTreeMap<OperationKey, Aggregate> = BTreeMap::new();
    for (key, aggregate) in windows {
        merged.entry(key).or_default().merge(&aggregate);
    }
    let mut operations: Vec<OperationSummary> = merged
        .into_iter()
        .filter(|(_, a)| a.count > 0)
        .map(|(key, a)| OperationSummary {
            surface: key.surface,
            operation: key.operation,
            count: a.count,
            errors: a.errors,
            error_rate: a.errors as f64 / a.count as f64,
            mean_ms: a.sum_ms / a.count as f64,
            p50_ms: a.percentile_ms(0.50),
            p95_ms: a.percentile_ms(0.95),
            p99_ms: a.percentile_ms(0.99),
            max_ms: a.max_ms,
        })
        .collect();
    operations.sort_by_key(|line| std::cmp::Reverse(line.count));
    PerformanceSummary { window, operations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_merged_buckets() {
        let timings = OperationTimings::default();
        for ms in 1..=100 {
            timings.record(
                "rest",
                "list_devices",
                Duration::from_millis(ms),
                ms % 10 == 0,
            );
        }
        let first = timings.take();
        timings.record("rest", "list_devices", Duration::from_secs(2), false);
        let summary = summarize("1h".into(), first.into_iter().chain(timings.take()));
        let line = &summary.operations[0];
        assert_eq!((line.count, line.errors), (101, 10));
        // Within one bucket (25 %) of the true values.
        assert!((40.0..=63.0).contains(&line.p50_ms), "{line:?}");
        assert!((94.0..=125.0).contains(&line.p95_ms), "{line:?}");
        assert_eq!(line.max_ms, 2000.0);
        assert!(timings.take().is_empty());
    }

    #[test]
    fn buckets_cover_the_range() {
        assert_eq!(bucket_of(0.01), 0);
        assert!(bucket_bound_ms(bucket_of(7.3)) >= 7.3);
        assert!(bucket_bound_ms(bucket_of(7.3) - 1) < 7.3);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
    }
}
