//! The agent's host checks: detect what the host has, run the checks that apply, and turn
//! the results into protocol messages. Runs on a schedule and on the controller's request.

use std::time::Duration;

use infrastructor_proto::v1::{self as proto, Sample};

use crate::hostops::command::{self, HostCommand};
use crate::hostops::journal::{self, Pattern};
use crate::hostops::names::UnitName;
use crate::hostops::{docker, systemd, zfs, CheckReport, CheckStatus};
use crate::metrics::{now_ms, sample};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Evidence larger than this is cut: a report is a summary, not a dump.
const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

/// What to check beyond the defaults.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub interval: Duration,
    /// Units whose state is reported even when they have not failed.
    pub watched_units: Vec<UnitName>,
    /// Journal entries scanned per round.
    pub journal_lines: u32,
    pub log_patterns: Vec<Pattern>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            watched_units: Vec::new(),
            journal_lines: 500,
            log_patterns: journal::default_patterns(),
        }
    }
}

/// One round's results.
#[derive(Debug, Default)]
pub struct Round {
    pub capabilities: Vec<String>,
    pub reports: Vec<CheckReport>,
    /// Container CPU/memory and pool capacity, for the metrics spool.
    pub samples: Vec<Sample>,
}

/// Where commands run: locally on the agent, or over SSH for agentless hosts. The checks and
/// parsers are the same either way.
pub trait CommandRunner: Sync {
    fn run(
        &self,
        command: &HostCommand,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<command::CommandOutput, String>> + Send;
}

/// Runs commands on this host.
pub struct LocalRunner;

impl CommandRunner for LocalRunner {
    async fn run(
        &self,
        command: &HostCommand,
        timeout: Duration,
    ) -> Result<command::CommandOutput, String> {
        command.run(timeout).await.map_err(|e| e.to_string())
    }
}

async fn succeeds(runner: &impl CommandRunner, command: HostCommand) -> bool {
    matches!(runner.run(&command, Duration::from_secs(5)).await, Ok(output) if output.code == Some(0))
}

/// A report for a check that could not run (the tool failed, not the host).
fn unavailable(check: &str, error: impl std::fmt::Display) -> CheckReport {
    CheckReport {
        check: check.to_string(),
        status: CheckStatus::Warning,
        message: format!("{check} could not run: {error}"),
        evidence: serde_json::Value::Null,
    }
}

/// Detects capabilities and runs every check that applies.
pub async fn run_round(config: &CheckConfig) -> Round {
    let mut round = Round::default();
    if let Ok(engine) = docker::connect().await {
        round.capabilities.push("docker".into());
        match docker::list_containers(&engine).await {
            Ok(containers) => {
                round
                    .samples
                    .extend(docker::container_metrics(&engine, &containers).await);
                round.reports.push(docker::check_containers(&containers));
            }
            Err(error) => round.reports.push(unavailable("docker.containers", error)),
        }
    }
    run_command_checks(&LocalRunner, config, &mut round).await;
    round
}

/// The checks that need only commands (ZFS, systemd, journal): shared by the agent and the
/// controller's SSH driver.
pub async fn run_command_checks(
    runner: &impl CommandRunner,
    config: &CheckConfig,
    round: &mut Round,
) {
    if succeeds(runner, command::zpool_list()).await {
        round.capabilities.push("zfs".into());
        zfs_checks(runner, round).await;
    }
    if succeeds(runner, command::systemd_booted()).await {
        round.capabilities.push("systemd".into());
        round.reports.push(systemd_check(runner, config).await);
    }
    if succeeds(runner, command::journal_tail(1, None)).await {
        round.capabilities.push("journald".into());
        match runner
            .run(
                &command::journal_tail(config.journal_lines, None),
                COMMAND_TIMEOUT,
            )
            .await
        {
            Ok(output) => {
                let scan = journal::scan(&output.stdout, true, &config.log_patterns);
                round.reports.push(journal::check_logs("journal", &scan));
            }
            Err(error) => round.reports.push(unavailable("logs:journal", error)),
        }
    }
}

async fn zfs_checks(runner: &impl CommandRunner, round: &mut Round) {
    let status = match runner
        .run(&command::zpool_status(None), COMMAND_TIMEOUT)
        .await
    {
        Ok(output) => zfs::parse_zpool_status(&output.stdout),
        Err(error) => return round.reports.push(unavailable("zfs.pools", error)),
    };
    let usage = match runner.run(&command::zpool_list(), COMMAND_TIMEOUT).await {
        Ok(output) => zfs::parse_zpool_list(&output.stdout).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let now = time::OffsetDateTime::now_utc();
    let now = time::PrimitiveDateTime::new(now.date(), now.time());
    let ts = now_ms();
    for pool in &status {
        let pool_usage = usage.iter().find(|u| u.name == pool.name);
        if let Some(u) = pool_usage {
            round.samples.push(sample(
                "zfs.pool.capacity_percent",
                &[("pool", &pool.name)],
                ts,
                u.capacity_percent,
            ));
        }
        round.reports.push(zfs::check_pool(pool, pool_usage, now));
    }
}

async fn systemd_check(runner: &impl CommandRunner, config: &CheckConfig) -> CheckReport {
    let failed = match runner
        .run(&command::systemctl_failed_units(), COMMAND_TIMEOUT)
        .await
    {
        Ok(output) => systemd::parse_failed_units(&output.stdout),
        Err(error) => return unavailable("systemd.units", error),
    };
    let watched = if config.watched_units.is_empty() {
        Vec::new()
    } else {
        match command::systemctl_show(&config.watched_units)
            .run(COMMAND_TIMEOUT)
            .await
        {
            Ok(output) => systemd::parse_show(&output.stdout),
            Err(error) => return unavailable("systemd.units", error),
        }
    };
    systemd::check_units(&failed, &watched)
}

/// Protocol form of a round's reports.
pub fn to_message(round: &Round) -> proto::CheckReports {
    let checked_at = now_ms();
    proto::CheckReports {
        capabilities: round.capabilities.clone(),
        reports: round
            .reports
            .iter()
            .map(|report| {
                let mut evidence = report.evidence.to_string();
                if evidence.len() > MAX_EVIDENCE_BYTES {
                    evidence = serde_json::json!({ "truncated": true, "bytes": evidence.len() })
                        .to_string();
                }
                proto::CheckReport {
                    check: report.check.clone(),
                    status: match report.status {
                        CheckStatus::Ok => proto::CheckStatus::Ok,
                        CheckStatus::Warning => proto::CheckStatus::Warning,
                        CheckStatus::Critical => proto::CheckStatus::Critical,
                    } as i32,
                    message: report.message.clone(),
                    evidence_json: evidence,
                    checked_at_unix_ms: checked_at,
                }
            })
            .collect(),
    }
}
