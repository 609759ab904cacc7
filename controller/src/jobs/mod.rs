//! Durable jobs: long operations (a deploy, a rollback, later application restarts, backups,
//! rollouts) run by the controller outside the request that asked for them.
//!
//! - [`Jobs`] (here): this replica's runner state — its ID, the slots that bound parallelism,
//!   the live jobs' cancellation tokens and a local wake-up for waiters.
//! - [`handle`]: [`JobHandle`], carried in a job's `Ctx`: steps recorded before they are
//!   taken and after, progress, log lines, the cancellation request.
//! - [`runner`]: spawning and running a job from the registry, the lease heartbeat, and the
//!   takeover of jobs whose owner died (reconciled through the operation's `resume`).
//!
//! Everything a job is lives in the store (`jobs`, `job_steps`, `job_events`,
//! `job_devices`, `job_locks`), on either backend; memory only holds what makes it fast.

pub mod handle;
pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

pub use handle::JobHandle;

use crate::config::JobsConfig;

/// How long a job may run in all (commands carry their own, shorter timeouts).
pub const JOB_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Returns once `wake_ups` says job `id` changed on this replica (or missed some wake-ups,
/// so the caller must look); never, once the runner is gone.
pub async fn changed(wake_ups: &mut broadcast::Receiver<String>, id: &str) {
    loop {
        match wake_ups.recv().await {
            Ok(changed) if changed == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// This replica's job runner state; cheap to share.
pub struct Jobs {
    /// Who owns a job's lease: a fresh ID per process, so a restarted controller is a new
    /// owner that takes its predecessor's jobs over like any other replica would.
    pub replica: String,
    pub config: JobsConfig,
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<String, CancellationToken>>,
    changed: broadcast::Sender<String>,
}

impl Jobs {
    pub fn new(config: JobsConfig, replica: String) -> Self {
        let (changed, _) = broadcast::channel(256);
        Self {
            replica,
            slots: Arc::new(Semaphore::new(config.parallelism)),
            config,
            live: Mutex::default(),
            changed,
        }
    }

    /// When a lease taken or renewed now runs out.
    pub fn lease_until(&self, now_ms: i64) -> i64 {
        now_ms + self.config.lease.as_millis() as i64
    }

    /// Wakes whoever waits on job `id` here (its waiters and event streams); other replicas'
    /// waiters poll the store.
    pub fn notify(&self, id: &str) {
        let _ = self.changed.send(id.to_string());
    }

    /// Wake-ups for every job changed on this replica.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Cancels the job here, if this replica runs it; true if it does.
    pub fn cancel_local(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Registers a job this replica runs; `None` if it already runs it.
    fn register(&self, id: &str) -> Option<CancellationToken> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.contains_key(id) {
            return None;
        }
        let token = CancellationToken::new();
        live.insert(id.to_string(), token.clone());
        Some(token)
    }

    fn unregister(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }
}
