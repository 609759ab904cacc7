//! What holds now, rule by rule, read from what the controller already keeps: the checks of
//! each device's latest round, the newest samples, capacity forecasts (once an hour), each
//! agent's link, and the jobs. Host text (check messages) was cleaned when it arrived and is
//! only bounded here.

use std::collections::{BTreeMap, HashMap};

use super::evaluate::Observation;
use super::rules::{check_matches, Condition, Level, Rule};
use crate::ctx::Ctx;
use crate::domain::{CheckStatus, DeviceKind, JobState};
use crate::error::Result;
use crate::fleet::Link;
use crate::notify::payload::Severity;
use crate::services::analytics::forecast::Outlook;
use crate::services::analytics::CapacityQuery;
use crate::services::devices::SUMMARY_SERIES;
use crate::services::{rfc3339, Services};
use crate::store::DeviceRow;

/// A sample older than this says nothing about now (metrics_stale says so instead).
const FRESH_MS: i64 = 15 * 60_000;
/// Forecasts read hourly rollups; asking more often learns nothing.
const FORECAST_EVERY_MS: i64 = 3_600_000;
/// Summaries are one line.
const SUMMARY_CHARS: usize = 300;
/// Jobs looked at for failures.
const JOBS_SCANNED: i64 = 500;

/// The device name of alerts that belong to the controller itself.
pub const CONTROLLER: &str = "controller";

/// Forecast observations kept between hourly runs, per rule.
#[derive(Default)]
pub struct ForecastMemory {
    by_rule: HashMap<String, (i64, Vec<Observation>)>,
}

/// Everything one evaluation observes.
pub struct Observed {
    pub holding: Vec<Observation>,
    pub device_names: HashMap<String, String>,
}

impl Services {
    pub(super) async fn observe(
        &self,
        ctx: &Ctx,
        rules: &[(&str, &Rule, &Condition)],
        forecasts: &mut ForecastMemory,
        now_ms: i64,
    ) -> Result<Observed> {
        let devices = self.store.list_devices().await?;
        let mut device_names: HashMap<String, String> = devices
            .iter()
            .map(|d| (d.id.clone(), d.name.clone()))
            .collect();
        device_names.insert(String::new(), CONTROLLER.to_string());
        let wants = |f: fn(&Condition) -> bool| rules.iter().any(|(_, _, c)| f(c));
        let checks = if wants(|c| matches!(c, Condition::Check { .. })) {
            self.store.current_checks().await?
        } else {
            Vec::new()
        };
        let mut metric_names: Vec<&str> = rules
            .iter()
            .filter_map(|(_, _, c)| match c {
                Condition::Metric { series, .. } => Some(series.as_str()),
                _ => None,
            })
            .collect();
        metric_names.extend(SUMMARY_SERIES);
        metric_names.sort_unstable();
        metric_names.dedup();
        let samples = self.store.latest_samples_of_all(&metric_names).await?;
        let jobs = if wants(|c| matches!(c, Condition::JobFailed { .. })) {
            self.store.jobs(None, None, JOBS_SCANNED).await?
        } else {
            Vec::new()
        };
        let mut holding = Vec::new();
        for (name, rule, condition) in rules {
            let mut observe =
                |subject: String, device_id: &str, severity: Severity, summary: String| {
                    holding.push(Observation {
                        rule: name.to_string(),
                        device_id: device_id.to_string(),
                        subject,
                        severity,
                        summary: bounded(summary),
                    });
                };
            let severity = rule.severity.unwrap_or(Severity::Warning);
            match condition {
                Condition::Check { check, at_least } => {
                    for (device_id, row) in &checks {
                        let Some(level) = level(row.status) else {
                            continue;
                        };
                        if check_matches(check, &row.check_name) && level >= *at_least {
                            let severity = rule.severity.unwrap_or(match level {
                                Level::Warning => Severity::Warning,
                                Level::Critical => Severity::Critical,
                            });
                            let summary = format!("{}: {}", row.check_name, row.message);
                            observe(row.check_name.clone(), device_id, severity, summary);
                        }
                    }
                }
                Condition::Metric {
                    series,
                    labels,
                    above,
                    below,
                } => {
                    for sample in samples.iter().filter(|s| s.name == *series) {
                        let sample_labels: BTreeMap<String, String> =
                            serde_json::from_str(&sample.labels).unwrap_or_default();
                        if !selected(&sample_labels, labels) || now_ms - sample.ts_ms > FRESH_MS {
                            continue;
                        }
                        let crossed = match (above, below) {
                            (Some(limit), _) => {
                                (sample.value > *limit).then(|| format!("above {limit}"))
                            }
                            (_, Some(limit)) => {
                                (sample.value < *limit).then(|| format!("below {limit}"))
                            }
                            _ => None,
                        };
                        if let Some(crossed) = crossed {
                            let subject = subject_of(series, &sample_labels);
                            let summary = format!("{subject} is {:.1}, {crossed}", sample.value);
                            observe(subject, &sample.device_id, severity, summary);
                        }
                    }
                }
                Condition::Forecast { .. } => {
                    let remembered = forecasts
                        .by_rule
                        .get(*name)
                        .filter(|(at, _)| now_ms - at < FORECAST_EVERY_MS);
                    let found = match remembered {
                        Some((_, found)) => found.clone(),
                        None => {
                            let found = self
                                .forecast_crossings(ctx, name, severity, condition)
                                .await?;
                            forecasts
                                .by_rule
                                .insert(name.to_string(), (now_ms, found.clone()));
                            found
                        }
                    };
                    holding.extend(found);
                }
                Condition::AgentOffline { after } => {
                    for device in devices.iter().filter(|d| d.kind == DeviceKind::Agent) {
                        let Link::Offline {
                            last_seen_ms: Some(seen),
                        } = self.host(device).link()
                        else {
                            continue;
                        };
                        if now_ms - seen >= after.as_millis() as i64 {
                            let summary = format!(
                                "the agent has not been heard from since {}",
                                rfc3339(seen)
                            );
                            observe(String::new(), &device.id, severity, summary);
                        }
                    }
                }
                Condition::MetricsStale { after } => {
                    for device in streaming_agents(self, &devices) {
                        let newest = samples
                            .iter()
                            .filter(|s| {
                                s.device_id == device.id
                                    && SUMMARY_SERIES.contains(&s.name.as_str())
                            })
                            .map(|s| s.ts_ms)
                            .max();
                        if let Some(newest) =
                            newest.filter(|t| now_ms - t >= after.as_millis() as i64)
                        {
                            let summary = format!(
                                "connected, but its newest metrics are from {}",
                                rfc3339(newest)
                            );
                            observe(String::new(), &device.id, severity, summary);
                        }
                    }
                }
                Condition::BackupStale {} => {
                    for (target, device_id, summary) in self.stale_backups(now_ms).await? {
                        observe(target, &device_id, severity, summary);
                    }
                }
                Condition::JobFailed { operation, within } => {
                    let mut latest: HashMap<&str, &crate::store::JobRow> = HashMap::new();
                    for job in jobs.iter().filter(|j| j.state.is_final()) {
                        // Newest first: the first ended job of an operation is its latest.
                        latest.entry(job.operation.as_str()).or_insert(job);
                    }
                    for (op, job) in latest {
                        let recent = job
                            .finished_at_ms
                            .is_some_and(|t| now_ms - t <= within.as_millis() as i64);
                        let wanted = operation.as_deref().is_none_or(|o| o == op);
                        if wanted && recent && job.state == JobState::Failed {
                            let error = job.error.as_deref().unwrap_or("no reason recorded");
                            let summary = format!("job {} ({op}) failed: {error}", job.id);
                            observe(op.to_string(), "", severity, summary);
                        }
                    }
                }
            }
        }
        Ok(Observed {
            holding,
            device_names,
        })
    }

    /// Targets whose newest verified backup misses their RPO: (target, device ID, summary).
    async fn stale_backups(&self, now_ms: i64) -> Result<Vec<(String, String, String)>> {
        let mut stale = Vec::new();
        for target in self.backup_targets().await? {
            let Some(rpo) = target.timing.rpo else {
                continue;
            };
            let rpo_ms = rpo.as_millis() as i64;
            let rpo_text = humantime::format_duration(rpo);
            let verified = self.store.newest_verified(&target.name).await?;
            let summary = match verified.and_then(|v| v.snapshot_at_ms) {
                Some(taken) if now_ms - taken <= rpo_ms => continue,
                Some(taken) => format!(
                    "backup target {}: the newest verified backup is from {}, older than its \
                     RPO of {rpo_text}",
                    target.name,
                    rfc3339(taken)
                ),
                None if now_ms - target.row.declared_at_ms <= rpo_ms => continue,
                None => format!(
                    "backup target {}: no verified backup (a passing restore drill) within its \
                     RPO of {rpo_text}",
                    target.name
                ),
            };
            let device_id = self.target_device_id(&target).await.unwrap_or_default();
            stale.push((target.name, device_id, summary));
        }
        Ok(stale)
    }

    /// A forecast rule's crossings, from the capacity forecast over the whole fleet.
    async fn forecast_crossings(
        &self,
        ctx: &Ctx,
        rule: &str,
        severity: Severity,
        condition: &Condition,
    ) -> Result<Vec<Observation>> {
        let Condition::Forecast {
            series,
            labels,
            threshold,
            within,
        } = condition
        else {
            return Ok(Vec::new());
        };
        let query = CapacityQuery {
            device: None,
            resource: None,
            series: Some(series.clone()),
            threshold: Some(*threshold),
            horizon: Some(humantime::format_duration(*within).to_string()),
        };
        let report = self.predict_capacity(ctx, query).await?;
        let mut found = Vec::new();
        for forecast in report.forecasts {
            if !selected(&forecast.labels, labels) {
                continue;
            }
            let when = match (forecast.outlook, &forecast.date) {
                (Outlook::AlreadyAbove, _) => "has reached it".to_string(),
                (Outlook::Crosses, Some(date)) => format!("reaches it around {date}"),
                _ => continue,
            };
            let subject = subject_of(series, &forecast.labels);
            found.push(Observation {
                rule: rule.to_string(),
                device_id: forecast.device_id.clone(),
                summary: bounded(format!("{subject}: forecast to cross {threshold}, {when}")),
                subject,
                severity,
            });
        }
        Ok(found)
    }
}

fn streaming_agents<'a>(
    services: &'a Services,
    devices: &'a [DeviceRow],
) -> impl Iterator<Item = &'a DeviceRow> {
    devices
        .iter()
        .filter(move |d| d.kind == DeviceKind::Agent && services.host(d).link() == Link::Streaming)
}

fn level(status: CheckStatus) -> Option<Level> {
    match status {
        CheckStatus::Warning => Some(Level::Warning),
        CheckStatus::Critical => Some(Level::Critical),
        _ => None,
    }
}

fn selected(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `disk.used_percent{mount=/data}`.
fn subject_of(series: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return series.to_string();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{series}{{{}}}", pairs.join(","))
}

fn bounded(text: String) -> String {
    match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
