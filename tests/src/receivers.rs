//! Real receivers for notifications, on loopback: an HTTP server that records every request
//! (and answers with a status the test sets), and an SMTP server (Debian's python3-aiosmtpd)
//! that requires STARTTLS and a login and keeps every message as a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

pub struct HttpReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl HttpReceiver {
    pub async fn start() -> Self {
        let shared = Shared::default();
        shared.status.store(200, Ordering::SeqCst);
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the receiver answers from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Requests received on `path`, in order.
    pub fn on(&self, path: &str) -> Vec<Received> {
        let received = self.shared.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap();
    // Only accepted deliveries count as received; refused ones are what a retry repeats.
    if status.is_success() {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        shared.received.lock().unwrap().push(Received {
            path: uri.path().to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    status
}

/// The SMTP server; stopped when dropped.
pub struct SmtpReceiver {
    pub port: u16,
    /// The CA that signed the server's certificate (for `smtp_ca_file`).
    pub ca_file: PathBuf,
    pub password_file: PathBuf,
    pub user: String,
    outdir: PathBuf,
    child: std::process::Child,
}

const PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's aiosmtpd is installed.
pub fn smtp_available() -> bool {
    std::process::Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl SmtpReceiver {
    /// Starts the server in `dir` with a fresh CA and certificate for 127.0.0.1.
    pub fn start(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_file = write("smtp-ca.pem", ca.pem());
        let cert_file = write("smtp-cert.pem", cert.pem());
        let key_file = write("smtp-key.pem", key.serialize_pem());
        let password_file = write("smtp-password", "correct horse\n".into());
        let outdir = dir.join("mail");
        std::fs::create_dir_all(&outdir).unwrap();
        let port = crate::sim::free_port().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smtp_receiver.py");
        let mut child = std::process::Command::new(PYTHON)
            .arg(script)
            .arg(port.to_string())
            .arg(&cert_file)
            .arg(&key_file)
            .arg(&outdir)
            .args(["alerts", "correct horse"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd");
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP receiver did not start");
        Self {
            port,
            ca_file,
            password_file,
            user: "alerts".into(),
            outdir,
            child,
        }
    }

    /// Every message received so far, in order, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.outdir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
        });
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
