//! Silences and maintenance windows: what they cover (devices, or label matchers), when (from
//! a start to the expiry, or recurring daily or weekly at a local time in a named time zone,
//! for a duration, until the expiry), who made them and why. The expiry is mandatory and at
//! most [`MAX_LIFETIME`] away, so nothing stays silenced because someone forgot.
//!
//! While one covers an alert, the alert still evaluates, but nothing is sent; once none does,
//! what still fires is sent, with its problem's start.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::notify::routing::Matcher;

/// The furthest a silence's expiry may be.
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// A silence expiring sooner than this is flagged in views.
pub const EXPIRING_SOON: Duration = Duration::from_secs(24 * 3600);
/// The longest one occurrence of a recurring window may last.
const MAX_OCCURRENCE: Duration = Duration::from_secs(7 * 86_400);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// These devices (IDs), every alert of theirs.
    Devices { devices: Vec<String> },
    /// Alerts whose labels (`device`, `alert`, `subject`, `severity` and the rule's own)
    /// all match.
    Matchers { matchers: Vec<Matcher> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    Day,
    Week,
}

/// A window that recurs at a local time in a time zone, through daylight-saving changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    pub every: Every,
    /// Local start time, `HH:MM`.
    pub at: String,
    /// For weekly windows: the days (`monday` … `sunday`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// How long each occurrence lasts, e.g. `2h`.
    pub duration: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Self::Monday => Weekday::Monday,
            Self::Tuesday => Weekday::Tuesday,
            Self::Wednesday => Weekday::Wednesday,
            Self::Thursday => Weekday::Thursday,
            Self::Friday => Weekday::Friday,
            Self::Saturday => Weekday::Saturday,
            Self::Sunday => Weekday::Sunday,
        }
    }
}

/// When a silence holds, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// From `starts_at_ms` to the expiry.
    Once {
        starts_at_ms: i64,
    },
    Recurring(Recurrence),
}

/// A recurrence checked once: its zone, start time and duration.
pub struct Occurrences {
    zone: TimeZone,
    at: Time,
    days: Vec<Weekday>,
    duration_ms: i64,
}

impl Recurrence {
    /// The recurrence ready to ask, or what is wrong with it.
    pub fn compile(&self) -> Result<Occurrences, String> {
        let zone = TimeZone::get(&self.timezone).map_err(|_| {
            format!(
                "unknown time zone {:?} (an IANA name such as Europe/Berlin or UTC)",
                self.timezone
            )
        })?;
        let at = Time::strptime("%H:%M", &self.at)
            .map_err(|_| format!("`at` is a local time HH:MM (got {:?})", self.at))?;
        let duration = humantime::parse_duration(&self.duration)
            .map_err(|e| format!("invalid duration {:?}: {e}", self.duration))?;
        if duration.is_zero() || duration > MAX_OCCURRENCE {
            return Err("a window's duration is more than 0 and at most 7d".into());
        }
        let days = match self.every {
            Every::Day if self.days.is_empty() => Vec::new(),
            Every::Day => return Err("`days` is for weekly windows".into()),
            Every::Week if self.days.is_empty() => {
                return Err("a weekly window names its `days`".into())
            }
            Every::Week => self.days.iter().map(|d| d.weekday()).collect(),
        };
        Ok(Occurrences {
            zone,
            at,
            days,
            duration_ms: duration.as_millis() as i64,
        })
    }
}

impl Occurrences {
    /// The occurrences' starts around `now_ms`: from eight days before to eight after.
    fn starts_around(&self, now_ms: i64) -> Vec<i64> {
        let Ok(now) = Timestamp::from_millisecond(now_ms) else {
            return Vec::new();
        };
        let today = now.to_zoned_datetime(self.zone.clone()).date();
        (-8..=8)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter(|date| self.days.is_empty() || self.days.contains(&date.weekday()))
            // A local time skipped by a DST change starts the window at the next valid one.
            .filter_map(|date| {
                date.to_datetime(self.at)
                    .to_zoned_datetime(self.zone.clone())
                    .ok()
            })
            .map(|zoned| zoned.timestamp().as_millisecond())
            .collect()
    }

    /// Whether an occurrence covers `now_ms`.
    pub fn covers(&self, now_ms: i64) -> bool {
        self.starts_around(now_ms)
            .iter()
            .any(|start| *start <= now_ms && now_ms < start + self.duration_ms)
    }

    /// The next occurrence's start after `now_ms` (within eight days).
    pub fn next_start(&self, now_ms: i64) -> Option<i64> {
        self.starts_around(now_ms)
            .into_iter()
            .find(|start| *start > now_ms)
    }
}

/// A silence as the evaluator asks it.
pub struct Live {
    pub id: String,
    pub scope: Scope,
    pub schedule: Schedule,
    pub expires_at_ms: i64,
    occurrences: Option<Occurrences>,
}

impl Live {
    pub fn new(id: String, scope: Scope, schedule: Schedule, expires_at_ms: i64) -> Self {
        let occurrences = match &schedule {
            Schedule::Recurring(recurrence) => recurrence.compile().ok(),
            Schedule::Once { .. } => None,
        };
        Self {
            id,
            scope,
            schedule,
            expires_at_ms,
            occurrences,
        }
    }

    /// Whether it holds at `now_ms` (ignoring what it covers).
    pub fn holds(&self, now_ms: i64) -> bool {
        if now_ms >= self.expires_at_ms {
            return false;
        }
        match (&self.schedule, &self.occurrences) {
            (Schedule::Once { starts_at_ms }, _) => *starts_at_ms <= now_ms,
            (Schedule::Recurring(_), Some(occurrences)) => occurrences.covers(now_ms),
            (Schedule::Recurring(_), None) => false,
        }
    }

    /// The next time it starts holding, if it does not now.
    pub fn next_start(&self, now_ms: i64) -> Option<i64> {
        let next = match (&self.schedule, &self.occurrences) {
            (Schedule::Once { starts_at_ms }, _) => Some(*starts_at_ms).filter(|s| *s > now_ms),
            (Schedule::Recurring(_), Some(occurrences)) => occurrences.next_start(now_ms),
            (Schedule::Recurring(_), None) => None,
        };
        next.filter(|start| *start < self.expires_at_ms)
    }

    /// Whether it covers an alert of `device_id` with `labels`.
    pub fn covers(&self, device_id: &str, labels: &BTreeMap<String, String>) -> bool {
        match &self.scope {
            Scope::Devices { devices } => devices.iter().any(|d| d == device_id),
            Scope::Matchers { matchers } => matchers.iter().all(|m| m.holds(labels)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn nightly(zone: &str) -> Live {
        let recurrence = Recurrence {
            every: Every::Day,
            at: "02:00".into(),
            days: Vec::new(),
            duration: "2h".into(),
            timezone: zone.into(),
        };
        Live::new(
            "s".into(),
            Scope::Devices {
                devices: vec!["d1".into()],
            },
            Schedule::Recurring(recurrence),
            ms("2027-06-01T00:00:00Z"),
        )
    }

    #[test]
    fn a_nightly_window_recurs_at_local_time_across_daylight_saving() {
        let window = nightly("Europe/Berlin");
        // Winter: 02:00 in Berlin is 01:00 UTC.
        assert!(window.holds(ms("2027-01-10T01:30:00Z")));
        assert!(!window.holds(ms("2027-01-10T03:30:00Z")));
        // Every night, not once (the complaint about windows that only work once).
        assert!(window.holds(ms("2027-01-11T01:30:00Z")));
        // Summer: 02:00 is 00:00 UTC.
        assert!(window.holds(ms("2027-04-10T00:30:00Z")));
        assert!(!window.holds(ms("2027-04-10T02:30:00Z")));
        // 31 March 2027 is a Wednesday after the change (28 March); the night of the change
        // itself starts at 03:00 local, 02:00 not existing.
        assert!(window.holds(ms("2027-03-28T01:30:00Z")));
        assert_eq!(
            window.next_start(ms("2027-01-10T12:00:00Z")),
            Some(ms("2027-01-11T01:00:00Z"))
        );
        // Past its expiry, nothing.
        assert!(!window.holds(ms("2027-06-01T00:30:00Z")));
    }

    #[test]
    fn weekly_windows_hold_on_their_days_only_and_bad_ones_say_why() {
        let recurrence = Recurrence {
            every: Every::Week,
            at: "22:00".into(),
            days: vec![Day::Saturday],
            duration: "4h".into(),
            timezone: "UTC".into(),
        };
        let window = Live::new(
            "w".into(),
            Scope::Matchers {
                matchers: vec![Matcher {
                    label: "alert".into(),
                    value: "disk_space".into(),
                    not: false,
                }],
            },
            Schedule::Recurring(recurrence.clone()),
            ms("2027-12-31T00:00:00Z"),
        );
        // 2027-01-09 is a Saturday; the window runs past midnight into Sunday.
        assert!(window.holds(ms("2027-01-09T23:00:00Z")));
        assert!(window.holds(ms("2027-01-10T01:59:00Z")));
        assert!(!window.holds(ms("2027-01-10T22:30:00Z")), "not on Sundays");
        let labels = BTreeMap::from([("alert".to_string(), "disk_space".to_string())]);
        assert!(window.covers("any", &labels));
        assert!(!window.covers("any", &BTreeMap::new()));
        let bad = |edit: fn(&mut Recurrence)| {
            let mut r = recurrence.clone();
            edit(&mut r);
            r.compile().err().unwrap_or_default()
        };
        assert!(bad(|r| r.timezone = "Mars/Olympus".into()).contains("unknown time zone"));
        assert!(bad(|r| r.at = "25:00".into()).contains("HH:MM"));
        assert!(bad(|r| r.days.clear()).contains("names its `days`"));
        assert!(bad(|r| r.duration = "8d".into()).contains("at most 7d"));
    }

    #[test]
    fn a_one_time_silence_holds_from_its_start_to_its_expiry() {
        let silence = Live::new(
            "o".into(),
            Scope::Devices {
                devices: vec!["d1".into()],
            },
            Schedule::Once { starts_at_ms: 100 },
            200,
        );
        assert!(!silence.holds(99) && silence.holds(100) && !silence.holds(200));
        assert_eq!(silence.next_start(50), Some(100));
        assert!(silence.covers("d1", &BTreeMap::new()) && !silence.covers("d2", &BTreeMap::new()));
    }
}
