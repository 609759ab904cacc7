//! TLS for the agent's outbound connections: TLS 1.3 only, the controller's CA pinned by
//! fingerprint at enrollment and by certificate afterwards, and a tonic channel over it.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{AgentError, Result};
use crate::identity::Identity;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn tls13_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Tls(e.to_string()))
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Client config for enrollment: no client certificate, and the server's chain must contain
/// a CA whose SHA-256 equals `pin`. There is no trust-on-first-use.
pub fn pinned_ca_config(pin: [u8; 32]) -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider(),
    });
    let config = tls13_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(finish(config))
}

/// Client config for Renew/Connect: trust only the enrolled CA, present the client certificate.
pub fn mutual_tls_config(identity: &Identity) -> Result<Arc<ClientConfig>> {
    let roots = root_store(&identity.ca_pem)?;
    let certs = parse_certs(&identity.cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| AgentError::Tls(format!("private key: {e}")))?;
    let config = tls13_builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| AgentError::Tls(e.to_string()))?;
    Ok(finish(config))
}

pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| AgentError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(AgentError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| AgentError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Opens a gRPC channel to `url` (`https://host:port`) over our own rustls config, so both
/// sides are held to TLS 1.3 and the agent decides exactly whom it trusts.
pub async fn connect(url: &str, config: Arc<ClientConfig>) -> Result<Channel> {
    let uri: Uri = url
        .parse()
        .map_err(|_| AgentError::Config(format!("invalid controller URL {url:?}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(AgentError::Config(format!(
            "controller URL must start with https:// (got {url:?})"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| AgentError::Config(format!("controller URL has no host: {url:?}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| AgentError::Config(format!("invalid controller host {host:?}")))?;
    // tonic must not add TLS of its own: the connector below does it.
    let endpoint = Endpoint::from_shared(format!(
        "http://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    ))
    .map_err(|e| AgentError::Config(e.to_string()))?
    .connect_timeout(Duration::from_secs(10))
    .tcp_nodelay(true)
    .http2_keep_alive_interval(Duration::from_secs(30))
    .keep_alive_timeout(Duration::from_secs(20))
    .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        let host = host.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| AgentError::Connect {
            url: url.to_string(),
            message: error_chain(&e),
        })
}

/// Flattens an error and its sources into one line, so "handshake failure" shows its cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Accepts the server only when its chain carries the pinned CA and the server certificate
/// verifies against that CA (name, validity and signature all checked by webpki).
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| Sha256::digest(cert.as_ref()).as_slice() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General("controller CA does not match the pinned fingerprint".into())
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
