//! API tokens: creation (CLI and bootstrap) and authentication of bearer tokens.

use std::time::Duration;

use serde::Serialize;

use super::{rfc3339, Services};
use crate::auth::{self, Principal, Scope, API_TOKEN_PREFIX};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::store::NewApiTokenRow;

#[derive(Clone, Debug, Serialize)]
pub struct CreatedApiToken {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub scope: String,
    pub requires_approval: bool,
    /// Shown once; only its hash is stored.
    pub token: String,
    pub expires_at: Option<String>,
}

/// What a new API token is.
#[derive(Clone, Debug)]
pub struct NewApiToken {
    /// A label, e.g. what the token is for (`llm-client`).
    pub name: String,
    /// The person it belongs to; default: the name. Approvals need another owner.
    pub owner: Option<String>,
    pub scope: Scope,
    pub expires_in: Option<Duration>,
    /// Its mutations wait for another person's approval, on every surface.
    pub requires_approval: bool,
}

impl NewApiToken {
    pub fn new(name: &str, scope: Scope) -> Self {
        Self {
            name: name.to_string(),
            owner: None,
            scope,
            expires_in: None,
            requires_approval: false,
        }
    }
}

fn check_label(what: &str, text: &str) -> Result<()> {
    if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "token {what} must be 1 to 64 printable characters"
        )));
    }
    Ok(())
}

impl Services {
    pub async fn create_api_token(
        &self,
        ctx: &Ctx,
        request: NewApiToken,
    ) -> Result<CreatedApiToken> {
        ctx.principal.require(Scope::Admin)?;
        let owner = request
            .owner
            .clone()
            .unwrap_or_else(|| request.name.clone());
        check_label("name", &request.name)?;
        check_label("owner", &owner)?;
        let token = auth::generate_token(API_TOKEN_PREFIX);
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now_ms();
        let expires_at_ms = request.expires_in.map(|d| now + d.as_millis() as i64);
        let scope = request.scope;
        self.store
            .insert_api_token(&NewApiTokenRow {
                id: &id,
                name: &request.name,
                owner: &owner,
                token_hash: &auth::hash_token(&token),
                scope: scope.as_str(),
                requires_approval: request.requires_approval,
                created_at_ms: now,
                expires_at_ms,
            })
            .await?;
        let requires_approval = request.requires_approval;
        tracing::info!(request_id = %ctx.request_id, principal = %ctx.principal.id, token_id = %id,
            %scope, %owner, requires_approval, "API token created");
        Ok(CreatedApiToken {
            id,
            name: request.name,
            owner,
            scope: scope.to_string(),
            requires_approval: request.requires_approval,
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
                NewApiToken::new("bootstrap-admin", Scope::Admin),
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
            .find_api_token(&auth::hash_token(bearer), self.now_ms())
            .await?
            .ok_or_else(unauthorized)?;
        let scope = Scope::parse(&row.scope)
            .map_err(|_| Error::Internal(format!("token {} has a corrupt scope", row.id)))?;
        // Tokens from before owners existed are each their own person.
        let owner = if row.owner.is_empty() {
            format!("token:{}", row.id)
        } else {
            row.owner
        };
        Ok(Principal {
            requires_approval: row.requires_approval,
            ..Principal::token(&row.id, &row.name, scope, &owner)
        })
    }
}
