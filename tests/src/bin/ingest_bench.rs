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
use infrastructor_agent::metrics::{now_ms, sample};
use infrastructor_controller::store::{Pool, Store};
use infrastructor_controller::{Controller, ControllerConfig};
use infrastructor_e2e::sim::{
    enroll_agents, enroll_into, free_port, open_stream, serve, status_kib,
};
use infrastructor_e2e::{fresh_postgres_database, Backend};
use infrastructor_proto::v1::{agent_message, controller_message, AgentMessage, MetricBatch};
use tokio::sync::mpsc;

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
    status_kib(pid, "VmRSS")
}

/// Starts `infrastructor-controller serve` as its own process, connects `count` agents and
/// reports the resident-memory growth per connected agent.
async fn memory_per_agent(count: usize) -> anyhow::Result<(u64, u64, f64)> {
    let dir = tempfile::tempdir()?;
    let grpc_port = free_port()?;
    let mut child = serve(dir.path(), grpc_port)?;
    let pid = child.id().context("child pid")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url = format!("https://127.0.0.1:{grpc_port}");
    let agents = enroll_into(dir.path(), &url, count).await?;
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
