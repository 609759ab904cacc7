//! Several controllers on one database: the replicas alive, which one holds each agent's
//! stream, and the calls one replica hands another for an agent whose stream it holds.

use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct RoutedCallRow {
    pub id: String,
    pub from_replica: String,
    pub to_replica: String,
    pub device_id: String,
    pub request_id: String,
    pub call: String,
    pub answer: Option<String>,
    pub created_at_ms: i64,
    pub answered_at_ms: Option<i64>,
}

impl Store {
    /// This replica is alive now.
    pub async fn touch_replica(&self, replica: &str, now_ms: i64) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO controller_replicas (id, seen_at_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_at_ms = excluded.seen_at_ms"
        )
        .bind(replica)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The agent's stream is now held by `replica` (a newer stream replaces any older).
    pub async fn hold_agent_session(
        &self,
        device_id: &str,
        replica: &str,
        stream_id: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO agent_sessions (device_id, replica, stream_id, connected_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET \
             replica = excluded.replica, stream_id = excluded.stream_id, \
             connected_at_ms = excluded.connected_at_ms"
        )
        .bind(device_id)
        .bind(replica)
        .bind(stream_id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The stream `stream_id` ended; a newer stream (here or elsewhere) is kept.
    pub async fn release_agent_session(&self, device_id: &str, stream_id: &str) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM agent_sessions WHERE device_id = $1 AND stream_id = $2"
        )
        .bind(device_id)
        .bind(stream_id)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Agents whose streams other replicas alive since `alive_since_ms` hold: (device,
    /// replica).
    pub async fn remote_agent_sessions(
        &self,
        me: &str,
        alive_since_ms: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(read!(self, |p| sqlx::query_as(
            "SELECT s.device_id, s.replica FROM agent_sessions s \
             JOIN controller_replicas r ON r.id = s.replica \
             WHERE s.replica <> $1 AND r.seen_at_ms >= $2"
        )
        .bind(me)
        .bind(alive_since_ms)
        .fetch_all(p)
        .await)?)
    }

    /// The live replica other than `me` holding the agent's stream, if any.
    pub async fn agent_session_elsewhere(
        &self,
        device_id: &str,
        me: &str,
        alive_since_ms: i64,
    ) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = read!(self, |p| sqlx::query_as(
            "SELECT s.replica FROM agent_sessions s \
             JOIN controller_replicas r ON r.id = s.replica \
             WHERE s.device_id = $1 AND s.replica <> $2 AND r.seen_at_ms >= $3"
        )
        .bind(device_id)
        .bind(me)
        .bind(alive_since_ms)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(replica,)| replica))
    }

    /// Whether `replica` said it was alive at or after `since_ms`.
    pub async fn replica_alive(&self, replica: &str, since_ms: i64) -> StoreResult<bool> {
        let row: Option<(i64,)> = read!(self, |p| sqlx::query_as(
            "SELECT seen_at_ms FROM controller_replicas WHERE id = $1"
        )
        .bind(replica)
        .fetch_optional(p)
        .await)?;
        Ok(row.is_some_and(|(seen,)| seen >= since_ms))
    }

    pub async fn insert_routed_call(&self, call: &RoutedCallRow) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO routed_calls (id, from_replica, to_replica, device_id, request_id, \
             call, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(&call.id)
        .bind(&call.from_replica)
        .bind(&call.to_replica)
        .bind(&call.device_id)
        .bind(&call.request_id)
        .bind(&call.call)
        .bind(call.created_at_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Calls handed to `replica` and not answered yet, oldest first.
    pub async fn pending_routed_calls(&self, replica: &str) -> StoreResult<Vec<RoutedCallRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, RoutedCallRow>(
            "SELECT * FROM routed_calls WHERE to_replica = $1 AND answered_at_ms IS NULL \
             ORDER BY created_at_ms"
        )
        .bind(replica)
        .fetch_all(p)
        .await)?)
    }

    pub async fn routed_call(&self, id: &str) -> StoreResult<Option<RoutedCallRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, RoutedCallRow>(
            "SELECT * FROM routed_calls WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?)
    }

    /// Takes a call to run: true for exactly one taker (a call is made once).
    pub async fn take_routed_call(&self, id: &str, now_ms: i64) -> StoreResult<bool> {
        Ok(on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE routed_calls SET answered_at_ms = $2 WHERE id = $1 AND answered_at_ms IS NULL"
        )
        .bind(id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|done| done.rows_affected() > 0))?)
    }

    pub async fn answer_routed_call(&self, id: &str, answer: &str) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE routed_calls SET answer = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(answer)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Forgets a call (its caller read the answer or gave up), and calls older than
    /// `before_ms` whoever made them.
    pub async fn forget_routed_calls(&self, id: &str, before_ms: i64) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "DELETE FROM routed_calls WHERE id = $1 OR created_at_ms < $2"
        )
        .bind(id)
        .bind(before_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Wakes `channel`'s listeners with `payload` (PostgreSQL only; a no-op on SQLite, where
    /// one controller is the only replica).
    pub async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        if let super::Pool::Postgres(pool) = &self.writer {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}
