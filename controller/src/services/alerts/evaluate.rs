//! One evaluation, as a pure function of the stored alerts, what holds now, the rules and
//! the silences: each alert's next record, whether it is silenced or inhibited, and what to
//! tell people.
//!
//! What is told follows from what people were last told (`announced`) and what is true now:
//! firing, flapping, or neither. While an alert is silenced or inhibited nothing is said and
//! `announced` stays; once it is not, the difference is said — so an alert that began and
//! ended inside a maintenance window says nothing, one still firing after it says so with its
//! problem's start, and one that was announced and cleared meanwhile says it resolved.
//! Inhibition: while a host's agent is offline, its other alerts (checks and metrics it last
//! reported) are held back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules::{AlertsConfig, Condition};
use super::silences::Live;
use super::state::{Notice, Record, State, Timing};
use crate::notify::payload::{Event, Item, Severity};

/// What people were last told about an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Announced {
    Nothing,
    Firing,
    Flapping,
}

/// Why nothing is said about an alert now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// A silence or maintenance window covers it.
    Silenced,
    /// Its host's agent is offline.
    Inhibited,
}

/// A condition that holds now: one alert's worth.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub rule: String,
    pub device_id: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
}

impl Observation {
    pub fn key(&self) -> String {
        key(&self.rule, &self.device_id, &self.subject)
    }
}

pub fn key(rule: &str, device_id: &str, subject: &str) -> String {
    format!("{rule}/{device_id}/{subject}")
}

#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub key: String,
    pub rule: String,
    pub device_id: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub record: Record,
    pub announced: Announced,
    pub suppressed: Option<Suppression>,
}

impl Alert {
    /// When the problem began, while it fires.
    pub fn firing_since_ms(&self) -> Option<i64> {
        match self.record.state {
            State::Firing { since_ms } => Some(since_ms),
            State::Clearing {
                firing_since_ms, ..
            } => Some(firing_since_ms),
            State::Inactive | State::Pending { .. } => None,
        }
    }

    fn desired(&self) -> Announced {
        if self.record.flapping {
            Announced::Flapping
        } else if self.record.is_firing() {
            Announced::Firing
        } else {
            Announced::Nothing
        }
    }
}

/// What an evaluation reads besides the alerts.
pub struct Inputs<'a> {
    pub now_ms: i64,
    pub config: &'a AlertsConfig,
    /// Device ID → name, for labels and messages.
    pub device_names: &'a HashMap<String, String>,
    pub silences: &'a [Live],
}

/// One item to send, about one device's alert, with the labels routes match on.
#[derive(Clone, Debug, PartialEq)]
pub struct Told {
    pub device_id: String,
    pub item: Item,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Every alert still kept, after this evaluation.
    pub alerts: Vec<Alert>,
    /// Keys of the alerts whose stored row changed.
    pub changed: BTreeSet<String>,
    /// Keys of alerts no longer worth keeping (inactive, nothing to remember).
    pub forgotten: Vec<String>,
    pub told: Vec<Told>,
}

pub fn evaluate(stored: Vec<Alert>, observed: Vec<Observation>, inputs: &Inputs<'_>) -> Outcome {
    let mut stored: BTreeMap<String, Alert> =
        stored.into_iter().map(|a| (a.key.clone(), a)).collect();
    let mut observed: BTreeMap<String, Observation> =
        observed.into_iter().map(|o| (o.key(), o)).collect();
    let keys: BTreeSet<String> = stored.keys().chain(observed.keys()).cloned().collect();
    let condition = |rule: &str| {
        inputs
            .config
            .rules
            .get(rule)
            .filter(|r| r.enabled)
            .and_then(|r| r.when.as_ref())
    };
    let is_offline_rule =
        |rule: &str| matches!(condition(rule), Some(Condition::AgentOffline { .. }));
    // Offline rules first: their outcome decides what else is inhibited.
    let (first, rest): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|k| is_offline_rule(rule_of(k, &stored, &observed)));
    let mut outcome = Outcome::default();
    let mut offline: BTreeSet<String> = BTreeSet::new();
    for key in first.into_iter().chain(rest) {
        let previous = stored.remove(&key);
        let observation = observed.remove(&key);
        let Some(alert) = start(previous.as_ref(), observation.as_ref(), inputs) else {
            continue;
        };
        let when = condition(&alert.rule);
        let holds = observation.is_some() && when.is_some();
        let inhibited = when.is_none_or(Condition::inhibited_by_offline_host)
            && offline.contains(&alert.device_id);
        let alert = step(alert, holds, inhibited, inputs, &mut outcome.told);
        if is_offline_rule(&alert.rule) && alert.record.is_firing() {
            offline.insert(alert.device_id.clone());
        }
        let forget = alert.record.state == State::Inactive
            && alert.record.history == 0
            && !alert.record.flapping
            && alert.announced == Announced::Nothing;
        if forget {
            if previous.is_some() {
                outcome.forgotten.push(key);
            }
            continue;
        }
        if previous.as_ref() != Some(&alert) {
            outcome.changed.insert(key);
        }
        outcome.alerts.push(alert);
    }
    outcome
}

fn rule_of<'a>(
    key: &str,
    stored: &'a BTreeMap<String, Alert>,
    observed: &'a BTreeMap<String, Observation>,
) -> &'a str {
    stored
        .get(key)
        .map(|a| a.rule.as_str())
        .or_else(|| observed.get(key).map(|o| o.rule.as_str()))
        .unwrap_or_default()
}

/// The alert as this evaluation begins: the stored one with what is observed now, or a new
/// one for a condition seen for the first time; `None` when there is nothing to evaluate.
fn start(
    previous: Option<&Alert>,
    observation: Option<&Observation>,
    inputs: &Inputs<'_>,
) -> Option<Alert> {
    let mut alert = match (previous, observation) {
        (None, None) => return None,
        (Some(previous), _) => previous.clone(),
        (None, Some(o)) => Alert {
            key: o.key(),
            rule: o.rule.clone(),
            device_id: o.device_id.clone(),
            subject: o.subject.clone(),
            severity: o.severity,
            summary: o.summary.clone(),
            labels: BTreeMap::new(),
            record: Record::default(),
            announced: Announced::Nothing,
            suppressed: None,
        },
    };
    if let Some(o) = observation {
        alert.severity = o.severity;
        alert.summary = o.summary.clone();
    }
    alert.labels = labels(&alert, inputs);
    Some(alert)
}

/// `device`, `device_id`, `alert` (the rule), `subject`, `severity`, and the rule's own.
fn labels(alert: &Alert, inputs: &Inputs<'_>) -> BTreeMap<String, String> {
    let mut labels = inputs
        .config
        .rules
        .get(&alert.rule)
        .map(|r| r.labels.clone())
        .unwrap_or_default();
    let device = inputs
        .device_names
        .get(&alert.device_id)
        .cloned()
        .unwrap_or_else(|| alert.device_id.clone());
    let severity = match alert.severity {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    for (label, value) in [
        ("device", device),
        ("device_id", alert.device_id.clone()),
        ("alert", alert.rule.clone()),
        ("subject", alert.subject.clone()),
        ("severity", severity.to_string()),
    ] {
        labels.insert(label.to_string(), value);
    }
    labels
}

fn step(
    mut alert: Alert,
    holds: bool,
    host_offline: bool,
    inputs: &Inputs<'_>,
    told: &mut Vec<Told>,
) -> Alert {
    let timing = inputs
        .config
        .rules
        .get(&alert.rule)
        .map(|r| r.timing(inputs.config))
        .unwrap_or(Timing {
            flap_high: inputs.config.flap_high,
            flap_low: inputs.config.flap_low,
            ..Timing::default()
        });
    let (record, notice) = alert.record.evaluate(holds, inputs.now_ms, &timing);
    alert.record = record;
    let silenced = inputs
        .silences
        .iter()
        .any(|s| s.holds(inputs.now_ms) && s.covers(&alert.device_id, &alert.labels));
    alert.suppressed = if silenced {
        Some(Suppression::Silenced)
    } else if host_offline {
        Some(Suppression::Inhibited)
    } else {
        None
    };
    let desired = alert.desired();
    if alert.suppressed.is_none() && desired != alert.announced {
        let (event, since_ms) = match (alert.announced, desired) {
            (_, Announced::Flapping) => (Event::Flapping, inputs.now_ms),
            (Announced::Flapping, _) => (Event::Settled, inputs.now_ms),
            (_, Announced::Firing) => (
                Event::Firing,
                alert.firing_since_ms().unwrap_or(inputs.now_ms),
            ),
            (_, Announced::Nothing) => match notice {
                Some(Notice::Resolved { since_ms }) => (Event::Resolved, since_ms),
                _ => (Event::Resolved, inputs.now_ms),
            },
        };
        told.push(Told {
            device_id: alert.device_id.clone(),
            item: Item {
                alert: alert.rule.clone(),
                severity: alert.severity,
                event,
                summary: alert.summary.clone(),
                since_ms,
            },
            labels: alert.labels.clone(),
        });
        alert.announced = desired;
    }
    alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::alerts::silences::{Schedule, Scope};

    const MINUTE: i64 = 60_000;

    struct World {
        config: AlertsConfig,
        names: HashMap<String, String>,
        silences: Vec<Live>,
        alerts: Vec<Alert>,
        told: Vec<Told>,
    }

    impl World {
        fn new() -> Self {
            let mut config = AlertsConfig::default();
            for rule in config.rules.values_mut() {
                rule.for_ = std::time::Duration::ZERO;
                rule.keep_firing_for = std::time::Duration::ZERO;
            }
            Self {
                config,
                names: HashMap::from([("d1".into(), "nas".into())]),
                silences: Vec::new(),
                alerts: Vec::new(),
                told: Vec::new(),
            }
        }

        /// One evaluation at `minute` with these (rule, subject) holding on d1.
        fn at(&mut self, minute: i64, holding: &[(&str, &str)]) -> Vec<(String, Event)> {
            let observed = holding
                .iter()
                .map(|(rule, subject)| Observation {
                    rule: rule.to_string(),
                    device_id: "d1".into(),
                    subject: subject.to_string(),
                    severity: Severity::Critical,
                    summary: format!("{subject} is bad"),
                })
                .collect();
            let inputs = Inputs {
                now_ms: minute * MINUTE,
                config: &self.config,
                device_names: &self.names,
                silences: &self.silences,
            };
            let outcome = evaluate(std::mem::take(&mut self.alerts), observed, &inputs);
            self.alerts = outcome.alerts;
            self.told.extend(outcome.told.iter().cloned());
            outcome
                .told
                .into_iter()
                .map(|t| (t.item.alert, t.item.event))
                .collect()
        }
    }

    fn said(alert: &str, event: Event) -> Vec<(String, Event)> {
        vec![(alert.to_string(), event)]
    }

    #[test]
    fn a_check_fires_once_and_resolves_once_and_is_then_forgotten() {
        let mut world = World::new();
        let pool = [("degraded_pools", "zfs.pool:tank")];
        assert_eq!(world.at(0, &pool), said("degraded_pools", Event::Firing));
        assert!(world.at(1, &pool).is_empty(), "still firing is not news");
        assert_eq!(world.at(2, &[]), said("degraded_pools", Event::Resolved));
        assert!(world.at(3, &[]).is_empty());
        assert_eq!(world.told[0].labels["device"], "nas");
        assert_eq!(world.told[0].item.since_ms, 0);
        for minute in 4..30 {
            world.at(minute, &[]);
        }
        assert!(world.alerts.is_empty(), "nothing left to remember");
    }

    #[test]
    fn a_window_holds_everything_back_then_lets_through_only_what_still_fires() {
        let mut world = World::new();
        world.silences.push(Live::new(
            "m".into(),
            Scope::Devices {
                devices: vec!["d1".into()],
            },
            Schedule::Once { starts_at_ms: 0 },
            10 * MINUTE,
        ));
        // Begins and ends inside the window: never a word, no recovery notice either.
        assert!(world.at(1, &[("failed_units", "systemd.units")]).is_empty());
        assert!(world.at(2, &[]).is_empty());
        // Begins inside and outlasts it.
        assert!(world
            .at(5, &[("degraded_pools", "zfs.pool:tank")])
            .is_empty());
        assert_eq!(world.alerts[0].suppressed, Some(Suppression::Silenced));
        let after = world.at(11, &[("degraded_pools", "zfs.pool:tank")]);
        assert_eq!(after, said("degraded_pools", Event::Firing));
        assert_eq!(
            world.told[0].item.since_ms,
            5 * MINUTE,
            "the problem's start is known"
        );
    }

    #[test]
    fn an_offline_host_inhibits_its_checks_but_not_its_own_alert() {
        let mut world = World::new();
        let both = [
            ("agent_offline", ""),
            ("unhealthy_containers", "docker.containers"),
        ];
        assert_eq!(world.at(0, &both), said("agent_offline", Event::Firing));
        assert!(world.at(1, &both).is_empty());
        let inhibited = world
            .alerts
            .iter()
            .find(|a| a.rule == "unhealthy_containers")
            .unwrap();
        assert_eq!(inhibited.suppressed, Some(Suppression::Inhibited));
        // Back online, the container is still unhealthy: now it is news.
        let back = world.at(2, &[("unhealthy_containers", "docker.containers")]);
        assert_eq!(
            back,
            vec![
                ("agent_offline".to_string(), Event::Resolved),
                ("unhealthy_containers".to_string(), Event::Firing),
            ]
        );
    }

    #[test]
    fn twenty_flaps_say_flapping_once() {
        let mut world = World::new();
        let check = [("failed_units", "systemd.units")];
        let mut events = Vec::new();
        for minute in 0..40 {
            let holding: &[(&str, &str)] = if minute % 2 == 0 { &check } else { &[] };
            events.extend(world.at(minute, holding).into_iter().map(|(_, e)| e));
        }
        let flapping = events.iter().filter(|e| **e == Event::Flapping).count();
        assert_eq!(flapping, 1, "{events:?}");
        assert!(events.len() <= 5, "{events:?}");
    }

    #[test]
    fn a_disabled_rule_resolves_what_it_had_fired() {
        let mut world = World::new();
        world.at(0, &[("failed_units", "systemd.units")]);
        world.config.rules.get_mut("failed_units").unwrap().enabled = false;
        assert_eq!(
            world.at(1, &[("failed_units", "systemd.units")]),
            said("failed_units", Event::Resolved)
        );
    }
}
