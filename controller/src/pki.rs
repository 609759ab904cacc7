//! The controller's internal CA: created on first start, signs the gateway's server
//! certificate and the agents' short-lived client certificates. The device identity travels
//! in the client certificate's URI SAN (`spiffe://infrastructor/device/<id>`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use infrastructor_hostops::fsutil::{create_private_dir, write_atomic};

pub const DEVICE_URI_PREFIX: &str = "spiffe://infrastructor/device/";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid certificate signing request: {0}")]
    BadRequest(String),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PkiError {
    move |source| PkiError::Io { context, source }
}

/// A certificate issued to a device.
pub struct IssuedCertificate {
    pub pem: String,
    pub serial: String,
    pub not_after_ms: i64,
}

pub struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_pem: String,
    fingerprint: String,
}

impl Pki {
    /// Loads the CA from `dir` (creating it on first start, key mode 0600) and issues a fresh
    /// server certificate for `server_names`.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        create_private_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
        let ca_cert_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca-key.pem");
        if !ca_cert_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "Infrastructor internal CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(3650);
            params.serial_number = Some(random_serial());
            let cert = params.self_signed(&key)?;
            // Key first: a CA certificate without its key on disk would be useless.
            write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)
                .map_err(io(format!("writing {}", ca_key_path.display())))?;
            write_atomic(&ca_cert_path, cert.pem().as_bytes(), 0o644)
                .map_err(io(format!("writing {}", ca_cert_path.display())))?;
        }
        let ca_pem = std::fs::read_to_string(&ca_cert_path)
            .map_err(io(format!("reading {}", ca_cert_path.display())))?;
        let ca_key_pem = std::fs::read_to_string(&ca_key_path)
            .map_err(io(format!("reading {}", ca_key_path.display())))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| PkiError::Tls(format!("{}: {e}", ca_cert_path.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
        let fingerprint = hex::encode(Sha256::digest(ca_der.as_ref()));

        let (server_cert, server_key) = issue_server_certificate(&issuer, server_names)?;
        let server_key_pem = server_key.serialize_pem();
        write_atomic(&dir.join("server.pem"), server_cert.pem().as_bytes(), 0o644)
            .map_err(io("writing server.pem".into()))?;
        write_atomic(
            &dir.join("server-key.pem"),
            server_key_pem.as_bytes(),
            0o600,
        )
        .map_err(io("writing server-key.pem".into()))?;
        Ok(Self {
            server_chain: vec![server_cert.der().clone(), ca_der.clone()],
            ca_pem,
            ca_der,
            issuer,
            server_key_pem,
            fingerprint,
        })
    }

    /// SHA-256 of the CA certificate, lowercase hex: what agents pin at enrollment.
    pub fn ca_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs a client certificate for `device_id` valid from now for `lifetime`. Only the
    /// CSR's public key is used: subject, SANs and usages are decided here.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        device_id: &str,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let now = OffsetDateTime::now_utc();
        // Backdated a little so a host whose clock lags slightly still accepts it.
        self.sign_device_csr_valid(
            csr_pem,
            device_id,
            now - time::Duration::minutes(5),
            now + lifetime,
        )
    }

    /// Like [`Pki::sign_device_csr`] with an explicit validity window (tests use it to make
    /// an expired certificate).
    pub fn sign_device_csr_valid(
        &self,
        csr_pem: &str,
        device_id: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCertificate, PkiError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(PkiError::BadRequest("CSR larger than 16 KiB".into()));
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, device_id);
        let uri = format!("{DEVICE_URI_PREFIX}{device_id}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            serial: serial_hex,
            not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }

    /// The gateway's rustls config: TLS 1.3 only; a client certificate is optional at the
    /// handshake (Enroll has none) but, when presented, must chain to our CA and be valid.
    /// Renew and Connect then insist on one.
    pub fn server_tls_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn issue_server_certificate(
    issuer: &Issuer<'static, KeyPair>,
    server_names: &[String],
) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(server_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Infrastructor controller");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Positive integer: clear the top bit.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Who a verified client certificate names: the device in its URI SAN, and which of the
/// device's certificates it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub device_id: String,
    /// Hex serial, as [`normalized_serial`] writes it.
    pub serial: String,
}

/// The device and serial of a client certificate, if it carries a device identity.
pub fn client_certificate(der: &[u8]) -> Option<ClientCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let device_id = san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => {
            uri.strip_prefix(DEVICE_URI_PREFIX).map(|id| id.to_string())
        }
        _ => None,
    })?;
    Some(ClientCertificate {
        device_id,
        serial: normalized_serial(&hex::encode(cert.tbs_certificate.raw_serial())),
    })
}

/// A hex serial without leading zero bytes (DER and our records may differ there).
pub fn normalized_serial(hex_serial: &str) -> String {
    let trimmed = hex_serial.trim_start_matches('0');
    let even = if trimmed.len() % 2 == 1 { "0" } else { "" };
    format!("{even}{}", trimmed.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signed_certificates_carry_the_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let pki = Pki::load_or_create(dir.path(), &names).unwrap();
        let again = Pki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(
            pki.ca_fingerprint(),
            again.ca_fingerprint(),
            "CA reused across starts"
        );

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let key = KeyPair::generate().unwrap();
        // The agent asks with an empty subject but a CN; the controller decides the identity.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "host-a");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let issued = pki
            .sign_device_csr(&csr, "dev-123", Duration::from_secs(3600))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        assert_eq!(
            client_certificate(der.as_ref())
                .map(|c| c.device_id)
                .as_deref(),
            Some("dev-123")
        );
        assert!(pki
            .sign_device_csr("garbage", "dev", Duration::from_secs(1))
            .is_err());
        assert!(pki.server_tls_config().is_ok());
    }
}
