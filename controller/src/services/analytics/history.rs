//! What a capacity forecast reads of a series: every hour of the recent tail, and one summary
//! per UTC day before it. The forecast fits daily peaks over long windows and hourly detail
//! only over the last days, so 90 days arrive as ~300 rows instead of 2160 — the database
//! groups the older hours, which is what makes a fleet-wide forecast fast. Both stores
//! group the same way; [`History::from_hours`] groups in Rust exactly as they do.

use super::forecast::HOUR_MS;
use super::trend::{Point, DAY_MS};

/// Whole UTC days of hourly detail before today: enough for the one-day window at the
/// holdout's cut (at most a week back) and for step changes at hourly precision.
pub const HOURLY_TAIL_DAYS: i64 = 9;
/// A day with fewer hourly buckets than this is incomplete: its peak may be yet to come.
pub const FULL_DAY_HOURS: u32 = 12;

/// One hour of a series: its mean and its peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HourBucket {
    pub ts_ms: i64,
    pub avg: f64,
    pub max: f64,
}

/// One UTC day of a series: its peak, the mean of its hourly means, and how many hours it
/// has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DayBucket {
    /// Days since the Unix epoch.
    pub day: i64,
    pub peak: f64,
    pub mean: f64,
    pub hours: u32,
}

impl DayBucket {
    pub fn start_ms(&self) -> i64 {
        self.day * DAY_MS
    }

    /// The day's middle, in days since the epoch: where its peak is placed.
    pub fn x(&self) -> f64 {
        self.day as f64 + 0.5
    }

    pub fn is_full(&self) -> bool {
        self.hours >= FULL_DAY_HOURS
    }
}

/// Where the hourly tail starts for a forecast made at `now_ms`: midnight UTC,
/// [`HOURLY_TAIL_DAYS`] days before today.
pub fn tail_start_ms(now_ms: i64) -> i64 {
    (now_ms.div_euclid(DAY_MS) - HOURLY_TAIL_DAYS) * DAY_MS
}

/// A series' history: day summaries before `tail_start_ms`, hours from it; both oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub days: Vec<DayBucket>,
    pub hours: Vec<HourBucket>,
}

impl History {
    /// From hourly buckets alone, grouped before the tail as the stores group them.
    pub fn from_hours(buckets: &[HourBucket], now_ms: i64) -> Self {
        let tail = tail_start_ms(now_ms);
        let (old, recent): (Vec<HourBucket>, Vec<HourBucket>) =
            buckets.iter().partition(|b| b.ts_ms < tail);
        Self {
            days: group_days(&old),
            hours: recent,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.hours.is_empty()
    }

    /// The start of the first bucket, and of the last.
    pub fn first_ms(&self) -> Option<i64> {
        self.days
            .first()
            .map(DayBucket::start_ms)
            .or_else(|| self.hours.first().map(|h| h.ts_ms))
    }

    pub fn last_ms(&self) -> Option<i64> {
        self.hours
            .last()
            .map(|h| h.ts_ms)
            .or_else(|| self.days.last().map(DayBucket::start_ms))
    }

    /// The latest level: the newest hour's mean (the newest day's when no hour is recent).
    pub fn current(&self) -> Option<f64> {
        self.hours
            .last()
            .map(|h| h.avg)
            .or_else(|| self.days.last().map(|d| d.mean))
    }

    /// Only what starts at or after `from_ms`.
    pub fn since(&self, from_ms: i64) -> Self {
        Self {
            days: self
                .days
                .iter()
                .filter(|d| d.start_ms() >= from_ms)
                .copied()
                .collect(),
            hours: self
                .hours
                .iter()
                .filter(|h| h.ts_ms >= from_ms)
                .copied()
                .collect(),
        }
    }

    /// The hours in `(from_ms, until_ms]`.
    pub fn hours_in(&self, from_ms: i64, until_ms: i64) -> Vec<HourBucket> {
        self.hours
            .iter()
            .filter(|h| h.ts_ms > from_ms && h.ts_ms <= until_ms)
            .copied()
            .collect()
    }

    /// The full days in `(from_ms, until_ms]`: the tail's days grouped from their hours in
    /// the range, and each summarized day at least half inside it.
    pub fn days_in(&self, from_ms: i64, until_ms: i64) -> Vec<DayBucket> {
        let summarized = self.days.iter().filter(|d| {
            d.start_ms() + DAY_MS / 2 >= from_ms && d.start_ms() + DAY_MS / 2 <= until_ms
        });
        summarized
            .copied()
            .chain(group_days(&self.hours_in(from_ms, until_ms)))
            .filter(DayBucket::is_full)
            .collect()
    }

    /// Every day's mean, oldest first, the tail's days grouped from its hours (a day's point
    /// at its start).
    pub fn daily_means(&self) -> Vec<Point> {
        self.days
            .iter()
            .copied()
            .chain(group_days(&self.hours))
            .filter(DayBucket::is_full)
            .map(|d| Point {
                ts_ms: d.start_ms(),
                value: d.mean,
            })
            .collect()
    }

    /// The tail's hourly means, oldest first.
    pub fn hourly_means(&self) -> Vec<Point> {
        self.hours
            .iter()
            .map(|h| Point {
                ts_ms: h.ts_ms,
                value: h.avg,
            })
            .collect()
    }

    /// Hours from the first bucket to the last, both counted.
    pub fn span_hours(&self) -> i64 {
        match (self.first_ms(), self.last_ms()) {
            (Some(first), Some(last)) => (last - first) / HOUR_MS + 1,
            _ => 0,
        }
    }
}

/// Hourly buckets grouped per UTC day, as the stores group them: the peak of the peaks, the
/// mean of the means (summed oldest first), the count.
pub fn group_days(buckets: &[HourBucket]) -> Vec<DayBucket> {
    let mut days: Vec<(DayBucket, f64)> = Vec::new();
    for b in buckets {
        let day = b.ts_ms.div_euclid(DAY_MS);
        match days.last_mut() {
            Some((d, sum)) if d.day == day => {
                d.peak = d.peak.max(b.max);
                d.hours += 1;
                *sum += b.avg;
            }
            _ => days.push((
                DayBucket {
                    day,
                    peak: b.max,
                    mean: 0.0,
                    hours: 1,
                },
                b.avg,
            )),
        }
    }
    days.into_iter()
        .map(|(mut d, sum)| {
            d.mean = sum / f64::from(d.hours);
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(ts_ms: i64, avg: f64, max: f64) -> HourBucket {
        HourBucket { ts_ms, avg, max }
    }

    #[test]
    fn old_hours_become_days_and_recent_ones_stay() {
        let now = 100 * DAY_MS + 5 * HOUR_MS;
        let buckets: Vec<HourBucket> = (0..30 * 24)
            .map(|h| {
                let ts = 70 * DAY_MS + h * HOUR_MS;
                hour(ts, h as f64, h as f64 + 1.0)
            })
            .collect();
        let history = History::from_hours(&buckets, now);
        assert_eq!(tail_start_ms(now), 91 * DAY_MS);
        assert_eq!(history.days.len(), 21);
        assert_eq!(history.hours.len(), 9 * 24);
        let first = history.days[0];
        assert_eq!((first.day, first.hours, first.peak), (70, 24, 24.0));
        assert!((first.mean - 11.5).abs() < 1e-12);
        assert_eq!(history.span_hours(), 30 * 24);
        assert_eq!(history.current(), Some((30 * 24 - 1) as f64));

        // A day counts in a range when at least half of it is inside.
        let days = history.days_in(75 * DAY_MS + 6 * HOUR_MS, 93 * DAY_MS);
        assert_eq!(days.first().map(|d| d.day), Some(75));
        assert_eq!(days.last().map(|d| d.day), Some(92));
        assert_eq!(days.len(), 18);
        assert_eq!(history.daily_means().len(), 30);
    }

    #[test]
    fn partial_days_are_kept_but_not_counted_as_days() {
        let buckets: Vec<HourBucket> = (0..30).map(|h| hour(h * HOUR_MS, 1.0, 2.0)).collect();
        let history = History::from_hours(&buckets, 40 * DAY_MS);
        assert_eq!(history.days.len(), 2);
        assert_eq!(history.days[1].hours, 6);
        assert_eq!(history.daily_means().len(), 1);
        assert!(history.since(DAY_MS).days.len() == 1 && history.since(DAY_MS).hours.is_empty());
    }
}
