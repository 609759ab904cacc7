//! Join tokens, agent enrollment and certificate renewal.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{rfc3339, validate, Services};
use crate::auth::{self, Scope, JOIN_TOKEN_PREFIX};
use crate::ctx::Ctx;
use crate::domain::DeviceKind;
use crate::error::{Error, Result};
use crate::pki::{normalized_serial, ClientCertificate, PkiError};
use crate::store::NewDevice;

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime like `1h` or `30m`; default from configuration (1h).
    pub expires_in: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnrollmentToken {
    /// Shown once; only its hash is stored.
    pub token: String,
    pub expires_at: String,
    pub controller_url: String,
    pub ca_fingerprint: String,
    /// Ready to paste on the host to enroll.
    pub enroll_command: String,
}

/// What an enrolling agent receives.
pub struct Enrolled {
    pub device_id: String,
    pub certificate_pem: String,
    pub ca_certificate_pem: String,
    pub not_after_ms: i64,
}

fn pki_error(error: PkiError) -> Error {
    match error {
        PkiError::BadRequest(message) => {
            Error::InvalidInput(format!("invalid certificate signing request: {message}"))
        }
        other => Error::Internal(other.to_string()),
    }
}

impl Services {
    pub async fn create_enrollment_token(
        &self,
        ctx: &Ctx,
        request: CreateEnrollmentToken,
    ) -> Result<EnrollmentToken> {
        ctx.principal.require(Scope::Admin)?;
        let ttl = match request.expires_in.as_deref() {
            None => self.config.join_token_ttl,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| Error::invalid(format!("invalid expires_in {text:?}: {e}")))?,
        };
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 86_400) {
            return Err(Error::invalid("expires_in must be between 1m and 30d"));
        }
        let token = auth::generate_token(JOIN_TOKEN_PREFIX);
        let now = self.now_ms();
        let expires_at_ms = now + ttl.as_millis() as i64;
        self.store
            .insert_join_token(
                &auth::hash_token(&token),
                now,
                expires_at_ms,
                &ctx.principal.id,
            )
            .await?;
        tracing::info!(request_id = %ctx.request_id,
            principal = %ctx.principal.id,
            expires_at_ms,
            "join token created");
        let fingerprint = self.pki.ca_fingerprint().to_string();
        Ok(EnrollmentToken {
            enroll_command: format!(
                // In the environment, not the argv: `ps` shows every command line.
                "INFRASTRUCTOR_JOIN_TOKEN={token} infrastructor-agent enroll \
                 --controller {} --ca-fingerprint {fingerprint}",
                self.gateway_url
            ),
            token,
            expires_at: rfc3339(expires_at_ms),
            controller_url: self.gateway_url.clone(),
            ca_fingerprint: fingerprint,
        })
    }

    /// Trades a join token and a CSR for a client certificate. The CSR is checked before the
    /// token is consumed, so a malformed request does not burn a token.
    pub async fn enroll_agent(
        &self,
        ctx: &Ctx,
        join_token: &str,
        csr_pem: &str,
        hostname: &str,
    ) -> Result<Enrolled> {
        let request_id = ctx.request_id.as_str();
        if join_token.is_empty() || join_token.len() > 256 {
            return Err(Error::Unauthorized("join token is not valid".into()));
        }
        // The token is checked before the CSR is even parsed: without a live token, an
        // enrollment costs one indexed read and no signature.
        let token_hash = auth::hash_token(join_token);
        if let Err(refused) = self
            .store
            .check_join_token(&token_hash, self.now_ms())
            .await?
        {
            tracing::warn!(%request_id, reason = %refused, "enrollment refused");
            return Err(Error::Unauthorized(refused.to_string()));
        }
        let device_id = uuid::Uuid::new_v4().to_string();
        let issued = self
            .pki
            .sign_device_csr(csr_pem, &device_id, self.config.certificate_lifetime)
            .map_err(pki_error)?;
        let name = validate::device_name_from_hostname(hostname);
        let now = self.now_ms();
        let device = NewDevice {
            id: &device_id,
            name: &name,
            kind: DeviceKind::Agent,
            ssh_address: None,
            ssh_user: None,
            ssh_host_key: None,
            hostname: Some(&name),
            created_at_ms: now,
        };
        if let Err(refused) = self
            .store
            .enroll_with_join_token(&token_hash, &device, now)
            .await?
        {
            tracing::warn!(%request_id, reason = %refused, "enrollment refused");
            return Err(Error::Unauthorized(refused.to_string()));
        }
        self.store
            .record_issued_certificate(&issued.serial, &device_id, now, issued.not_after_ms)
            .await?;
        self.cache
            .invalidate(&[crate::cache::key::DEVICES.to_string()])
            .await;
        tracing::info!(%request_id, %device_id, %name, "agent enrolled");
        Ok(Enrolled {
            device_id,
            certificate_pem: issued.pem,
            ca_certificate_pem: self.pki.ca_pem().to_string(),
            not_after_ms: issued.not_after_ms,
        })
    }

    /// Issues a fresh certificate to an enrolled, non-revoked device.
    pub async fn renew_certificate(
        &self,
        ctx: &Ctx,
        peer: &ClientCertificate,
        csr_pem: &str,
    ) -> Result<(String, i64)> {
        self.require_agent_allowed(ctx, peer).await?;
        let device_id = peer.device_id.as_str();
        let issued = self
            .pki
            .sign_device_csr(csr_pem, device_id, self.config.certificate_lifetime)
            .map_err(pki_error)?;
        self.store
            .record_issued_certificate(
                &issued.serial,
                device_id,
                self.now_ms(),
                issued.not_after_ms,
            )
            .await?;
        tracing::info!(%device_id, "certificate renewed");
        Ok((issued.pem, issued.not_after_ms))
    }

    /// The device named by a client certificate must exist and not be revoked, and the
    /// certificate must be one the controller issued to it and not superseded: once a renewed
    /// certificate has been used, the older ones stop working. (An older one keeps working
    /// until then, so an agent that lost the renewal's answer is not locked out.)
    pub async fn require_agent_allowed(&self, _ctx: &Ctx, peer: &ClientCertificate) -> Result<()> {
        match self.store.device_by_id(&peer.device_id).await? {
            None => return Err(Error::Forbidden("unknown device".into())),
            Some(row) if row.revoked_at_ms.is_some() => {
                return Err(Error::Forbidden("device has been revoked".into()))
            }
            Some(_) => {}
        }
        let issued = self.store.certificates_of(&peer.device_id).await?;
        let presented = issued
            .iter()
            .find(|c| normalized_serial(&c.serial) == peer.serial)
            .ok_or_else(|| Error::Forbidden("certificate was not issued to this device".into()))?;
        let superseded = issued
            .iter()
            .any(|c| c.issued_at_ms > presented.issued_at_ms && c.used_at_ms.is_some());
        if superseded {
            return Err(Error::Forbidden(
                "certificate has been superseded by a renewed one".into(),
            ));
        }
        if presented.used_at_ms.is_none() {
            self.store
                .mark_certificate_used(&presented.serial, self.now_ms())
                .await?;
        }
        Ok(())
    }
}
