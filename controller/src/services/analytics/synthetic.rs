//! Series with a known truth, for proving the analyses right: linear growth, a daily and a
//! weekly cycle, noise, a cleanup that drops the level, and outliers. One value per hour, as
//! the 1-hour rollup holds them.

use rand::{Rng, SeedableRng};

use super::trend::Point;

const HOUR_MS: i64 = 3_600_000;

#[derive(Clone, Debug)]
pub struct Synthetic {
    /// The first hour, aligned to an hour.
    pub start_ms: i64,
    pub hours: usize,
    pub base: f64,
    pub slope_per_day: f64,
    /// Peak-to-centre of the daily cycle (highest at 06:00 UTC).
    pub daily_amplitude: f64,
    /// Peak-to-centre of the weekly cycle.
    pub weekly_amplitude: f64,
    pub noise_sd: f64,
    /// At this hour the level drops by this much (a cleanup), for good.
    pub cleanup: Option<(usize, f64)>,
    /// These hours read this much above the signal.
    pub outliers: Vec<(usize, f64)>,
    pub seed: u64,
}

impl Synthetic {
    /// A disk filling at `slope_per_day` points a day from `base`, over `days` days ending at
    /// `end_ms`, with no cycle, noise, cleanup or outlier (add them with struct update).
    pub fn growth(end_ms: i64, days: usize, base: f64, slope_per_day: f64) -> Self {
        let hours = days * 24;
        Self {
            start_ms: (end_ms / HOUR_MS - hours as i64) * HOUR_MS,
            hours,
            base,
            slope_per_day,
            daily_amplitude: 0.0,
            weekly_amplitude: 0.0,
            noise_sd: 0.0,
            cleanup: None,
            outliers: Vec::new(),
            seed: 1,
        }
    }

    /// A disk at 40% growing half a point a day for 90 days, with a daily and a weekly
    /// cycle, noise, a cleanup 20 days before the end that freed 15 points, and four
    /// outliers: everything that fools a line at once.
    pub fn everything(end_ms: i64) -> Self {
        Self {
            daily_amplitude: 2.0,
            weekly_amplitude: 1.5,
            noise_sd: 0.6,
            cleanup: Some((70 * 24, 15.0)),
            outliers: vec![(1000, 25.0), (1500, -20.0), (1900, 30.0), (2050, 18.0)],
            seed: 7,
            ..Self::growth(end_ms, 90, 40.0, 0.5)
        }
    }

    /// The noise-free value `hour` hours after the start (fractional, and past the end too).
    pub fn signal(&self, hour: f64) -> f64 {
        use std::f64::consts::TAU;
        let mut value = self.base + self.slope_per_day * hour / 24.0;
        value += self.daily_amplitude * (TAU * hour / 24.0).sin();
        value += self.weekly_amplitude * (TAU * hour / 168.0).sin();
        if let Some((at, drop)) = self.cleanup {
            if hour >= at as f64 {
                value -= drop;
            }
        }
        value
    }

    /// One noisy value per hour.
    pub fn points(&self) -> Vec<Point> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        (0..self.hours)
            .map(|h| {
                let mut value = self.signal(h as f64) + self.noise_sd * standard_normal(&mut rng);
                if let Some((_, extra)) = self.outliers.iter().find(|(at, _)| *at == h) {
                    value += extra;
                }
                Point {
                    ts_ms: self.start_ms + h as i64 * HOUR_MS,
                    value,
                }
            })
            .collect()
    }

    /// The end of the data: where a forecast starts from.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.hours as i64 * HOUR_MS
    }

    /// When the noise-free signal first reaches `threshold` after the data ends, looking
    /// `horizon_days` ahead in steps of a minute.
    pub fn true_crossing_ms(&self, threshold: f64, horizon_days: f64) -> Option<i64> {
        let minutes = (horizon_days * 24.0 * 60.0) as usize;
        (0..=minutes)
            .map(|m| self.hours as f64 + m as f64 / 60.0)
            .find(|hour| self.signal(*hour) >= threshold)
            .map(|hour| self.start_ms + (hour * HOUR_MS as f64) as i64)
    }
}

/// Box–Muller: one standard normal draw from two uniform ones (rand's own normal lives in a
/// separate crate this test generator does not need).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
