//! Plan → confirm for mutating MCP tools: the first call returns a plan and a confirmation ID
//! bound to that plan (tool and arguments) and to the caller; it is single-use and expires.
//! Only a second call with the ID and the same arguments executes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so tests of expiry run under paused time.
use tokio::time::Instant;

use rmcp::model::JsonObject;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ctx::Ctx;
use crate::error::{Error, Result};

const LIFETIME: Duration = Duration::from_secs(300);
/// Outstanding confirmations per caller; beyond, the caller's own oldest is dropped.
const PER_CALLER: usize = 32;
/// Outstanding confirmations in all; beyond, new plans are refused (never someone else's
/// confirmation dropped).
const MAX_PENDING: usize = 10_000;

struct Pending {
    principal_id: String,
    tool: String,
    digest: String,
    expires: Instant,
}

pub struct Confirmations {
    pending: Mutex<HashMap<String, Pending>>,
    per_caller: usize,
    max_pending: usize,
}

impl Default for Confirmations {
    fn default() -> Self {
        Self::with_limits(PER_CALLER, MAX_PENDING)
    }
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

    fn with_limits(per_caller: usize, max_pending: usize) -> Self {
        Self {
            pending: Mutex::default(),
            per_caller,
            max_pending,
        }
    }

    /// Records a plan and returns what the caller sees: the plan and its confirmation ID. A
    /// caller's flood only ever displaces its own older plans.
    /// `tool` is the name the caller used (for the instructions); the confirmation is bound
    /// to `operation` and the canonical arguments.
    pub fn plan(
        &self,
        ctx: &Ctx,
        tool: &str,
        operation: &str,
        arguments: &JsonObject,
        preview: Value,
    ) -> Result<Value> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let mut pending = self.pending();
        pending.retain(|_, p| p.expires > now);
        let mine: Vec<(&String, &Pending)> = pending
            .iter()
            .filter(|(_, p)| p.principal_id == ctx.principal.id)
            .collect();
        if mine.len() >= self.per_caller {
            let oldest = mine
                .iter()
                .min_by_key(|(_, p)| p.expires)
                .map(|(k, _)| (*k).clone());
            if let Some(oldest) = oldest {
                pending.remove(&oldest);
            }
        } else if pending.len() >= self.max_pending {
            return Err(Error::Unavailable(
                "too many plans await confirmation; retry in a few minutes".into(),
            ));
        }
        pending.insert(
            id.clone(),
            Pending {
                principal_id: ctx.principal.id.clone(),
                tool: operation.to_string(),
                digest: digest(operation, arguments),
                expires: now + LIFETIME,
            },
        );
        Ok(json!({
            "status": "confirmation_required",
            "tool": tool,
            "arguments": arguments,
            "plan": preview,
            "confirmation_id": id,
            "expires_in_seconds": LIFETIME.as_secs(),
            "next": format!("call {tool} again with the same arguments and \"confirmation_id\": \"{id}\" to execute"),
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Scope};

    fn caller(name: &str) -> Ctx {
        Ctx::new(Principal::token(name, name, Scope::Operate, name), "r")
    }

    fn confirmation_id(plan: &Value) -> String {
        plan["confirmation_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_expires_after_five_minutes() {
        let confirmations = Confirmations::default();
        let args = JsonObject::new();
        let me = caller("me");
        let plan =
            |c: &Confirmations| confirmation_id(&c.plan(&me, "t", "t", &args, json!({})).unwrap());
        let (late, in_time) = (plan(&confirmations), plan(&confirmations));
        tokio::time::advance(LIFETIME - Duration::from_secs(1)).await;
        assert!(confirmations.redeem(&me, &in_time, "t", &args).is_ok());
        tokio::time::advance(Duration::from_secs(2)).await;
        let expired = confirmations.redeem(&me, &late, "t", &args).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        // Gone once seen expired: a retry says so too, and never runs.
        assert!(confirmations.redeem(&me, &late, "t", &args).is_err());
    }

    #[test]
    fn a_flood_never_evicts_another_callers_confirmation() {
        let confirmations = Confirmations::with_limits(2, 4);
        let args = JsonObject::new();
        let (victim, flooder) = (caller("victim"), caller("flooder"));
        let kept = confirmation_id(
            &confirmations
                .plan(&victim, "t", "t", &args, json!({}))
                .unwrap(),
        );
        let mut flood = Vec::new();
        for _ in 0..10 {
            let plan = confirmations
                .plan(&flooder, "t", "t", &args, json!({}))
                .unwrap();
            flood.push(confirmation_id(&plan));
        }
        assert!(confirmations.redeem(&victim, &kept, "t", &args).is_ok());
        // The flooder only displaced its own older plans.
        assert!(confirmations
            .redeem(&flooder, &flood[0], "t", &args)
            .is_err());
        assert!(confirmations
            .redeem(&flooder, &flood[9], "t", &args)
            .is_ok());
    }

    #[test]
    fn a_full_table_refuses_new_plans_instead_of_evicting() {
        let confirmations = Confirmations::with_limits(2, 2);
        let args = JsonObject::new();
        let first = confirmation_id(
            &confirmations
                .plan(&caller("a"), "t", "t", &args, json!({}))
                .unwrap(),
        );
        confirmations
            .plan(&caller("b"), "t", "t", &args, json!({}))
            .unwrap();
        let refused = confirmations
            .plan(&caller("c"), "t", "t", &args, json!({}))
            .unwrap_err();
        assert!(refused.to_string().contains("too many plans"), "{refused}");
        assert!(confirmations
            .redeem(&caller("a"), &first, "t", &args)
            .is_ok());
    }
}
