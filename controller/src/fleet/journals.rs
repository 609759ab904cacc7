//! An agentless host's change journal, kept in the database rather than on one controller's
//! disk: when the replica running a transaction dies, whichever replica is alive (a restarted
//! one, or another on the same PostgreSQL) reads the same journal and finishes it.
//!
//! The store takes the engine's single-writer assumption over to several processes with two
//! rules: each save is a compare-and-set on the state the engine read (so two replicas never
//! both take one step), and only a transaction whose last owner stopped is handed to
//! recovery (so no replica rolls back a commit another is still making).

use std::path::PathBuf;
use std::sync::Arc;

use infrastructor_hostops::change::journal::check_txn_id;
use infrastructor_hostops::change::{ChangeError, Journal, JournalStore, TxnState};

use super::routing::Routing;
use crate::store::{ChangeJournalRow, JournalSave, Store, StoreError};

/// One device's journals.
pub struct DbJournals {
    store: Arc<Store>,
    routing: Arc<Routing>,
    device_id: String,
}

impl DbJournals {
    pub fn new(store: Arc<Store>, routing: Arc<Routing>, device_id: String) -> Self {
        Self {
            store,
            routing,
            device_id,
        }
    }

    fn decode(row: &ChangeJournalRow) -> Option<Result<Journal, ChangeError>> {
        let text = row.journal.as_deref()?;
        Some(serde_json::from_str(text).map_err(|e| {
            ChangeError::Internal(format!("journal of transaction {}: {e}", row.txn_id))
        }))
    }

    async fn owner_stopped(&self, owner: &str) -> Result<bool, ChangeError> {
        let alive = self.routing.is_alive(owner).await;
        Ok(!alive.map_err(|e| ChangeError::Internal(format!("replica liveness: {e}")))?)
    }
}

fn stored(error: StoreError) -> ChangeError {
    ChangeError::Internal(format!("change journal store: {error}"))
}

impl JournalStore for DbJournals {
    async fn create(&self, txn_id: &str) -> Result<(), ChangeError> {
        check_txn_id(txn_id)?;
        let created = self
            .store
            .create_change_journal(&self.device_id, txn_id, &self.routing.replica, now_ms())
            .await;
        match created {
            Err(error) if error.kind() == crate::error::ErrorKind::Conflict => Err(
                ChangeError::Conflict(format!("transaction {txn_id} already exists")),
            ),
            other => other.map_err(stored),
        }
    }

    async fn write_blob(&self, txn_id: &str, name: &str, bytes: &[u8]) -> Result<(), ChangeError> {
        self.store
            .put_change_blob(&self.device_id, txn_id, name, bytes)
            .await
            .map_err(stored)
    }

    async fn read_blob(&self, txn_id: &str, name: &str) -> Result<Vec<u8>, ChangeError> {
        self.store
            .change_blob(&self.device_id, txn_id, name)
            .await
            .map_err(stored)?
            .ok_or_else(|| {
                ChangeError::Internal(format!("transaction {txn_id} has no {name} in its journal"))
            })
    }

    async fn save(&self, journal: &Journal, from: Option<TxnState>) -> Result<(), ChangeError> {
        let text = serde_json::to_string(journal)
            .map_err(|e| ChangeError::Internal(format!("encoding journal: {e}")))?;
        let save = JournalSave {
            device_id: &self.device_id,
            txn_id: &journal.txn_id,
            owner: &self.routing.replica,
            state: journal.state.as_str(),
            journal: &text,
            from: from.map(TxnState::as_str),
            now_ms: now_ms(),
        };
        if self
            .store
            .save_change_journal(&save)
            .await
            .map_err(stored)?
        {
            return Ok(());
        }
        Err(ChangeError::Conflict(format!(
            "transaction {} was moved on by another controller; this step was not taken",
            journal.txn_id
        )))
    }

    async fn load(&self, txn_id: &str) -> Result<Journal, ChangeError> {
        check_txn_id(txn_id)?;
        let row = self.store.change_journal(&self.device_id, txn_id).await;
        row.map_err(stored)?
            .as_ref()
            .and_then(Self::decode)
            .unwrap_or_else(|| {
                Err(ChangeError::NotFound(format!(
                    "no transaction {txn_id} on this host"
                )))
            })
    }

    async fn load_all(&self) -> Result<Vec<Journal>, ChangeError> {
        let rows = self.store.change_journals(&self.device_id).await;
        rows.map_err(stored)?
            .iter()
            .filter_map(Self::decode)
            .collect()
    }

    /// A transaction staged by a replica that stopped before its first journal was never
    /// prepared, so it is removed, as an agent removes a directory without a journal.
    async fn orphaned(&self) -> Result<Vec<Journal>, ChangeError> {
        let rows = self.store.change_journals(&self.device_id).await;
        let mut orphans = Vec::new();
        for row in rows.map_err(stored)? {
            if !self.owner_stopped(&row.owner).await? {
                continue;
            }
            match Self::decode(&row) {
                Some(journal) => orphans.push(journal?),
                None => self.remove(&row.txn_id).await,
            }
        }
        Ok(orphans)
    }

    async fn remove(&self, txn_id: &str) {
        let removed = self
            .store
            .remove_change_journal(&self.device_id, txn_id)
            .await;
        if let Err(error) = removed {
            tracing::warn!(device_id = %self.device_id, txn_id, %error, "cannot remove a journal");
        }
    }

    fn local_dir(&self, _txn_id: &str) -> Option<PathBuf> {
        None
    }
}

fn now_ms() -> i64 {
    crate::services::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use infrastructor_hostops::change::journal::Journal;

    fn journal(txn_id: &str, state: TxnState) -> Journal {
        Journal {
            txn_id: txn_id.into(),
            state,
            created_ms: 1,
            updated_ms: 1,
            files: Vec::new(),
            actions: Vec::new(),
            health_checks: Vec::new(),
            confirm_deadline_ms: None,
            reason: None,
        }
    }

    async fn journals(store: &Arc<Store>, replica: &str) -> DbJournals {
        let routing = Arc::new(Routing::new(replica.into(), store.clone(), false));
        DbJournals::new(store.clone(), routing, "nas".into())
    }

    #[tokio::test]
    async fn a_step_another_replica_took_first_is_refused_and_only_a_stopped_owners_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_sqlite(&dir.path().join("db")).await.unwrap());
        let a = journals(&store, "a").await;
        let b = journals(&store, "b").await;
        a.create("t1").await.unwrap();
        assert!(matches!(
            a.create("t1").await,
            Err(ChangeError::Conflict(_))
        ));
        a.write_blob("t1", "staged-0", b"new\n").await.unwrap();
        assert!(
            a.load_all().await.unwrap().is_empty(),
            "staged, not prepared"
        );
        a.save(&journal("t1", TxnState::Prepared), None)
            .await
            .unwrap();
        a.save(
            &journal("t1", TxnState::Committing),
            Some(TxnState::Prepared),
        )
        .await
        .unwrap();
        assert!(
            a.orphaned().await.unwrap().is_empty(),
            "its own owner is alive"
        );
        // On SQLite, B is the only controller: A's transaction is an orphan to it.
        let orphans = b.orphaned().await.unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].state, TxnState::Committing);
        b.save(
            &journal("t1", TxnState::RollingBack),
            Some(TxnState::Committing),
        )
        .await
        .unwrap();
        // A, still thinking it is committing, cannot take its next step over B's.
        let late = a
            .save(
                &journal("t1", TxnState::AwaitingConfirmation),
                Some(TxnState::Committing),
            )
            .await;
        assert!(matches!(late, Err(ChangeError::Conflict(_))), "{late:?}");
        assert_eq!(b.load("t1").await.unwrap().state, TxnState::RollingBack);
        assert_eq!(b.read_blob("t1", "staged-0").await.unwrap(), b"new\n");
        // Staged by a stopped replica and never prepared: removed.
        a.create("t2").await.unwrap();
        b.orphaned().await.unwrap();
        assert!(matches!(a.load("t2").await, Err(ChangeError::NotFound(_))));
        assert!(store.change_journal("nas", "t2").await.unwrap().is_none());
        a.remove("t1").await;
        assert!(store
            .change_blob("nas", "t1", "staged-0")
            .await
            .unwrap()
            .is_none());
    }
}
