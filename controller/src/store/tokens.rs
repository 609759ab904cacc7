//! Join tokens (single-use, expiring), API tokens and the record of issued certificates.

use super::devices::{NewDevice, INSERT_DEVICE};
use super::{on_pool, read, Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub owner: String,
    pub requires_approval: bool,
}

/// A token to store (only its hash).
pub struct NewApiTokenRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub owner: &'a str,
    pub token_hash: &'a str,
    pub scope: &'a str,
    pub requires_approval: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// A certificate the controller issued to a device.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct IssuedCertificateRow {
    pub serial: String,
    pub issued_at_ms: i64,
    /// When an agent first connected or renewed with it.
    pub used_at_ms: Option<i64>,
}

/// Why a join token was not accepted. The wording is safe to show the enrolling agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("join token is not valid")]
    Unknown,
    #[error("join token was already used")]
    Used,
    #[error("join token has expired")]
    Expired,
}

impl Store {
    pub async fn insert_join_token(
        &self,
        token_hash: &str,
        created_at_ms: i64,
        expires_at_ms: i64,
        created_by: &str,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            sqlx::query(
            "INSERT INTO join_tokens (token_hash, created_at_ms, expires_at_ms, created_by) VALUES ($1, $2, $3, $4)"
        )
        .bind(token_hash)
        .bind(created_at_ms)
        .bind(expires_at_ms)
        .bind(created_by)
        .execute(p)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Consumes the join token and creates the device in one transaction: either both happen
    /// or neither does, and a token can be consumed exactly once even under concurrency.
    /// Whether `token_hash` names a join token that could enroll now (unused, unexpired),
    /// without consuming it: checked before any work is done for an enrollment.
    pub async fn check_join_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Result<(), JoinTokenError>> {
        on_pool!(&self.writer, |p| {
            let state: Option<(Option<i64>, i64)> = sqlx::query_as(
                "SELECT used_at_ms, expires_at_ms FROM join_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(p)
            .await?;
            Ok(match state {
                None => Err(JoinTokenError::Unknown),
                Some((Some(_), _)) => Err(JoinTokenError::Used),
                Some((None, expires)) if expires <= now_ms => Err(JoinTokenError::Expired),
                Some(_) => Ok(()),
            })
        })
    }

    pub async fn enroll_with_join_token(
        &self,
        token_hash: &str,
        device: &NewDevice<'_>,
        now_ms: i64,
    ) -> StoreResult<Result<(), JoinTokenError>> {
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            let consumed = sqlx::query(
                "UPDATE join_tokens SET used_at_ms = $2, used_by_device = $3 \
                 WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
            )
            .bind(token_hash)
            .bind(now_ms)
            .bind(device.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if consumed != 1 {
                let state: Option<(Option<i64>, i64)> = sqlx::query_as(
                    "SELECT used_at_ms, expires_at_ms FROM join_tokens WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Ok(Err(match state {
                    None => JoinTokenError::Unknown,
                    Some((Some(_), _)) => JoinTokenError::Used,
                    Some((None, _)) => JoinTokenError::Expired,
                }));
            }
            // Hostnames are not unique across a fleet; disambiguate with the device ID.
            let taken: Option<(String,)> =
                sqlx::query_as("SELECT id FROM devices WHERE name = $1 AND revoked_at_ms IS NULL")
                    .bind(device.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let unique_name;
            let name = if taken.is_some() {
                unique_name = format!("{}-{}", device.name, &device.id[..8.min(device.id.len())]);
                unique_name.as_str()
            } else {
                device.name
            };
            sqlx::query(INSERT_DEVICE)
                .bind(device.id)
                .bind(name)
                .bind(device.kind.as_str())
                .bind(device.ssh_address)
                .bind(device.ssh_user)
                .bind(device.hostname)
                .bind(device.created_at_ms)
                .bind(device.ssh_host_key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    pub async fn record_issued_certificate(
        &self,
        serial: &str,
        device_id: &str,
        issued_at_ms: i64,
        not_after_ms: i64,
    ) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            sqlx::query(
            "INSERT INTO issued_certificates (serial, device_id, issued_at_ms, not_after_ms) VALUES ($1, $2, $3, $4)"
        )
        .bind(serial)
        .bind(device_id)
        .bind(issued_at_ms)
        .bind(not_after_ms)
        .execute(p)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Every certificate issued to `device_id`, oldest first.
    pub async fn certificates_of(&self, device_id: &str) -> StoreResult<Vec<IssuedCertificateRow>> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, IssuedCertificateRow>(
                "SELECT serial, issued_at_ms, used_at_ms FROM issued_certificates \
                 WHERE device_id = $1 ORDER BY issued_at_ms",
            )
            .bind(device_id)
            .fetch_all(p)
            .await
        })?)
    }

    /// Records the first use of a certificate (the older ones are superseded from then on).
    pub async fn mark_certificate_used(&self, serial: &str, now_ms: i64) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            sqlx::query(
                "UPDATE issued_certificates SET used_at_ms = $2 WHERE serial = $1 AND used_at_ms IS NULL",
            )
            .bind(serial)
            .bind(now_ms)
            .execute(p)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn insert_api_token(&self, token: &NewApiTokenRow<'_>) -> StoreResult<()> {
        on_pool!(&self.writer, |p| {
            sqlx::query(
            "INSERT INTO api_tokens (id, name, token_hash, scope, created_at_ms, expires_at_ms, \
             owner, requires_approval) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(token.id)
        .bind(token.name)
        .bind(token.token_hash)
        .bind(token.scope)
        .bind(token.created_at_ms)
        .bind(token.expires_at_ms)
        .bind(token.owner)
        .bind(token.requires_approval)
        .execute(p)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// The live, unexpired API token with this hash.
    pub async fn find_api_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ApiTokenRow>> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, ApiTokenRow>(
            "SELECT id, name, scope, created_at_ms, expires_at_ms, owner, requires_approval FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > $2)"
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(p)
        .await
        })?)
    }

    pub async fn count_api_tokens(&self) -> StoreResult<i64> {
        let (count,): (i64,) = on_pool!(&self.writer, |p| sqlx::query_as(
            "SELECT COUNT(*) FROM api_tokens"
        )
        .fetch_one(p)
        .await)?;
        Ok(count)
    }
}
