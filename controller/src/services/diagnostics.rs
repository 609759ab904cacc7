//! Diagnostics: one device (capabilities → fresh checks → logs → liveness → a report with a
//! score and recommended actions), or the whole infrastructure (every device in parallel with
//! bounded concurrency and a per-device timeout, plus system-wide checks).
//!
//! Score (0–100), documented in the README:
//! - device: 100 − 25 per critical check − 10 per warning check − 50 if its agent is offline
//!   (or, agentless, SSH fails)
//!   − 15 if its newest metrics are older than 5 minutes, floored at 0;
//! - infrastructure: the mean of the device scores − 20 per critical system check − 5 per
//!   warning system check, floored at 0 (100 with no devices and healthy systems).

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use super::checks::CheckView;
use super::{now_ms, rfc3339, Services};
use crate::auth::Scope;
use crate::cache::{key, ttl};
use crate::ctx::Ctx;
use crate::domain::{CheckStatus, Health};
use crate::error::Result;
use crate::fleet::Link;
use crate::store::DeviceRow;

const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);
const PARALLEL_DEVICES: usize = 8;
const STALE_METRICS_MS: i64 = 5 * 60 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Finding {
    pub check: String,
    pub status: CheckStatus,
    pub passed: bool,
    pub message: String,
    /// Absent in summaries.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub evidence: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DeviceDiagnosis {
    pub device_id: String,
    pub name: String,
    /// The worst finding, or `unreachable` when nothing could be learned.
    pub status: Health,
    pub score: u8,
    pub summary: String,
    pub capabilities: Vec<String>,
    /// Whether the checks were run for this diagnosis (or are the last stored reports).
    pub fresh: bool,
    pub findings: Vec<Finding>,
    pub recommendations: Vec<String>,
    pub diagnosed_at: String,
    /// The device's maintenance, while it is in it (its alerts are silenced).
    pub maintenance: Option<crate::services::maintenance::MaintenanceView>,
}

impl DeviceDiagnosis {
    /// Only what needs attention: findings that did not pass, without their evidence.
    fn compact(mut self) -> Self {
        self.findings = compact(self.findings);
        self.capabilities.clear();
        self
    }
}

fn compact(findings: Vec<Finding>) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|finding| !finding.passed)
        .map(|finding| Finding {
            evidence: serde_json::Value::Null,
            ..finding
        })
        .collect()
}

/// How much of a fleet diagnosis to return.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// Per device its status, score, summary and only the findings that did not pass,
    /// without evidence: fits a model's context for a large fleet.
    Summary,
    /// Every finding with its evidence.
    #[default]
    Full,
}

/// `POST /diagnose` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnoseQuery {
    /// `full` (default) or `summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct InfrastructureDiagnosis {
    pub status: Health,
    pub score: u8,
    pub summary: String,
    pub system: Vec<Finding>,
    pub devices: Vec<DeviceDiagnosis>,
    pub score_formula: String,
    pub diagnosed_at: String,
}

fn finding(check: &str, status: CheckStatus, message: String) -> Finding {
    Finding {
        check: check.to_string(),
        status,
        passed: status.passed(),
        message,
        evidence: serde_json::Value::Null,
    }
}

/// What an operator should do next, by check kind.
fn recommendation(finding: &Finding) -> Option<String> {
    if finding.passed {
        return None;
    }
    let check = finding.check.as_str();
    Some(if check == "agent.link" {
        "start the agent (systemctl start infrastructor-agent) and \
            check its log; it reconnects and resumes from its spool"
            .into()
    } else if check == "ssh.link" {
        "check that the host is reachable, that its SSH host key is \
            the one registered, and that the controller's key (GET \
            /api/v1/ssh-public-key) is in the user's authorized_keys"
            .into()
    } else if check == "metrics.freshness" {
        "the agent is connected but not reporting: check its log for spool or collection errors"
            .into()
    } else if check == "docker.containers" {
        "inspect the flagged containers: docker inspect <name> (health log), docker logs <name>"
            .into()
    } else if let Some(pool) = check.strip_prefix("zfs.pool:") {
        format!(
            "run zpool status -v {pool}; replace faulted devices, scrub, free space as reported"
        )
    } else if check == "systemd.units" {
        "see why units failed: systemctl status <unit>, journalctl -u <unit>".into()
    } else if check.starts_with("logs:") {
        "read the sample lines in the evidence and the surrounding log".into()
    } else {
        format!("investigate {check}: {}", finding.message)
    })
}

fn from_check(view: CheckView) -> Finding {
    Finding {
        passed: view.status.passed(),
        check: view.check,
        status: view.status,
        message: view.message,
        evidence: view.evidence,
    }
}

/// Score and status from the findings; see the module documentation.
fn score(findings: &[Finding]) -> (u8, Health) {
    let mut score: i32 = 100;
    for f in findings {
        score -= match (f.check.as_str(), f.status) {
            ("agent.link" | "ssh.link", CheckStatus::Critical) => 50,
            ("metrics.freshness", CheckStatus::Warning) => 15,
            (_, CheckStatus::Critical) => 25,
            (_, CheckStatus::Warning) => 10,
            (_, CheckStatus::Ok) => 0,
        };
    }
    let worst = Health::worst(findings.iter().map(|f| Health::from(f.status)));
    (score.clamp(0, 100) as u8, worst)
}

impl Services {
    async fn diagnose_row(&self, ctx: &Ctx, row: &DeviceRow) -> Result<DeviceDiagnosis> {
        let mut diagnosis = self.diagnose_checks(ctx, row).await?;
        let maintenance = self.store.maintenance(&row.id).await?;
        diagnosis.maintenance = maintenance.as_ref().map(crate::services::maintenance::view);
        if let Some(m) = &diagnosis.maintenance {
            let note = format!(
                "in maintenance until {} ({}): its alerts are silenced",
                m.until, m.reason
            );
            diagnosis.recommendations.insert(0, note);
        }
        Ok(diagnosis)
    }

    async fn diagnose_checks(&self, ctx: &Ctx, row: &DeviceRow) -> Result<DeviceDiagnosis> {
        let host = self.host(row);
        let link = host.link();
        let mut findings = Vec::new();
        let mut fresh = false;
        let checks = match link {
            Link::Offline { last_seen_ms } => {
                let seen = last_seen_ms.map_or("never".to_string(), rfc3339);
                findings.push(finding(
                    host.link_check(),
                    CheckStatus::Critical,
                    format!("agent offline (last seen {seen})"),
                ));
                self.list_checks(ctx, &row.id).await?
            }
            Link::Streaming | Link::OnDemand => match self.run_checks(ctx, &row.id).await {
                Ok(checks) => {
                    fresh = true;
                    if link == Link::OnDemand {
                        findings.push(finding(
                            host.link_check(),
                            CheckStatus::Ok,
                            "reached over SSH with the pinned host key".into(),
                        ));
                    }
                    checks
                }
                // Reaching an on-demand host is what failed; a streaming one failed its round.
                Err(error) if link == Link::OnDemand => {
                    findings.push(finding(
                        host.link_check(),
                        CheckStatus::Critical,
                        error.public_message(),
                    ));
                    self.list_checks(ctx, &row.id).await?
                }
                Err(error) => {
                    findings.push(finding(
                        "agent.checks",
                        CheckStatus::Warning,
                        format!("fresh checks failed: {}", error.public_message()),
                    ));
                    self.list_checks(ctx, &row.id).await?
                }
            },
        };
        let only_link = checks.is_empty();
        findings.extend(checks.into_iter().map(from_check));
        // Only a streaming host sends metrics, so only its metrics can be stale.
        if link == Link::Streaming {
            let newest = self
                .store
                .latest_samples(&row.id, &["cpu.usage_percent"])
                .await?;
            let stale = newest
                .first()
                .is_none_or(|s| now_ms() - s.ts_ms > STALE_METRICS_MS);
            findings.push(if stale {
                finding(
                    "metrics.freshness",
                    CheckStatus::Warning,
                    "no metrics in the last 5 minutes".into(),
                )
            } else {
                finding(
                    "metrics.freshness",
                    CheckStatus::Ok,
                    "metrics are current".into(),
                )
            });
        }
        let (score, mut status) = score(&findings);
        // An offline host that never reported anything is not known to be unhealthy.
        if matches!(link, Link::Offline { .. }) && only_link {
            status = Health::Unreachable;
        }
        let failed = findings.iter().filter(|f| !f.passed).count();
        let capabilities = self
            .device_capabilities(ctx, &row.id)
            .await
            .map(|c| c.capabilities)
            .unwrap_or_default();
        Ok(DeviceDiagnosis {
            summary: format!(
                "{}: {} of {} checks passed, score {score}",
                row.name,
                findings.len() - failed,
                findings.len()
            ),
            recommendations: findings.iter().filter_map(recommendation).collect(),
            device_id: row.id.clone(),
            name: row.name.clone(),
            status,
            score,
            capabilities,
            fresh,
            findings,
            diagnosed_at: rfc3339(now_ms()),
            maintenance: None,
        })
    }

    /// Diagnoses one device; runs its checks first when its agent is online.
    /// Always fresh (an operator re-diagnosing after a fix must see the fix); the result is
    /// cached for the infrastructure diagnosis.
    pub async fn diagnose_device(&self, ctx: &Ctx, device: &str) -> Result<DeviceDiagnosis> {
        ctx.principal.require(Scope::Operate)?;
        let row = self.require_device(device).await?;
        let diagnosis = self.diagnose_row(ctx, &row).await?;
        self.cache
            .put(&key::diagnosis(&row.id), &diagnosis, ttl::DIAGNOSIS)
            .await;
        Ok(diagnosis)
    }

    /// A device's diagnosis no older than [`ttl::DIAGNOSIS`] (and invalidated by its check
    /// reports), so repeated fleet-wide diagnoses do not re-run every host's checks.
    async fn recent_diagnosis(&self, ctx: &Ctx, row: &DeviceRow) -> Result<DeviceDiagnosis> {
        let key = key::diagnosis(&row.id);
        self.cache
            .get_or_load(&key, ttl::DIAGNOSIS, self.diagnose_row(ctx, row))
            .await
    }

    /// Diagnoses every device (bounded concurrency, per-device timeout) and the controller's
    /// own systems. A slow or failing device is reported, never fatal.
    pub async fn diagnose_infrastructure(
        &self,
        ctx: &Ctx,
        detail: Detail,
    ) -> Result<InfrastructureDiagnosis> {
        ctx.principal.require(Scope::Operate)?;
        let rows = self.store.list_devices().await?;
        let devices: Vec<DeviceDiagnosis> = stream::iter(rows.clone())
            .map(|row| {
                let services = self.clone();
                let ctx = ctx.clone();
                async move {
                    match tokio::time::timeout(
                        DEVICE_TIMEOUT,
                        services.recent_diagnosis(&ctx, &row),
                    )
                    .await
                    {
                        Ok(Ok(diagnosis)) => diagnosis,
                        Ok(Err(error)) => unreachable_device(
                            &row,
                            format!("diagnosis failed: {}", error.public_message()),
                        ),
                        Err(_) => unreachable_device(
                            &row,
                            format!("no answer within {}s", DEVICE_TIMEOUT.as_secs()),
                        ),
                    }
                }
            })
            .buffer_unordered(PARALLEL_DEVICES)
            .collect()
            .await;
        let system = self.system_findings(&rows).await;
        let mean = if devices.is_empty() {
            100.0
        } else {
            devices.iter().map(|d| f64::from(d.score)).sum::<f64>() / devices.len() as f64
        };
        let penalty: f64 = system
            .iter()
            .map(|f| match f.status {
                CheckStatus::Critical => 20.0,
                CheckStatus::Warning => 5.0,
                CheckStatus::Ok => 0.0,
            })
            .sum();
        let score = (mean - penalty).clamp(0.0, 100.0).round() as u8;
        let status = Health::worst(
            devices
                .iter()
                .map(|d| d.status)
                .chain(system.iter().map(|f| Health::from(f.status))),
        );
        let unhealthy = devices.iter().filter(|d| d.status != Health::Ok).count();
        let mut devices = devices;
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        let (system, devices) = match detail {
            Detail::Full => (system, devices),
            Detail::Summary => (
                compact(system),
                devices.into_iter().map(DeviceDiagnosis::compact).collect(),
            ),
        };
        Ok(InfrastructureDiagnosis {
            summary: format!(
                "{} devices, {unhealthy} need attention; score {score}",
                devices.len()
            ),
            status,
            score,
            system,
            devices,
            score_formula: "mean of device scores (100 - 25 per critical check - 10 per \
                warning - 50 agent offline - 15 stale metrics) - 20 per \
                critical system check - 5 per warning system check"
                .into(),
            diagnosed_at: rfc3339(now_ms()),
        })
    }

    async fn system_findings(&self, rows: &[DeviceRow]) -> Vec<Finding> {
        let mut system = Vec::new();
        let started = std::time::Instant::now();
        system.push(match self.store.ping().await {
            Ok(()) => finding(
                "system.database",
                CheckStatus::Ok,
                format!("database answered in {} ms", started.elapsed().as_millis()),
            ),
            Err(error) => finding(
                "system.database",
                CheckStatus::Critical,
                format!("database unreachable: {}", error.kind_label()),
            ),
        });
        let stats = self.cache.stats();
        system.push(match self.cache.ping().await {
            Ok(()) => finding(
                "system.cache",
                CheckStatus::Ok,
                format!(
                    "{} cache: {} hits, {} misses, {:.2} ms mean lookup",
                    stats.backend, stats.hits, stats.misses, stats.mean_lookup_ms
                ),
            ),
            // Reads fall back to the database, so a dead cache slows the controller down
            // but does not stop it.
            Err(error) => finding(
                "system.cache",
                CheckStatus::Warning,
                format!(
                    "{} cache unavailable ({error}); reads go to the database",
                    stats.backend
                ),
            ),
        });
        let pool = self.ssh.prune();
        system.push(finding(
            "system.ssh_pool",
            CheckStatus::Ok,
            format!(
                "SSH pool: {} idle connections to {} hosts (dead ones pruned)",
                pool.idle_connections, pool.hosts
            ),
        ));
        let links: Vec<(&DeviceRow, Link)> =
            rows.iter().map(|r| (r, self.host(r).link())).collect();
        let agents: Vec<&DeviceRow> = links
            .iter()
            .filter(|(_, link)| *link != Link::OnDemand)
            .map(|(row, _)| *row)
            .collect();
        let offline: Vec<&str> = links
            .iter()
            .filter(|(_, link)| matches!(link, Link::Offline { .. }))
            .map(|(row, _)| row.name.as_str())
            .collect();
        system.push(if offline.is_empty() {
            finding(
                "system.agent_links",
                CheckStatus::Ok,
                format!("all {} agents connected", agents.len()),
            )
        } else {
            finding(
                "system.agent_links",
                CheckStatus::Warning,
                format!(
                    "{} of {} agents offline: {}",
                    offline.len(),
                    agents.len(),
                    offline.join(", ")
                ),
            )
        });
        system
    }
}

fn unreachable_device(row: &DeviceRow, reason: String) -> DeviceDiagnosis {
    DeviceDiagnosis {
        device_id: row.id.clone(),
        name: row.name.clone(),
        status: Health::Unreachable,
        score: 0,
        summary: format!("{}: {reason}", row.name),
        capabilities: Vec::new(),
        fresh: false,
        findings: vec![finding("agent.link", CheckStatus::Critical, reason)],
        recommendations: vec![
            "check the host and its agent; the diagnosis could not reach it".into(),
        ],
        diagnosed_at: rfc3339(now_ms()),
        maintenance: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_follows_the_documented_formula() {
        assert_eq!(score(&[]), (100, Health::Ok));
        let findings = [
            finding("docker.containers", CheckStatus::Critical, String::new()),
            finding("logs:journal", CheckStatus::Warning, String::new()),
            finding("systemd.units", CheckStatus::Ok, String::new()),
        ];
        assert_eq!(score(&findings), (65, Health::Critical));
        let offline = [
            finding("agent.link", CheckStatus::Critical, String::new()),
            finding("zfs.pool:tank", CheckStatus::Critical, String::new()),
            finding("a", CheckStatus::Critical, String::new()),
            finding("b", CheckStatus::Critical, String::new()),
        ];
        assert_eq!(score(&offline).0, 0, "floored at zero");
        assert!(recommendation(&finding(
            "zfs.pool:tank",
            CheckStatus::Critical,
            String::new()
        ))
        .unwrap()
        .contains("zpool status -v tank"));
        assert!(recommendation(&finding("x", CheckStatus::Ok, String::new())).is_none());
    }
}
