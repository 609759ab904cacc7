//! Commands to agents connected to another controller. With several controllers on one
//! PostgreSQL database an agent's stream lands on one of them while a request or a job runs
//! on another: the store records which replica holds each stream (`agent_sessions`) and which
//! replicas are alive, and a call for an agent held elsewhere is written to `routed_calls`
//! and handed to its holder, which makes it on its own stream and writes the answer back.
//!
//! `LISTEN`/`NOTIFY` wakes both sides at once; both also poll, so a lost notification (a
//! reconnecting listener) only costs latency. Why not Redis pub/sub: Redis is optional, and a
//! change set can be megabytes, beyond a notification's 8 KB — the row carries the payload,
//! the notification only its ID. On SQLite a controller is the only replica: nothing routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use infrastructor_hostops::change::{ChangeSet, CommitOptions};
use infrastructor_hostops::container_ops::ContainerOp;
use infrastructor_hostops::names::{ContainerName, TxnId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::host::{AgentHost, ChangeStep, CheckRun, Host};
use super::{AgentDriver, SessionRegistry};
use crate::ctx::Ctx;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{RoutedCallRow, Store};

/// A replica that has not said it is alive for this long is presumed dead: its streams are
/// not routed to.
const ALIVE_WITHIN_MS: i64 = 10_000;
/// How often a replica says it is alive, refreshes its view of the others' streams and
/// looks for calls a lost notification did not announce.
const TICK: Duration = Duration::from_secs(2);
/// How often a waiting caller looks at its call when no notification came.
const POLL: Duration = Duration::from_millis(250);
/// Beyond the call's own timeout: the hop to the other replica and back.
const SLACK: Duration = Duration::from_secs(5);
/// Calls older than this are removed whoever made them.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// What one replica asks the holder of an agent's stream to do with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutedCall {
    RunChecks,
    Prepare {
        txn_id: String,
        set: ChangeSet,
    },
    Commit {
        txn_id: String,
        confirm_timeout_ms: u64,
        health_timeout_ms: u64,
    },
    Confirm {
        txn_id: String,
    },
    Abort {
        txn_id: String,
    },
    Rollback {
        txn_id: String,
        reason: String,
    },
    Status {
        txn_id: String,
    },
    Containers {
        names: Vec<String>,
    },
    Container {
        name: String,
        op: ContainerOp,
    },
    Backup {
        request: Box<infrastructor_hostops::backup::BackupRequest>,
    },
}

/// The answer written back: the call's result as JSON, or its error's kind and message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RoutedAnswer {
    Ok(Value),
    Error { kind: String, message: String },
}

/// This replica's side of routing; cheap to share.
pub struct Routing {
    pub replica: String,
    store: Arc<Store>,
    /// Off on SQLite (one controller, nothing to route).
    enabled: bool,
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Devices whose streams other live replicas hold, as of the last tick.
    elsewhere: RwLock<HashMap<String, String>>,
}

impl Routing {
    pub fn new(replica: String, store: Arc<Store>, enabled: bool) -> Self {
        Self {
            replica,
            store,
            enabled,
            waiting: Mutex::default(),
            elsewhere: RwLock::default(),
        }
    }

    fn calls_channel(replica: &str) -> String {
        format!("ifr_calls_{replica}")
    }

    fn answers_channel(replica: &str) -> String {
        format!("ifr_answers_{replica}")
    }

    fn alive_since(&self) -> i64 {
        crate::services::now_ms() - ALIVE_WITHIN_MS
    }

    /// Another live replica holds the device's stream (as of the last tick).
    pub fn streams_elsewhere(&self, device_id: &str) -> bool {
        let elsewhere = self.elsewhere.read().unwrap_or_else(|p| p.into_inner());
        elsewhere.contains_key(device_id)
    }

    /// Records that this replica now holds the device's stream `stream_id`.
    pub async fn hold(&self, device_id: &str, stream_id: &str) {
        if !self.enabled {
            return;
        }
        let now = crate::services::now_ms();
        let held = self
            .store
            .hold_agent_session(device_id, &self.replica, stream_id, now)
            .await;
        if let Err(error) = held {
            tracing::warn!(device_id, %error, "cannot record the stream's holder");
        }
    }

    /// The stream `stream_id` ended here.
    pub async fn release(&self, device_id: &str, stream_id: &str) {
        if !self.enabled {
            return;
        }
        if let Err(error) = self.store.release_agent_session(device_id, stream_id).await {
            tracing::warn!(device_id, %error, "cannot record that the stream ended");
        }
    }

    /// The live replica other than this one that holds the device's stream, if any.
    pub async fn holder(&self, device_id: &str) -> Result<Option<String>> {
        if !self.enabled {
            return Ok(None);
        }
        Ok(self
            .store
            .agent_session_elsewhere(device_id, &self.replica, self.alive_since())
            .await?)
    }

    /// Whether `replica` is alive: this one is; on SQLite (one controller) no other is; on
    /// PostgreSQL, one that said so recently is.
    pub async fn is_alive(&self, replica: &str) -> Result<bool> {
        if replica == self.replica {
            return Ok(true);
        }
        if !self.enabled {
            return Ok(false);
        }
        Ok(self
            .store
            .replica_alive(replica, self.alive_since())
            .await?)
    }

    /// Hands `call` for `device_id` to `holder` and waits up to `timeout` (plus the hop)
    /// for its answer.
    pub async fn call(
        &self,
        ctx: &Ctx,
        device_id: &str,
        holder: &str,
        call: &RoutedCall,
        timeout: Duration,
    ) -> Result<Value> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let row = RoutedCallRow {
            id: id.clone(),
            from_replica: self.replica.clone(),
            to_replica: holder.to_string(),
            device_id: device_id.to_string(),
            request_id: ctx.request_id.clone(),
            call: serde_json::to_string(call)
                .map_err(|e| Error::Internal(format!("routed call: {e}")))?,
            answer: None,
            created_at_ms: crate::services::now_ms(),
            answered_at_ms: None,
        };
        let (woken, mut wake) = oneshot::channel();
        self.lock_waiting().insert(id.clone(), woken);
        let answered = async {
            self.store.insert_routed_call(&row).await?;
            self.store.notify(&Self::calls_channel(holder), &id).await?;
            let deadline = tokio::time::Instant::now() + ctx.bounded(timeout + SLACK);
            let mut next_liveness = tokio::time::Instant::now() + TICK;
            loop {
                if let Some(answer) = self.store.routed_call(&id).await?.and_then(|r| r.answer) {
                    return Ok(answer);
                }
                // A holder that died (before or after taking the call) will not answer.
                if tokio::time::Instant::now() >= next_liveness {
                    next_liveness += TICK;
                    if !self.store.replica_alive(holder, self.alive_since()).await? {
                        return Err(Error::Unavailable(format!(
                            "device {device_id} was connected to controller {holder}, which \
                             stopped; it is offline until it reconnects"
                        )));
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Unavailable(format!(
                        "device {device_id} is connected to controller {holder}, which did not \
                         answer within {}s",
                        (timeout + SLACK).as_secs()
                    )));
                }
                let _ = tokio::time::timeout(POLL, &mut wake).await;
            }
        }
        .await;
        self.lock_waiting().remove(&id);
        let cutoff = crate::services::now_ms() - FORGET_AFTER_MS;
        if let Err(error) = self.store.forget_routed_calls(&id, cutoff).await {
            tracing::warn!(%error, "cannot remove a routed call");
        }
        let answer: RoutedAnswer = serde_json::from_str(&answered?)
            .map_err(|e| Error::Internal(format!("routed answer: {e}")))?;
        match answer {
            RoutedAnswer::Ok(value) => Ok(value),
            RoutedAnswer::Error { kind, message } => Err(Error::of_kind(
                ErrorKind::parse(&kind).unwrap_or(ErrorKind::Internal),
                message,
            )),
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, id: &str) {
        if let Some(waiter) = self.lock_waiting().remove(id) {
            let _ = waiter.send(());
        }
    }
}

/// This replica's part: say it is alive, keep its view of the others' streams, make the
/// calls handed to it on its own streams, and wake its callers when answers arrive.
pub async fn serve(
    routing: Arc<Routing>,
    driver: AgentDriver,
    sessions: Arc<SessionRegistry>,
    stop: CancellationToken,
) {
    if !routing.enabled {
        return;
    }
    let mut listener = listen(&routing).await;
    loop {
        tick(&routing, &driver, &sessions).await;
        let sleep = tokio::time::sleep(TICK);
        tokio::pin!(sleep);
        loop {
            let notified = async {
                match listener.as_mut() {
                    Some(listener) => listener.recv().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut sleep => break,
                notification = notified => {
                    let Some(notification) = notification else { continue };
                    let id = notification.payload().to_string();
                    if notification.channel().starts_with("ifr_answers_") {
                        routing.wake(&id);
                    } else {
                        take_and_run(&routing, &driver, &sessions, &id).await;
                    }
                }
            }
        }
    }
}

async fn listen(routing: &Routing) -> Option<sqlx::postgres::PgListener> {
    let crate::store::Pool::Postgres(pool) = routing.store.write_pool() else {
        return None;
    };
    let listened = async {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener
            .listen_all([
                Routing::calls_channel(&routing.replica).as_str(),
                Routing::answers_channel(&routing.replica).as_str(),
            ])
            .await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listened.await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for routed calls; polling instead");
            None
        }
    }
}

async fn tick(routing: &Arc<Routing>, driver: &AgentDriver, sessions: &Arc<SessionRegistry>) {
    let now = crate::services::now_ms();
    if let Err(error) = routing.store.touch_replica(&routing.replica, now).await {
        tracing::warn!(%error, "cannot record that this controller is alive");
    }
    match routing
        .store
        .remote_agent_sessions(&routing.replica, routing.alive_since())
        .await
    {
        Ok(elsewhere) => {
            let mut view = routing.elsewhere.write().unwrap_or_else(|p| p.into_inner());
            *view = elsewhere.into_iter().collect();
        }
        Err(error) => tracing::warn!(%error, "cannot read where agents are connected"),
    }
    match routing.store.pending_routed_calls(&routing.replica).await {
        Ok(pending) => {
            for call in pending {
                take_and_run(routing, driver, sessions, &call.id).await;
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read routed calls"),
    }
}

/// Takes call `id` (once, whoever else looks) and makes it on its own task.
async fn take_and_run(
    routing: &Arc<Routing>,
    driver: &AgentDriver,
    sessions: &Arc<SessionRegistry>,
    id: &str,
) {
    let row = match routing.store.routed_call(id).await {
        Ok(Some(row)) if row.to_replica == routing.replica => row,
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot read a routed call");
            return;
        }
    };
    match routing
        .store
        .take_routed_call(id, crate::services::now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot take a routed call");
            return;
        }
    }
    let host = AgentHost {
        device_id: row.device_id.clone(),
        last_seen_ms: None,
        driver: driver.clone(),
        sessions: sessions.clone(),
        // Made here, on this replica's stream, or not at all: never routed on.
        routing: None,
    };
    let routing = routing.clone();
    tokio::spawn(async move {
        let ctx = Ctx::system("routed call").with_request_id(&row.request_id);
        let answer = match run(&host, &ctx, &row.call).await {
            Ok(value) => RoutedAnswer::Ok(value),
            Err(error) => RoutedAnswer::Error {
                kind: error.kind().as_str().to_string(),
                message: error.public_message(),
            },
        };
        let answer = serde_json::to_string(&answer).unwrap_or_default();
        let written = async {
            routing.store.answer_routed_call(&row.id, &answer).await?;
            routing
                .store
                .notify(&Routing::answers_channel(&row.from_replica), &row.id)
                .await
        };
        if let Err(error) = written.await {
            tracing::warn!(%error, "cannot answer a routed call");
        }
    });
}

async fn run(host: &AgentHost, ctx: &Ctx, call: &str) -> Result<Value> {
    let call: RoutedCall =
        serde_json::from_str(call).map_err(|e| Error::invalid(format!("routed call: {e}")))?;
    let txn = |id: &str| TxnId::new(id).map_err(|e| Error::invalid(e.to_string()));
    let value = match &call {
        RoutedCall::RunChecks => match host.run_checks(ctx).await? {
            CheckRun::Reported => Value::Null,
            CheckRun::Ran(_) => {
                return Err(Error::Internal("an agent's checks are reported".into()))
            }
        },
        RoutedCall::Prepare { txn_id, set } => {
            to_json(host.prepare_change(ctx, &txn(txn_id)?, set).await?)
        }
        RoutedCall::Commit {
            txn_id,
            confirm_timeout_ms,
            health_timeout_ms,
        } => {
            let options = CommitOptions {
                confirm_timeout: Duration::from_millis(*confirm_timeout_ms),
                health_timeout: Duration::from_millis(*health_timeout_ms),
            };
            to_json(host.commit_change(ctx, &txn(txn_id)?, options).await?)
        }
        RoutedCall::Confirm { txn_id } => to_json(
            host.change_step(ctx, &txn(txn_id)?, ChangeStep::Confirm)
                .await?,
        ),
        RoutedCall::Abort { txn_id } => to_json(
            host.change_step(ctx, &txn(txn_id)?, ChangeStep::Abort)
                .await?,
        ),
        RoutedCall::Rollback { txn_id, reason } => {
            let step = ChangeStep::Rollback(reason);
            to_json(host.change_step(ctx, &txn(txn_id)?, step).await?)
        }
        RoutedCall::Status { txn_id } => to_json(
            host.change_step(ctx, &txn(txn_id)?, ChangeStep::Status)
                .await?,
        ),
        RoutedCall::Containers { names } => {
            let names = names
                .iter()
                .map(|n| ContainerName::new(n).map_err(|e| Error::invalid(e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            let only = (!names.is_empty()).then_some(names.as_slice());
            to_json(host.containers(ctx, only).await?)
        }
        RoutedCall::Container { name, op } => {
            let name = ContainerName::new(name).map_err(|e| Error::invalid(e.to_string()))?;
            to_json(host.container(ctx, &name, op).await?)
        }
        RoutedCall::Backup { request } => to_json(host.backup(ctx, request).await?),
    };
    Ok(value)
}

fn to_json<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
