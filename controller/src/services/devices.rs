//! Device registry operations.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{now_ms, rfc3339, validate, Services};
use crate::auth::Scope;
use crate::cache::{key, ttl};
use crate::ctx::Ctx;
use crate::domain::DeviceKind;
use crate::error::{Error, Result};
use crate::fleet::{AgentHost, Host, Link, SshHost};
use crate::services::maintenance;
use crate::store::{DeviceRow, LatestSample, NewDevice};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    /// `agent` or `agentless`.
    pub kind: DeviceKind,
    /// `online`, `offline`, `never_connected` (agents) or `agentless`.
    pub status: String,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    pub ssh_address: Option<String>,
    pub ssh_user: Option<String>,
    pub created_at: String,
    pub last_seen_at: Option<String>,
    pub connected_since: Option<String>,
    /// Highest metric batch sequence number committed.
    pub high_water_mark: i64,
    /// Batches/samples the agent dropped because its spool was full (data loss, reported).
    pub spool_dropped_batches: i64,
    pub spool_dropped_samples: i64,
    /// A few headline metrics from the latest samples.
    pub summary: Option<DeviceSummary>,
    /// The newest jobs working on this device, live ones included (one device's view only;
    /// empty in listings).
    pub jobs: Vec<crate::services::jobs::JobSummary>,
    /// Who put the device in maintenance, why and until when, and what was stopped; its
    /// alerts are silenced meanwhile.
    pub maintenance: Option<crate::services::maintenance::MaintenanceView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DeviceSummary {
    pub sampled_at: String,
    pub cpu_usage_percent: Option<f64>,
    pub memory_used_percent: Option<f64>,
    pub load_1m: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentlessDevice {
    /// The device's name in the registry, e.g. `nas`.
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub name: String,
    /// `host`, `host:port`, `10.0.0.5:22` or `[2001:db8::1]:22`.
    #[schemars(length(min = 1, max = 261))]
    pub ssh_address: String,
    /// The POSIX account the controller logs in as.
    #[schemars(pattern(r"^[a-z_][a-z0-9_-]{0,31}$"))]
    pub ssh_user: String,
    /// The host's SSH public key (`ssh-ed25519 AAAA…`), pinned: any other key is refused.
    /// When absent, the controller's configured known_hosts file must have the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+=*( .*)?$"
    ))]
    pub ssh_host_key: Option<String>,
}

/// The pinned SSH target of an agentless device.
pub fn ssh_target(row: &DeviceRow) -> Result<crate::fleet::SshTarget> {
    let (Some(address), Some(user), Some(host_key)) =
        (&row.ssh_address, &row.ssh_user, &row.ssh_host_key)
    else {
        return Err(Error::Unavailable(format!(
            "device {:?} has no SSH address, user and pinned host key; register it again with ssh_host_key",
            row.name
        )));
    };
    let (host, port) = split_ssh_address(address);
    crate::fleet::SshTarget::new(&host, port, user, host_key)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// `host:port`, `host`, `[v6]:port` or a bare IPv6 address → host and port (default 22).
pub fn split_ssh_address(address: &str) -> (String, u16) {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return (socket.ip().to_string(), socket.port());
    }
    if address.parse::<std::net::IpAddr>().is_ok() {
        return (address.to_string(), 22);
    }
    match address.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(22)),
        None => (address.to_string(), 22),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SshPublicKey {
    /// One line for `~/.ssh/authorized_keys` on agentless hosts.
    pub public_key: String,
}

/// The series a device's summary shows, in device lists and views.
pub const SUMMARY_SERIES: [&str; 3] = ["cpu.usage_percent", "memory.used_percent", "load.1m"];

/// Jobs shown in one device's view.
const DEVICE_JOBS: i64 = 5;

impl Services {
    /// The device's host: the one place that knows how each kind of device is reached.
    pub fn host(&self, row: &DeviceRow) -> Arc<dyn Host> {
        match row.kind {
            DeviceKind::Agent => Arc::new(AgentHost {
                device_id: row.id.clone(),
                last_seen_ms: row.last_seen_ms,
                driver: self.agents.clone(),
                sessions: self.sessions.clone(),
                routing: Some(self.routing.clone()),
            }),
            DeviceKind::Agentless => Arc::new(SshHost {
                device_id: row.id.clone(),
                target: ssh_target(row).map_err(|e| e.public_message()),
                driver: self.ssh.clone(),
                changes: self.agentless_changes.clone(),
                backups: Arc::new(self.config.agentless_backups.clone()),
            }),
        }
    }

    /// A device as the API shows it; `latest` holds its newest summary samples.
    fn view(&self, row: DeviceRow, latest: &[LatestSample]) -> DeviceView {
        let session = self.sessions.get(&row.id);
        let status = match self.host(&row).link() {
            Link::OnDemand => "agentless",
            Link::Streaming => "online",
            Link::Offline {
                last_seen_ms: Some(_),
            } => "offline",
            Link::Offline { last_seen_ms: None } => "never_connected",
        };
        let summary = latest.iter().map(|s| s.ts_ms).max().map(|ts| {
            let value = |name: &str| latest.iter().find(|s| s.name == name).map(|s| s.value);
            DeviceSummary {
                sampled_at: rfc3339(ts),
                cpu_usage_percent: value("cpu.usage_percent"),
                memory_used_percent: value("memory.used_percent"),
                load_1m: value("load.1m"),
            }
        });
        let last_seen = session
            .as_ref()
            .map(|s| s.last_seen_ms)
            .into_iter()
            .chain(row.last_seen_ms)
            .max();
        DeviceView {
            status: status.to_string(),
            last_seen_at: last_seen.map(rfc3339),
            connected_since: session.as_ref().map(|s| rfc3339(s.connected_at_ms)),
            created_at: rfc3339(row.created_at_ms),
            id: row.id,
            name: row.name,
            kind: row.kind,
            hostname: row.hostname,
            agent_version: row.agent_version,
            ssh_address: row.ssh_address,
            ssh_user: row.ssh_user,
            high_water_mark: row.high_water_mark,
            spool_dropped_batches: row.spool_dropped_batches,
            spool_dropped_samples: row.spool_dropped_samples,
            summary,
            jobs: Vec::new(),
            maintenance: None,
        }
    }

    /// A listing's `device` filter as a device ID (a device that does not exist is NotFound).
    pub(crate) async fn device_filter(&self, device: Option<&str>) -> Result<Option<String>> {
        match device {
            Some(device) => Ok(Some(self.require_device(device).await?.id)),
            None => Ok(None),
        }
    }

    /// A live device by ID or name, or NotFound.
    pub(crate) async fn require_device(&self, id_or_name: &str) -> Result<DeviceRow> {
        if id_or_name.is_empty() || id_or_name.len() > 128 {
            return Err(Error::invalid(
                "device ID or name must be 1 to 128 characters",
            ));
        }
        self.store
            .find_device(id_or_name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("device {id_or_name:?} not found")))
    }

    pub async fn list_devices(&self, ctx: &Ctx) -> Result<Vec<DeviceView>> {
        ctx.principal.require(Scope::Read)?;
        let load = async {
            let rows = self.store.list_devices().await?;
            let mut maintained: HashMap<String, _> = self
                .store
                .all_maintenance()
                .await?
                .into_iter()
                .map(|m| (m.device_id.clone(), m))
                .collect();
            let mut latest: HashMap<String, Vec<LatestSample>> = HashMap::new();
            for sample in self.store.latest_samples_of_all(&SUMMARY_SERIES).await? {
                latest
                    .entry(sample.device_id.clone())
                    .or_default()
                    .push(sample);
            }
            Ok::<_, Error>(
                rows.into_iter()
                    .map(|row| {
                        let samples = latest.remove(&row.id).unwrap_or_default();
                        let maintenance = maintained.remove(&row.id);
                        let mut view = self.view(row, &samples);
                        view.maintenance = maintenance.as_ref().map(maintenance::view);
                        view
                    })
                    .collect(),
            )
        };
        self.cache
            .get_or_load(key::DEVICES, ttl::DEVICES, load)
            .await
    }

    pub async fn get_device(&self, ctx: &Ctx, id_or_name: &str) -> Result<DeviceView> {
        ctx.principal.require(Scope::Read)?;
        let row = self.require_device(id_or_name).await?;
        let latest = self.store.latest_samples(&row.id, &SUMMARY_SERIES).await?;
        let jobs = self.store.jobs(Some(&row.id), None, DEVICE_JOBS).await?;
        let maintenance = self.store.maintenance(&row.id).await?;
        let mut view = self.view(row, &latest);
        view.maintenance = maintenance.as_ref().map(maintenance::view);
        view.jobs = jobs
            .into_iter()
            .map(crate::services::jobs::summary)
            .collect();
        Ok(view)
    }

    /// Registers a host reached over SSH (no agent). Host checks use it in a later release.
    pub async fn create_agentless_device(
        &self,
        ctx: &Ctx,
        request: CreateAgentlessDevice,
    ) -> Result<DeviceView> {
        ctx.principal.require(Scope::Operate)?;
        validate::device_name(&request.name)?;
        validate::ssh_address(&request.ssh_address)?;
        validate::ssh_user(&request.ssh_user)?;
        let (host, port) = split_ssh_address(&request.ssh_address);
        let host_key = match &request.ssh_host_key {
            Some(key) => key.trim().to_string(),
            None => self.known_host_key(&host, port)?,
        };
        crate::fleet::SshTarget::new(&host, port, &request.ssh_user, &host_key)
            .map_err(|e| Error::invalid(e.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        self.store
            .insert_device(&NewDevice {
                id: &id,
                name: &request.name,
                kind: DeviceKind::Agentless,
                ssh_address: Some(&request.ssh_address),
                ssh_user: Some(&request.ssh_user),
                ssh_host_key: Some(&host_key),
                hostname: None,
                created_at_ms: now_ms(),
            })
            .await?;
        self.cache.invalidate(&key::of_device(&id)).await;
        tracing::info!(request_id = %ctx.request_id,
            principal = %ctx.principal.id,
            device_id = %id,
            "agentless device created");
        self.get_device(ctx, &id).await
    }

    /// The key for `host:port` in the configured known_hosts file, to pin at registration.
    fn known_host_key(&self, host: &str, port: u16) -> Result<String> {
        let Some(path) = &self.config.ssh_known_hosts else {
            return Err(Error::invalid(
                "ssh_host_key is required (or configure ssh_known_hosts on the controller)",
            ));
        };
        crate::fleet::SshTarget::host_key_from_known_hosts(host, port, path)
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                Error::invalid(format!(
                    "no host key for {host}:{port} in {}; pass ssh_host_key or add the host to known_hosts",
                    path.display()
                ))
            })
    }

    /// The controller's SSH public key, for the `authorized_keys` of agentless hosts.
    pub fn ssh_public_key(&self, ctx: &Ctx) -> Result<SshPublicKey> {
        ctx.principal.require(Scope::Read)?;
        Ok(SshPublicKey {
            public_key: self.ssh_public_key.clone(),
        })
    }

    /// Deletes a device: it is revoked (its certificate no longer opens a stream, its open
    /// stream is ended) and hidden. Its metrics age out with retention.
    pub async fn delete_device(&self, ctx: &Ctx, id_or_name: &str) -> Result<()> {
        ctx.principal.require(Scope::Admin)?;
        let row = self.require_device(id_or_name).await?;
        if !self.store.revoke_device(&row.id, now_ms()).await? {
            return Err(Error::NotFound(format!("device {id_or_name:?} not found")));
        }
        self.sessions.kick(&row.id);
        self.cache.invalidate(&key::of_device(&row.id)).await;
        tracing::info!(request_id = %ctx.request_id,
            principal = %ctx.principal.id,
            device_id = %row.id,
            "device deleted and revoked");
        Ok(())
    }
}
