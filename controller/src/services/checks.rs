//! Host checks as the controller sees them: storing the reports agents send (untrusted
//! input, validated and bounded), and reading the latest state, the history, capabilities
//! and containers.

use serde::{Deserialize, Serialize};

use super::{now_ms, rfc3339, Services};
use crate::auth::Scope;
use crate::cache::{key, ttl};
use crate::ctx::Ctx;
use crate::domain::{CheckStatus, ReportedRound};
use crate::error::{Error, Result};
use crate::fleet::CheckRun;
use crate::store::CheckRow;

const KNOWN_CAPABILITIES: [&str; 4] = ["docker", "zfs", "systemd", "journald"];
const MAX_REPORTS_PER_ROUND: usize = 256;
const MAX_MESSAGE_CHARS: usize = 1000;
const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct CheckView {
    pub check: String,
    pub status: CheckStatus,
    pub message: String,
    pub checked_at: String,
    pub evidence: serde_json::Value,
}

/// A check's newest verdict, without its evidence.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct CheckVerdict {
    pub check: String,
    pub status: CheckStatus,
    pub message: String,
    pub checked_at: String,
}

/// See [`Services::device_overview`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DeviceOverview {
    pub device: super::devices::DeviceView,
    pub capabilities: Vec<String>,
    /// How many checks are not `ok`.
    pub failing_checks: usize,
    /// Worst first.
    pub checks: Vec<CheckVerdict>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckHistoryQuery {
    /// Only this check, e.g. `zfs.pool:tank`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9_.:/@-]+$"))]
    pub check: Option<String>,
    /// How many reports, newest first (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Capabilities {
    pub capabilities: Vec<String>,
    pub detected_at: Option<String>,
}

fn valid_check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/@-".contains(c))
}

fn view(row: CheckRow) -> CheckView {
    CheckView {
        evidence: serde_json::from_str(&row.evidence).unwrap_or(serde_json::Value::Null),
        check: row.check_name,
        status: row.status,
        message: row.message,
        checked_at: rfc3339(row.checked_at_ms),
    }
}

use super::untrusted::{self, Lines};

impl Services {
    /// Stores a round of check reports from an agent. Reports with an invalid name or status
    /// are dropped; messages and evidence are bounded; unknown capabilities are ignored.
    pub async fn record_check_reports(
        &self,
        ctx: &Ctx,
        device_id: &str,
        round: &ReportedRound,
    ) -> Result<()> {
        let now = now_ms();
        let rows: Vec<CheckRow> = round
            .reports
            .iter()
            .take(MAX_REPORTS_PER_ROUND)
            .filter(|r| valid_check_name(&r.check))
            .map(|r| {
                let status = r.status;
                let evidence = serde_json::from_str::<serde_json::Value>(&r.evidence_json)
                    .ok()
                    .filter(|_| r.evidence_json.len() <= MAX_EVIDENCE_BYTES)
                    .map_or_else(
                        || "null".to_string(),
                        |evidence| untrusted::clean_value(&evidence).to_string(),
                    );
                CheckRow {
                    check_name: r.check.clone(),
                    status,
                    message: untrusted::clean(&r.message, MAX_MESSAGE_CHARS, Lines::Single),
                    evidence,
                    // The agent's clock is only trusted within a day of ours.
                    checked_at_ms: if (r.checked_at_ms - now).abs() < 86_400_000 {
                        r.checked_at_ms
                    } else {
                        now
                    },
                }
            })
            .collect();
        let capabilities: Vec<&str> = KNOWN_CAPABILITIES
            .into_iter()
            .filter(|known| round.capabilities.iter().any(|c| c == known))
            .collect();
        let capabilities = serde_json::to_string(&capabilities).unwrap_or_else(|_| "[]".into());
        self.store
            .record_checks(device_id, &capabilities, &rows, now)
            .await?;
        self.cache.invalidate(&key::of_device(device_id)).await;
        self.agents.round_recorded(device_id);
        tracing::debug!(request_id = %ctx.request_id, device_id, "check reports recorded");
        Ok(())
    }

    /// One device as a model or a person wants it at a glance: the device with its headline
    /// metrics, its capabilities, and the newest verdict of every check (worst first, without
    /// evidence; `list_checks` has it).
    pub async fn device_overview(&self, ctx: &Ctx, device: &str) -> Result<DeviceOverview> {
        let view = self.get_device(ctx, device).await?;
        let capabilities = self.device_capabilities(ctx, &view.id).await?;
        let mut checks: Vec<CheckVerdict> = self
            .list_checks(ctx, &view.id)
            .await?
            .into_iter()
            .map(|check| CheckVerdict {
                check: check.check,
                status: check.status,
                message: check.message,
                checked_at: check.checked_at,
            })
            .collect();
        checks.sort_by_key(|verdict| std::cmp::Reverse(verdict.status));
        let failing = checks.iter().filter(|c| !c.status.passed()).count();
        Ok(DeviceOverview {
            device: view,
            capabilities: capabilities.capabilities,
            failing_checks: failing,
            checks,
        })
    }

    /// The newest report of every check of the device.
    pub async fn list_checks(&self, ctx: &Ctx, device: &str) -> Result<Vec<CheckView>> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        Ok(self
            .store
            .latest_checks(&row.id)
            .await?
            .into_iter()
            .map(view)
            .collect())
    }

    /// Reports newest first (`limit` 1–1000, default 100), optionally of one check.
    pub async fn check_history(
        &self,
        ctx: &Ctx,
        device: &str,
        query: CheckHistoryQuery,
    ) -> Result<Vec<CheckView>> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid(format!(
                "invalid limit {limit}: expected 1 to 1000"
            )));
        }
        if let Some(check) = &query.check {
            if !valid_check_name(check) {
                return Err(Error::invalid(format!("invalid check name {check:?}")));
            }
        }
        let rows = self
            .store
            .check_history(&row.id, query.check.as_deref(), limit)
            .await?;
        Ok(rows.into_iter().map(view).collect())
    }

    pub async fn device_capabilities(&self, ctx: &Ctx, device: &str) -> Result<Capabilities> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let load = async {
            let (json, detected_at) = self.store.capabilities(&row.id).await?;
            Ok::<_, Error>(Capabilities {
                capabilities: serde_json::from_str(&json).unwrap_or_default(),
                detected_at: detected_at.map(rfc3339),
            })
        };
        let key = key::capabilities(&row.id);
        self.cache.get_or_load(&key, ttl::CAPABILITIES, load).await
    }

    /// Runs every applicable check on the device now and returns the fresh results.
    pub async fn run_checks(&self, ctx: &Ctx, device: &str) -> Result<Vec<CheckView>> {
        ctx.principal.require(Scope::Operate)?;
        let row = self.require_device(device).await?;
        let host = self.host(&row);
        if let CheckRun::Ran(round) = host.run_checks(ctx).await? {
            self.record_check_reports(ctx, &row.id, &round).await?;
            tracing::info!(request_id = %ctx.request_id,
                device_id = %row.id,
                reports = round.reports.len(),
                "checks run from the controller");
        }
        self.list_checks(ctx, &row.id).await
    }

    /// Containers as of the device's latest Docker check.
    pub async fn list_containers(&self, ctx: &Ctx, device: &str) -> Result<Vec<serde_json::Value>> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(device).await?;
        let latest = self
            .store
            .check_history(&row.id, Some("docker.containers"), 1)
            .await?;
        let Some(report) = latest.into_iter().next() else {
            return Err(Error::NotFound(format!(
                "no Docker report from device {device:?} (no Docker engine, \
                or no check has run yet)"
            )));
        };
        let evidence: serde_json::Value =
            serde_json::from_str(&report.evidence).unwrap_or_default();
        Ok(evidence["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}
