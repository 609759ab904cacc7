//! Ingest benchmark: N simulated agents stream synthetic batches through the real gRPC
//! gateway (TLS 1.3, mTLS) into each backend; printed next to a raw bulk load of the same rows
//! into the same database, with the ratio. Then controller memory per connected agent, read
//! from a separate controller process with many agents connected.
//!
//!   cargo run --release -p infrastructor-e2e --bin ingest-bench -- --help

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use infrastructor_agent::identity::{self, Identity, IdentityMeta};
use infrastructor_agent::metrics::{now_ms, sample};
use infrastructor_agent::tls;
use infrastructor_controller::store::{Pool, Store};
use infrastructor_controller::{Controller, ControllerConfig};
use infrastructor_e2e::{fresh_postgres_database, Backend};
use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
use infrastructor_proto::v1::{
    agent_message, controller_message, AgentMessage, EnrollRequest, MetricBatch,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
#[command(about = "Ingest throughput vs raw bulk load, and controller memory per connected agent")]
struct Args {
    /// Simulated agents streaming concurrently.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Batches each agent sends.
    #[arg(long, default_value_t = 100)]
    batches: u64,
    /// Samples per batch.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Agents connected for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 1000)]
    memory_agents: usize,
}

struct SimulatedAgent {
    identity: Identity,
}

/// Enrolls `count` simulated agents through the real Enroll RPC.
async fn enroll_agents(
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
async fn open_stream(
    agent: &SimulatedAgent,
) -> anyhow::Result<(
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<infrastructor_proto::v1::ControllerMessage>,
)> {
    let channel = tls::connect(
        &agent.identity.meta.controller_url,
        tls::mutual_tls_config(&agent.identity)?,
    )
    .await?;
    let (sender, receiver) = mpsc::channel(64);
    sender
        .send(infrastructor_e2e::hello(
            &agent.identity.meta.device_id,
            "sim",
        ))
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

fn synthetic_batch(seq: u64, samples: usize, base_ts: i64) -> MetricBatch {
    let ts = base_ts + seq as i64 * 10_000;
    MetricBatch {
        seq,
        samples: (0..samples)
            .map(|i| {
                let label = i.to_string();
                sample(
                    "bench.value",
                    &[("index", &label)],
                    ts,
                    (seq as usize * samples + i) as f64,
                )
            })
            .collect(),
        spool_dropped_batches: 0,
        spool_dropped_samples: 0,
    }
}

/// Streams every batch of one agent with a window of 32 unacknowledged batches.
async fn stream_batches(
    sender: mpsc::Sender<AgentMessage>,
    mut inbound: tonic::Streaming<infrastructor_proto::v1::ControllerMessage>,
    prepared: Vec<MetricBatch>,
) -> anyhow::Result<()> {
    let batches = prepared.len() as u64;
    let mut prepared = prepared.into_iter();
    let mut acked = 0u64;
    let mut sent = 0u64;
    while acked < batches {
        while sent < batches && sent - acked < 32 {
            sent += 1;
            let batch = prepared.next().context("prepared batch")?;
            sender
                .send(AgentMessage {
                    body: Some(agent_message::Body::Metrics(batch)),
                })
                .await?;
        }
        match inbound.message().await?.and_then(|m| m.body) {
            Some(controller_message::Body::Ack(ack)) => acked = acked.max(ack.seq),
            Some(_) => {}
            None => bail!("stream closed before all acks"),
        }
    }
    Ok(())
}

fn config_for(data_dir: PathBuf, backend: &Backend) -> ControllerConfig {
    ControllerConfig {
        data_dir,
        database_url: match backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(url.clone()),
        },
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        maintenance_interval: Duration::from_secs(3600),
        ..ControllerConfig::default()
    }
}

async fn join_tokens(controller: &Controller, count: usize) -> anyhow::Result<Vec<String>> {
    let ctx = infrastructor_controller::ctx::Ctx::system("bench");
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(
            controller
                .services
                .create_enrollment_token(&ctx, Default::default())
                .await?
                .token,
        );
    }
    Ok(tokens)
}

/// Samples/s through the gateway into `backend`.
async fn gateway_ingest(backend: &Backend, args: &Args) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let controller = Controller::start(config_for(dir.path().to_path_buf(), backend)).await?;
    let url = format!("https://127.0.0.1:{}", controller.grpc_addr.port());
    let tokens = join_tokens(&controller, args.agents).await?;
    let agents = enroll_agents(&url, controller.services.pki.ca_fingerprint(), tokens).await?;
    // Streams open and data generated before the clock starts: only ingest is timed.
    let base_ts = now_ms() - 86_400_000;
    let mut prepared = Vec::with_capacity(agents.len());
    for agent in &agents {
        let (sender, inbound) = open_stream(agent).await?;
        let batches: Vec<MetricBatch> = (1..=args.batches)
            .map(|seq| synthetic_batch(seq, args.samples, base_ts))
            .collect();
        prepared.push((sender, inbound, batches));
    }
    let started = Instant::now();
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|(sender, inbound, batches)| tokio::spawn(stream_batches(sender, inbound, batches)))
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let total = args.agents as f64 * args.batches as f64 * args.samples as f64;
    controller.shutdown().await;
    Ok(total / elapsed.as_secs_f64())
}

/// Samples/s for a raw bulk load of the same number of rows into the same schema: COPY on
/// PostgreSQL, multi-row INSERTs in one transaction on SQLite.
async fn raw_bulk_load(backend: &Backend, args: &Args) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = match backend {
        Backend::Sqlite => Store::open_sqlite(&dir.path().join("bulk.db")).await?,
        Backend::Postgres(url) => Store::open_postgres(url).await?,
    };
    let series = (args.agents * args.samples) as i64;
    let rows_per_series = args.batches as i64;
    let total = series * rows_per_series;
    let base_ts = now_ms() - 86_400_000;
    let started = Instant::now();
    match store.write_pool() {
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            let mut rows = Vec::with_capacity(10_000);
            for index in 0..total {
                rows.push((
                    index % series,
                    base_ts + (index / series) * 10_000,
                    index as f64,
                ));
                if rows.len() == 10_000 || index == total - 1 {
                    let mut insert =
                        sqlx::QueryBuilder::new("INSERT INTO samples (series_id, ts_ms, value) ");
                    insert.push_values(rows.drain(..), |mut row, (s, t, v)| {
                        row.push_bind(s).push_bind(t).push_bind(v);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        }
        Pool::Postgres(pool) => {
            let mut connection = pool.acquire().await?;
            let mut copy = connection
                .copy_in_raw("COPY samples (series_id, ts_ms, value) FROM STDIN WITH (FORMAT text)")
                .await?;
            let mut chunk = String::with_capacity(1 << 20);
            for index in 0..total {
                use std::fmt::Write;
                let _ = writeln!(
                    chunk,
                    "{}\t{}\t{}",
                    index % series,
                    base_ts + (index / series) * 10_000,
                    index as f64
                );
                if chunk.len() > (1 << 20) - 64 || index == total - 1 {
                    copy.send(chunk.as_bytes()).await?;
                    chunk.clear();
                }
            }
            copy.finish().await?;
        }
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok(total as f64 / elapsed.as_secs_f64())
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS not found")
}

/// Starts `infrastructor-controller serve` as its own process, connects `count` agents and
/// reports the resident-memory growth per connected agent.
async fn memory_per_agent(count: usize) -> anyhow::Result<(u64, u64, f64)> {
    let binary = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .join("infrastructor-controller");
    if !binary.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p infrastructor-controller)",
            binary.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let grpc_port = listener.local_addr()?.port();
    drop(listener);
    let mut child = tokio::process::Command::new(&binary)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--http-listen")
        .arg("127.0.0.1:0")
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .env("INFRASTRUCTOR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;
    let url = format!("https://127.0.0.1:{grpc_port}");
    // Tokens are created directly in the child's database through the same CLI code path.
    let config = ControllerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ControllerConfig::default()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let services = infrastructor_controller::server::open_services(&config).await?;
    let ctx = infrastructor_controller::ctx::Ctx::system("bench");
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(
            services
                .create_enrollment_token(&ctx, Default::default())
                .await?
                .token,
        );
    }
    let agents = enroll_agents(&url, services.pki.ca_fingerprint(), tokens).await?;
    services.store.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = resident_kib(pid)?;
    let mut streams = Vec::with_capacity(count);
    for agent in &agents {
        streams.push(open_stream(agent).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid)?;
    drop(streams);
    child.kill().await?;
    Ok((
        before,
        after,
        (after.saturating_sub(before)) as f64 / count as f64,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut backends = Vec::new();
    if matches!(args.backend.as_str(), "sqlite" | "both") {
        backends.push(Backend::Sqlite);
    }
    if matches!(args.backend.as_str(), "postgres" | "both") {
        match fresh_postgres_database().await {
            Some(url) => backends.push(Backend::Postgres(url)),
            None => eprintln!(
                "PostgreSQL unreachable: skipping it (set INFRASTRUCTOR_TEST_POSTGRES_URL)"
            ),
        }
    }
    println!(
        "ingest: {} agents x {} batches x {} samples = {} samples per backend",
        args.agents,
        args.batches,
        args.samples,
        args.agents as u64 * args.batches * args.samples as u64
    );
    for backend in &backends {
        let name = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        let gateway = gateway_ingest(backend, &args).await?;
        let raw = match backend {
            Backend::Sqlite => raw_bulk_load(backend, &args).await?,
            // A second fresh database, so the baseline starts as empty as the gateway run.
            Backend::Postgres(_) => {
                let url = fresh_postgres_database().await.context("postgres")?;
                raw_bulk_load(&Backend::Postgres(url), &args).await?
            }
        };
        println!(
            "{name:>8}: gateway {gateway:>10.0} samples/s | raw bulk \
                load {raw:>10.0} samples/s | ratio {:.2}x (target >= 0.8x)",
            gateway / raw
        );
    }
    if args.memory_agents > 0 {
        let (before, after, per_agent) = memory_per_agent(args.memory_agents).await?;
        println!(
            "memory: controller RSS {before} KiB idle, {after} KiB with \
                {} agents connected: {per_agent:.1} KiB per agent (target \
                <= 64 KiB)",
            args.memory_agents
        );
    }
    Ok(())
}
