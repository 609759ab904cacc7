//! All behaviour of the controller, behind methods that take a [`Ctx`] first and know nothing
//! of HTTP or gRPC. Surfaces (REST, the agent gateway, later MCP) are thin adapters over these.
//!
//! - [`alerts`]: alert rules, their evaluation, silences, and notifications' views.
//! - [`approvals`]: MCP requests held for a human's decision.
//! - [`audit`]: the audit trail of every mutation.
//! - [`backups`]: backup targets, backups, drills that verify them, restores.
//! - [`changes`]: configuration changes across devices (plan, deploy, confirm, rollback).
//! - [`checks`]: host check reports, history, capabilities and containers.
//! - [`diagnostics`]: device and infrastructure diagnoses with a health score.
//! - [`devices`]: registry operations (list, get, create agentless, delete = revoke).
//! - [`metrics`]: ingest from agents (validation, exactly-once) and queries.
//! - [`ingest`]: group commit of agent batches.
//! - [`jobs`]: durable jobs as callers see them (submit, list, read, wait, events, cancel).
//! - [`links`]: an agent stream's bookkeeping (hello, resume point, last seen, gone).
//! - [`maintenance`]: a device's maintenance mode, entered and left as a job.
//! - [`enrollment`]: join tokens, enrolling agents, renewing certificates.
//! - [`performance`]: operation timing summaries and their flush.
//! - [`redact`]: the one redaction of secrets and file contents for every view.
//! - [`tokens`]: API tokens and the bootstrap admin token.
//! - [`untrusted`]: cleaning and bounding of everything hosts report.
//! - [`validate`]: the strict patterns every name must match.

pub mod alerts;
pub mod analytics;
pub mod applications;
pub mod approvals;
pub mod audit;
pub mod backups;
pub mod changes;
pub mod checks;
pub mod containers;
pub mod devices;
pub mod diagnostics;
pub mod dr;
pub mod enrollment;
pub mod ingest;
pub mod jobs;
pub mod links;
pub mod maintenance;
pub mod metrics;
pub mod performance;
pub mod redact;
pub mod tokens;
pub mod untrusted;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::{Cache, CacheStats};
use crate::config::ControllerConfig;
use crate::error::{Error, Result};
use crate::fleet::SessionRegistry;
use crate::performance::OperationTimings;
use crate::pki::Pki;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::telemetry::{closed, Telemetry};

/// The shared resources every operation works with; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<ControllerConfig>,
    pub store: Arc<Store>,
    pub pki: Arc<Pki>,
    pub sessions: Arc<SessionRegistry>,
    pub agents: crate::fleet::AgentDriver,
    /// Agentless hosts are reached with this driver and identity.
    pub ssh: Arc<crate::fleet::SshDriver>,
    pub ssh_public_key: String,
    /// Change engines for agentless hosts (journals under `<data_dir>/changes`).
    pub agentless_changes: Arc<crate::fleet::ssh_changes::AgentlessChanges>,
    pub telemetry: Arc<Telemetry>,
    /// Read cache (Redis or in process); writes invalidate it.
    pub cache: Arc<Cache>,
    /// Per-principal token buckets, shared by every surface.
    pub limiter: Arc<RateLimiter>,
    /// Failed authentications per peer address, checked before a token is looked up.
    pub auth_failures: Arc<crate::connections::AuthFailures>,
    /// Operation timings not yet flushed to `operation_metrics`.
    pub timings: Arc<OperationTimings>,
    /// MCP mutations' plans awaiting their confirmation call.
    pub confirmations: Arc<crate::operations::confirm::Confirmations>,
    /// This replica's job runner state (the jobs themselves are in the store).
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Commands to agents whose streams another controller holds.
    pub routing: Arc<crate::fleet::routing::Routing>,
    /// Wall time for expiries (held requests, tokens); tests move it instead of sleeping.
    pub clock: Arc<dyn crate::clock::Clock>,
    pub ingest: ingest::IngestQueue,
    /// The URL agents dial (for enrollment instructions).
    pub gateway_url: String,
    /// Notification channels, their secrets read at start.
    pub channels: Arc<crate::notify::channels::Channels>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `/readyz`: the controller can serve (its database answers). The cache is reported but
/// does not decide readiness: without it, reads go to the database.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    pub agents_connected: usize,
    /// `ok`, or why the cache backend does not answer.
    pub cache_status: String,
    pub cache: CacheStats,
}

impl Services {
    /// Unix milliseconds by the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records one operation's timing for the performance summary and `/metrics`. A failure
    /// is a server-side error (5xx); client errors are the caller's, not the operation's.
    /// Labels come from closed sets (see [`crate::telemetry`]).
    pub fn record_operation(
        &self,
        surface: &str,
        operation: &str,
        elapsed: Duration,
        failed: bool,
    ) {
        // Callers pass labels from closed sets; this keeps the table and `/metrics` closed even
        // if one does not.
        let (surface, operation) = (closed(surface), closed(operation));
        self.timings.record(surface, operation, elapsed, failed);
        self.telemetry
            .observe_operation(surface, operation, elapsed.as_secs_f64(), failed);
    }

    pub async fn readiness(&self) -> crate::error::Result<Readiness> {
        self.store.ping().await.map_err(|error| {
            crate::error::Error::Unavailable(format!(
                "database unreachable: {}",
                error.kind_label()
            ))
        })?;
        let cache_status = match self.cache.ping().await {
            Ok(()) => "ok".to_string(),
            Err(error) => format!("unavailable: {error}"),
        };
        Ok(Readiness {
            status: "ready".into(),
            database: "ok".into(),
            agents_connected: self.sessions.count(),
            cache_status,
            cache: self.cache.stats(),
        })
    }
}

/// A duration a caller gave (`24h`, `7d`), more than zero and at most `max`; `default` when
/// absent.
pub(crate) fn parse_duration(
    field: &str,
    text: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration> {
    let Some(text) = text else { return Ok(default) };
    let value = humantime::parse_duration(text).map_err(|e| {
        Error::invalid(format!(
            "invalid {field} {text:?}: {e} (examples: 24h, 7d, 90d)"
        ))
    })?;
    if value.is_zero() || value > max {
        return Err(Error::invalid(format!(
            "{field} must be more than 0 and at most {}",
            humantime::format_duration(max)
        )));
    }
    Ok(value)
}
