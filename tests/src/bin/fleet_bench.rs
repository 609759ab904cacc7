//! Fleet benchmark: one command fanned out to many simulated agents connected over the real
//! mTLS gateway, every one answered (per-command latency and the total); the same fan-out to
//! hosts over SSH through the pool, side by side with as many agents; and a reconnect storm —
//! every agent reconnecting at once after a controller restart, the time until all are back
//! and the controller's peak memory.
//!
//!   cargo build --release -p infrastructor-controller
//!   cargo run --release -p infrastructor-e2e --bin fleet-bench -- --help

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::future::join_all;
use infrastructor_controller::ctx::Ctx;
use infrastructor_controller::fleet::SshTarget;
use infrastructor_e2e::sim::{
    enroll_agents, enroll_into, free_port, open_stream, serve, status_kib, SimulatedAgent,
};
use infrastructor_e2e::sshd::{current_user, start_sshd};
use infrastructor_e2e::TestController;
use infrastructor_proto::v1::command::Kind;
use infrastructor_proto::v1::{
    agent_message, command_result, controller_message, AgentMessage, CollectNow, CommandResult,
    CommandSucceeded,
};
use rand::Rng;

#[derive(Parser)]
#[command(about = "Command fan-out to agents and over SSH, and a reconnect storm")]
struct Args {
    /// Simulated agents the command is fanned out to.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Hosts over SSH (one sshd each), side by side with as many agents.
    #[arg(long, default_value_t = 50)]
    ssh_hosts: usize,
    /// Agents reconnecting after a controller restart (0 skips the storm).
    #[arg(long, default_value_t = 1000)]
    storm_agents: usize,
}

/// Latencies, sorted, and the wall time of the whole fan-out.
struct FanOut {
    latencies: Vec<Duration>,
    total: Duration,
}

impl FanOut {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:>28}: p50 {:>8.2} ms | p99 {:>8.2} ms | max {:>8.2} ms | all answered in {:>8.2} ms",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(*self.latencies.last().unwrap_or(&Duration::ZERO)),
            ms(self.total)
        )
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A simulated agent's stream that answers every command at once, as a real agent answers
/// `CollectNow`.
async fn answering(agent: &SimulatedAgent) -> anyhow::Result<()> {
    let (sender, mut inbound) = open_stream(agent).await?;
    tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            if let Some(controller_message::Body::Command(command)) = message.body {
                let answer = AgentMessage {
                    body: Some(agent_message::Body::CommandResult(CommandResult {
                        request_id: command.request_id,
                        outcome: Some(command_result::Outcome::Succeeded(CommandSucceeded {
                            message: "collecting".into(),
                            payload: None,
                        })),
                    })),
                };
                if sender.send(answer).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(())
}

async fn join_tokens(controller: &TestController, count: usize) -> Vec<String> {
    let services = controller.services.clone();
    controller
        .run(async move {
            let ctx = Ctx::system("bench");
            let mut tokens = Vec::with_capacity(count);
            for _ in 0..count {
                let token = services
                    .create_enrollment_token(&ctx, Default::default())
                    .await
                    .expect("join token");
                tokens.push(token.token);
            }
            tokens
        })
        .await
}

/// `CollectNow` to every device at once through the agent driver, each timed to its answer.
async fn agent_fan_out(controller: &TestController, devices: Vec<String>) -> FanOut {
    let services = controller.services.clone();
    controller
        .run(async move {
            let ctx = Ctx::system("bench");
            let started = Instant::now();
            let latencies = join_all(devices.iter().map(|device| {
                let (services, ctx) = (&services, &ctx);
                async move {
                    let sent = Instant::now();
                    let kind = Kind::CollectNow(CollectNow {});
                    services
                        .agents
                        .send(ctx, device, kind, Duration::from_secs(30))
                        .await
                        .expect("answered");
                    sent.elapsed()
                }
            }))
            .await;
            fan_out(latencies, started.elapsed())
        })
        .await
}

/// `uname -a` on every host at once over SSH through the pool, each timed to its output.
async fn ssh_fan_out(controller: &TestController, targets: Vec<SshTarget>) -> FanOut {
    let services = controller.services.clone();
    controller
        .run(async move {
            let uname = infrastructor_hostops::command::uname();
            let started = Instant::now();
            let latencies = join_all(targets.iter().map(|target| {
                let (services, uname) = (&services, &uname);
                async move {
                    let sent = Instant::now();
                    services
                        .ssh
                        .run(target, uname, Duration::from_secs(30))
                        .await
                        .expect("uname over SSH");
                    sent.elapsed()
                }
            }))
            .await;
            fan_out(latencies, started.elapsed())
        })
        .await
}

fn fan_out(mut latencies: Vec<Duration>, total: Duration) -> FanOut {
    latencies.sort_unstable();
    FanOut { latencies, total }
}

async fn fan_outs(args: &Args) -> anyhow::Result<()> {
    let (_dir, controller) = TestController::start_sqlite().await;
    let count = args.agents.max(args.ssh_hosts);
    let tokens = join_tokens(&controller, count).await;
    let fingerprint = controller.services.pki.ca_fingerprint().to_string();
    let agents = enroll_agents(&controller.gateway_url(), &fingerprint, tokens).await?;
    for agent in &agents {
        answering(agent).await?;
    }
    let devices: Vec<String> = agents
        .iter()
        .map(|a| a.identity.meta.device_id.clone())
        .collect();
    // One round to warm up, then the measured one.
    agent_fan_out(&controller, devices.clone()).await;
    let all = agent_fan_out(&controller, devices[..args.agents].to_vec()).await;
    println!("fan-out: one command to every connected agent, each answered");
    println!("{}", all.line(&format!("{} agents (gRPC)", args.agents)));

    if args.ssh_hosts == 0 {
        return Ok(());
    }
    let public_key = controller.services.ssh_public_key.clone();
    let mut hosts = Vec::with_capacity(args.ssh_hosts);
    for _ in 0..args.ssh_hosts {
        let sshd = start_sshd().context("sshd is needed for the SSH fan-out")?;
        std::fs::write(
            sshd.dir.path().join("authorized_keys"),
            format!("{public_key}\n"),
        )?;
        hosts.push(sshd);
    }
    let targets: Vec<SshTarget> = hosts
        .iter()
        .map(|h| SshTarget::new("127.0.0.1", h.port, &current_user(), &h.host_public_key))
        .collect::<Result<_, _>>()?;
    let cold = ssh_fan_out(&controller, targets.clone()).await;
    let warm = ssh_fan_out(&controller, targets).await;
    let agents = agent_fan_out(&controller, devices[..args.ssh_hosts].to_vec()).await;
    let n = args.ssh_hosts;
    println!("side by side: {n} hosts");
    println!("{}", agents.line(&format!("{n} agents (gRPC)")));
    println!("{}", warm.line(&format!("{n} SSH hosts, pooled")));
    println!("{}", cold.line(&format!("{n} SSH hosts, first connect")));
    println!(
        "{:>28}: agents answer all {:.1}x faster than pooled SSH, {:.1}x than a first SSH connect",
        "ratio",
        warm.total.as_secs_f64() / agents.total.as_secs_f64(),
        cold.total.as_secs_f64() / agents.total.as_secs_f64()
    );
    controller.shutdown().await;
    Ok(())
}

/// Keeps one agent connected as a real agent does: reconnects with full-jitter backoff
/// (0.5 s doubling to 60 s) and counts each welcome.
fn keep_connected(agent: SimulatedAgent, welcomes: tokio::sync::mpsc::UnboundedSender<Instant>) {
    tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            match open_stream(&agent).await {
                Ok((_sender, mut inbound)) => {
                    attempt = 0;
                    let _ = welcomes.send(Instant::now());
                    while let Ok(Some(_)) = inbound.message().await {}
                }
                Err(_) => attempt += 1,
            }
            let ceiling = Duration::from_millis(500)
                .saturating_mul(2u32.saturating_pow(attempt.min(7)))
                .min(Duration::from_secs(60));
            let wait = rand::thread_rng().gen_range(Duration::ZERO..=ceiling);
            tokio::time::sleep(wait).await;
        }
    });
}

async fn reconnect_storm(count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let grpc_port = free_port()?;
    let mut child = serve(dir.path(), grpc_port)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url = format!("https://127.0.0.1:{grpc_port}");
    let agents = enroll_into(dir.path(), &url, count).await?;
    let (welcomes, mut welcomed) = tokio::sync::mpsc::unbounded_channel();
    for agent in agents {
        keep_connected(agent, welcomes.clone());
    }
    for _ in 0..count {
        welcomed.recv().await.context("agents stopped")?;
    }
    child.kill().await?;
    let restarted = Instant::now();
    let child = serve(dir.path(), grpc_port)?;
    let pid = child.id().context("child pid")?;
    let mut back = 0;
    let mut last = restarted;
    while back < count {
        match tokio::time::timeout(Duration::from_secs(300), welcomed.recv()).await {
            Ok(Some(at)) => {
                back += 1;
                last = at;
            }
            _ => bail!("only {back} of {count} agents came back within 5 minutes"),
        }
    }
    let peak = status_kib(pid, "VmHWM")?;
    let now = status_kib(pid, "VmRSS")?;
    println!("reconnect storm: {count} agents, controller killed and started again");
    println!(
        "{:>28}: all back {:.2} s after the restart | controller peak RSS {} KiB \
         ({:.1} KiB per agent), {} KiB once settled",
        format!("{count} agents"),
        (last - restarted).as_secs_f64(),
        peak,
        peak as f64 / count as f64,
        now
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.agents == 0 || args.ssh_hosts > args.agents.max(args.ssh_hosts) {
        bail!("--agents must be at least 1");
    }
    fan_outs(&args).await?;
    if args.storm_agents > 0 {
        reconnect_storm(args.storm_agents).await?;
    }
    Ok(())
}
