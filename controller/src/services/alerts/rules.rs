//! Alert rules as the configuration declares them (`[alerts.rules.<name>]`): what condition
//! fires, at which severity, after how long, and until when. The built-in rules are the
//! defaults of that table, so a file tunes one by naming it (`[alerts.rules.disk_space.when]
//! above = 95`) or turns it off (`enabled = false`), and adds its own beside them.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::state::Timing;
use crate::notify::payload::Severity;

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often every rule is evaluated.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Flapping starts above this share (percent) of state changes over the last 21
    /// evaluations, and ends below `flap_low`.
    pub flap_high: f64,
    pub flap_low: f64,
    /// The rules by name; the built-in ones are here unless the configuration turns them off.
    pub rules: BTreeMap<String, Rule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            flap_high: 50.0,
            flap_low: 25.0,
            rules: builtin(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The alert's severity; for a check rule, absent means the check's own verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub for_: Duration,
    /// How long a firing alert's condition must stay clear before it resolves.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub keep_firing_for: Duration,
    /// Extra labels for routing (e.g. `team = "storage"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Required; optional here only so that a file can tune a built-in rule's other fields
    /// without restating its condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

fn yes() -> bool {
    true
}

/// What a check verdict must reach to count.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Warning,
    Critical,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A check of the device's latest round at `at_least` warning or critical. `check` is a
    /// check name, a prefix ending in `*` (`zfs.pool:*`), or `*` for any.
    Check {
        check: String,
        #[serde(default = "warning_level")]
        at_least: Level,
    },
    /// The newest sample of `series` (with these labels) above or below a value.
    Metric {
        series: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
    },
    /// The capacity forecast of `series` crosses `threshold` within `within` (or already has);
    /// evaluated once an hour, as forecasts read hourly rollups.
    Forecast {
        series: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        threshold: f64,
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        within: Duration,
    },
    /// An agent not heard from for `after`.
    AgentOffline {
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        after: Duration,
    },
    /// A connected agent whose newest metrics are older than `after`.
    MetricsStale {
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        after: Duration,
    },
    /// The latest run of a job (of `operation`, or any) failed within `within`, and none of
    /// the same operation on the same device has succeeded since.
    JobFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation: Option<String>,
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        within: Duration,
    },
    /// A backup target's newest verified backup (one a restore drill passed) is older than
    /// the target's RPO, or it has none and was declared longer ago than its RPO.
    BackupStale {},
}

fn warning_level() -> Level {
    Level::Warning
}

impl Condition {
    /// Whether an offline host's alert of this kind says nothing new (its checks and
    /// metrics are what the host last reported).
    pub fn inhibited_by_offline_host(&self) -> bool {
        !matches!(
            self,
            Self::AgentOffline { .. } | Self::JobFailed { .. } | Self::BackupStale {}
        )
    }
}

impl Rule {
    pub fn timing(&self, config: &AlertsConfig) -> Timing {
        Timing {
            for_ms: self.for_.as_millis() as i64,
            keep_firing_for_ms: self.keep_firing_for.as_millis() as i64,
            flap_high: config.flap_high,
            flap_low: config.flap_low,
        }
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        let fail = |m: &str| Err(format!("alerts.rules.{name}: {m}"));
        if self.for_ > Duration::from_secs(DAY) || self.keep_firing_for > Duration::from_secs(DAY) {
            return fail("`for` and `keep_firing_for` are at most 1d");
        }
        for (key, value) in &self.labels {
            if !is_name(key, 64) || value.is_empty() || value.len() > 128 {
                return fail("labels are name = value (names: a-z 0-9 _, values 1-128 chars)");
            }
        }
        let Some(when) = &self.when else {
            return fail("`when` is required (the condition, with its `kind`)");
        };
        match when {
            Condition::Check { check, .. } => {
                let name = check.strip_suffix('*').unwrap_or(check);
                let valid = name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
                if check.is_empty() || check.len() > 128 || !valid {
                    return fail("`check` is a check name, a prefix ending in *, or *");
                }
            }
            Condition::Metric {
                series,
                above,
                below,
                ..
            } => {
                check_series(series).or_else(|m| fail(&m))?;
                let finite = |v: &Option<f64>| v.is_none_or(f64::is_finite);
                if above.is_some() == below.is_some() || !finite(above) || !finite(below) {
                    return fail("a metric rule has exactly one of `above` and `below`, a number");
                }
            }
            Condition::Forecast {
                series,
                threshold,
                within,
                ..
            } => {
                check_series(series).or_else(|m| fail(&m))?;
                if !threshold.is_finite() {
                    return fail("`threshold` is a number");
                }
                if within.is_zero() || *within > Duration::from_secs(730 * DAY) {
                    return fail("`within` is more than 0 and at most 730d");
                }
            }
            Condition::AgentOffline { after } | Condition::MetricsStale { after } => {
                if *after < Duration::from_secs(10) {
                    return fail("`after` is at least 10s");
                }
            }
            Condition::JobFailed { operation, within } => {
                if operation.as_deref().is_some_and(|o| !is_name(o, 64)) {
                    return fail("`operation` is an operation ID such as deploy_change");
                }
                if within.is_zero() || *within > Duration::from_secs(30 * DAY) {
                    return fail("`within` is more than 0 and at most 30d");
                }
            }
            Condition::BackupStale {} => {}
        }
        Ok(())
    }
}

fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_series(series: &str) -> Result<(), String> {
    let valid = series
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._".contains(c));
    if series.is_empty() || series.len() > 128 || !valid {
        return Err(format!(
            "`series` {series:?} is a metric name such as disk.used_percent"
        ));
    }
    Ok(())
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(600) {
            return Err("alerts.interval must be between 1s and 10m".into());
        }
        let percent = 0.0..=100.0;
        if !percent.contains(&self.flap_low)
            || !percent.contains(&self.flap_high)
            || self.flap_low >= self.flap_high
        {
            return Err("alerts: 0 <= flap_low < flap_high <= 100".into());
        }
        for (name, rule) in &self.rules {
            if !is_name(name, 64) {
                return Err(format!(
                    "alerts.rules.{name}: a rule name is 1-64 characters of a-z 0-9 _"
                ));
            }
            rule.validate(name)?;
        }
        Ok(())
    }

    /// The rules that are on, by name, with their conditions.
    pub fn enabled(&self) -> impl Iterator<Item = (&str, &Rule, &Condition)> {
        self.rules
            .iter()
            .filter_map(|(name, rule)| match &rule.when {
                Some(when) if rule.enabled => Some((name.as_str(), rule, when)),
                _ => None,
            })
    }
}

fn rule(severity: Option<Severity>, for_minutes: u64, when: Condition) -> Rule {
    Rule {
        enabled: true,
        severity,
        for_: Duration::from_secs(for_minutes * MINUTE),
        keep_firing_for: Duration::ZERO,
        labels: BTreeMap::new(),
        when: Some(when),
    }
}

fn check(name: &str) -> Condition {
    Condition::Check {
        check: name.into(),
        at_least: Level::Warning,
    }
}

fn above(series: &str, value: f64) -> Condition {
    Condition::Metric {
        series: series.into(),
        labels: BTreeMap::new(),
        above: Some(value),
        below: None,
    }
}

/// The rules every installation starts with.
pub fn builtin() -> BTreeMap<String, Rule> {
    use Severity::{Critical, Warning};
    let mut rules = BTreeMap::new();
    let mut add = |name: &str, rule: Rule| rules.insert(name.to_string(), rule);
    add(
        "disk_space",
        rule(Some(Warning), 10, above("disk.used_percent", 90.0)),
    );
    add(
        "pool_capacity",
        // ZFS slows down well before it is full.
        rule(Some(Warning), 10, above("zfs.pool.capacity_percent", 80.0)),
    );
    add(
        "disk_full_soon",
        rule(
            Some(Warning),
            0,
            Condition::Forecast {
                series: "disk.used_percent".into(),
                labels: BTreeMap::new(),
                threshold: 100.0,
                within: Duration::from_secs(7 * DAY),
            },
        ),
    );
    add("failed_units", rule(None, 0, check("systemd.units")));
    add(
        "unhealthy_containers",
        rule(None, 0, check("docker.containers")),
    );
    add("degraded_pools", rule(None, 0, check("zfs.pool:*")));
    let mut offline = rule(
        Some(Critical),
        0,
        Condition::AgentOffline {
            after: Duration::from_secs(2 * MINUTE),
        },
    );
    // A reconnect after a blip is not a recovery worth a message of its own.
    offline.keep_firing_for = Duration::from_secs(MINUTE);
    add("agent_offline", offline);
    add(
        "metrics_stale",
        rule(
            Some(Warning),
            0,
            Condition::MetricsStale {
                after: Duration::from_secs(10 * MINUTE),
            },
        ),
    );
    add(
        "backup_stale",
        rule(Some(Warning), 0, Condition::BackupStale {}),
    );
    add(
        "job_failed",
        rule(
            Some(Warning),
            0,
            Condition::JobFailed {
                operation: None,
                within: Duration::from_secs(3600),
            },
        ),
    );
    rules
}

/// Whether check `name` is one `pattern` selects.
pub fn check_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_are_valid_and_a_file_tunes_them_by_name() {
        let config = AlertsConfig::default();
        config.validate().unwrap();
        assert!(config.rules.contains_key("agent_offline"));
        let tuned: AlertsConfig = toml::from_str(
            "[rules.disk_space]\nenabled = false\nwhen = { kind = \"metric\", series = \
             \"disk.used_percent\", above = 95 }\n[rules.api_down]\nseverity = \"critical\"\n\
             for = \"2m\"\nwhen = { kind = \"check\", check = \"docker.containers\", at_least \
             = \"critical\" }\n",
        )
        .unwrap();
        tuned.validate().unwrap();
        let partial: AlertsConfig =
            toml::from_str("[rules.disk_space]\nenabled = false\n").unwrap();
        assert!(partial
            .validate()
            .unwrap_err()
            .contains("`when` is required"));
        assert_eq!(tuned.rules["api_down"].for_, Duration::from_secs(120));
        let both = toml::from_str::<AlertsConfig>(
            "[rules.x]\nwhen = { kind = \"metric\", series = \"a\", above = 1, below = 2 }\n",
        )
        .unwrap();
        let error = both.validate().unwrap_err();
        assert!(error.contains("exactly one of"), "{error}");
        assert!(toml::from_str::<AlertsConfig>(
            "[rules.x]\nwhen = { kind = \"check\", check = \"a\", bogus = 1 }\n"
        )
        .is_err());
    }

    #[test]
    fn check_patterns_select_by_name_or_prefix() {
        assert!(check_matches("zfs.pool:*", "zfs.pool:tank"));
        assert!(!check_matches("zfs.pool:*", "zfs.pools"));
        assert!(check_matches("*", "anything"));
        assert!(check_matches("systemd.units", "systemd.units"));
        assert!(!check_matches("systemd.units", "systemd.units2"));
    }
}
