//! `infrastructor-agent`: enroll this host with a controller, then run the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use infrastructor_agent::config::AgentFile;
use infrastructor_agent::enroll::{enroll, EnrollOptions};
use infrastructor_agent::metrics::HostMetrics;
use infrastructor_agent::{Agent, AgentConfig};
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
}

#[derive(Args)]
struct Common {
    /// TOML config file (see deploy/agent.example.toml).
    #[arg(long, env = "INFRASTRUCTOR_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the identity and the spool [default: /var/lib/infrastructor-agent].
    #[arg(long, env = "INFRASTRUCTOR_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
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
    #[arg(long, env = "INFRASTRUCTOR_CONTROLLER_URL")]
    controller: Option<String>,
    /// Collection interval, e.g. 10s [default: 10s].
    #[arg(long, env = "INFRASTRUCTOR_AGENT_INTERVAL", value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Bound of the on-disk spool in bytes [default: 67108864].
    #[arg(long, env = "INFRASTRUCTOR_AGENT_SPOOL_MAX_BYTES")]
    spool_max_bytes: Option<u64>,
}

fn effective_config(common: &Common) -> anyhow::Result<(AgentConfig, AgentFile)> {
    let file = match &common.config {
        Some(path) => AgentFile::load(path)?,
        None => AgentFile::default(),
    };
    let state_dir = common
        .state_dir
        .clone()
        .or_else(|| file.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/var/lib/infrastructor-agent"));
    let mut config = AgentConfig::new(state_dir);
    config.controller_url = file.controller_url.clone();
    if let Some(interval) = file.interval {
        config.interval = interval;
    }
    if let Some(bytes) = file.spool_max_bytes {
        config.spool_max_bytes = bytes;
    }
    if let Some(heartbeat) = file.heartbeat_interval {
        config.heartbeat_interval = heartbeat;
    }
    file.apply_checks(&mut config.checks)?;
    Ok((config, file))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll(args) => {
            let (config, _) = effective_config(&args.common)?;
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
            let (mut config, _) = effective_config(&args.common)?;
            if args.controller.is_some() {
                config.controller_url = args.controller;
            }
            if let Some(interval) = args.interval {
                config.interval = interval;
            }
            if let Some(bytes) = args.spool_max_bytes {
                config.spool_max_bytes = bytes;
            }
            let agent = Agent::new(config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(infrastructor_agent::process::cancel_on_signal(
                shutdown.clone(),
            ));
            agent.run(Box::new(HostMetrics::new()), shutdown).await?;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    infrastructor_agent::process::init_logging();
    infrastructor_agent::process::exit_code(run(Cli::parse()).await)
}
