//! The agent daemon: a collector, the link and certificate renewal, sharing one spool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use infrastructor_hostops::checks::Round;
use infrastructor_proto::v1::{self as proto, agent_message, AgentMessage};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::identity::Identity;
use crate::metrics::{now_ms, MetricSource};
use crate::spool::{Spool, SpoolState};
use crate::{enroll, link};
use infrastructor_hostops::change::{ChangeEngine, LocalHost};

/// State shared by the daemon's tasks.
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub spool: Mutex<Spool>,
    identity: RwLock<Identity>,
    /// Wakes the link when a batch was spooled.
    pub new_batch: Notify,
    /// Wakes the collector for an immediate round (the `CollectNow` command).
    pub collect_now: Notify,
    pub interval: watch::Sender<Duration>,
    /// Wakes the checks task (the `RunChecks` command).
    pub run_checks: Notify,
    /// Messages for the controller that are not metric batches (check reports). Bounded:
    /// when the link is down for long, the oldest reports are not kept — checks run again.
    pub outbox: Mutex<mpsc::Receiver<AgentMessage>>,
    pub outbox_sender: mpsc::Sender<AgentMessage>,
    /// The configuration change engine; `None` when no roots are allowlisted.
    pub changes: Option<Arc<ChangeEngine<LocalHost>>>,
    /// Wakes the deadline watcher after a commit set a new confirmation deadline.
    pub change_deadline_armed: Arc<Notify>,
    connected: AtomicBool,
}

impl Shared {
    pub fn identity(&self) -> Identity {
        match self.identity.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_identity(&self, identity: Identity) {
        match self.identity.write() {
            Ok(mut guard) => *guard = identity,
            Err(poisoned) => *poisoned.into_inner() = identity,
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// An enrolled agent, ready to run.
pub struct Agent {
    shared: Arc<Shared>,
}

/// A cheap handle for observing a running agent (used by `up` and by tests).
#[derive(Clone)]
pub struct AgentHandle {
    shared: Arc<Shared>,
}

impl AgentHandle {
    pub fn device_id(&self) -> String {
        self.shared.identity().meta.device_id
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub async fn spool_state(&self) -> SpoolState {
        self.shared.spool.lock().await.state()
    }

    /// Number of batches still waiting for the controller's acknowledgement.
    pub async fn spooled_batches(&self) -> usize {
        self.shared.spool.lock().await.len()
    }
}

impl Agent {
    /// Loads the identity and opens the spool; fails with a clear error when not enrolled.
    pub fn new(config: AgentConfig) -> Result<Self> {
        config.validate()?;
        crate::identity::private_state_dir(&config.state_dir)?;
        let identity = Identity::load(&config.state_dir)?
            .ok_or_else(|| AgentError::NotEnrolled(config.state_dir.clone()))?;
        let spool = Spool::open(&config.state_dir.join("spool"), config.spool_max_bytes)?;
        let (interval, _) = watch::channel(config.interval);
        let (outbox_sender, outbox) = mpsc::channel(16);
        let changes = if config.changes.roots.is_empty() {
            None
        } else {
            Some(Arc::new(ChangeEngine::open(
                LocalHost,
                config.changes.clone(),
                &config.state_dir.join("changes"),
            )?))
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                spool: Mutex::new(spool),
                identity: RwLock::new(identity),
                new_batch: Notify::new(),
                collect_now: Notify::new(),
                interval,
                run_checks: Notify::new(),
                outbox: Mutex::new(outbox),
                outbox_sender,
                changes,
                change_deadline_armed: Arc::new(Notify::new()),
                connected: AtomicBool::new(false),
            }),
        })
    }

    pub fn handle(&self) -> AgentHandle {
        AgentHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled. Spooled batches stay on disk for the next start.
    pub async fn run(
        self,
        source: Box<dyn MetricSource>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let shared = self.shared;
        tracing::info!(
            device_id = %shared.identity().meta.device_id,
            state_dir = %shared.config.state_dir.display(),
            interval = %humantime::format_duration(shared.config.interval),
            "agent starting"
        );
        let collector = run_collector(&shared, source, &shutdown);
        let link = link::run_link(&shared, &shutdown);
        let renewal = run_renewal(&shared, &shutdown);
        let checks = run_checks(&shared, &shutdown);
        let deadlines = run_change_deadlines(&shared, &shutdown);
        let (collected, (), (), (), ()) = tokio::join!(collector, link, renewal, checks, deadlines);
        tracing::info!("agent stopped");
        collected
    }
}

/// Collects on the configured interval (or on demand) and spools each round durably.
async fn run_collector(
    shared: &Shared,
    mut source: Box<dyn MetricSource>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut interval = shared.interval.subscribe();
    // A short first wait gives CPU usage a measurement window, then data flows at once.
    let mut wait = Duration::from_millis(500).min(*interval.borrow());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.collect_now.notified() => {}
            _ = interval.changed() => { wait = *interval.borrow_and_update(); continue; }
            _ = shutdown.cancelled() => return Ok(()),
        }
        wait = *interval.borrow();
        let samples = source.collect();
        if samples.is_empty() {
            continue;
        }
        let mut spool = shared.spool.lock().await;
        for chunk in samples.chunks(infrastructor_proto::MAX_BATCH_SAMPLES as usize) {
            if let Err(error) = spool.append(chunk.to_vec()) {
                // A full or broken disk must not kill the agent; the round is lost and logged.
                tracing::error!(%error, "cannot spool metric batch");
            }
        }
        drop(spool);
        shared.new_batch.notify_one();
    }
}

/// Runs host checks on their interval (or when asked); container and pool metrics go to the
/// durable spool, reports to the outbox.
async fn run_checks(shared: &Shared, shutdown: &CancellationToken) {
    let interval = shared.config.checks.interval;
    if interval.is_zero() {
        return;
    }
    // First round soon after start, so a new host shows its state quickly.
    let mut wait = Duration::from_secs(2).min(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.run_checks.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        wait = interval;
        let round = infrastructor_hostops::checks::run_round(&shared.config.checks).await;
        if !round.samples.is_empty() {
            if let Err(error) = shared.spool.lock().await.append(round.samples.clone()) {
                tracing::error!(%error, "cannot spool check metrics");
            }
            shared.new_batch.notify_one();
        }
        let message = AgentMessage {
            body: Some(agent_message::Body::CheckReports(check_reports_message(
                &round,
            ))),
        };
        if shared.outbox_sender.try_send(message).is_err() {
            tracing::warn!(
                "check reports not queued: the controller has not taken the previous ones"
            );
        }
    }
}

/// Evidence larger than this is cut: a report is a summary, not a dump.
const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

/// Protocol form of a round's reports.
fn check_reports_message(round: &Round) -> proto::CheckReports {
    let checked_at = now_ms();
    proto::CheckReports {
        capabilities: round.capabilities.clone(),
        reports: round
            .reports
            .iter()
            .map(|report| {
                let mut evidence = report.evidence.to_string();
                if evidence.len() > MAX_EVIDENCE_BYTES {
                    evidence = serde_json::json!({ "truncated": true, "bytes": evidence.len() })
                        .to_string();
                }
                proto::CheckReport {
                    check: report.check.clone(),
                    status: proto::CheckStatus::from(report.status).into(),
                    message: report.message.clone(),
                    evidence_json: evidence,
                    checked_at_unix_ms: checked_at,
                }
            })
            .collect(),
    }
}

/// Finishes what a crash interrupted, then rolls back every transaction whose confirmation
/// deadline passes — whether or not the controller is reachable — and tells the controller.
async fn run_change_deadlines(shared: &Shared, shutdown: &CancellationToken) {
    let Some(engine) = shared.changes.clone() else {
        return;
    };
    match engine.recover().await {
        Ok(recovered) => report_change_events(shared, recovered),
        Err(error) => tracing::error!(%error, "cannot recover configuration transactions"),
    }
    loop {
        let wait_ms = engine
            .next_deadline_ms()
            .await
            .map(|deadline| (deadline - now_ms()).clamp(0, 60_000))
            .unwrap_or(60_000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            _ = shared.change_deadline_armed.notified() => continue,
            _ = shutdown.cancelled() => return,
        }
        match engine.expire().await {
            Ok(expired) => report_change_events(shared, expired),
            Err(error) => tracing::error!(%error, "cannot expire configuration transactions"),
        }
    }
}

fn report_change_events(
    shared: &Shared,
    reports: Vec<infrastructor_hostops::change::CommitReport>,
) {
    let outbox = shared.outbox_sender.clone();
    // Reporting must never hold up the next rollback, so it waits for room on its own.
    tokio::spawn(async move {
        send_change_events(outbox, reports).await;
    });
}

async fn send_change_events(
    outbox: mpsc::Sender<AgentMessage>,
    reports: Vec<infrastructor_hostops::change::CommitReport>,
) {
    for report in reports {
        let event = infrastructor_proto::v1::ChangeEvent {
            txn_id: report.txn_id,
            state: proto::TxnState::from(report.state).into(),
            reason: report.reason.unwrap_or_default(),
        };
        let message = AgentMessage {
            body: Some(agent_message::Body::ChangeEvent(event)),
        };
        // Queued while the link is down; sent when it is back.
        if outbox.send(message).await.is_err() {
            return;
        }
    }
}

/// Renews the client certificate at two thirds of its lifetime; retries on failure.
async fn run_renewal(shared: &Shared, shutdown: &CancellationToken) {
    loop {
        let identity = shared.identity();
        let wait_ms = (identity.renew_at_ms() - now_ms()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            _ = shutdown.cancelled() => return,
        }
        let url = shared
            .config
            .controller_url
            .clone()
            .unwrap_or_else(|| identity.meta.controller_url.clone());
        match enroll::renew(
            &shared.config.state_dir,
            &identity,
            &url,
            &shared.config.hostname,
        )
        .await
        {
            Ok(renewed) => {
                tracing::info!(
                    not_after_ms = renewed.meta.not_after_ms,
                    "client certificate renewed"
                );
                shared.set_identity(renewed);
            }
            Err(error) => {
                tracing::warn!(%error, "certificate renewal failed; retrying");
                let remaining = (identity.meta.not_after_ms - now_ms()).max(0) as u64;
                let retry = Duration::from_millis((remaining / 10).clamp(1_000, 60_000));
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}
