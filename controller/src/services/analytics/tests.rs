//! The analyses measured against series whose truth is known.

use super::forecast::{self, Outlook, Question};
use super::history::{History, HourBucket};
use super::stats;
use super::synthetic::Synthetic;
use super::trend::{self, Direction, Point, DAY_MS};

const HOUR_MS: i64 = 3_600_000;
/// 2026-06-01T00:00:00Z
const END_MS: i64 = 1_780_272_000_000;

fn hourly(points: &[Point]) -> Vec<HourBucket> {
    points
        .iter()
        .map(|p| HourBucket {
            ts_ms: p.ts_ms,
            avg: p.value,
            max: p.value,
        })
        .collect()
}

/// What the stores hand the forecast at the end of `s`.
fn history(buckets: &[HourBucket], s: &Synthetic) -> History {
    History::from_hours(buckets, s.end_ms())
}

fn question(s: &Synthetic, threshold: f64) -> Question {
    Question {
        threshold,
        horizon_days: 90.0,
        now_ms: s.end_ms(),
    }
}

fn realistic() -> Synthetic {
    Synthetic::everything(END_MS)
}

fn assert_close_to_truth(s: &Synthetic, threshold: f64) -> forecast::Forecast {
    let truth = s
        .true_crossing_ms(threshold, 90.0)
        .expect("the truth crosses");
    let answer = forecast::forecast(&history(&hourly(&s.points()), s), question(s, threshold));
    assert_eq!(answer.outlook, Outlook::Crosses, "{answer:?}");
    let date = answer.date_ms.unwrap();
    let to_truth = (truth - s.end_ms()) as f64;
    let error = (date - truth) as f64 / to_truth;
    assert!(
        error.abs() <= 0.10,
        "forecast {:.1} d vs true {:.1} d ahead ({:+.1}%): {answer:?}",
        (date - s.end_ms()) as f64 / DAY_MS as f64,
        to_truth / DAY_MS as f64,
        error * 100.0
    );
    let (low, high) = (answer.low_ms.unwrap(), answer.high_ms.unwrap_or(i64::MAX));
    assert!(
        low <= truth && truth <= high,
        "truth outside the interval: {answer:?}"
    );
    answer
}

#[test]
fn the_crossing_is_within_a_tenth_of_the_truth_and_inside_the_interval() {
    let s = realistic();
    let answer = assert_close_to_truth(&s, 85.0);
    let method = answer.method.unwrap();
    let cleanup = s.start_ms + 70 * 24 * HOUR_MS;
    let since = method.since_step_ms.expect("the cleanup was found");
    assert!((since - cleanup).abs() <= 3 * HOUR_MS, "{method:?}");
    assert!(method.window_days >= 7, "{method:?}");
}

#[test]
fn forecasts_hold_across_slopes_cycles_and_noise() {
    for (seed, slope, daily, weekly, noise, threshold) in [
        (1, 0.3, 0.0, 0.0, 0.3, 70.0),
        (2, 0.5, 3.0, 0.0, 1.0, 95.0),
        (3, 0.2, 1.0, 2.0, 0.4, 60.0),
        (4, 0.4, 2.0, 1.0, 0.8, 95.0),
    ] {
        let s = Synthetic {
            daily_amplitude: daily,
            weekly_amplitude: weekly,
            noise_sd: noise,
            outliers: vec![(300, 20.0), (700, -25.0)],
            seed,
            ..Synthetic::growth(END_MS, 60, 40.0, slope)
        };
        assert_close_to_truth(&s, threshold);
    }
}

#[test]
fn a_flat_series_is_flat_and_never_crosses() {
    let s = Synthetic {
        daily_amplitude: 3.0,
        noise_sd: 1.0,
        seed: 11,
        ..Synthetic::growth(END_MS, 30, 50.0, 0.0)
    };
    let points = s.points();
    let answer = forecast::forecast(&history(&hourly(&points), &s), question(&s, 90.0));
    assert_eq!(answer.outlook, Outlook::NotWithinHorizon, "{answer:?}");
    let (xs, ys): (Vec<f64>, Vec<f64>) = points
        .iter()
        .map(|p| (trend::days(p.ts_ms), p.value))
        .unzip();
    let fit = stats::least_squares(&xs, &ys).unwrap();
    assert_eq!(Direction::of(&fit), Direction::Flat, "{fit:?}");
    assert!(trend::steps(&points, HOUR_MS).is_empty());
}

#[test]
fn the_cleanup_step_and_the_outliers_are_found() {
    let s = realistic();
    let points = s.points();
    let steps = trend::steps(&points, HOUR_MS);
    assert_eq!(steps.len(), 1, "{steps:?}");
    let cleanup = s.start_ms + 70 * 24 * HOUR_MS;
    assert!((steps[0].ts_ms - cleanup).abs() <= 3 * HOUR_MS, "{steps:?}");
    assert!((steps[0].change + 15.0).abs() < 2.0, "{steps:?}");
    let expected = trend::expected(&points, HOUR_MS, &steps);
    let found: Vec<i64> = trend::anomalies(&points, &expected)
        .iter()
        .map(|a| (a.ts_ms - s.start_ms) / HOUR_MS)
        .collect();
    for (hour, _) in &s.outliers {
        assert!(
            found.contains(&(*hour as i64)),
            "outlier at {hour} missed: {found:?}"
        );
    }
    assert!(
        found.len() <= s.outliers.len() + 3,
        "few false alarms: {found:?}"
    );
}

#[test]
fn a_rising_trend_is_rising_and_a_doubling_is_a_step() {
    let s = Synthetic {
        noise_sd: 0.5,
        seed: 5,
        ..Synthetic::growth(END_MS, 14, 20.0, 0.4)
    };
    let points = s.points();
    let (xs, ys): (Vec<f64>, Vec<f64>) = points
        .iter()
        .map(|p| (trend::days(p.ts_ms), p.value))
        .unzip();
    let fit = stats::least_squares(&xs, &ys).unwrap();
    assert_eq!(Direction::of(&fit), Direction::Rising);
    assert!((fit.slope - 0.4).abs() < 0.05, "{fit:?}");
    // A deploy that doubled memory use.
    let doubled = Synthetic {
        cleanup: Some((200, -20.0)),
        ..s
    };
    let steps = trend::steps(&doubled.points(), HOUR_MS);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].after > steps[0].before * 1.6, "{steps:?}");
}

#[test]
fn too_little_history_says_how_much_more_is_needed_and_full_is_already_above() {
    let s = Synthetic::growth(END_MS, 1, 40.0, 1.0);
    let points = &hourly(&s.points())[..5];
    let answer = forecast::forecast(&history(points, &s), question(&s, 90.0));
    assert_eq!(answer.outlook, Outlook::NotEnoughData);
    assert_eq!(answer.needs_hours, Some(forecast::MIN_HISTORY_HOURS - 5));
    let full = Synthetic::growth(END_MS, 3, 95.0, 0.0);
    let answer = forecast::forecast(
        &history(&hourly(&full.points()), &full),
        question(&full, 90.0),
    );
    assert_eq!(answer.outlook, Outlook::AlreadyAbove);
}

#[test]
fn predict_linear_is_fooled_where_this_forecast_is_not() {
    let s = realistic();
    let truth = s.true_crossing_ms(85.0, 90.0).unwrap();
    let points = s.points();
    let ours = forecast::forecast(&history(&hourly(&points), &s), question(&s, 85.0))
        .date_ms
        .unwrap();
    let peer = forecast::predict_linear_crossing(&points, DAY_MS, question(&s, 85.0));
    let error = |at: Option<i64>| at.map_or(f64::INFINITY, |at| (at - truth).abs() as f64);
    assert!(
        error(Some(ours)) < error(peer),
        "ours {ours}, peer {peer:?}, truth {truth}"
    );
}
