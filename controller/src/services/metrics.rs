//! Metrics: validating and ingesting agent batches exactly once, and answering queries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{now_ms, rfc3339, validate, Services};
use crate::auth::Scope;
use crate::cache::{key, ttl};
use crate::ctx::Ctx;
use crate::domain::{ReportedBatch, ReportedSample};
use crate::error::{Error, Result};
use crate::store::{BatchToIngest, Bucket, IngestOutcome, IngestSample, Resolution};

const MAX_LABELS: usize = 16;
const MAX_BUCKETS: i64 = 11_000;
/// Samples stamped further in the future than this are rejected (clock gone wrong).
const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;
/// 2000-01-01: anything older is a broken clock, not history.
const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;

/// What a series selector must look like: a series name, optionally with up to 16 label
/// matchers. The schemas state it and [`parse_selector`] enforces it, so both agree.
pub const SERIES_SELECTOR: &str = concat!(
    r"^[a-z][a-z0-9._]{0,127}",
    r#"(\{[a-z_][a-z0-9_]{0,63}="?[A-Za-z0-9 ._/:@+-]{0,256}"?"#,
    r#"(,[a-z_][a-z0-9_]{0,63}="?[A-Za-z0-9 ._/:@+-]{0,256}"?){0,15}\})?$"#,
);

/// `GET /devices/{id}/metrics` parameters, as strings from the caller.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// `name` or `name{key=value,...}`, e.g. `cpu.usage_percent` or
    /// `disk.used_percent{mount=/}`.
    // Optional to serde, so a missing series gets the service's own message; required in
    // the schemas.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, regex(pattern = SERIES_SELECTOR))]
    pub series: Option<String>,
    /// RFC 3339, Unix milliseconds, `now`, or relative like `-1h`. Default: `to` − 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Same forms; default `now`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Bucket width like `30s`, `5m`; default: the range / 240, at least 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct MetricQueryResult {
    pub device_id: String,
    pub series: String,
    pub from: String,
    pub to: String,
    pub step_seconds: f64,
    /// Which storage answered: raw samples or a rollup.
    pub resolution: String,
    pub results: Vec<SeriesPoints>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SeriesPoints {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Point {
    pub ts: String,
    pub ts_ms: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct LatestValue {
    pub series: String,
    pub labels: BTreeMap<String, String>,
    pub ts: String,
    pub value: f64,
}

/// A parsed, bounded query, ready for SQL.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedQuery {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub resolution: Resolution,
}

/// Canonical label encoding: JSON with sorted keys, so equal label sets compare equal.
pub fn canonical_labels(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_string())
}

/// [`canonical_labels`] for the protocol's unordered map, without copying the strings.
fn canonical_label_json(labels: &std::collections::HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".to_string();
    }
    let sorted: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".to_string())
}

fn validate_sample(sample: &ReportedSample, now: i64) -> Result<IngestSample> {
    validate::series_name(&sample.series)?;
    if sample.labels.len() > MAX_LABELS {
        return Err(Error::invalid(format!("more than {MAX_LABELS} labels")));
    }
    for (key, value) in &sample.labels {
        validate::label_key(key)?;
        validate::label_value(value)?;
    }
    if !sample.value.is_finite() {
        return Err(Error::invalid("value is not a finite number"));
    }
    if sample.timestamp_ms < MIN_TIMESTAMP_MS || sample.timestamp_ms > now + MAX_FUTURE_MS {
        return Err(Error::invalid(format!(
            "timestamp {} out of range",
            sample.timestamp_ms
        )));
    }
    Ok(IngestSample {
        series: sample.series.clone(),
        labels: canonical_label_json(&sample.labels),
        ts_ms: sample.timestamp_ms,
        value: sample.value,
    })
}

impl Services {
    /// Validates one batch from an agent and queues it for storage; the returned future
    /// resolves once its group has committed. Samples that fail validation are dropped and
    /// counted (the agent's data is untrusted) and the rest are stored, so one bad sample
    /// cannot wedge the stream. `after_seq` is the batch enqueued before this one on the same
    /// stream (see [`BatchToIngest::after_seq`]).
    pub async fn enqueue_batch(
        &self,
        ctx: &Ctx,
        device_id: &str,
        batch: &ReportedBatch,
        after_seq: u64,
    ) -> Result<impl std::future::Future<Output = Result<IngestOutcome>> + Send + 'static> {
        let now = now_ms();
        let mut valid = Vec::with_capacity(batch.samples.len());
        let mut rejected = 0u64;
        for sample in &batch.samples {
            match validate_sample(sample, now) {
                Ok(sample) => valid.push(sample),
                Err(error) => {
                    rejected += 1;
                    tracing::debug!(request_id = %ctx.request_id, %device_id, seq = batch.seq, %error,
                        "sample rejected");
                }
            }
        }
        if rejected > 0 {
            tracing::warn!(request_id = %ctx.request_id, %device_id, seq = batch.seq, rejected,
                "dropped invalid samples from batch");
            self.telemetry.ingest_rejected_samples.inc_by(rejected);
        }
        let valid_count = valid.len() as u64;
        let pending = self
            .ingest
            .enqueue(BatchToIngest {
                device_id: device_id.to_string(),
                seq: batch.seq,
                after_seq,
                samples: valid,
                dropped: (batch.spool_dropped_batches, batch.spool_dropped_samples),
            })
            .await?;
        let telemetry = self.telemetry.clone();
        let cache = self.cache.clone();
        let latest = key::latest_metrics(device_id);
        Ok(async move {
            let outcome = pending.outcome().await?;
            match outcome {
                IngestOutcome::Stored => {
                    cache.invalidate(&[latest]).await;
                    telemetry.count_batch("stored");
                    telemetry.ingest_samples.inc_by(valid_count);
                }
                IngestOutcome::Duplicate => telemetry.count_batch("duplicate"),
                IngestOutcome::OutOfOrder => telemetry.count_batch("out_of_order"),
            }
            Ok(outcome)
        })
    }

    pub async fn query_metrics(
        &self,
        ctx: &Ctx,
        device: &str,
        query: MetricQuery,
    ) -> Result<MetricQueryResult> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let parsed = parse_query(&query, now_ms(), self.config.retention.raw)?;
        let mut results = Vec::new();
        for series in self.store.find_series(&row.id, &parsed.name).await? {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&series.labels).unwrap_or_default();
            if parsed.labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                continue;
            }
            let buckets = self
                .store
                .query_buckets(
                    series.id,
                    parsed.resolution,
                    parsed.from_ms,
                    parsed.to_ms,
                    parsed.step_ms,
                )
                .await?;
            results.push(SeriesPoints {
                labels,
                points: buckets.into_iter().map(point).collect(),
            });
        }
        Ok(MetricQueryResult {
            device_id: row.id,
            series: query.series.unwrap_or_default(),
            from: rfc3339(parsed.from_ms),
            to: rfc3339(parsed.to_ms),
            step_seconds: parsed.step_ms as f64 / 1000.0,
            resolution: match parsed.resolution {
                Resolution::Raw => "raw",
                Resolution::FiveMinutes => "5m",
                Resolution::OneHour => "1h",
            }
            .to_string(),
            results,
        })
    }

    pub async fn latest_metrics(&self, ctx: &Ctx, device: &str) -> Result<Vec<LatestValue>> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let load = async {
            Ok::<_, Error>(
                self.store
                    .latest_samples(&row.id, &[])
                    .await?
                    .into_iter()
                    .map(|s| LatestValue {
                        series: s.name,
                        labels: serde_json::from_str(&s.labels).unwrap_or_default(),
                        ts: rfc3339(s.ts_ms),
                        value: s.value,
                    })
                    .collect(),
            )
        };
        let key = key::latest_metrics(&row.id);
        self.cache
            .get_or_load(&key, ttl::LATEST_METRICS, load)
            .await
    }
}

fn point(bucket: Bucket) -> Point {
    Point {
        ts: rfc3339(bucket.bucket),
        ts_ms: bucket.bucket,
        avg: bucket.avg,
        min: bucket.min,
        max: bucket.max,
        count: bucket.count,
    }
}

/// Parses and bounds a query before anything reaches SQL.
pub fn parse_query(query: &MetricQuery, now: i64, raw_retention: Duration) -> Result<ParsedQuery> {
    let selector = query
        .series
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::invalid("query parameter 'series' is required, e.g. series=cpu.usage_percent")
        })?;
    let (name, labels) = parse_selector(selector)?;
    let to_ms = match &query.to {
        Some(text) => parse_time("to", text, now)?,
        None => now,
    };
    let from_ms = match &query.from {
        Some(text) => parse_time("from", text, now)?,
        None => to_ms - 3_600_000,
    };
    if from_ms >= to_ms {
        return Err(Error::invalid("'from' must be before 'to'"));
    }
    let range = to_ms - from_ms;
    if range > 3 * 366 * 86_400_000 {
        return Err(Error::invalid("time range is longer than 3 years"));
    }
    let mut step_ms = match &query.step {
        Some(text) => {
            let step = humantime::parse_duration(text).map_err(|e| {
                Error::invalid(format!(
                    "invalid step {text:?}: {e} (examples: 30s, 5m, 1h)"
                ))
            })?;
            i64::try_from(step.as_millis()).map_err(|_| Error::invalid("step is too large"))?
        }
        None => (range / 240).max(1000),
    };
    if step_ms < 1000 {
        return Err(Error::invalid("step must be at least 1s"));
    }
    let raw_horizon = now - raw_retention.as_millis() as i64;
    let resolution =
        if step_ms >= Resolution::OneHour.bucket_ms() || from_ms < now - 90 * 86_400_000 {
            Resolution::OneHour
        } else if step_ms >= Resolution::FiveMinutes.bucket_ms() || from_ms < raw_horizon {
            Resolution::FiveMinutes
        } else {
            Resolution::Raw
        };
    // A rollup cannot be split finer than its own buckets.
    let bucket = resolution.bucket_ms();
    step_ms = step_ms.max(bucket).div_euclid(bucket) * bucket;
    if range / step_ms > MAX_BUCKETS {
        return Err(Error::invalid(format!(
            "{} buckets requested (max {MAX_BUCKETS}); raise 'step' or narrow the range",
            range / step_ms
        )));
    }
    Ok(ParsedQuery {
        name,
        labels,
        from_ms,
        to_ms,
        step_ms,
        resolution,
    })
}

/// `disk.used_percent{mount=/,device=sda}` → name and labels.
pub(crate) fn parse_selector(selector: &str) -> Result<(String, BTreeMap<String, String>)> {
    let (name, rest) = match selector.split_once('{') {
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').ok_or_else(|| {
                Error::invalid(format!("series selector {selector:?} is missing '}}'"))
            })?;
            (name, Some(inner))
        }
        None => (selector, None),
    };
    validate::series_name(name)?;
    let mut labels = BTreeMap::new();
    for pair in rest
        .into_iter()
        .flat_map(|inner| inner.split(','))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("label matcher {pair:?} must be key=value")))?;
        let value = value.trim_matches('"');
        validate::label_key(key)?;
        validate::label_value(value)?;
        labels.insert(key.to_string(), value.to_string());
    }
    // What is left is the form the schemas state, so the server refuses exactly what they do.
    static SELECTOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(SERIES_SELECTOR).expect("a valid pattern literal")
    });
    if !SELECTOR.is_match(selector) {
        return Err(Error::invalid(format!(
            "invalid series selector {selector:?}: expected name or name{{key=value,...}} \
             (values of letters, digits, space and ._/:@+-)"
        )));
    }
    Ok((name.to_string(), labels))
}

fn parse_time(field: &str, text: &str, now: i64) -> Result<i64> {
    let bad = || {
        Error::invalid(format!(
            "invalid '{field}' {text:?}: use RFC 3339 \
                (2026-01-02T03:04:05Z), Unix milliseconds, 'now' or a \
                relative time like -1h"
        ))
    };
    if text == "now" {
        return Ok(now);
    }
    if let Some(relative) = text.strip_prefix('-') {
        let ago = humantime::parse_duration(relative).map_err(|_| bad())?;
        return Ok(now - i64::try_from(ago.as_millis()).map_err(|_| bad())?);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return if ms >= 0 { Ok(ms) } else { Err(bad()) };
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| bad())?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis();
    i64::try_from(ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn query(
        series: &str,
        from: Option<&str>,
        to: Option<&str>,
        step: Option<&str>,
    ) -> MetricQuery {
        MetricQuery {
            series: Some(series.into()),
            from: from.map(Into::into),
            to: to.map(Into::into),
            step: step.map(Into::into),
        }
    }

    #[test]
    fn picks_raw_or_rollups_by_step_and_range() {
        let raw = parse_query(
            &query("cpu.usage_percent", Some("-1h"), None, Some("30s")),
            NOW,
            WEEK,
        )
        .unwrap();
        assert_eq!(raw.resolution, Resolution::Raw);
        assert_eq!((raw.to_ms - raw.from_ms, raw.step_ms), (3_600_000, 30_000));

        let five = parse_query(
            &query("cpu.usage_percent", Some("-2d"), None, Some("10m")),
            NOW,
            WEEK,
        )
        .unwrap();
        assert_eq!(five.resolution, Resolution::FiveMinutes);
        assert_eq!(five.step_ms, 600_000);

        let old = parse_query(
            &query("cpu.usage_percent", Some("-30d"), Some("-29d"), Some("1m")),
            NOW,
            WEEK,
        )
        .unwrap();
        assert_eq!(
            old.resolution,
            Resolution::FiveMinutes,
            "raw data is gone past retention"
        );
        assert_eq!(old.step_ms, 300_000);

        let year = parse_query(
            &query("cpu.usage_percent", Some("-365d"), None, Some("1d")),
            NOW,
            WEEK,
        )
        .unwrap();
        assert_eq!(year.resolution, Resolution::OneHour);
    }

    #[test]
    fn selectors_carry_label_matchers() {
        let parsed = parse_query(
            &query(
                "disk.used_percent{mount=/,device=\"sda\"}",
                None,
                None,
                None,
            ),
            NOW,
            WEEK,
        )
        .unwrap();
        assert_eq!(parsed.name, "disk.used_percent");
        assert_eq!(parsed.labels.get("mount").map(String::as_str), Some("/"));
        assert_eq!(parsed.labels.get("device").map(String::as_str), Some("sda"));
    }

    #[test]
    fn bad_queries_get_clear_messages() {
        let cases = [
            (MetricQuery::default(), "'series' is required"),
            (query("CPU;drop", None, None, None), "invalid series name"),
            (
                query("cpu.usage_percent", Some("yesterday"), None, None),
                "invalid 'from'",
            ),
            (
                query("cpu.usage_percent", Some("-1h"), Some("-2h"), None),
                "before 'to'",
            ),
            (
                query("cpu.usage_percent", None, None, Some("fast")),
                "invalid step",
            ),
            (
                query("cpu.usage_percent", None, None, Some("10ms")),
                "at least 1s",
            ),
            (
                query("cpu.usage_percent", Some("-7d"), None, Some("1s")),
                "buckets requested",
            ),
            (query("m{mount}", None, None, None), "key=value"),
            (query("m{mount=/", None, None, None), "missing"),
        ];
        for (q, expected) in cases {
            let error = parse_query(&q, NOW, WEEK).unwrap_err();
            assert!(error.to_string().contains(expected), "{q:?}: {error}");
            assert_eq!(error.kind(), crate::error::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn untrusted_samples_are_validated() {
        let good = ReportedSample {
            series: "cpu.usage_percent".into(),
            labels: [("core".to_string(), "0".to_string())].into(),
            timestamp_ms: NOW,
            value: 1.0,
        };
        assert_eq!(
            validate_sample(&good, NOW).unwrap().labels,
            r#"{"core":"0"}"#
        );
        let mut bad = good.clone();
        bad.series = "$(reboot)".into();
        assert!(validate_sample(&bad, NOW).is_err());
        let mut nan = good.clone();
        nan.value = f64::NAN;
        assert!(validate_sample(&nan, NOW).is_err());
        let mut future = good.clone();
        future.timestamp_ms = NOW + 2 * MAX_FUTURE_MS;
        assert!(validate_sample(&future, NOW).is_err());
        let mut label = good;
        label.labels.insert("Bad Key".into(), "x".into());
        assert!(validate_sample(&label, NOW).is_err());
    }
}
