//! `infrastructor-agent`: enroll this host with a controller, then run the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use infrastructor_agent::config::AgentSettings;
use infrastructor_agent::enroll::{enroll, EnrollOptions};
use infrastructor_agent::metrics::HostMetrics;
use infrastructor_agent::{Agent, AgentConfig};
use infrastructor_hostops::change::{ChangeEngine, ChangeSet, CommitOptions, LocalHost, TxnState};
use infrastructor_hostops::names::TxnId;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "infrastructor-agent",
    version,
    about = "Infrastructor host agent: collects metrics and streams them to the controller over mutual TLS."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host: pin the controller's CA, generate a key here and obtain a certificate.
    Enroll(EnrollArgs),
    /// Run the agent daemon (collect, spool, stream).
    Run(RunArgs),
    /// Apply or inspect configuration changes on this host directly, without a controller
    /// (break-glass; the daemon must be stopped, as both use the same journal).
    Change(ChangeArgs),
}

#[derive(Args)]
struct ChangeArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: ChangeAction,
}

#[derive(Subcommand)]
enum ChangeAction {
    /// Stage, diff and validate a change set (a JSON file); nothing live is touched.
    Plan { file: PathBuf },
    /// Prepare and commit a change set: swap atomically, run actions and health checks, roll
    /// back on any failure.
    Apply {
        file: PathBuf,
        /// Leave the change awaiting confirmation for this long (`change confirm`); the agent
        /// rolls it back once the deadline passes. 0s commits at once.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        confirm_timeout: Duration,
        /// How long health checks may take to pass.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        health_timeout: Duration,
    },
    /// Keep a change that awaits confirmation.
    Confirm {
        #[arg(value_parser = parse_txn_id)]
        txn_id: TxnId,
    },
    /// Restore a transaction's original files and re-run its actions.
    Rollback {
        #[arg(value_parser = parse_txn_id)]
        txn_id: TxnId,
    },
    /// One transaction's journal, or every transaction's.
    Status {
        #[arg(value_parser = parse_txn_id)]
        txn_id: Option<TxnId>,
    },
    /// Finish rollbacks a crash interrupted; roll back changes past their deadline.
    Recover,
}

/// Every setting also comes from `INFRASTRUCTOR_AGENT_<KEY>` (nested keys joined by `__`) or
/// `--set key.path=value`.
#[derive(Args)]
struct Common {
    /// TOML config file (see deploy/agent.example.toml).
    #[arg(long, env = "INFRASTRUCTOR_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the identity and the spool [default: /var/lib/infrastructor-agent].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Any setting by its key path, e.g. `--set check_interval=5m`; repeatable, applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct EnrollArgs {
    #[command(flatten)]
    common: Common,
    /// Controller gateway URL, e.g. https://controller.example:8443.
    #[arg(long, env = "INFRASTRUCTOR_CONTROLLER_URL")]
    controller: String,
    /// Single-use join token from `infrastructor-controller token create-join`.
    #[arg(long, env = "INFRASTRUCTOR_JOIN_TOKEN")]
    token: String,
    /// SHA-256 fingerprint of the controller's CA certificate (printed with the join token).
    #[arg(long, env = "INFRASTRUCTOR_CA_FINGERPRINT")]
    ca_fingerprint: String,
    /// Replace an existing enrollment.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Override the controller URL recorded at enrollment.
    #[arg(long)]
    controller: Option<String>,
    /// Collection interval, e.g. 10s [default: 10s].
    #[arg(long)]
    interval: Option<String>,
    /// Bound of the on-disk spool in bytes [default: 67108864].
    #[arg(long)]
    spool_max_bytes: Option<u64>,
}

/// The settings from their layers; `flags` are the subcommand's own, applied before `--set`.
fn effective_config(
    common: &Common,
    mut flags: Vec<(String, String)>,
) -> anyhow::Result<AgentConfig> {
    if let Some(dir) = &common.state_dir {
        flags.insert(0, ("state_dir".into(), dir.display().to_string()));
    }
    for set in &common.set {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {set:?}: expected KEY=VALUE"))?;
        flags.push((key.trim().to_string(), value.to_string()));
    }
    let settings = AgentSettings::load(common.config.as_deref(), &flags)?;
    Ok(settings.into_config()?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll(args) => {
            let config = effective_config(&args.common, Vec::new())?;
            let identity = enroll(EnrollOptions {
                state_dir: &config.state_dir,
                controller_url: &args.controller,
                join_token: &args.token,
                ca_fingerprint: &args.ca_fingerprint,
                hostname: &config.hostname,
                force: args.force,
            })
            .await?;
            println!("enrolled as device {}", identity.meta.device_id);
            Ok(())
        }
        Command::Run(args) => {
            let flags = [
                ("controller_url", args.controller),
                ("interval", args.interval),
                (
                    "spool_max_bytes",
                    args.spool_max_bytes.map(|b| b.to_string()),
                ),
            ];
            let flags = flags
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_string(), value?)))
                .collect();
            let config = effective_config(&args.common, flags)?;
            let agent = Agent::new(config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(infrastructor_hostops::process::cancel_on_signal(
                shutdown.clone(),
            ));
            agent.run(Box::new(HostMetrics::new()), shutdown).await?;
            Ok(())
        }
        Command::Change(args) => {
            let config = effective_config(&args.common, Vec::new())?;
            change(config, args.action).await
        }
    }
}

async fn change(config: AgentConfig, action: ChangeAction) -> anyhow::Result<()> {
    let engine = ChangeEngine::open(
        LocalHost,
        config.changes.clone(),
        &config.state_dir.join("changes"),
    )?;
    match action {
        ChangeAction::Plan { file } => {
            let set = read_change_set(&file)?;
            let txn_id = local_txn_id()?;
            let report = engine.prepare(&txn_id, &set).await?;
            if report.state == TxnState::Prepared {
                engine.abort(&txn_id).await?;
            }
            print(&report);
        }
        ChangeAction::Apply {
            file,
            confirm_timeout,
            health_timeout,
        } => {
            let set = read_change_set(&file)?;
            let txn_id = local_txn_id()?;
            let prepared = engine.prepare(&txn_id, &set).await?;
            print(&prepared);
            if prepared.state != TxnState::Prepared {
                anyhow::bail!("validation failed; nothing was changed");
            }
            let options = CommitOptions {
                confirm_timeout,
                health_timeout,
            };
            let report = engine.commit(&txn_id, options).await?;
            print(&report);
            if report.state == TxnState::RolledBack {
                anyhow::bail!("rolled back: {}", report.reason.unwrap_or_default());
            }
        }
        ChangeAction::Confirm { txn_id } => print(&engine.confirm(&txn_id).await?),
        ChangeAction::Rollback { txn_id } => print(
            &engine
                .rollback(&txn_id, "rollback requested locally")
                .await?,
        ),
        ChangeAction::Status {
            txn_id: Some(txn_id),
        } => print(&engine.status(&txn_id).await?),
        ChangeAction::Status { txn_id: None } => print(&engine.list().await?),
        ChangeAction::Recover => {
            let mut resolved = engine.recover().await?;
            resolved.extend(engine.expire().await?);
            print(&resolved);
        }
    }
    Ok(())
}

fn read_change_set(path: &std::path::Path) -> anyhow::Result<ChangeSet> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn parse_txn_id(text: &str) -> Result<TxnId, String> {
    TxnId::new(text).map_err(|e| e.to_string())
}

fn local_txn_id() -> anyhow::Result<TxnId> {
    Ok(TxnId::new(&format!(
        "local-{:016x}",
        rand::random::<u64>()
    ))?)
}

/// Reports go to stdout as pretty JSON, for people and for `jq`.
fn print(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(json) => println!("{json}"),
        Err(error) => eprintln!("cannot encode the report: {error}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    infrastructor_hostops::process::init_logging();
    infrastructor_hostops::process::exit_code(run(Cli::parse()).await)
}
