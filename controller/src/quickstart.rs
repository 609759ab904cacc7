//! `infrastructor-controller up`: the whole product on one machine — the controller on
//! loopback with SQLite, plus an in-process agent for this host, enrolled automatically over
//! the real gateway (pinned CA, join token, mTLS), exactly as a remote agent would be.

use infrastructor_agent::change::ChangePolicy;
use infrastructor_agent::hostops::names::ManagedPath;
use std::net::SocketAddr;
use std::path::Path;

use infrastructor_agent::enroll::{enroll, EnrollOptions};
use infrastructor_agent::identity::Identity;
use infrastructor_agent::metrics::HostMetrics;
use infrastructor_agent::{Agent, AgentConfig, AgentHandle};
use tokio_util::sync::CancellationToken;

use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::server::Controller;
use crate::services::enrollment::CreateEnrollmentToken;
use crate::services::tokens::NewApiToken;

/// Where the quickstart's local agent may apply configuration changes.
const MANAGED_DIR: &str = "managed";
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The same token as a header line for `curl -H @file`, which keeps it out of `ps`.
const ADMIN_HEADER_FILE: &str = "admin-auth-header";

/// The quickstart's admin token: the bootstrap token on first start, read back from
/// `<data_dir>/admin-token` (mode 0600) afterwards.
async fn admin_token(controller: &Controller) -> anyhow::Result<String> {
    let path = controller.data_dir().join(ADMIN_TOKEN_FILE);
    if let Some(created) = &controller.bootstrap_admin_token {
        infrastructor_agent::fsutil::write_atomic(&path, created.token.as_bytes(), 0o600)?;
        return Ok(created.token.clone());
    }
    if let Ok(token) = std::fs::read_to_string(&path) {
        if controller.services.authenticate(token.trim()).await.is_ok() {
            return Ok(token.trim().to_string());
        }
    }
    // The data directory was set up by `serve` (or the token was revoked): make one for `up`.
    let created = controller
        .services
        .create_api_token(
            &Ctx::system("quickstart"),
            NewApiToken::new("quickstart-admin", Scope::Admin),
        )
        .await?;
    infrastructor_agent::fsutil::write_atomic(&path, created.token.as_bytes(), 0o600)?;
    Ok(created.token)
}

fn loopback_url(addr: SocketAddr) -> String {
    let port = addr.port();
    if addr.is_ipv6() {
        format!("https://[::1]:{port}")
    } else {
        format!("https://127.0.0.1:{port}")
    }
}

/// Enrolls the local agent on first run; later runs reuse its identity.
async fn local_agent(controller: &Controller, state_dir: &Path) -> anyhow::Result<Agent> {
    let url = loopback_url(controller.grpc_addr);
    if Identity::load(state_dir)?.is_none() {
        let token = controller
            .services
            .create_enrollment_token(&Ctx::system("quickstart"), CreateEnrollmentToken::default())
            .await?;
        let identity = enroll(EnrollOptions {
            state_dir,
            controller_url: &url,
            join_token: &token.token,
            ca_fingerprint: &token.ca_fingerprint,
            hostname: &infrastructor_agent::config::hostname(),
            force: false,
        })
        .await?;
        tracing::info!(device_id = %identity.meta.device_id, "local agent enrolled");
    }
    let mut config = AgentConfig::new(state_dir.to_path_buf());
    // The controller's port may differ from the last run.
    config.controller_url = Some(url);
    config.changes = try_it_policy(controller)?;
    Ok(Agent::new(config)?)
}

/// The local agent may change files under `<data_dir>/managed` only, so configuration changes
/// can be tried without touching anything else on this machine. It shares its loopback with
/// the controller, so its health probes may not reach the controller's own ports.
fn try_it_policy(controller: &Controller) -> anyhow::Result<ChangePolicy> {
    let dir = controller.data_dir().join(MANAGED_DIR);
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    let root = ManagedPath::new(&dir.to_string_lossy())?;
    Ok(ChangePolicy {
        roots: vec![root],
        probe_deny_ports: vec![controller.http_addr.port(), controller.grpc_addr.port()],
        ..Default::default()
    })
}

pub async fn up(
    config: crate::config::ControllerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let controller = Controller::start(config).await?;
    let token = admin_token(&controller).await?;
    let agent = local_agent(&controller, &controller.data_dir().join("local-agent")).await?;
    let handle: AgentHandle = agent.handle();
    let agent_shutdown = CancellationToken::new();
    let agent_task = tokio::spawn(agent.run(Box::new(HostMetrics::new()), agent_shutdown.clone()));

    let api = format!("http://{}/api/v1", controller.http_addr);
    println!();
    println!("Infrastructor is running.");
    println!("  REST API:       {api}");
    println!("  OpenAPI:        {api}/openapi.json");
    let mcp = format!("http://{}/mcp", controller.http_addr);
    println!("  MCP:            {mcp} (same bearer token)");
    println!(
        "  agent gateway:  {} (TLS 1.3, mutual TLS)",
        controller.services.gateway_url
    );
    println!(
        "  CA fingerprint: {}",
        controller.services.pki.ca_fingerprint()
    );
    println!("  data directory: {}", controller.data_dir().display());
    println!("  local agent:    device {}", handle.device_id());
    let managed = std::fs::canonicalize(controller.data_dir().join(MANAGED_DIR))?;
    println!("  config changes: allowed under {}", managed.display());
    println!("admin token: {token}");
    let data_dir = controller.data_dir();
    let header = data_dir.join(ADMIN_HEADER_FILE);
    infrastructor_agent::fsutil::write_atomic(
        &header,
        format!("Authorization: Bearer {token}\n").as_bytes(),
        0o600,
    )?;
    println!();
    println!("Try (the token stays in files, out of shell history and `ps`):");
    println!("  curl -s -H @{} {api}/devices", header.display());
    println!(
        "  stdio MCP clients: infrastructor-controller mcp-stdio --url {mcp} --token-file {}",
        data_dir.join(ADMIN_TOKEN_FILE).display()
    );
    println!();
    println!("Press Ctrl-C to stop.");

    shutdown.cancelled().await;
    agent_shutdown.cancel();
    match agent_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "local agent stopped with an error"),
        Err(error) => tracing::warn!(%error, "local agent task failed"),
    }
    controller.shutdown().await;
    Ok(())
}
