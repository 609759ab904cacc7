//! `infrastructor-controller`: run the controller, the one-machine quickstart, or manage tokens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use infrastructor_controller::auth::Scope;
use infrastructor_controller::ctx::Ctx;
use infrastructor_controller::services::enrollment::CreateEnrollmentToken;
use infrastructor_controller::services::tokens::NewApiToken;
use infrastructor_controller::{quickstart, server, ConfigArgs, Controller, ControllerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "infrastructor-controller",
    version,
    about = "Infrastructor controller: agent gateway (gRPC, mTLS), device registry, metrics store and REST API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (agent gateway, REST API, maintenance).
    Serve(ConfigArgs),
    /// Quickstart: run the controller on loopback with an automatically enrolled local agent,
    /// and print the REST URL, an admin token and a curl command.
    Up(UpArgs),
    /// Manage API and join tokens (works directly on the database).
    #[command(subcommand)]
    Token(TokenCommand),
    /// MCP over stdio for clients that only speak stdio: forwards to the controller's `/mcp`.
    McpStdio(McpStdioArgs),
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    agent: quickstart::LocalAgentArgs,
}

#[derive(Args)]
struct McpStdioArgs {
    /// The controller's MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long, env = "INFRASTRUCTOR_MCP_URL")]
    url: String,
    /// A file holding the API token (sent as `Authorization: Bearer`); it must not be
    /// readable by others. Without it the token is read from `INFRASTRUCTOR_TOKEN`. There is
    /// no flag for the token itself: a command line is visible to every user in `ps`.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// The bridge's token: from `--token-file` (private) or `INFRASTRUCTOR_TOKEN`.
fn bridge_token(args: &McpStdioArgs) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(path) = &args.token_file {
        let mode = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "token file {} is readable by other users (mode {:04o}); chmod 600 it",
                path.display(),
                mode & 0o7777
            );
        }
        let token = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
        return Ok(token.trim().to_string());
    }
    std::env::var("INFRASTRUCTOR_TOKEN")
        .map_err(|_| anyhow::anyhow!("no token: pass --token-file PATH or set INFRASTRUCTOR_TOKEN"))
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer API token for the REST API.
    Create(CreateTokenArgs),
    /// Create a single-use join token for enrolling one agent.
    CreateJoin(CreateJoinArgs),
}

#[derive(Args)]
struct CreateTokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// read, operate or admin.
    #[arg(long)]
    scope: String,
    /// A label for the token.
    #[arg(long, default_value = "cli")]
    name: String,
    /// The person the token belongs to [default: the name]; a request held for approval
    /// must be approved by a token of another owner.
    #[arg(long)]
    owner: Option<String>,
    /// Mutations by this token wait for another person's approval, on every surface.
    #[arg(long)]
    requires_approval: bool,
    /// Expiry, e.g. 30d; default: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
}

#[derive(Args)]
struct CreateJoinArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Lifetime of the token, e.g. 1h [default: from configuration, 1h].
    #[arg(long)]
    expires_in: Option<String>,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = ControllerConfig::load(&args)?;
            let controller = Controller::start(config).await?;
            if let Some(created) = &controller.bootstrap_admin_token {
                println!("First start: created an admin API token. It is shown only this once:");
                println!("admin token: {}", created.token);
            }
            println!("REST API: http://{}/api/v1", controller.http_addr);
            println!("agent gateway: {}", controller.services.gateway_url);
            println!(
                "CA fingerprint: {}",
                controller.services.pki.ca_fingerprint()
            );
            let shutdown = CancellationToken::new();
            tokio::spawn(infrastructor_hostops::process::cancel_on_signal(
                shutdown.clone(),
            ));
            shutdown.cancelled().await;
            controller.shutdown().await;
            Ok(())
        }
        Command::Up(args) => {
            let config = ControllerConfig::load(&args.config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(infrastructor_hostops::process::cancel_on_signal(
                shutdown.clone(),
            ));
            quickstart::up(config, args.agent, shutdown).await
        }
        Command::Token(TokenCommand::Create(args)) => {
            let config = ControllerConfig::load(&args.config)?;
            let scope = Scope::parse(&args.scope)?;
            let services = server::open_services(&config).await?;
            let request = NewApiToken {
                name: args.name,
                owner: args.owner,
                scope,
                expires_in: args.expires_in,
                requires_approval: args.requires_approval,
            };
            let created = services
                .create_api_token(&Ctx::system("cli"), request)
                .await?;
            println!("{}", created.token);
            eprintln!(
                "created {} token {:?} (id {}); it is shown only once",
                created.scope, created.name, created.id
            );
            Ok(())
        }
        Command::McpStdio(args) => {
            let token = bridge_token(&args)?;
            infrastructor_controller::mcp::bridge::run(&args.url, &token).await
        }
        Command::Token(TokenCommand::CreateJoin(args)) => {
            let config = ControllerConfig::load(&args.config)?;
            let services = server::open_services(&config).await?;
            let token = services
                .create_enrollment_token(
                    &Ctx::system("cli"),
                    CreateEnrollmentToken {
                        expires_in: args.expires_in,
                    },
                )
                .await?;
            println!("join token: {}", token.token);
            println!("expires at: {}", token.expires_at);
            println!("CA fingerprint: {}", token.ca_fingerprint);
            println!("on the host, run:");
            println!("  {}", token.enroll_command);
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    infrastructor_hostops::process::init_logging();
    infrastructor_hostops::process::exit_code(run(Cli::parse()).await)
}
