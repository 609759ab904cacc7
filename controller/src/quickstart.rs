//! `infrastructor-controller up`: the whole product on one machine — the controller on
//! loopback with SQLite, plus the agent for this host as a child process, enrolled
//! automatically over the real gateway (pinned CA, join token, mTLS), exactly as a remote
//! agent would be.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use infrastructor_hostops::change::ChangePolicy;
use infrastructor_hostops::names::ManagedPath;
use rustix::process::{Pid, Signal};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::process::Child;
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
        infrastructor_hostops::fsutil::write_atomic(&path, created.token.as_bytes(), 0o600)?;
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
    infrastructor_hostops::fsutil::write_atomic(&path, created.token.as_bytes(), 0o600)?;
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

/// The agent `up` runs beside the controller: a separate process, exactly as on a managed
/// host, so the controller never links the agent daemon.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LocalAgentArgs {
    /// The `infrastructor-agent` binary [default: the one beside this executable, else
    /// `infrastructor-agent` on `PATH`].
    #[arg(long, env = "INFRASTRUCTOR_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
}

const AGENT_BINARY: &str = "infrastructor-agent";
/// How long the local agent may take to enroll, and to connect once started.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the local agent may take to stop after SIGTERM before it is killed.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn agent_binary(args: &LocalAgentArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.agent_bin {
        return Ok(path.clone());
    }
    let beside = std::env::current_exe()?.with_file_name(AGENT_BINARY);
    if beside.is_file() {
        return Ok(beside);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(AGENT_BINARY))
        .find(|path| path.is_file());
    on_path.ok_or_else(|| {
        anyhow::anyhow!(
            "`up` runs the agent binary beside the controller, and found none at {} or on PATH: \
             build both (`cargo build --release -p infrastructor-agent -p \
             infrastructor-controller`) or pass --agent-bin",
            beside.display()
        )
    })
}

/// What the local agent's configuration file holds (the agent's own settings, by name).
#[derive(serde::Serialize)]
struct LocalAgentSettings<'a> {
    state_dir: &'a Path,
    controller_url: &'a str,
    changes: &'a ChangePolicy,
}

/// The local agent: its state directory, its configuration file and the binary.
struct LocalAgent {
    binary: PathBuf,
    state_dir: PathBuf,
    config_file: PathBuf,
}

impl LocalAgent {
    /// Writes the agent's configuration for this run (the controller's ports may differ from
    /// the last one).
    fn prepare(controller: &Controller, args: &LocalAgentArgs) -> anyhow::Result<Self> {
        let state_dir = controller.data_dir().join("local-agent");
        infrastructor_hostops::fsutil::create_private_dir(&state_dir)?;
        let url = loopback_url(controller.grpc_addr);
        let policy = try_it_policy(controller)?;
        let settings = LocalAgentSettings {
            state_dir: &state_dir,
            controller_url: &url,
            changes: &policy,
        };
        let config_file = controller.data_dir().join("local-agent.toml");
        infrastructor_hostops::fsutil::write_atomic(
            &config_file,
            toml::to_string(&settings)?.as_bytes(),
            0o600,
        )?;
        Ok(Self {
            binary: agent_binary(args)?,
            state_dir,
            config_file,
        })
    }

    fn command(&self, subcommand: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg(subcommand)
            .arg("--config")
            .arg(&self.config_file)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// The device the agent is enrolled as, read from its certificate (the identity the
    /// gateway verifies), if it has one.
    fn device_id(&self) -> Option<String> {
        let cert = self.state_dir.join("identity").join("cert.pem");
        let der = CertificateDer::from_pem_file(cert).ok()?;
        crate::pki::client_certificate(der.as_ref()).map(|c| c.device_id)
    }

    /// Enrolls on first run (a fresh join token, handed over in the child's environment,
    /// which other users cannot read); later runs reuse the identity.
    async fn enroll_once(&self, controller: &Controller) -> anyhow::Result<String> {
        if let Some(device_id) = self.device_id() {
            return Ok(device_id);
        }
        let token = controller
            .services
            .create_enrollment_token(&Ctx::system("quickstart"), CreateEnrollmentToken::default())
            .await?;
        let mut enroll = self.command("enroll");
        enroll
            .arg("--controller")
            .arg(loopback_url(controller.grpc_addr))
            .arg("--ca-fingerprint")
            .arg(&token.ca_fingerprint)
            .env("INFRASTRUCTOR_JOIN_TOKEN", &token.token)
            .stdout(std::process::Stdio::null());
        let status = tokio::time::timeout(AGENT_START_TIMEOUT, enroll.status())
            .await
            .map_err(|_| anyhow::anyhow!("the local agent did not enroll within 30s"))??;
        if !status.success() {
            anyhow::bail!("the local agent could not enroll ({status}); see its error above");
        }
        let device_id = self
            .device_id()
            .ok_or_else(|| anyhow::anyhow!("the local agent enrolled but has no certificate"))?;
        tracing::info!(%device_id, "local agent enrolled");
        Ok(device_id)
    }

    /// Starts the daemon and waits until its stream is up.
    async fn start(&self, controller: &Controller, device_id: &str) -> anyhow::Result<Child> {
        let mut child = self
            .command("run")
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {}: {error}", self.binary.display()))?;
        let deadline = tokio::time::Instant::now() + AGENT_START_TIMEOUT;
        while controller.services.sessions.get(device_id).is_none() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the local agent exited ({status}); see its error above");
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the local agent did not connect within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(child)
    }
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

/// SIGTERM (the agent stops gracefully, as under systemd), then SIGKILL after a grace period.
async fn stop_agent(mut child: Child) {
    if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    match tokio::time::timeout(AGENT_STOP_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!(%status, "local agent stopped with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "cannot wait for the local agent"),
        Err(_) => {
            tracing::warn!("local agent did not stop within 10s; killing it");
            let _ = child.kill().await;
        }
    }
}

pub async fn up(
    config: crate::config::ControllerConfig,
    agent: LocalAgentArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let controller = Controller::start(config).await?;
    let started = async {
        let token = admin_token(&controller).await?;
        let agent = LocalAgent::prepare(&controller, &agent)?;
        let device_id = agent.enroll_once(&controller).await?;
        let child = agent.start(&controller, &device_id).await?;
        Ok::<_, anyhow::Error>((token, device_id, child))
    };
    let (token, device_id, child) = match started.await {
        Ok(started) => started,
        Err(error) => {
            controller.shutdown().await;
            return Err(error);
        }
    };

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
    println!("  local agent:    device {device_id} (connected)");
    let managed = std::fs::canonicalize(controller.data_dir().join(MANAGED_DIR))?;
    println!("  config changes: allowed under {}", managed.display());
    println!("admin token: {token}");
    let data_dir = controller.data_dir();
    let header = data_dir.join(ADMIN_HEADER_FILE);
    infrastructor_hostops::fsutil::write_atomic(
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
    stop_agent(child).await;
    controller.shutdown().await;
    Ok(())
}
