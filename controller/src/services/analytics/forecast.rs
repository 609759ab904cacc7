//! When a resource crosses a threshold. A single-window line (`predict_linear`) cries wolf
//! after a cleanup and forecasts the mean while a disk fills at its peak; this forecast:
//!
//! - fits only the stretch after the last step change (a cleanup or a migration resets the
//!   level; what came before says nothing about what comes next);
//! - fits daily peaks (hourly ones over short windows), so the daily cycle is the peak's;
//! - fits robustly (Theil–Sen), so outliers do not tilt the line;
//! - tries 1, 7, 30 and 90 days and keeps the window whose fit, made without the newest
//!   quarter of the history (at most a week), best predicted that quarter — every window
//!   judged on the same days — the longer one on a near tie;
//! - adds the weekly profile of the peaks when there are two weeks to see it in;
//! - and gives the date with an interval: the slope's rank-based confidence bounds plus the
//!   spread of the daily peaks around the line.

use serde::{Deserialize, Serialize};

use super::history::{DayBucket, History, HourBucket};
use super::stats::{self, RobustFit};
use super::trend::{self, Point, DAY_MS};

pub const HOUR_MS: i64 = 3_600_000;
/// Less history than this (after the last step) is not enough to forecast from.
pub const MIN_HISTORY_HOURS: i64 = 12;
const WINDOWS_DAYS: [i64; 4] = [1, 7, 30, 90];
/// Windows up to this many days are fitted on hourly peaks, longer ones on daily peaks.
const HOURLY_UP_TO_DAYS: i64 = 3;
/// The slope's interval, and the residual quantiles around the line, cover this much.
const INTERVAL: f64 = 0.8;
/// Backtest errors within this factor of the best count as a tie.
const TIE: f64 = 1.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outlook {
    /// Crosses the threshold within the horizon, on `date`.
    Crosses,
    /// Not expected to reach the threshold within the horizon.
    NotWithinHorizon,
    /// At or above the threshold already.
    AlreadyAbove,
    /// Too little history (since the last step change) to forecast: see `needs_hours`.
    NotEnoughData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Points {
    HourlyPeaks,
    DailyPeaks,
}

/// How the forecast was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Method {
    /// `theil_sen`: the median of pairwise slopes.
    pub fit: String,
    pub points: Points,
    pub window_days: i64,
    pub fitted_points: usize,
    /// History starts here: the last step change (a cleanup), when there was one.
    pub since_step_ms: Option<i64>,
    pub weekly_cycle: bool,
    /// Median absolute error of the window's fit, made without the newest quarter of the
    /// history (at most a week), on that quarter's daily peaks; `None`: too little history
    /// to hold any out.
    pub backtest_error: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Forecast {
    pub outlook: Outlook,
    /// The latest hour's mean.
    pub current: Option<f64>,
    /// Growth of the fitted peak, in the series' unit per day.
    pub slope_per_day: Option<f64>,
    /// The most likely crossing.
    pub date_ms: Option<i64>,
    /// The earliest crossing the interval allows (also given when the likely one is beyond
    /// the horizon but an early one is not).
    pub low_ms: Option<i64>,
    /// The latest crossing the interval allows; `None` with a date: beyond the horizon.
    pub high_ms: Option<i64>,
    /// 0–1: how narrow the interval is around the date (and how much history there is).
    pub confidence: f64,
    pub method: Option<Method>,
    /// With `not_enough_data`: how many more hours of history are needed.
    pub needs_hours: Option<i64>,
}

impl Forecast {
    fn bare(outlook: Outlook, current: Option<f64>) -> Self {
        Self {
            outlook,
            current,
            slope_per_day: None,
            date_ms: None,
            low_ms: None,
            high_ms: None,
            confidence: 0.0,
            method: None,
            needs_hours: None,
        }
    }
}

/// What the threshold, horizon and the present are.
#[derive(Clone, Copy, Debug)]
pub struct Question {
    pub threshold: f64,
    pub horizon_days: f64,
    pub now_ms: i64,
}

impl Question {
    /// The whole hour the forecast runs from: the next one after now.
    fn hour(&self) -> i64 {
        (self.now_ms.div_euclid(HOUR_MS) + 1) * HOUR_MS
    }
}

/// Forecasts from a series' history.
pub fn forecast(history: &History, question: Question) -> Forecast {
    match fitted(history, question) {
        Ok(fitted) => fitted.forecast(question),
        Err(answer) => *answer,
    }
}

/// One instant of the forecast's paths: the likely peak, and the interval's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathPoint {
    pub ts_ms: i64,
    pub likely: f64,
    pub earliest: f64,
    pub latest: f64,
}

/// The forecast, and its paths every `step_ms` from now to the horizon (none when there is
/// no fit: already above, or not enough data).
pub fn forecast_with_paths(
    history: &History,
    question: Question,
    step_ms: i64,
) -> (Forecast, Vec<PathPoint>) {
    let fitted = match fitted(history, question) {
        Ok(fitted) => fitted,
        Err(answer) => return (*answer, Vec::new()),
    };
    let end = question.hour() + (question.horizon_days * DAY_MS as f64) as i64;
    let model = &fitted.model;
    let paths = (0..)
        .map(|i| question.hour() + i * step_ms.max(HOUR_MS))
        .take_while(|t| *t <= end)
        .map(|t| {
            let x = trend::days(t);
            PathPoint {
                ts_ms: t,
                likely: model.likely().at(x),
                earliest: model.earliest().at(x),
                latest: model.latest().at(x),
            }
        })
        .collect();
    (fitted.forecast(question), paths)
}

/// A model fitted to the history after the last step, with what the answer reports of it.
struct Fitted {
    model: Model,
    backtest_error: Option<f64>,
    since_step_ms: Option<i64>,
    hours: i64,
    current: Option<f64>,
}

impl Fitted {
    fn forecast(&self, question: Question) -> Forecast {
        project(
            &self.model,
            self.backtest_error,
            self.since_step_ms,
            self.hours,
            question,
            self.current,
        )
    }
}

/// The fit, or the answer when there is nothing to fit.
fn fitted(history: &History, question: Question) -> Result<Fitted, Box<Forecast>> {
    let Some(current) = history.current() else {
        let mut answer = Forecast::bare(Outlook::NotEnoughData, None);
        answer.needs_hours = Some(MIN_HISTORY_HOURS);
        return Err(Box::new(answer));
    };
    if current >= question.threshold {
        let mut answer = Forecast::bare(Outlook::AlreadyAbove, Some(current));
        answer.confidence = 1.0;
        return Err(Box::new(answer));
    }
    let since_step_ms = last_step(history);
    let segment = match since_step_ms {
        Some(at) => history.since(at),
        None => history.clone(),
    };
    let hours = segment.span_hours();
    let short = |needs: i64| {
        let mut answer = Forecast::bare(Outlook::NotEnoughData, Some(current));
        answer.needs_hours = Some(needs);
        answer
    };
    if hours < MIN_HISTORY_HOURS {
        return Err(Box::new(short(MIN_HISTORY_HOURS - hours)));
    }
    let (model, backtest_error) =
        choose_window(&segment, hours).ok_or_else(|| Box::new(short(MIN_HISTORY_HOURS)))?;
    Ok(Fitted {
        model,
        backtest_error,
        since_step_ms,
        hours,
        current: Some(current),
    })
}

/// The last step change: at hourly precision within the hourly tail, else at daily
/// precision before it.
fn last_step(history: &History) -> Option<i64> {
    let tail_start = history.hours.first().map(|h| h.ts_ms);
    let hourly = trend::steps(&history.hourly_means(), HOUR_MS);
    hourly.last().map(|s| s.ts_ms).or_else(|| {
        trend::steps(&history.daily_means(), DAY_MS)
            .into_iter()
            .rfind(|s| tail_start.is_none_or(|tail| s.ts_ms < tail))
            .map(|s| s.ts_ms)
    })
}

/// A fitted window: the trend of its peaks, their weekly profile, and the offsets of the
/// likely, early and late paths from the trend.
struct Model {
    window_days: i64,
    points: Points,
    fitted_points: usize,
    fit: RobustFit,
    /// Intercepts for the slope's interval bounds (lines through the data's centre).
    low_intercept: f64,
    high_intercept: f64,
    profile: Option<[f64; 7]>,
    central: f64,
    early: f64,
    late: f64,
}

impl Model {
    /// Fits the window `(from_ms, until_ms]` of `history` on hourly or daily peaks.
    fn fit(history: &History, from_ms: i64, until_ms: i64, window_days: i64) -> Option<Self> {
        let (points, xs, ys, peak_over_mean) = if window_days <= HOURLY_UP_TO_DAYS {
            let hours = history.hours_in(from_ms, until_ms);
            let over = stats::median(hours.iter().map(|b| b.max - b.avg)).unwrap_or(0.0);
            let (xs, ys) = hourly_peaks(&hours);
            (Points::HourlyPeaks, xs, ys, over)
        } else {
            let (xs, ys, over) = daily_peaks(&history.days_in(from_ms, until_ms));
            (Points::DailyPeaks, xs, ys, over)
        };
        if xs.len() < 4 {
            return None;
        }
        let mut fit = stats::theil_sen(&xs, &ys, INTERVAL)?;
        let mut profile = None;
        if points == Points::DailyPeaks {
            // Backfitting: the weekly profile of the residuals, then the trend again without it.
            let residuals: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| y - fit.at(*x)).collect();
            if let Some(first) = weekly_profile(&xs, &residuals) {
                let deseasoned: Vec<f64> = xs
                    .iter()
                    .zip(&ys)
                    .map(|(x, y)| y - first[weekday(*x)])
                    .collect();
                fit = stats::theil_sen(&xs, &deseasoned, INTERVAL)?;
                let residuals: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| y - fit.at(*x)).collect();
                profile = weekly_profile(&xs, &residuals);
            }
        }
        let weekly = |x: f64| profile.map_or(0.0, |p: [f64; 7]| p[weekday(x)]);
        let noise: Vec<f64> = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| y - fit.at(*x) - weekly(*x))
            .collect();
        let q = |p: f64| stats::quantile(noise.iter().copied(), p).unwrap_or(0.0);
        // The interval runs from the earliest a peak may reach the threshold (the steeper
        // slope, a high peak) to when even the mean level does (the shallower slope).
        // Hourly peaks spread over the daily cycle: the day's peak is at their top.
        let (central, early, late) = match points {
            Points::DailyPeaks => (
                0.0,
                q(0.5 + INTERVAL / 2.0),
                q(0.5 - INTERVAL / 2.0) - peak_over_mean,
            ),
            Points::HourlyPeaks => (q(0.9), q(0.98), q(0.5) - peak_over_mean),
        };
        let deseasoned: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| y - weekly(*x)).collect();
        Some(Self {
            window_days,
            points,
            fitted_points: xs.len(),
            low_intercept: intercept_for(&xs, &deseasoned, fit.slope_low),
            high_intercept: intercept_for(&xs, &deseasoned, fit.slope_high),
            fit,
            profile,
            central,
            early,
            late,
        })
    }

    fn likely(&self) -> Path<'_> {
        self.path(self.fit.slope, self.fit.intercept, self.central)
    }

    fn earliest(&self) -> Path<'_> {
        self.path(self.fit.slope_high, self.high_intercept, self.early)
    }

    fn latest(&self) -> Path<'_> {
        self.path(self.fit.slope_low, self.low_intercept, self.late)
    }

    fn path(&self, slope: f64, intercept: f64, offset: f64) -> Path<'_> {
        Path {
            slope,
            intercept,
            offset,
            profile: self.profile.as_ref(),
        }
    }
}

/// Picks the window whose model, fitted on the history before a holdout (the newest
/// quarter, at most a week), best predicted the holdout's daily peaks: every window judged
/// on the same days at the same distance. The window is then fitted again up to now.
/// Returns the model and its holdout error (`None` error: too short to hold any out).
fn choose_window(segment: &History, hours: i64) -> Option<(Model, Option<f64>)> {
    let end = segment.last_ms()?;
    let fit = |until: i64, days: i64| Model::fit(segment, until - days * DAY_MS, until, days);
    let covered = |days: i64| days == WINDOWS_DAYS[0] || hours as f64 >= 0.6 * (days * 24) as f64;
    let holdout_ms = (7 * DAY_MS).min(hours * HOUR_MS / 4);
    let cut = end - holdout_ms;
    let (xs, ys, _) = daily_peaks(&segment.days_in(cut, end));
    let mut scored: Vec<(i64, f64)> = Vec::new();
    if xs.len() >= 2 {
        for days in WINDOWS_DAYS.into_iter().filter(|d| covered(*d)) {
            let Some(model) = fit(cut, days) else {
                continue;
            };
            let path = model.likely();
            let errors = xs.iter().zip(&ys).map(|(x, y)| (path.at(*x) - y).abs());
            scored.push((days, stats::median(errors).unwrap_or(f64::INFINITY)));
        }
    }
    let Some(best) = scored.iter().map(|(_, e)| *e).min_by(f64::total_cmp) else {
        // Too short for a holdout: the shortest window that fits.
        return WINDOWS_DAYS
            .into_iter()
            .find_map(|days| fit(end, days))
            .map(|model| (model, None));
    };
    scored
        .iter()
        .rev()
        .filter(|(_, error)| *error <= best * TIE + 1e-9)
        .find_map(|(days, error)| Some((fit(end, *days)?, Some(*error))))
}

fn hourly_peaks(buckets: &[HourBucket]) -> (Vec<f64>, Vec<f64>) {
    buckets
        .iter()
        .map(|b| (trend::days(b.ts_ms), b.max))
        .unzip()
}

/// The peak of every full day at the day's middle, and the median height of the peaks above
/// their day's mean.
fn daily_peaks(days: &[DayBucket]) -> (Vec<f64>, Vec<f64>, f64) {
    let over = stats::median(days.iter().map(|d| d.peak - d.mean));
    let (xs, ys) = days.iter().map(|d| (d.x(), d.peak)).unzip();
    (xs, ys, over.unwrap_or(0.0))
}

/// The offset of each weekday's peaks from the line, when two weeks show it.
fn weekly_profile(xs: &[f64], residuals: &[f64]) -> Option<[f64; 7]> {
    let span = xs.last()? - xs.first()?;
    if span < 13.0 {
        return None;
    }
    let mut by_day: [Vec<f64>; 7] = Default::default();
    for (x, r) in xs.iter().zip(residuals) {
        by_day[weekday(*x)].push(*r);
    }
    if by_day.iter().any(|d| d.len() < 2) {
        return None;
    }
    let mut profile = [0.0; 7];
    for (slot, values) in profile.iter_mut().zip(by_day) {
        *slot = stats::median(values).unwrap_or(0.0);
    }
    Some(profile)
}

/// 0 = Thursday (1970-01-01); any fixed origin does.
fn weekday(day: f64) -> usize {
    (day.floor() as i64).rem_euclid(7) as usize
}

/// A line the forecast follows, plus an offset that may depend on the weekday.
struct Path<'a> {
    slope: f64,
    intercept: f64,
    offset: f64,
    profile: Option<&'a [f64; 7]>,
}

impl Path<'_> {
    fn at(&self, x: f64) -> f64 {
        let weekly = self.profile.map_or(0.0, |p| p[weekday(x)]);
        self.intercept + self.slope * x + self.offset + weekly
    }

    /// The first whole hour after `now`, within the horizon, at which the path reaches
    /// `threshold` (whole hours: the answer does not move with the second it is asked).
    fn crossing(&self, question: &Question) -> Option<i64> {
        let hours = (question.horizon_days * 24.0).ceil() as i64;
        let start = question.hour();
        (0..=hours)
            .map(|h| start + h * HOUR_MS)
            .find(|t| self.at(trend::days(*t)) >= question.threshold)
    }
}

fn intercept_for(xs: &[f64], ys: &[f64], slope: f64) -> f64 {
    stats::median(xs.iter().zip(ys).map(|(x, y)| y - slope * x)).unwrap_or(0.0)
}

fn project(
    model: &Model,
    backtest_error: Option<f64>,
    since_step_ms: Option<i64>,
    hours: i64,
    question: Question,
    current: Option<f64>,
) -> Forecast {
    let date_ms = model.likely().crossing(&question);
    let low_ms = model.earliest().crossing(&question);
    let high_ms = model.latest().crossing(&question);
    let outlook = match date_ms {
        Some(_) => Outlook::Crosses,
        None => Outlook::NotWithinHorizon,
    };
    let horizon_end = question.hour() + (question.horizon_days * DAY_MS as f64) as i64;
    let mut confidence = match (date_ms, low_ms) {
        (Some(date), Some(low)) => {
            let to_date = (date - question.hour()).max(HOUR_MS) as f64;
            let width = (high_ms.unwrap_or(horizon_end) - low) as f64;
            let mut c = (1.0 - width / (2.0 * to_date)).clamp(0.05, 0.99);
            if high_ms.is_none() {
                c = c.min(0.4);
            }
            c
        }
        (None, None) => 0.9,
        _ => 0.5,
    };
    // Without a week of history the weekly cycle is unknown.
    if hours < 7 * 24 {
        confidence = confidence.min(0.5);
    }
    Forecast {
        outlook,
        current,
        slope_per_day: Some(model.fit.slope),
        date_ms,
        low_ms,
        high_ms: if date_ms.is_some() { high_ms } else { None },
        confidence: (confidence * 100.0).round() / 100.0,
        method: Some(Method {
            fit: "theil_sen".into(),
            points: model.points,
            window_days: model.window_days,
            fitted_points: model.fitted_points,
            since_step_ms,
            weekly_cycle: model.profile.is_some(),
            backtest_error,
        }),
        needs_hours: None,
    }
}

/// The peer this forecast is measured against: Prometheus' `predict_linear` — least squares
/// over one window of the series' means, extended to the threshold.
pub fn predict_linear_crossing(
    points: &[Point],
    window_ms: i64,
    question: Question,
) -> Option<i64> {
    let end = points.last()?.ts_ms;
    let (xs, ys): (Vec<f64>, Vec<f64>) = points
        .iter()
        .filter(|p| p.ts_ms > end - window_ms)
        .map(|p| (trend::days(p.ts_ms), p.value))
        .unzip();
    let fit = stats::least_squares(&xs, &ys)?;
    if fit.slope <= 0.0 {
        return None;
    }
    let x = (question.threshold - fit.intercept) / fit.slope;
    let at = (x * DAY_MS as f64) as i64;
    let horizon_end = question.now_ms + (question.horizon_days * DAY_MS as f64) as i64;
    (at <= horizon_end).then_some(at.max(question.now_ms))
}
