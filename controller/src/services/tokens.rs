//! API tokens: creation (CLI and bootstrap) and authentication of bearer tokens.

use std::time::Duration;

use serde::Serialize;

use super::{now_ms, rfc3339, Services};
use crate::auth::{self, Principal, Scope, API_TOKEN_PREFIX};
use crate::ctx::Ctx;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct CreatedApiToken {
    pub id: String,
    pub name: String,
    pub scope: String,
    /// Shown once; only its hash is stored.
    pub token: String,
    pub expires_at: Option<String>,
}

impl Services {
    pub async fn create_api_token(
        &self,
        ctx: &Ctx,
        name: &str,
        scope: Scope,
        expires_in: Option<Duration>,
    ) -> Result<CreatedApiToken> {
        ctx.principal.require(Scope::Admin)?;
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "token name must be 1 to 64 printable characters",
            ));
        }
        let token = auth::generate_token(API_TOKEN_PREFIX);
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let expires_at_ms = expires_in.map(|d| now + d.as_millis() as i64);
        self.store
            .insert_api_token(
                &id,
                name,
                &auth::hash_token(&token),
                scope.as_str(),
                now,
                expires_at_ms,
            )
            .await?;
        tracing::info!(request_id = %ctx.request_id, principal = %ctx.principal.id, token_id = %id, %scope, "API token created");
        Ok(CreatedApiToken {
            id,
            name: name.to_string(),
            scope: scope.to_string(),
            token,
            expires_at: expires_at_ms.map(rfc3339),
        })
    }

    /// Creates the first admin token when no API token exists yet; `None` otherwise.
    pub async fn bootstrap_admin_token(&self) -> Result<Option<CreatedApiToken>> {
        if self.store.count_api_tokens().await? > 0 {
            return Ok(None);
        }
        let created = self
            .create_api_token(
                &Ctx::system("bootstrap"),
                "bootstrap-admin",
                Scope::Admin,
                None,
            )
            .await?;
        Ok(Some(created))
    }

    /// Resolves a bearer token to its principal.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let unauthorized = || Error::Unauthorized("invalid or expired API token".into());
        if !bearer.starts_with(API_TOKEN_PREFIX) || bearer.len() > 128 {
            return Err(unauthorized());
        }
        let row = self
            .store
            .find_api_token(&auth::hash_token(bearer), now_ms())
            .await?
            .ok_or_else(unauthorized)?;
        Ok(Principal {
            id: format!("token:{}", row.id),
            name: row.name,
            scope: Scope::parse(&row.scope)
                .map_err(|_| Error::Internal(format!("token {} has a corrupt scope", row.id)))?,
        })
    }
}
