//! Device rows: the registry of enrolled agents and agentless entries.

use super::{on_pool, read, Store, StoreError, StoreResult};
use crate::domain::DeviceKind;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: DeviceKind,
    pub ssh_address: Option<String>,
    pub ssh_user: Option<String>,
    pub ssh_host_key: Option<String>,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    pub created_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub high_water_mark: i64,
    pub spool_dropped_batches: i64,
    pub spool_dropped_samples: i64,
}

pub struct NewDevice<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: DeviceKind,
    pub ssh_address: Option<&'a str>,
    pub ssh_user: Option<&'a str>,
    pub ssh_host_key: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub created_at_ms: i64,
}

const COLUMNS: &str =
    "id, name, kind, ssh_address, ssh_user, ssh_host_key, hostname, agent_version, created_at_ms, \
     last_seen_ms, revoked_at_ms, high_water_mark, spool_dropped_batches, spool_dropped_samples";

pub(super) const INSERT_DEVICE: &str =
    "INSERT INTO devices (id, name, kind, ssh_address, ssh_user, hostname, created_at_ms, ssh_host_key) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl Store {
    pub async fn insert_device(&self, device: &NewDevice<'_>) -> StoreResult<()> {
        let result = on_pool!(&self.writer, |p| sqlx::query(INSERT_DEVICE)
            .bind(device.id)
            .bind(device.name)
            .bind(device.kind.as_str())
            .bind(device.ssh_address)
            .bind(device.ssh_user)
            .bind(device.hostname)
            .bind(device.created_at_ms)
            .bind(device.ssh_host_key)
            .execute(p)
            .await
            .map(|_| ()));
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("a device named {:?} already exists", device.name),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A live (not revoked) device by ID or, failing that, by name.
    pub async fn find_device(&self, id_or_name: &str) -> StoreResult<Option<DeviceRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM devices WHERE revoked_at_ms IS NULL AND (id = $1 OR name = $1) \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, DeviceRow>(&sql)
            .bind(id_or_name)
            .fetch_optional(p)
            .await)?)
    }

    /// A device by ID including revoked ones (the gateway must tell "revoked" from "unknown").
    pub async fn device_by_id(&self, id: &str) -> StoreResult<Option<DeviceRow>> {
        let sql = format!("SELECT {COLUMNS} FROM devices WHERE id = $1");
        Ok(on_pool!(&self.writer, |p| sqlx::query_as::<_, DeviceRow>(
            &sql
        )
        .bind(id)
        .fetch_optional(p)
        .await)?)
    }

    pub async fn list_devices(&self) -> StoreResult<Vec<DeviceRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM devices WHERE revoked_at_ms IS NULL ORDER BY name");
        Ok(read!(self, |p| sqlx::query_as::<_, DeviceRow>(&sql)
            .fetch_all(p)
            .await)?)
    }

    /// Marks the device revoked; returns false when there was no live device with that ID.
    pub async fn revoke_device(&self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let result = on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE devices SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL"
        )
        .bind(id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(result == 1)
    }

    /// Records what an agent said in its hello.
    pub async fn record_hello(
        &self,
        id: &str,
        hostname: &str,
        agent_version: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE devices SET hostname = $2, agent_version = $3, last_seen_ms = $4 WHERE id = $1"
        )
        .bind(id)
        .bind(hostname)
        .bind(agent_version)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn record_last_seen(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        on_pool!(&self.writer, |p| sqlx::query(
            "UPDATE devices SET last_seen_ms = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
