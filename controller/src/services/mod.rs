//! All behaviour of the controller, behind methods that take a [`Ctx`] first and know nothing
//! of HTTP or gRPC. Surfaces (REST, the agent gateway, later MCP) are thin adapters over these.
//!
//! - [`changes`]: configuration changes across devices (plan, deploy, confirm, rollback).
//! - [`checks`]: host check reports, history, capabilities and containers.
//! - [`diagnostics`]: device and infrastructure diagnoses with a health score.
//! - [`devices`]: registry operations (list, get, create agentless, delete = revoke).
//! - [`metrics`]: ingest from agents (validation, exactly-once) and queries.
//! - [`ingest`]: group commit of agent batches.
//! - [`enrollment`]: join tokens, enrolling agents, renewing certificates.
//! - [`tokens`]: API tokens and the bootstrap admin token.
//! - [`validate`]: the strict patterns every name must match.

pub mod changes;
pub mod checks;
pub mod devices;
pub mod diagnostics;
pub mod enrollment;
pub mod ingest;
pub mod metrics;
pub mod tokens;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::ControllerConfig;
use crate::fleet::SessionRegistry;
use crate::pki::Pki;
use crate::store::Store;
use crate::telemetry::Telemetry;

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
    pub ingest: ingest::IngestQueue,
    /// The URL agents dial (for enrollment instructions).
    pub gateway_url: String,
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

/// `/readyz`: the controller can serve (its database answers).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    pub agents_connected: usize,
}

impl Services {
    pub async fn readiness(&self) -> crate::error::Result<Readiness> {
        self.store.ping().await.map_err(|error| {
            crate::error::Error::Unavailable(format!(
                "database unreachable: {}",
                error.kind_label()
            ))
        })?;
        Ok(Readiness {
            status: "ready".into(),
            database: "ok".into(),
            agents_connected: self.sessions.count(),
        })
    }
}
