//! The registry of live agent streams: one per device (a newer stream replaces an older one),
//! each with a cancellation token so revocation and shutdown can end it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub connected_at_ms: i64,
    pub last_seen_ms: i64,
    pub agent_version: String,
    pub hostname: String,
}

struct Entry {
    session_id: u64,
    info: SessionInfo,
    cancel: CancellationToken,
    commands: Option<CommandSender>,
}

/// Where commands for a connected agent go (the session forwards them to its stream).
pub type CommandSender = tokio::sync::mpsc::Sender<infrastructor_proto::v1::ControllerMessage>;

#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        match self.sessions.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Registers a new stream for `device_id`, ending any previous one; `commands` is where
    /// the [`super::AgentDriver`] sends commands for it.
    pub fn register(
        &self,
        device_id: &str,
        info: SessionInfo,
        commands: Option<CommandSender>,
    ) -> (u64, CancellationToken) {
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = CancellationToken::new();
        let previous = self.with(|sessions| {
            sessions.insert(
                device_id.to_string(),
                Entry {
                    session_id,
                    info,
                    cancel: cancel.clone(),
                    commands,
                },
            )
        });
        if let Some(previous) = previous {
            previous.cancel.cancel();
        }
        (session_id, cancel)
    }

    pub fn touch(&self, device_id: &str, session_id: u64, now_ms: i64) {
        self.with(|sessions| {
            if let Some(entry) = sessions.get_mut(device_id) {
                if entry.session_id == session_id {
                    entry.info.last_seen_ms = now_ms;
                }
            }
        });
    }

    /// Removes the session if it is still the current one for the device.
    pub fn unregister(&self, device_id: &str, session_id: u64) {
        self.with(|sessions| {
            if sessions.get(device_id).map(|e| e.session_id) == Some(session_id) {
                sessions.remove(device_id);
            }
        });
    }

    /// The command channel of the device's current stream, if it is connected.
    pub fn commands(&self, device_id: &str) -> Option<CommandSender> {
        self.with(|sessions| sessions.get(device_id).and_then(|e| e.commands.clone()))
    }

    pub fn get(&self, device_id: &str) -> Option<SessionInfo> {
        self.with(|sessions| sessions.get(device_id).map(|e| e.info.clone()))
    }

    /// Ends the device's stream (revocation).
    pub fn kick(&self, device_id: &str) {
        if let Some(entry) = self.with(|sessions| sessions.remove(device_id)) {
            entry.cancel.cancel();
        }
    }

    /// Ends every stream (shutdown).
    pub fn cancel_all(&self) {
        let entries: Vec<Entry> = self.with(|sessions| sessions.drain().map(|(_, e)| e).collect());
        for entry in entries {
            entry.cancel.cancel();
        }
    }

    pub fn count(&self) -> usize {
        self.with(|sessions| sessions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            connected_at_ms: 1,
            last_seen_ms: 1,
            agent_version: "0".into(),
            hostname: "h".into(),
        }
    }

    #[test]
    fn newer_stream_replaces_older_and_stale_unregister_is_ignored() {
        let registry = SessionRegistry::default();
        let (first, first_cancel) = registry.register("d", info(), None);
        let (second, second_cancel) = registry.register("d", info(), None);
        assert!(first_cancel.is_cancelled());
        assert!(!second_cancel.is_cancelled());
        registry.unregister("d", first);
        assert!(
            registry.get("d").is_some(),
            "old session must not remove the new one"
        );
        registry.touch("d", second, 42);
        assert_eq!(registry.get("d").unwrap().last_seen_ms, 42);
        registry.kick("d");
        assert!(second_cancel.is_cancelled());
        assert_eq!(registry.count(), 0);
    }
}
