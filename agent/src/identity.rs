//! The agent's identity on disk: its private key (generated here, never sent anywhere), the
//! client certificate issued by the controller, the pinned CA, and where the controller is.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use infrastructor_hostops::fsutil::{create_private_dir, write_atomic};

/// Files under `<state_dir>/identity/`.
const KEY_FILE: &str = "key.pem";
const CERT_FILE: &str = "cert.pem";
const CA_FILE: &str = "ca.pem";
const META_FILE: &str = "identity.toml";

/// Everything the agent needs to open an mTLS stream to its controller.
#[derive(Clone, Debug)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub meta: IdentityMeta,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityMeta {
    pub device_id: String,
    pub controller_url: String,
    pub issued_at_ms: i64,
    pub not_after_ms: i64,
}

/// The agent's state directory, created 0700, tightened if others could read it, refused if
/// someone else owns it (see [`infrastructor_hostops::fsutil::ensure_private_dir`]).
pub fn private_state_dir(state_dir: &Path) -> Result<()> {
    let found = infrastructor_hostops::fsutil::ensure_private_dir(state_dir)
        .map_err(|e| AgentError::io(format!("state directory {}", state_dir.display()), e))?;
    if let infrastructor_hostops::fsutil::PrivateDir::Tightened { was } = found {
        let was = format!("{was:04o}");
        tracing::warn!(path = %state_dir.display(), was, "state directory was open to others; now 0700");
    }
    Ok(())
}

impl Identity {
    fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("identity")
    }

    /// Loads the identity, or `None` when the agent was never enrolled.
    pub fn load(state_dir: &Path) -> Result<Option<Self>> {
        let dir = Self::dir(state_dir);
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| AgentError::io(format!("reading {}", dir.join(name).display()), e))
        };
        let meta: IdentityMeta = toml::from_str(&read(META_FILE)?)
            .map_err(|e| AgentError::Config(format!("{}: {e}", meta_path.display())))?;
        Ok(Some(Self {
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
            meta,
        }))
    }

    /// Stores every file atomically; the metadata file goes last, so a crash midway leaves
    /// either the previous identity or none at all.
    pub fn store(&self, state_dir: &Path) -> Result<()> {
        let dir = Self::dir(state_dir);
        private_state_dir(state_dir)?;
        create_private_dir(&dir)
            .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))?;
        let meta = toml::to_string(&self.meta).map_err(|e| AgentError::Config(e.to_string()))?;
        for (name, content, mode) in [
            (KEY_FILE, self.key_pem.as_str(), 0o600),
            (CERT_FILE, self.cert_pem.as_str(), 0o644),
            (CA_FILE, self.ca_pem.as_str(), 0o644),
            (META_FILE, meta.as_str(), 0o644),
        ] {
            let path = dir.join(name);
            write_atomic(&path, content.as_bytes(), mode)
                .map_err(|e| AgentError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// When the certificate should be renewed: at two thirds of its lifetime.
    pub fn renew_at_ms(&self) -> i64 {
        let lifetime = self.meta.not_after_ms - self.meta.issued_at_ms;
        self.meta.issued_at_ms + lifetime * 2 / 3
    }
}

/// A fresh ECDSA P-256 key pair for this host.
pub fn generate_key() -> Result<KeyPair> {
    Ok(KeyPair::generate()?)
}

/// A PEM certificate signing request for `key`. The controller ignores the requested subject
/// and decides the identity itself; the CN only helps humans reading the CSR.
pub fn certificate_request(key: &KeyPair, hostname: &str) -> Result<String> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hostname);
    params.distinguished_name = name;
    Ok(params.serialize_request(key)?.pem()?)
}

/// SHA-256 of a DER certificate as lowercase hex: the form operators pin.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Accepts `AB:CD:…`, `abcd…` or `SHA256:abcd…` and returns the 32 raw bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let trimmed = text.trim();
    let without_prefix = trimmed
        .strip_prefix("SHA256:")
        .or_else(|| trimmed.strip_prefix("sha256:"))
        .unwrap_or(trimmed);
    let digits: String = without_prefix.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits).map_err(|_| AgentError::BadFingerprint(text.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| AgentError::BadFingerprint(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms_are_equivalent() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{hex}")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn identity_round_trips_and_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none());
        let identity = Identity {
            key_pem: "KEY".into(),
            cert_pem: "CERT".into(),
            ca_pem: "CA".into(),
            meta: IdentityMeta {
                device_id: "d1".into(),
                controller_url: "https://127.0.0.1:8443".into(),
                issued_at_ms: 0,
                not_after_ms: 3000,
            },
        };
        identity.store(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.meta, identity.meta);
        assert_eq!(loaded.renew_at_ms(), 2000);
        let mode = std::fs::metadata(dir.path().join("identity/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
