//! Host checks: detect what the host has and run the checks that apply. The agent runs a
//! round on a schedule and on request; the controller runs the command-based checks and the
//! Docker check over SSH through the same code.

use std::time::Duration;

use infrastructor_proto::v1::Sample;

use crate::command::{self, HostCommand};
use crate::journal::{self, Pattern};
use crate::names::UnitName;
use crate::{docker, systemd, zfs, CheckReport, CheckStatus};
use crate::{now_ms, sample};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// What to check beyond the defaults.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    pub interval: Duration,
    /// Units whose state is reported even when they have not failed.
    pub watched_units: Vec<UnitName>,
    /// Journal entries scanned per round.
    pub journal_lines: u32,
    /// Units whose journal is also scanned on its own (`logs:journal:<unit>`).
    pub journal_units: Vec<UnitName>,
    /// Allowlisted plain log files scanned locally (`logs:<path>`); absolute paths only.
    pub log_files: Vec<std::path::PathBuf>,
    pub log_patterns: Vec<Pattern>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            watched_units: Vec::new(),
            journal_lines: 500,
            journal_units: Vec::new(),
            log_files: Vec::new(),
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
        docker_checks(&engine, &mut round).await;
    }
    run_command_checks(&LocalRunner, config, &mut round).await;
    for path in &config.log_files {
        round.reports.push(log_file_check(path, config));
    }
    round
}

/// Bytes read from the end of a log file per round.
const LOG_TAIL_BYTES: u64 = 1024 * 1024;

/// Scans the last lines of an allowlisted log file. Read in-process: no `tail` subprocess.
fn log_file_check(path: &std::path::Path, config: &CheckConfig) -> CheckReport {
    use std::io::{Read, Seek, SeekFrom};
    let source = path.display().to_string();
    let read = || -> std::io::Result<String> {
        // Refuse symlinks and anything that is not a regular file.
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.file_type().is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut file = std::fs::File::open(path)?;
        let start = metadata.len().saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Drop a partial first line, then keep the last `journal_lines` lines.
        let lines: Vec<&str> = text.lines().skip(usize::from(start > 0)).collect();
        let keep = lines.len().saturating_sub(config.journal_lines as usize);
        Ok(lines[keep..].join("\n"))
    };
    match read() {
        Ok(text) => {
            journal::check_logs(&source, &journal::scan(&text, false, &config.log_patterns))
        }
        Err(error) => unavailable(&format!("logs:{source}"), error),
    }
}

/// The Docker part of a round, for an engine reached locally or through the SSH driver.
pub async fn docker_checks(engine: &bollard::Docker, round: &mut Round) {
    round.capabilities.push("docker".into());
    match docker::list_containers(engine).await {
        Ok(containers) => {
            round
                .samples
                .extend(docker::container_metrics(engine, &containers).await);
            round.reports.push(docker::check_containers(&containers));
        }
        Err(error) => round.reports.push(unavailable("docker.containers", error)),
    }
    match crate::docker_disk::disk_usage(engine).await {
        Ok(usage) => {
            round
                .samples
                .extend(crate::docker_disk::metrics(&usage, crate::now_ms()));
            round.reports.push(crate::docker_disk::check(&usage));
        }
        Err(error) => round.reports.push(unavailable("docker.disk", error)),
    }
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
        for unit in &config.journal_units {
            let source = format!("journal:{unit}");
            match runner
                .run(
                    &command::journal_tail(config.journal_lines, Some(unit)),
                    COMMAND_TIMEOUT,
                )
                .await
            {
                Ok(output) => {
                    let scan = journal::scan(&output.stdout, true, &config.log_patterns);
                    round.reports.push(journal::check_logs(&source, &scan));
                }
                Err(error) => round
                    .reports
                    .push(unavailable(&format!("logs:{source}"), error)),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlisted_log_files_are_scanned_from_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut text = "ok line\n".repeat(1000);
        text.push_str("ERROR: disk full\nfatal: giving up\n");
        std::fs::write(&path, text).unwrap();
        let config = CheckConfig {
            journal_lines: 10,
            ..CheckConfig::default()
        };
        let report = log_file_check(&path, &config);
        assert_eq!(report.check, format!("logs:{}", path.display()));
        assert_eq!(report.status, CheckStatus::Critical, "{}", report.message);
        assert!(report.message.contains("in 10 lines"), "{}", report.message);

        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let refused = log_file_check(&link, &config);
        assert_eq!(refused.status, CheckStatus::Warning);
        assert!(
            refused.message.contains("not a regular file"),
            "{}",
            refused.message
        );
        let missing = log_file_check(&dir.path().join("nope.log"), &config);
        assert!(
            missing.message.contains("could not run"),
            "{}",
            missing.message
        );
    }
}
