//! API and join tokens, scopes and the authenticated principal.
//!
//! Tokens are 256 random bits, shown once, and stored only as SHA-256 hashes: they are
//! high-entropy secrets, so a fast hash is the right tool (no password stretching needed).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Scopes are ordered: `admin` includes `operate`, which includes `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Operate,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "read" => Ok(Self::Read),
            "operate" => Ok(Self::Operate),
            "admin" => Ok(Self::Admin),
            other => Err(Error::invalid(format!(
                "unknown scope {other:?}: expected read, operate or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `token:<id>` for API tokens, `system:<what>` for the controller's own operations.
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// The person the token belongs to: a request is approved by another person, not by
    /// another token of the same one.
    pub owner: String,
    /// Mutations by this principal wait for another person's approval, on every surface.
    pub requires_approval: bool,
}

impl Principal {
    /// The controller acting on its own behalf (CLI commands, quickstart bootstrap).
    pub fn system(what: &str) -> Self {
        Self {
            id: format!("system:{what}"),
            name: what.to_string(),
            scope: Scope::Admin,
            owner: format!("system:{what}"),
            requires_approval: false,
        }
    }

    /// An agent's stream, reporting about its own host. It carries the lowest scope because
    /// agents never call the API: only the gateway acts for them, and only on their device.
    pub fn device(device_id: &str) -> Self {
        Self {
            id: format!("device:{device_id}"),
            name: device_id.to_string(),
            scope: Scope::Read,
            owner: format!("device:{device_id}"),
            requires_approval: false,
        }
    }

    /// A host asking to enroll: nobody yet, until its join token is checked.
    pub fn enrolling() -> Self {
        Self {
            id: "enrolling".into(),
            name: "enrolling host".into(),
            scope: Scope::Read,
            owner: "enrolling".into(),
            requires_approval: false,
        }
    }

    /// A token principal with `scope`, owned by `owner`.
    pub fn token(id: &str, name: &str, scope: Scope, owner: &str) -> Self {
        Self {
            id: format!("token:{id}"),
            name: name.to_string(),
            scope,
            owner: owner.to_string(),
            requires_approval: false,
        }
    }

    pub fn require(&self, needed: Scope) -> Result<()> {
        if self.scope >= needed {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this operation requires scope '{needed}'; the token has '{}'",
                self.scope
            )))
        }
    }
}

pub const API_TOKEN_PREFIX: &str = "ifr_";
pub const JOIN_TOKEN_PREFIX: &str = "ifj_";

/// A fresh token: prefix + 256 random bits, base64url.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered() {
        let operator = Principal::token("1", "ops", Scope::Operate, "alice");
        assert!(operator.require(Scope::Read).is_ok());
        assert!(operator.require(Scope::Operate).is_ok());
        let denied = operator.require(Scope::Admin).unwrap_err();
        assert!(denied.to_string().contains("requires scope 'admin'"));
        assert!(Scope::parse("root").is_err());
    }

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = generate_token(API_TOKEN_PREFIX);
        let b = generate_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 43, "at least 256 bits of base64");
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
