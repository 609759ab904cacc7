//! Plan → confirm for mutating MCP tools: the first call returns a plan and a confirmation ID
//! bound to that plan (tool and arguments) and to the caller; it is single-use and expires.
//! Only a second call with the ID and the same arguments executes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::model::JsonObject;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ctx::Ctx;
use crate::error::{Error, Result};

const LIFETIME: Duration = Duration::from_secs(300);
/// Outstanding confirmations at most; the oldest are dropped beyond this.
const MAX_PENDING: usize = 10_000;

struct Pending {
    principal_id: String,
    tool: String,
    digest: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Confirmations {
    pending: Mutex<HashMap<String, Pending>>,
}

fn digest(tool: &str, arguments: &JsonObject) -> String {
    // serde_json maps are ordered by key, so equal arguments give equal text.
    let text = serde_json::to_string(arguments).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{tool}\n{text}")))
}

impl Confirmations {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        match self.pending.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records a plan and returns what the caller sees: the plan and its confirmation ID.
    pub fn plan(&self, ctx: &Ctx, tool: &str, arguments: &JsonObject, preview: Value) -> Value {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let mut pending = self.pending();
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.expires)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            id.clone(),
            Pending {
                principal_id: ctx.principal.id.clone(),
                tool: tool.to_string(),
                digest: digest(tool, arguments),
                expires: now + LIFETIME,
            },
        );
        json!({
            "status": "confirmation_required",
            "tool": tool,
            "arguments": arguments,
            "plan": preview,
            "confirmation_id": id,
            "expires_in_seconds": LIFETIME.as_secs(),
            "next": format!("call {tool} again with the same arguments and \"confirmation_id\": \"{id}\" to execute"),
        })
    }

    /// Consumes the confirmation if it matches this caller, tool and arguments.
    pub fn redeem(&self, ctx: &Ctx, id: &str, tool: &str, arguments: &JsonObject) -> Result<()> {
        let mut pending = self.pending();
        let Some(entry) = pending.get(id) else {
            return Err(Error::invalid(
                "unknown or already used confirmation_id: call the tool without it to get a new plan",
            ));
        };
        if entry.expires <= Instant::now() {
            pending.remove(id);
            return Err(Error::invalid(
                "confirmation_id expired: call the tool without it to get a new plan",
            ));
        }
        if entry.principal_id != ctx.principal.id {
            return Err(Error::Forbidden(
                "this confirmation_id was issued to another caller".into(),
            ));
        }
        if entry.tool != tool || entry.digest != digest(tool, arguments) {
            return Err(Error::invalid(
                "confirmation_id does not match this call: the tool and arguments must be exactly those of the plan",
            ));
        }
        pending.remove(id);
        Ok(())
    }
}
