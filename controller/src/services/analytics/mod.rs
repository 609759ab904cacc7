//! Analyses over the metric history: performance trends, capacity forecasts and the waste
//! report ([`waste`]). The statistics are plain functions over buckets ([`stats`], [`trend`],
//! [`forecast`]); the service methods here read the store and put them together.

pub mod chart;
pub mod forecast;
pub mod history;
pub mod stats;
pub mod synthetic;
pub mod trend;
pub mod waste;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::forecast::{Forecast, Outlook, Question};
use self::history::{DayBucket, History, HourBucket};
use self::trend::{Anomaly, Direction, Point, Step};
use super::metrics::{parse_query, parse_selector, MetricQuery, ParsedQuery};
use super::{now_ms, parse_duration, rfc3339, Services};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::store::{Bucket, DeviceRow, NamedSeries, Resolution};

const MAX_WINDOW: Duration = Duration::from_secs(730 * 86_400);
const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Buckets a window is cut into when no bucket width is given.
const DEFAULT_BUCKETS: i64 = 48;
/// Series one trend call may analyse.
const MAX_TREND_SERIES: usize = 200;
const MAX_HORIZON: Duration = Duration::from_secs(730 * 86_400);
const DEFAULT_HORIZON: Duration = Duration::from_secs(90 * 86_400);
/// History a forecast reads.
const HISTORY: Duration = Duration::from_secs(90 * 86_400);

/// What to analyse, by name rather than by series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// `cpu.usage_percent`
    Cpu,
    /// `memory.used_percent`
    Memory,
    /// `swap.used_percent`
    Swap,
    /// `disk.used_percent`, every mount
    Disk,
    /// `zfs.pool.capacity_percent`, every pool
    Zfs,
    /// `net.rx_bytes_per_second` and `net.tx_bytes_per_second`, every interface
    Network,
    /// `load.1m`
    Load,
}

impl Resource {
    pub fn series(self) -> &'static [&'static str] {
        match self {
            Self::Cpu => &["cpu.usage_percent"],
            Self::Memory => &["memory.used_percent"],
            Self::Swap => &["swap.used_percent"],
            Self::Disk => &["disk.used_percent"],
            Self::Zfs => &["zfs.pool.capacity_percent"],
            Self::Network => &["net.rx_bytes_per_second", "net.tx_bytes_per_second"],
            Self::Load => &["load.1m"],
        }
    }

    /// The resources that fill up, in percent: what a capacity forecast covers by default.
    pub const FILLING: [Resource; 4] = [Self::Disk, Self::Memory, Self::Swap, Self::Zfs];
}

/// `GET /analytics/trends` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    /// Device IDs or names, comma-separated; every device when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// A series selector, e.g. `disk.used_percent{mount=/}`; or give `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::metrics::SERIES_SELECTOR))]
    pub series: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// How far back, e.g. `24h`, `7d`, `90d` (default 7d, at most 730d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Bucket width, e.g. `1h`; default: the smallest round width (1m, 5m, 15m, 30m, 1h,
    /// 3h, 6h, 12h, 1d, 7d) that cuts the window into at most 48 buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `full` (default) lists every bucket; `summary` only the statistics, anomalies and steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<super::diagnostics::Detail>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct TrendReport {
    pub from: String,
    pub to: String,
    pub bucket_seconds: i64,
    /// Which storage answered: `raw`, `5m` or `1h`.
    pub resolution: String,
    pub series: Vec<SeriesTrend>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SeriesTrend {
    pub device_id: String,
    pub device: String,
    pub series: String,
    pub labels: BTreeMap<String, String>,
    /// Mean of the bucket means in the window, and in the window before it.
    pub mean: Option<f64>,
    pub previous_mean: Option<f64>,
    pub change: Option<f64>,
    pub change_percent: Option<f64>,
    /// Least-squares slope of the bucket means, in the series' unit per day.
    pub slope_per_day: Option<f64>,
    pub r2: Option<f64>,
    /// Two-sided p-value of "no slope", allowing for autocorrelated buckets.
    pub p_value: Option<f64>,
    /// Rising or falling only when the slope is significant (p < 0.05).
    pub direction: Direction,
    pub steps: Vec<StepView>,
    pub anomalies: Vec<AnomalyView>,
    /// Omitted with `detail=summary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<TrendBucket>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct TrendBucket {
    pub ts: String,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// From the raw samples, in windows within their retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct StepView {
    pub at: String,
    pub before: f64,
    pub after: f64,
    pub change: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AnomalyView {
    pub at: String,
    pub value: f64,
    pub expected: f64,
    /// Robust deviations from the expected value (beyond ±3.5 counts).
    pub score: f64,
}

/// `GET /analytics/capacity` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    /// A device ID or name; the whole fleet, ranked by what fills first, when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// One resource; default: disk, memory, swap and ZFS pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Any series instead, e.g. `disk.used_bytes{mount=/data}` (the threshold in its unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::metrics::SERIES_SELECTOR))]
    pub series: Option<String>,
    /// In the series' unit; default 90 (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How far ahead, e.g. `30d` (default 90d, at most 730d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct CapacityReport {
    pub threshold: f64,
    pub horizon_days: f64,
    pub generated_at: String,
    /// What fills first comes first: already above, then by crossing date, then the rest.
    pub forecasts: Vec<ResourceForecast>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ResourceForecast {
    pub device_id: String,
    pub device: String,
    pub series: String,
    pub labels: BTreeMap<String, String>,
    pub outlook: Outlook,
    pub current: Option<f64>,
    pub slope_per_day: Option<f64>,
    /// The likely crossing, and the interval around it (`high` absent: beyond the horizon).
    pub date: Option<String>,
    pub low: Option<String>,
    pub high: Option<String>,
    pub confidence: f64,
    pub confidence_label: Confidence,
    pub method: Option<forecast::Method>,
    pub needs_hours: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl Confidence {
    /// `self`, or `cap` when that is lower.
    pub fn at_most(self, cap: Self) -> Self {
        let rank = |c: Self| match c {
            Self::High => 2,
            Self::Medium => 1,
            Self::Low => 0,
        };
        if rank(self) > rank(cap) {
            cap
        } else {
            self
        }
    }

    fn of(value: f64) -> Self {
        match value {
            v if v >= 0.7 => Self::High,
            v if v >= 0.4 => Self::Medium,
            _ => Self::Low,
        }
    }
}

fn labels_of(series: &NamedSeries) -> BTreeMap<String, String> {
    serde_json::from_str(&series.labels).unwrap_or_default()
}

/// A series' names and label matchers, from `series` or `resource` (exactly one).
fn selection(
    series: Option<&str>,
    resource: Option<Resource>,
    default: &[Resource],
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    match (series, resource) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "give either 'series' or 'resource', not both",
        )),
        (Some(selector), None) => {
            let (name, labels) = parse_selector(selector)?;
            Ok((vec![name], labels))
        }
        (None, Some(resource)) => Ok((
            resource.series().iter().map(|s| s.to_string()).collect(),
            BTreeMap::new(),
        )),
        (None, None) if !default.is_empty() => Ok((
            default
                .iter()
                .flat_map(|r| r.series().iter().map(|s| s.to_string()))
                .collect(),
            BTreeMap::new(),
        )),
        (None, None) => Err(Error::invalid(
            "give 'series' (e.g. cpu.usage_percent) or 'resource' (cpu, memory, swap, disk, \
             zfs, network, load)",
        )),
    }
}

fn matches(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Services {
    /// The devices a call names (comma-separated IDs or names), or every live device.
    async fn devices_named(&self, names: Option<&str>) -> Result<Vec<DeviceRow>> {
        match names.map(str::trim).filter(|n| !n.is_empty()) {
            None => Ok(self.store.list_devices().await?),
            Some(list) => {
                let mut rows = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    rows.push(self.require_device(name).await?);
                }
                Ok(rows)
            }
        }
    }

    /// Each selected series over the window: buckets, the change against the window before,
    /// the least-squares slope and its significance, step changes and anomalies.
    pub async fn analyze_performance_trends(
        &self,
        ctx: &Ctx,
        query: TrendQuery,
    ) -> Result<TrendReport> {
        ctx.principal.require(Scope::Read)?;
        let window = parse_duration(
            "window",
            query.window.as_deref(),
            DEFAULT_WINDOW,
            MAX_WINDOW,
        )?;
        let (names, wanted) = selection(query.series.as_deref(), query.resource, &[])?;
        let now = now_ms();
        let window_ms = window.as_millis() as i64;
        let step = match &query.bucket {
            Some(bucket) => bucket.clone(),
            None => format!("{}s", default_bucket_ms(window_ms) / 1000),
        };
        let parsed = parse_query(
            &MetricQuery {
                series: Some(names[0].clone()),
                from: Some((now - window_ms).to_string()),
                to: Some(now.to_string()),
                step: Some(step),
            },
            now,
            self.config.retention.raw,
        )?;
        let devices = self.devices_named(query.devices.as_deref()).await?;
        let by_id: HashMap<&str, &DeviceRow> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
        let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let series: Vec<NamedSeries> = self
            .store
            .series_named(Some(&ids), &name_refs)
            .await?
            .into_iter()
            .filter(|s| matches(&labels_of(s), &wanted))
            .collect();
        if series.len() > MAX_TREND_SERIES {
            return Err(Error::invalid(format!(
                "{} series match; at most {MAX_TREND_SERIES} per call: name fewer devices or \
                 select labels",
                series.len()
            )));
        }
        let full = query.detail.unwrap_or_default() == super::diagnostics::Detail::Full;
        let mut series = series;
        let device_name = |s: &NamedSeries| by_id.get(s.device_id.as_str()).map(|d| d.name.clone());
        series.sort_by_cached_key(|s| (device_name(s), s.name.clone(), s.labels.clone()));
        let mut trends = Vec::with_capacity(series.len());
        for s in &series {
            let device = by_id
                .get(s.device_id.as_str())
                .map(|d| d.name.clone())
                .unwrap_or_default();
            trends.push(self.series_trend(s, device, &parsed, full).await?);
        }
        Ok(TrendReport {
            from: rfc3339(parsed.from_ms),
            to: rfc3339(parsed.to_ms),
            bucket_seconds: parsed.step_ms / 1000,
            resolution: resolution_name(parsed.resolution).into(),
            series: trends,
        })
    }

    async fn series_trend(
        &self,
        series: &NamedSeries,
        device: String,
        parsed: &ParsedQuery,
        full: bool,
    ) -> Result<SeriesTrend> {
        let (from, to, step) = (parsed.from_ms, parsed.to_ms, parsed.step_ms);
        let buckets = self
            .store
            .query_buckets(series.id, parsed.resolution, from, to, step)
            .await?;
        let raw_kept_from = now_ms() - self.config.retention.raw.as_millis() as i64;
        let p95 = match from >= raw_kept_from && full {
            true => Some(self.bucket_p95(series.id, from, to, step).await?),
            false => None,
        };
        let points: Vec<Point> = buckets
            .iter()
            .map(|b| Point {
                ts_ms: b.bucket,
                value: b.avg,
            })
            .collect();
        let (xs, ys): (Vec<f64>, Vec<f64>) = points
            .iter()
            .map(|p| (trend::days(p.ts_ms), p.value))
            .unzip();
        let moments = match self
            .store
            .bucket_moments(series.id, parsed.resolution, from, to, step)
            .await?
        {
            Some(moments) => moments,
            None => stats::Moments::of(&xs, &ys),
        };
        let fit = stats::least_squares_from(&moments, &xs, &ys);
        let mean = stats::mean(&ys);
        let previous_mean = self.previous_mean(series.id, parsed).await?;
        let change = mean.zip(previous_mean).map(|(m, p)| m - p);
        let steps = trend::steps(&points, step);
        let expected = trend::expected(&points, step, &steps);
        let anomalies = trend::anomalies(&points, &expected);
        Ok(SeriesTrend {
            device_id: series.device_id.clone(),
            device,
            series: series.name.clone(),
            labels: labels_of(series),
            mean,
            previous_mean,
            change,
            change_percent: change
                .zip(previous_mean)
                .filter(|(_, p)| *p != 0.0)
                .map(|(c, p)| c / p.abs() * 100.0),
            slope_per_day: fit.map(|f| f.slope),
            r2: fit.map(|f| f.r2),
            p_value: fit.map(|f| f.p_value),
            direction: fit.map_or(Direction::Flat, |f| Direction::of(&f)),
            steps: steps.iter().map(step_view).collect(),
            anomalies: anomalies.iter().map(anomaly_view).collect(),
            buckets: if full {
                trend_buckets(&buckets, p95.as_ref())
            } else {
                Vec::new()
            },
        })
    }

    /// The p95 of the raw samples per bucket: PostgreSQL computes it; on SQLite, Rust does
    /// (the same interpolation as `percentile_cont`).
    async fn bucket_p95(
        &self,
        series: i64,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<HashMap<i64, f64>> {
        if let Some(rows) = self.store.bucket_p95(series, from, to, step).await? {
            return Ok(rows.into_iter().collect());
        }
        let mut by_bucket: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (ts, value) in self.store.raw_values(series, from, to).await? {
            by_bucket
                .entry(ts.div_euclid(step) * step)
                .or_default()
                .push(value);
        }
        Ok(by_bucket
            .into_iter()
            .filter_map(|(bucket, values)| Some((bucket, stats::quantile(values, 0.95)?)))
            .collect())
    }

    /// The mean of the bucket means in the window of the same length just before.
    async fn previous_mean(&self, series: i64, parsed: &ParsedQuery) -> Result<Option<f64>> {
        let length = parsed.to_ms - parsed.from_ms;
        let now = now_ms();
        let previous = parse_query(
            &MetricQuery {
                series: Some("previous".into()),
                from: Some((parsed.from_ms - length).max(0).to_string()),
                to: Some(parsed.from_ms.to_string()),
                step: Some(format!("{}s", parsed.step_ms / 1000)),
            },
            now,
            self.config.retention.raw,
        )?;
        let buckets = self
            .store
            .query_buckets(
                series,
                previous.resolution,
                previous.from_ms,
                previous.to_ms,
                previous.step_ms,
            )
            .await?;
        Ok(stats::mean(
            &buckets.iter().map(|b| b.avg).collect::<Vec<_>>(),
        ))
    }

    /// When each selected resource crosses the threshold: one device, or the whole fleet
    /// ranked by what fills first.
    pub async fn predict_capacity(
        &self,
        ctx: &Ctx,
        query: CapacityQuery,
    ) -> Result<CapacityReport> {
        ctx.principal.require(Scope::Read)?;
        let threshold = query.threshold.unwrap_or(90.0);
        if !threshold.is_finite() {
            return Err(Error::invalid("threshold must be a number"));
        }
        let custom = query.series.is_some();
        if !custom && !(0.0..=100.0).contains(&threshold) {
            return Err(Error::invalid(
                "threshold is a percentage (0-100) for resources; give 'series' for another unit",
            ));
        }
        let horizon = parse_duration(
            "horizon",
            query.horizon.as_deref(),
            DEFAULT_HORIZON,
            MAX_HORIZON,
        )?;
        if let Some(resource) = query.resource {
            if !Resource::FILLING.contains(&resource) {
                return Err(Error::invalid(format!(
                    "{resource:?} does not fill up; forecast disk, memory, swap or zfs, or give 'series'"
                ).to_lowercase()));
            }
        }
        let (names, wanted) =
            selection(query.series.as_deref(), query.resource, &Resource::FILLING)?;
        let devices = self.devices_named(query.device.as_deref()).await?;
        let by_id: HashMap<&str, &DeviceRow> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
        let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let series: Vec<NamedSeries> = self
            .store
            .series_named(Some(&ids), &name_refs)
            .await?
            .into_iter()
            .filter(|s| matches(&labels_of(s), &wanted))
            .collect();
        let now = now_ms();
        let from = now - HISTORY.as_millis() as i64;
        let series_ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let mut history = self.forecast_history(&series_ids, from, now).await?;
        let question = Question {
            threshold,
            horizon_days: horizon.as_secs_f64() / 86_400.0,
            now_ms: now,
        };
        let work: Vec<(NamedSeries, String, History)> = series
            .into_iter()
            .map(|s| {
                let buckets = history.remove(&s.id).unwrap_or_default();
                let device = by_id
                    .get(s.device_id.as_str())
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                (s, device, buckets)
            })
            .collect();
        // Seconds of arithmetic for a fleet: off the async workers, over every core.
        let mut forecasts = tokio::task::spawn_blocking(move || {
            on_every_core(work, |(s, device, buckets)| {
                resource_forecast(&s, device, forecast::forecast(&buckets, question))
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("forecasting: {e}")))?;
        forecasts.sort_by_key(rank);
        Ok(CapacityReport {
            threshold,
            horizon_days: question.horizon_days,
            generated_at: rfc3339(now),
            forecasts,
        })
    }
}

impl Services {
    /// What forecasts read of `series` over `[from_ms, now_ms]`: day summaries grouped by the
    /// database before the hourly tail, the 1-hour rollup's buckets within it. The day
    /// summaries and the hours are read at once.
    pub async fn forecast_history(
        &self,
        series: &[i64],
        from_ms: i64,
        now_ms: i64,
    ) -> Result<HashMap<i64, History>> {
        let tail = history::tail_start_ms(now_ms);
        let (days, hours) = futures::try_join!(
            self.store.daily_summary(series, from_ms.min(tail), tail),
            self.store
                .rollup_history(Resolution::OneHour, series, tail.max(from_ms), now_ms),
        )?;
        let mut histories: HashMap<i64, History> = HashMap::new();
        for row in days {
            histories
                .entry(row.series_id)
                .or_default()
                .days
                .push(DayBucket {
                    day: row.day,
                    peak: row.peak,
                    mean: row.mean,
                    hours: u32::try_from(row.hours).unwrap_or(u32::MAX),
                });
        }
        for row in hours {
            histories
                .entry(row.series_id)
                .or_default()
                .hours
                .push(HourBucket {
                    ts_ms: row.bucket_ms,
                    avg: row.avg,
                    max: row.max,
                });
        }
        Ok(histories)
    }
}

/// `f` over `items` on every core (scoped threads over equal shares), in order.
fn on_every_core<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let share = items.len().div_ceil(cores);
    let mut shares: Vec<Vec<T>> = Vec::with_capacity(cores);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        shares.push(items.by_ref().take(share).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || share.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|thread| match thread.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The smallest round width that cuts the window into at most [`DEFAULT_BUCKETS`].
fn default_bucket_ms(window_ms: i64) -> i64 {
    const ROUND: [i64; 10] = [
        60,
        300,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        7 * 86_400,
    ];
    ROUND
        .iter()
        .map(|s| s * 1000)
        .find(|b| window_ms / b <= DEFAULT_BUCKETS)
        .unwrap_or(30 * 86_400_000)
}

/// Sort key: what needs attention first.
fn rank(f: &ResourceForecast) -> (u8, String, String) {
    let order = match f.outlook {
        Outlook::AlreadyAbove => 0,
        Outlook::Crosses => 1,
        Outlook::NotWithinHorizon => 2,
        Outlook::NotEnoughData => 3,
    };
    (order, f.date.clone().unwrap_or_default(), f.device.clone())
}

fn resource_forecast(series: &NamedSeries, device: String, forecast: Forecast) -> ResourceForecast {
    ResourceForecast {
        device_id: series.device_id.clone(),
        device,
        series: series.name.clone(),
        labels: labels_of(series),
        outlook: forecast.outlook,
        current: forecast.current,
        slope_per_day: forecast.slope_per_day,
        date: forecast.date_ms.map(rfc3339),
        low: forecast.low_ms.map(rfc3339),
        high: forecast.high_ms.map(rfc3339),
        confidence: forecast.confidence,
        confidence_label: Confidence::of(forecast.confidence),
        method: forecast.method,
        needs_hours: forecast.needs_hours,
    }
}

fn resolution_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Raw => "raw",
        Resolution::FiveMinutes => "5m",
        Resolution::OneHour => "1h",
    }
}

fn trend_buckets(buckets: &[Bucket], p95: Option<&HashMap<i64, f64>>) -> Vec<TrendBucket> {
    buckets
        .iter()
        .map(|b| TrendBucket {
            ts: rfc3339(b.bucket),
            avg: b.avg,
            min: b.min,
            max: b.max,
            p95: p95.and_then(|p| p.get(&b.bucket).copied()),
        })
        .collect()
}

fn step_view(step: &Step) -> StepView {
    StepView {
        at: rfc3339(step.ts_ms),
        before: step.before,
        after: step.after,
        change: step.change,
    }
}

fn anomaly_view(anomaly: &Anomaly) -> AnomalyView {
    AnomalyView {
        at: rfc3339(anomaly.ts_ms),
        value: anomaly.value,
        expected: anomaly.expected,
        score: (anomaly.score * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests;

/// `GET /devices/{d}/metrics/chart` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// One series: a selector that picks a single label set, e.g. `disk.used_percent{mount=/}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(required, regex(pattern = super::metrics::SERIES_SELECTOR))]
    pub series: Option<String>,
    /// History shown, e.g. `7d` (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Draws the threshold and the forecast up to it; default 90 for `*_percent` series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How far the forecast reaches (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<String>,
}

/// Buckets a chart's history is drawn in.
const CHART_BUCKETS: i64 = 120;

impl Services {
    /// One series of a device as an SVG chart with its trend and, with a threshold, its
    /// forecast and crossing.
    pub async fn metric_chart(&self, ctx: &Ctx, device: &str, query: ChartQuery) -> Result<String> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let selector = query
            .series
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    "query parameter 'series' is required, e.g. series=disk.used_percent{mount=/}",
                )
            })?;
        let (name, wanted) = parse_selector(selector)?;
        let window = parse_duration(
            "window",
            query.window.as_deref(),
            Duration::from_secs(30 * 86_400),
            MAX_WINDOW,
        )?;
        let horizon = parse_duration(
            "horizon",
            query.horizon.as_deref(),
            Duration::from_secs(30 * 86_400),
            MAX_HORIZON,
        )?;
        let threshold = match query.threshold {
            Some(t) if !t.is_finite() => return Err(Error::invalid("threshold must be a number")),
            Some(t) => Some(t),
            None => name.ends_with("_percent").then_some(90.0),
        };
        let matching: Vec<NamedSeries> = self
            .store
            .series_named(Some(std::slice::from_ref(&row.id)), &[name.as_str()])
            .await?
            .into_iter()
            .filter(|s| matches(&labels_of(s), &wanted))
            .collect();
        let series = match matching.as_slice() {
            [one] => one,
            [] => {
                return Err(Error::NotFound(format!(
                    "device {} has no series {selector}",
                    row.name
                )))
            }
            many => {
                return Err(Error::invalid(format!(
                    "{selector} matches {} label sets; pick one, e.g. {}{}",
                    many.len(),
                    name,
                    many[0].labels.replace(['"'], "").replace(':', "=")
                )))
            }
        };
        let now = now_ms();
        let window_ms = window.as_millis() as i64;
        let parsed = parse_query(
            &MetricQuery {
                series: Some(name.clone()),
                from: Some((now - window_ms).to_string()),
                to: Some(now.to_string()),
                step: Some(format!("{}s", (window_ms / CHART_BUCKETS / 1000).max(60))),
            },
            now,
            self.config.retention.raw,
        )?;
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
        let history: Vec<chart::ChartBucket> = buckets
            .iter()
            .map(|b| chart::ChartBucket {
                ts_ms: b.bucket,
                avg: b.avg,
                min: b.min,
                max: b.max,
            })
            .collect();
        let (xs, ys): (Vec<f64>, Vec<f64>) = buckets
            .iter()
            .map(|b| (trend::days(b.bucket), b.avg))
            .unzip();
        let trend = stats::least_squares(&xs, &ys).map(|f| (f.slope, f.intercept));
        let (forecast, paths) = match threshold {
            Some(threshold) => {
                let from = now - HISTORY.as_millis() as i64;
                let history = self
                    .forecast_history(&[series.id], from, now)
                    .await?
                    .remove(&series.id)
                    .unwrap_or_default();
                let question = Question {
                    threshold,
                    horizon_days: horizon.as_secs_f64() / 86_400.0,
                    now_ms: now,
                };
                let step = (horizon.as_millis() as i64 / 60).max(forecast::HOUR_MS);
                let (answer, mut paths) = forecast::forecast_with_paths(&history, question, step);
                // Drawn until even the latest bound has crossed: the rest says nothing more.
                if let Some(done) = paths.iter().position(|p| p.latest >= threshold) {
                    paths.truncate(done + 1);
                }
                (Some(answer), paths)
            }
            None => (None, Vec::new()),
        };
        let title = format!("{} — {selector}", row.name);
        Ok(chart::render(&chart::Chart {
            title: &title,
            history: &history,
            trend,
            forecast: &paths,
            threshold,
            crossing_ms: forecast.and_then(|f| f.date_ms),
        }))
    }
}
