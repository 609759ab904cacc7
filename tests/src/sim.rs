//! Simulated agents for the benchmarks: enrolled through the real Enroll RPC, streaming over
//! the real mTLS gateway, without a daemon behind them; and the resident memory of a process.

use anyhow::{bail, Context};
use infrastructor_agent::identity::{self, Identity, IdentityMeta};
use infrastructor_agent::metrics::now_ms;
use infrastructor_agent::tls;
use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
use infrastructor_proto::v1::{controller_message, AgentMessage, ControllerMessage, EnrollRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub struct SimulatedAgent {
    pub identity: Identity,
}

/// Enrolls one simulated agent per join token through the real Enroll RPC at `url`.
pub async fn enroll_agents(
    url: &str,
    fingerprint: &str,
    tokens: Vec<String>,
) -> anyhow::Result<Vec<SimulatedAgent>> {
    let pin = identity::parse_fingerprint(fingerprint)?;
    let channel = tls::connect(url, tls::pinned_ca_config(pin)?).await?;
    let mut agents = Vec::with_capacity(tokens.len());
    for (index, token) in tokens.into_iter().enumerate() {
        let key = identity::generate_key()?;
        let hostname = format!("sim-{index}");
        let response = AgentGatewayClient::new(channel.clone())
            .enroll(EnrollRequest {
                join_token: token,
                csr_pem: identity::certificate_request(&key, &hostname)?,
                hostname,
                agent_version: "bench".into(),
            })
            .await?
            .into_inner();
        agents.push(SimulatedAgent {
            identity: Identity {
                key_pem: key.serialize_pem(),
                cert_pem: response.certificate_pem,
                ca_pem: response.ca_certificate_pem,
                meta: IdentityMeta {
                    device_id: response.device_id,
                    controller_url: url.to_string(),
                    issued_at_ms: now_ms(),
                    not_after_ms: response.not_after_unix_ms,
                },
            },
        });
    }
    Ok(agents)
}

/// Opens the agent's stream and waits for the welcome; returns the sender and the inbound.
pub async fn open_stream(
    agent: &SimulatedAgent,
) -> anyhow::Result<(
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<ControllerMessage>,
)> {
    let channel = tls::connect(
        &agent.identity.meta.controller_url,
        tls::mutual_tls_config(&agent.identity)?,
    )
    .await?;
    let (sender, receiver) = mpsc::channel(64);
    sender
        .send(crate::hello(&agent.identity.meta.device_id, "sim"))
        .await?;
    let mut inbound = AgentGatewayClient::new(channel)
        .connect(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    match inbound.message().await?.and_then(|m| m.body) {
        Some(controller_message::Body::Welcome(_)) => Ok((sender, inbound)),
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// A status line of `/proc/<pid>/status` in KiB (`VmRSS` now, `VmHWM` the peak).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} not found"))
}

/// The controller binary beside the running one (a bench binary in the same target dir).
pub fn controller_binary() -> anyhow::Result<std::path::PathBuf> {
    let binary = std::env::current_exe()?
        .parent()
        .context("this binary has no directory")?
        .join("infrastructor-controller");
    if !binary.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p infrastructor-controller)",
            binary.display()
        );
    }
    Ok(binary)
}

/// A loopback port free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `infrastructor-controller serve` as its own process on `data_dir`, its gateway on
/// `grpc_port`.
pub fn serve(data_dir: &std::path::Path, grpc_port: u16) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(controller_binary()?)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .env("INFRASTRUCTOR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// `count` simulated agents enrolled at the controller serving `data_dir` on `url`: join
/// tokens straight into its database (the CLI's code path), then the real Enroll RPC.
pub async fn enroll_into(
    data_dir: &std::path::Path,
    url: &str,
    count: usize,
) -> anyhow::Result<Vec<SimulatedAgent>> {
    let config = infrastructor_controller::ControllerConfig {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    let services = infrastructor_controller::server::open_services(&config).await?;
    let ctx = infrastructor_controller::ctx::Ctx::system("bench");
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let token = services
            .create_enrollment_token(&ctx, Default::default())
            .await?;
        tokens.push(token.token);
    }
    let agents = enroll_agents(url, services.pki.ca_fingerprint(), tokens).await;
    services.store.close().await;
    agents
}
