//! The statistics the analyses are built from: quantiles, robust location and scale, least
//! squares with a significance test that allows for autocorrelated samples, and the
//! Theil–Sen slope with its rank-based confidence interval.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// The MAD of normal data times this is its standard deviation.
pub const MAD_TO_SD: f64 = 1.4826;

/// The `q` quantile of sorted values, interpolated linearly between order statistics (the
/// definition of PostgreSQL's `percentile_cont` and R's type 7). `None` for no values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q.clamp(0.0, 1.0) * last as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    values
}

pub fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> Option<f64> {
    quantile_sorted(&sorted(values), q)
}

pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    quantile(values, 0.5)
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Median absolute deviation around `center`, scaled to a standard deviation.
pub fn robust_sd(values: &[f64], center: f64) -> Option<f64> {
    median(values.iter().map(|v| (v - center).abs())).map(|mad| mad * MAD_TO_SD)
}

/// An ordinary least-squares line `y = intercept + slope·x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    /// Share of the variance the line explains, 0..1 (0 for a constant series).
    pub r2: f64,
    pub n: usize,
    /// Samples that count as independent, given the residuals' lag-1 autocorrelation.
    pub effective_n: f64,
    /// Two-sided p-value of "the slope is zero", on `effective_n` samples.
    pub p_value: f64,
}

impl LinearFit {
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// The moments an OLS fit needs; PostgreSQL's `regr_*` aggregates compute the same sums.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub sx: f64,
    pub sy: f64,
    pub sxx: f64,
    pub syy: f64,
    pub sxy: f64,
}

impl Moments {
    pub fn of(xs: &[f64], ys: &[f64]) -> Self {
        let mut m = Self::default();
        for (&x, &y) in xs.iter().zip(ys) {
            m.n += 1.0;
            m.sx += x;
            m.sy += y;
        }
        if m.n == 0.0 {
            return m;
        }
        // Centred sums: no catastrophic cancellation with x in Unix milliseconds.
        let (mx, my) = (m.sx / m.n, m.sy / m.n);
        for (&x, &y) in xs.iter().zip(ys) {
            m.sxx += (x - mx) * (x - mx);
            m.syy += (y - my) * (y - my);
            m.sxy += (x - mx) * (y - my);
        }
        m
    }

    /// (slope, intercept, r²), or `None` with fewer than two distinct x.
    pub fn line(&self) -> Option<(f64, f64, f64)> {
        if self.n < 2.0 || self.sxx <= 0.0 {
            return None;
        }
        let slope = self.sxy / self.sxx;
        let intercept = (self.sy - slope * self.sx) / self.n;
        let r2 = if self.syy > 0.0 {
            (self.sxy * self.sxy / (self.sxx * self.syy)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some((slope, intercept, r2))
    }
}

/// Least squares of `ys` on `xs`, its slope tested against zero. Neighbouring samples of a
/// metric are correlated, which makes a naive test see trends in noise; the test uses the
/// effective sample size `n·(1−ρ)/(1+ρ)` for the residuals' lag-1 autocorrelation `ρ`.
pub fn least_squares(xs: &[f64], ys: &[f64]) -> Option<LinearFit> {
    least_squares_from(&Moments::of(xs, ys), xs, ys)
}

/// [`least_squares`] from moments computed elsewhere (by the database), with the samples
/// for the residual tests.
pub fn least_squares_from(moments: &Moments, xs: &[f64], ys: &[f64]) -> Option<LinearFit> {
    let (slope, intercept, r2) = moments.line()?;
    let residuals: Vec<f64> = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| y - (intercept + slope * x))
        .collect();
    let n = residuals.len();
    let rho = lag1_autocorrelation(&residuals).clamp(0.0, 0.99);
    let effective_n = (n as f64 * (1.0 - rho) / (1.0 + rho))
        .max(2.0)
        .min(n as f64);
    let rss: f64 = residuals.iter().map(|r| r * r).sum();
    let p_value = if effective_n > 2.0 && moments.sxx > 0.0 {
        let sigma2 = rss / (n as f64 - 2.0).max(1.0);
        // The slope's variance with n samples, widened to effective_n.
        let se = (sigma2 / moments.sxx * n as f64 / effective_n).sqrt();
        if se > 0.0 {
            let t = (slope / se).abs();
            students_t_two_sided(t, effective_n - 2.0)
        } else if slope != 0.0 {
            0.0
        } else {
            1.0
        }
    } else {
        1.0
    };
    Some(LinearFit {
        slope,
        intercept,
        r2,
        n,
        effective_n,
        p_value,
    })
}

fn lag1_autocorrelation(residuals: &[f64]) -> f64 {
    let Some(m) = mean(residuals) else { return 0.0 };
    let denominator: f64 = residuals.iter().map(|r| (r - m) * (r - m)).sum();
    if denominator <= 0.0 {
        return 0.0;
    }
    let numerator: f64 = residuals.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum();
    numerator / denominator
}

fn students_t_two_sided(t: f64, freedom: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, freedom.max(1.0)) {
        Ok(dist) => (2.0 * (1.0 - dist.cdf(t))).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// The standard normal quantile (e.g. 1.96 for 0.975).
pub fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p.clamp(1e-9, 1.0 - 1e-9))
}

/// A Theil–Sen line: the median of the pairwise slopes, robust to a large share of outliers,
/// with the slope's confidence interval from Kendall's rank statistic (Sen, 1968).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustFit {
    pub slope: f64,
    pub intercept: f64,
    pub slope_low: f64,
    pub slope_high: f64,
    /// Robust scale of the residuals (MAD as a standard deviation).
    pub residual_sd: f64,
    pub n: usize,
}

impl RobustFit {
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Theil–Sen over `(x, y)` with a `confidence` (e.g. 0.9) interval on the slope; quadratic
/// in the number of points, so callers fit daily or hourly summaries, not raw samples.
pub fn theil_sen(xs: &[f64], ys: &[f64], confidence: f64) -> Option<RobustFit> {
    let n = xs.len().min(ys.len());
    if n < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = xs[j] - xs[i];
            if dx != 0.0 {
                slopes.push((ys[j] - ys[i]) / dx);
            }
        }
    }
    slopes.sort_by(f64::total_cmp);
    let slope = quantile_sorted(&slopes, 0.5)?;
    let intercept = median(xs.iter().zip(ys).map(|(x, y)| y - slope * x))?;
    let pairs = slopes.len() as f64;
    let nf = n as f64;
    let z = normal_quantile(0.5 + confidence / 2.0);
    let c = z * (nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0).sqrt();
    let rank = |r: f64| slopes[(r.round().max(0.0) as usize).min(slopes.len() - 1)];
    let residuals: Vec<f64> = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| y - (intercept + slope * x))
        .collect();
    Some(RobustFit {
        slope,
        intercept,
        slope_low: rank((pairs - c) / 2.0 - 1.0),
        slope_high: rank((pairs + c) / 2.0),
        residual_sd: robust_sd(&residuals, 0.0).unwrap_or(0.0),
        n,
    })
}

/// Theil's own estimator (1950): the median slope of the pairs half the series apart, with
/// the median intercept. As robust as [`theil_sen`] for a trend, in O(n log n) rather than
/// O(n²), for long series where no interval is needed.
pub fn theil_halves(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len().min(ys.len());
    let half = n / 2;
    if half < 2 {
        return None;
    }
    let slopes = (0..half).filter_map(|i| {
        let dx = xs[i + half] - xs[i];
        (dx != 0.0).then(|| (ys[i + half] - ys[i]) / dx)
    });
    let slope = median(slopes)?;
    let intercept = median(xs.iter().zip(ys).map(|(x, y)| y - slope * x))?;
    Some((slope, intercept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_percentile_cont() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(values, 0.5), Some(2.5));
        assert!((quantile(values, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(quantile([], 0.5), None);
        assert_eq!(median([5.0]), Some(5.0));
    }

    #[test]
    fn least_squares_finds_the_line_and_tests_its_slope() {
        let xs: Vec<f64> = (0..100).map(f64::from).collect();
        let ys: Vec<f64> = xs.iter().map(|x| 3.0 + 0.5 * x).collect();
        let fit = least_squares(&xs, &ys).unwrap();
        assert!((fit.slope - 0.5).abs() < 1e-12 && (fit.intercept - 3.0).abs() < 1e-9);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        assert!(fit.p_value < 1e-6);
        // Alternating noise around a constant: no trend.
        let flat: Vec<f64> = xs
            .iter()
            .map(|x| if *x as i64 % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let fit = least_squares(&xs, &flat).unwrap();
        assert!(fit.p_value > 0.5, "{fit:?}");
        assert!(least_squares(&[1.0], &[1.0]).is_none());
    }

    #[test]
    fn theil_sen_ignores_outliers_and_brackets_its_slope() {
        let xs: Vec<f64> = (0..60).map(f64::from).collect();
        let mut ys: Vec<f64> = xs
            .iter()
            .map(|x| 10.0 + 2.0 * x + (x * 1.7).sin())
            .collect();
        ys[10] = 500.0;
        ys[40] = -300.0;
        let fit = theil_sen(&xs, &ys, 0.9).unwrap();
        assert!((fit.slope - 2.0).abs() < 0.05, "{fit:?}");
        assert!(
            fit.slope_low <= fit.slope && fit.slope <= fit.slope_high,
            "{fit:?}"
        );
        assert!(fit.slope_low > 1.9 && fit.slope_high < 2.1, "{fit:?}");
        let ols = least_squares(&xs, &ys).unwrap();
        assert!((ols.slope - 2.0).abs() > (fit.slope - 2.0).abs());
        let (halves, _) = theil_halves(&xs, &ys).unwrap();
        assert!((halves - 2.0).abs() < 0.05, "{halves}");
    }
}
