//! Enrollment and certificate renewal: the only two places the agent obtains a certificate.

use std::path::Path;

use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
use infrastructor_proto::v1::{EnrollRequest, RenewRequest};
use rcgen::KeyPair;

use crate::error::{AgentError, Result};
use crate::identity::{self, Identity, IdentityMeta};
use crate::metrics::now_ms;
use crate::tls;

pub struct EnrollOptions<'a> {
    pub state_dir: &'a Path,
    pub controller_url: &'a str,
    pub join_token: &'a str,
    pub ca_fingerprint: &'a str,
    pub hostname: &'a str,
    /// Replace an existing identity.
    pub force: bool,
}

/// Enrolls this host: pins the controller's CA by fingerprint, generates a key here, sends
/// only the CSR, and stores the issued certificate.
pub async fn enroll(options: EnrollOptions<'_>) -> Result<Identity> {
    if let Some(existing) = Identity::load(options.state_dir)? {
        if !options.force {
            return Err(AgentError::AlreadyEnrolled(existing.meta.device_id));
        }
    }
    let pin = identity::parse_fingerprint(options.ca_fingerprint)?;
    let key = identity::generate_key()?;
    let csr_pem = identity::certificate_request(&key, options.hostname)?;
    let channel = tls::connect(options.controller_url, tls::pinned_ca_config(pin)?).await?;
    let response = AgentGatewayClient::new(channel)
        .enroll(EnrollRequest {
            join_token: options.join_token.to_string(),
            csr_pem,
            hostname: options.hostname.to_string(),
            agent_version: crate::VERSION.to_string(),
        })
        .await?
        .into_inner();

    // The CA handed back must be the one we pinned, not merely one the server also sent.
    let ca_certs = tls::parse_certs(&response.ca_certificate_pem)?;
    if ca_certs
        .iter()
        .all(|c| identity::fingerprint(c.as_ref()) != hex::encode(pin))
    {
        return Err(AgentError::Tls(
            "controller returned a CA that does not match the pinned fingerprint".into(),
        ));
    }
    let identity = Identity {
        key_pem: key.serialize_pem(),
        cert_pem: response.certificate_pem,
        ca_pem: response.ca_certificate_pem,
        meta: IdentityMeta {
            device_id: response.device_id,
            controller_url: options.controller_url.to_string(),
            issued_at_ms: now_ms(),
            not_after_ms: response.not_after_unix_ms,
        },
    };
    identity.store(options.state_dir)?;
    Ok(identity)
}

/// Obtains a fresh certificate for the same key over mTLS and stores it.
pub async fn renew(
    state_dir: &Path,
    current: &Identity,
    url: &str,
    hostname: &str,
) -> Result<Identity> {
    let key = KeyPair::from_pem(&current.key_pem)?;
    let csr_pem = identity::certificate_request(&key, hostname)?;
    let channel = tls::connect(url, tls::mutual_tls_config(current)?).await?;
    let response = AgentGatewayClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await?
        .into_inner();
    let mut renewed = current.clone();
    renewed.cert_pem = response.certificate_pem;
    renewed.meta.issued_at_ms = now_ms();
    renewed.meta.not_after_ms = response.not_after_unix_ms;
    renewed.store(state_dir)?;
    Ok(renewed)
}
