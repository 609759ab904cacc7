//! What a series did over a window: its least-squares trend and whether that trend is real,
//! the step changes in its level (a cleanup, a deploy), and the buckets that stand out from
//! both the trend and the daily cycle.

use serde::{Deserialize, Serialize};

use super::stats::{self, LinearFit};

pub const DAY_MS: i64 = 86_400_000;
/// A slope is a trend when "no slope" is this unlikely.
const SIGNIFICANCE: f64 = 0.05;
/// Modified z-score beyond which a bucket is an anomaly (Iglewicz and Hoaglin's 3.5).
pub const ANOMALY_Z: f64 = 3.5;
/// A step must exceed this many robust deviations of the series' change over a window...
const STEP_Z: f64 = 4.0;
/// ... and this share of the series' 5–95% range.
const STEP_MIN_SHARE: f64 = 0.1;

/// One bucket's value at a time, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub ts_ms: i64,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Rising,
    Falling,
    /// No slope that noise could not explain.
    Flat,
}

impl Direction {
    /// Rising or falling only when the slope is significant, whatever its sign.
    pub fn of(fit: &LinearFit) -> Self {
        match fit.p_value < SIGNIFICANCE {
            true if fit.slope > 0.0 => Self::Rising,
            true if fit.slope < 0.0 => Self::Falling,
            _ => Self::Flat,
        }
    }
}

/// A shift in the series' level between two stretches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    /// The first bucket at the new level.
    pub ts_ms: i64,
    /// Median level before and after.
    pub before: f64,
    pub after: f64,
    pub change: f64,
}

/// A bucket beyond the robust threshold around what trend and cycle predict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Anomaly {
    pub ts_ms: i64,
    pub value: f64,
    pub expected: f64,
    /// Modified z-score: distance from the expected value in robust standard deviations.
    pub score: f64,
}

/// How many buckets make a day, when the buckets are at most an hour and the series covers
/// enough days for a daily cycle to be seen; `None` otherwise.
pub fn buckets_per_day(points: &[Point], bucket_ms: i64) -> Option<usize> {
    let span = points.last()?.ts_ms - points.first()?.ts_ms;
    (bucket_ms > 0 && bucket_ms <= 3_600_000 && span >= 4 * DAY_MS)
        .then(|| (DAY_MS / bucket_ms) as usize)
}

/// Level shifts. Compares the median of the `w` buckets after each point with the median of
/// the `w` before, less what the trend alone moves in `w` buckets; `w` is a day when the
/// buckets show a daily cycle (so the cycle averages out), else a tenth of the series.
/// A shift counts when it exceeds both what the series moves over `w` buckets anyway (the
/// spread of its lag-`w` differences: noise, and cycles slower than a day) and a tenth of
/// its range; the strongest of any overlapping candidates wins.
pub fn steps(points: &[Point], bucket_ms: i64) -> Vec<Step> {
    let n = points.len();
    let w = buckets_per_day(points, bucket_ms)
        .unwrap_or(n / 10)
        .clamp(3, (n / 3).max(3));
    if n < 2 * w + 1 {
        return Vec::new();
    }
    let ys: Vec<f64> = points.iter().map(|p| p.value).collect();
    let lagged: Vec<f64> = ys.windows(w + 1).map(|s| s[w] - s[0]).collect();
    let drift = stats::median(lagged.iter().copied()).unwrap_or(0.0);
    let noise = stats::robust_sd(&lagged, drift).unwrap_or(0.0);
    let range = stats::quantile(ys.iter().copied(), 0.95).unwrap_or(0.0)
        - stats::quantile(ys.iter().copied(), 0.05).unwrap_or(0.0);
    // Not narrowed by √w: a weekly cycle moves whole windows together, as a step would.
    let threshold = (STEP_Z * noise).max(STEP_MIN_SHARE * range);
    if threshold <= 0.0 {
        return Vec::new();
    }
    let mut buffer = Vec::with_capacity(w);
    let mut candidates: Vec<(usize, f64, f64, f64)> = (w..=n - w)
        .filter_map(|i| {
            let before = window_median(&ys[i - w..i], &mut buffer)?;
            let after = window_median(&ys[i..i + w], &mut buffer)?;
            let shift = after - before - drift;
            (shift.abs() > threshold).then_some((i, shift, before, after))
        })
        .collect();
    candidates.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let mut chosen: Vec<(usize, f64, f64)> = Vec::new();
    for (i, _, before, after) in candidates {
        if chosen.iter().all(|(j, _, _)| i.abs_diff(*j) >= w) {
            chosen.push((i, before, after));
        }
    }
    chosen.sort_by_key(|(i, _, _)| *i);
    chosen
        .into_iter()
        .map(|(i, before, after)| Step {
            ts_ms: points[i].ts_ms,
            before,
            after,
            change: after - before,
        })
        .collect()
}

/// The median of a window, sorted in a reused buffer (one per series, not one per window).
fn window_median(values: &[f64], buffer: &mut Vec<f64>) -> Option<f64> {
    buffer.clear();
    buffer.extend(values.iter().copied().filter(|v| v.is_finite()));
    buffer.sort_unstable_by(f64::total_cmp);
    stats::quantile_sorted(buffer, 0.5)
}

/// What each point should be, from a robust line through each stretch between steps and,
/// where a daily cycle can be seen, the median deviation at each hour of the day.
pub fn expected(points: &[Point], bucket_ms: i64, steps: &[Step]) -> Vec<f64> {
    let mut expected = vec![0.0; points.len()];
    let mut start = 0;
    let bounds = steps
        .iter()
        .filter_map(|s| points.iter().position(|p| p.ts_ms == s.ts_ms))
        .chain(std::iter::once(points.len()));
    for end in bounds {
        let stretch = &points[start..end];
        let xs: Vec<f64> = stretch.iter().map(|p| days(p.ts_ms)).collect();
        let ys: Vec<f64> = stretch.iter().map(|p| p.value).collect();
        // Long stretches (90 days of hours) would cost O(n²) pairs: Theil's half-pairs.
        let line = match xs.len() {
            n if n > 300 => stats::theil_halves(&xs, &ys),
            _ => stats::theil_sen(&xs, &ys, 0.9).map(|f| (f.slope, f.intercept)),
        };
        let level = stats::median(ys.iter().copied()).unwrap_or(0.0);
        for (k, x) in xs.iter().enumerate() {
            expected[start + k] = line.map_or(level, |(slope, intercept)| intercept + slope * x);
        }
        start = end;
    }
    if let Some(per_day) = buckets_per_day(points, bucket_ms) {
        let mut by_slot: Vec<Vec<f64>> = vec![Vec::new(); per_day];
        let slot = |p: &Point| ((p.ts_ms.rem_euclid(DAY_MS)) / bucket_ms) as usize % per_day;
        for (p, e) in points.iter().zip(&expected) {
            by_slot[slot(p)].push(p.value - e);
        }
        let profile: Vec<f64> = by_slot
            .into_iter()
            .map(|r| stats::median(r).unwrap_or(0.0))
            .collect();
        for (p, e) in points.iter().zip(expected.iter_mut()) {
            *e += profile[slot(p)];
        }
    }
    expected
}

/// Buckets whose distance from [`expected`] is beyond [`ANOMALY_Z`] robust deviations.
pub fn anomalies(points: &[Point], expected: &[f64]) -> Vec<Anomaly> {
    let residuals: Vec<f64> = points
        .iter()
        .zip(expected)
        .map(|(p, e)| p.value - e)
        .collect();
    let center = stats::median(residuals.iter().copied()).unwrap_or(0.0);
    let Some(spread) = stats::robust_sd(&residuals, center).filter(|s| *s > 0.0) else {
        return Vec::new();
    };
    points
        .iter()
        .zip(expected)
        .zip(&residuals)
        .filter_map(|((p, e), r)| {
            let score = (r - center) / spread;
            (score.abs() > ANOMALY_Z).then_some(Anomaly {
                ts_ms: p.ts_ms,
                value: p.value,
                expected: *e,
                score,
            })
        })
        .collect()
}

/// Milliseconds to days, the unit slopes are reported in.
pub fn days(ts_ms: i64) -> f64 {
    ts_ms as f64 / DAY_MS as f64
}
