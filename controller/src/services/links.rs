//! The bookkeeping of an agent's stream, as the gateway reports it: a hello (what the agent
//! says of itself, untrusted), the resume point it is welcomed with, that it is still there,
//! and that it left. The live stream itself (its command channel) stays in the gateway and
//! `fleet::sessions`.

use super::untrusted::{self, Lines};
use super::Services;
use crate::cache::key;
use crate::ctx::Ctx;
use crate::error::{Error, Result};

/// What an agent says of itself when its stream opens, still untrusted.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentHello {
    pub hostname: String,
    pub agent_version: String,
}

/// The agent as recorded: its hello cleaned and bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectedAgent {
    pub hostname: String,
    pub agent_version: String,
}

impl Services {
    /// Records a hello; the device shows its new hostname and version at once.
    pub async fn agent_connected(
        &self,
        ctx: &Ctx,
        device_id: &str,
        hello: &AgentHello,
        now: i64,
    ) -> Result<ConnectedAgent> {
        let agent = ConnectedAgent {
            hostname: untrusted::clean(&hello.hostname, 253, Lines::Single),
            agent_version: untrusted::clean(&hello.agent_version, 64, Lines::Single),
        };
        self.store
            .record_hello(device_id, &agent.hostname, &agent.agent_version, now)
            .await?;
        self.cache.invalidate(&key::of_device(device_id)).await;
        // The stream's ID is the context's request ID.
        self.routing.hold(device_id, &ctx.request_id).await;
        tracing::info!(request_id = %ctx.request_id, device_id, version = %agent.agent_version,
            "agent connected");
        Ok(agent)
    }

    /// The device's high-water mark: every batch at or below it is stored. Read after the
    /// stream is registered, so a device deleted while its stream waited for the hello is
    /// refused here (deletion revokes in the store first, then ends registered streams: one
    /// of the two always sees the other).
    pub async fn resume_point(&self, _ctx: &Ctx, device_id: &str) -> Result<u64> {
        let row = self
            .store
            .device_by_id(device_id)
            .await?
            .ok_or_else(|| Error::Forbidden("unknown device".into()))?;
        if row.revoked_at_ms.is_some() {
            return Err(Error::Forbidden("device has been revoked".into()));
        }
        Ok(row.high_water_mark.max(0) as u64)
    }

    /// Persists when the agent was last heard from (the gateway calls this now and then,
    /// not for every message).
    pub async fn agent_seen(&self, ctx: &Ctx, device_id: &str, now: i64) {
        if let Err(error) = self.store.record_last_seen(device_id, now).await {
            tracing::warn!(request_id = %ctx.request_id, device_id, %error,
                "cannot record last seen");
        }
    }

    /// The stream ended: last seen now, and the device's views show it offline.
    pub async fn agent_disconnected(&self, ctx: &Ctx, device_id: &str, now: i64) {
        self.agent_seen(ctx, device_id, now).await;
        self.routing.release(device_id, &ctx.request_id).await;
        self.cache.invalidate(&key::of_device(device_id)).await;
        tracing::info!(request_id = %ctx.request_id, device_id, "agent disconnected");
    }
}
