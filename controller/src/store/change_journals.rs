//! Agentless hosts' change journals: each transaction's journal (as the engine's JSON), the
//! replica that last moved it, and its files' staged and original contents. Every move is a
//! compare-and-set on the state it was read in, so two replicas never both take one step.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct ChangeJournalRow {
    pub txn_id: String,
    pub owner: String,
    /// `None` while its files are staged, before the first journal is saved.
    pub journal: Option<String>,
}

/// One save of a journal: who, what, and the state it must still be in.
pub struct JournalSave<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
    pub owner: &'a str,
    pub state: &'a str,
    pub journal: &'a str,
    /// The state it was read in; `None` for the first save after staging.
    pub from: Option<&'a str>,
    pub now_ms: i64,
}

const SAVE_JOURNAL: &str = "UPDATE change_journals SET owner = $3, state = $4, journal = $5, \
    updated_at_ms = $6 WHERE device_id = $1 AND txn_id = $2 AND state IS NOT DISTINCT FROM $7";

impl Store {
    /// Reserves a transaction on a device; a unique violation (`Conflict`) if it exists.
    pub async fn create_change_journal(
        &self,
        device_id: &str,
        txn_id: &str,
        owner: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO change_journals (device_id, txn_id, owner, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $4)"
        )
        .bind(device_id)
        .bind(txn_id)
        .bind(owner)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn put_change_blob(
        &self,
        device_id: &str,
        txn_id: &str,
        name: &str,
        content: &[u8],
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO change_journal_blobs (device_id, txn_id, name, content) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, txn_id, name) \
             DO UPDATE SET content = excluded.content"
        )
        .bind(device_id)
        .bind(txn_id)
        .bind(name)
        .bind(content)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn change_blob(
        &self,
        device_id: &str,
        txn_id: &str,
        name: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = read!(self, |p| sqlx::query_as(
            "SELECT content FROM change_journal_blobs \
             WHERE device_id = $1 AND txn_id = $2 AND name = $3"
        )
        .bind(device_id)
        .bind(txn_id)
        .bind(name)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(content,)| content))
    }

    /// Saves the journal if the transaction is still in `save.from`; false if another
    /// replica moved it on (or removed it) meanwhile.
    pub async fn save_change_journal(&self, save: &JournalSave<'_>) -> StoreResult<bool> {
        let done = on_pool!(&self.writer, |p| sqlx::query(SAVE_JOURNAL)
            .bind(save.device_id)
            .bind(save.txn_id)
            .bind(save.owner)
            .bind(save.state)
            .bind(save.journal)
            .bind(save.now_ms)
            .bind(save.from)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn change_journal(
        &self,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<ChangeJournalRow>> {
        Ok(read!(self, |p| sqlx::query_as(
            "SELECT txn_id, owner, journal FROM change_journals \
             WHERE device_id = $1 AND txn_id = $2"
        )
        .bind(device_id)
        .bind(txn_id)
        .fetch_optional(p)
        .await)?)
    }

    /// The device's transactions, oldest first.
    pub async fn change_journals(&self, device_id: &str) -> StoreResult<Vec<ChangeJournalRow>> {
        Ok(read!(self, |p| sqlx::query_as(
            "SELECT txn_id, owner, journal FROM change_journals WHERE device_id = $1 \
             ORDER BY created_at_ms, txn_id"
        )
        .bind(device_id)
        .fetch_all(p)
        .await)?)
    }

    /// Removes a transaction and its contents.
    pub async fn remove_change_journal(&self, device_id: &str, txn_id: &str) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM change_journals WHERE device_id = $1 AND txn_id = $2"
        )
        .bind(device_id)
        .bind(txn_id)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Devices with a transaction that still holds its files (or is being staged): the ones
    /// whose deadlines and crashed steps someone must watch.
    pub async fn devices_with_live_journals(&self) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = read!(self, |p| sqlx::query_as(
            "SELECT DISTINCT device_id FROM change_journals WHERE state IS NULL \
             OR state IN ('prepared', 'committing', 'awaiting_confirmation', 'rolling_back') \
             ORDER BY device_id"
        )
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
