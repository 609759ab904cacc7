//! A restic REST repository on loopback, speaking the REST backend protocol (v2) that restic
//! itself talks to: `POST /?create=true`, `HEAD|GET|POST /config`, `GET /<type>/` (names and
//! sizes), `HEAD|GET|POST|DELETE /<type>/<name>` with byte ranges, over a directory.
//! restic's own rest-server is not packaged in Debian 12 (and building one from crates.io
//! would add minutes to every CI run), so the tests serve the protocol here; the client is the
//! real restic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

const TYPES: [&str; 5] = ["data", "keys", "locks", "snapshots", "index"];
const V2: &str = "application/vnd.x.restic.rest.v2";

pub struct RestRepository {
    pub addr: SocketAddr,
    /// Where the repository's files are.
    pub dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RestRepository {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RestRepository {
    pub async fn start(dir: &Path) -> Self {
        let root = Arc::new(dir.to_path_buf());
        let app = Router::new()
            .route("/", post(create))
            .route(
                "/config",
                get(read_config).head(head_config).post(write_config),
            )
            .route("/{kind}/", get(list))
            .route(
                "/{kind}/{name}",
                get(read).head(head).post(write).delete(remove),
            )
            .with_state(root);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            dir: dir.to_path_buf(),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

type Root = State<Arc<PathBuf>>;

fn file(root: &Path, kind: &str, name: &str) -> Option<PathBuf> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_hexdigit());
    (TYPES.contains(&kind) && plain).then(|| root.join(kind).join(name))
}

async fn create(State(root): Root) -> StatusCode {
    for kind in TYPES {
        if std::fs::create_dir_all(root.join(kind)).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    StatusCode::OK
}

async fn read_config(State(root): Root, headers: HeaderMap) -> Response {
    serve(&root.join("config"), &headers)
}

async fn head_config(State(root): Root) -> Response {
    stat(&root.join("config"))
}

async fn write_config(State(root): Root, body: Bytes) -> StatusCode {
    store(&root.join("config"), &body)
}

async fn list(State(root): Root, UrlPath(kind): UrlPath<String>) -> Response {
    if !TYPES.contains(&kind.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let entries: Vec<serde_json::Value> = std::fs::read_dir(root.join(&kind))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let size = e.metadata().ok()?.len();
                    let name = e.file_name().into_string().ok()?;
                    Some(serde_json::json!({"name": name, "size": size}))
                })
                .collect()
        })
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, V2)],
        serde_json::to_string(&entries).unwrap_or_default(),
    )
        .into_response()
}

async fn read(
    State(root): Root,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match file(&root, &kind, &name) {
        Some(path) => serve(&path, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn head(State(root): Root, UrlPath((kind, name)): UrlPath<(String, String)>) -> Response {
    match file(&root, &kind, &name) {
        Some(path) => stat(&path),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write(
    State(root): Root,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> StatusCode {
    match file(&root, &kind, &name) {
        Some(path) => store(&path, &body),
        None => StatusCode::NOT_FOUND,
    }
}

async fn remove(State(root): Root, UrlPath((kind, name)): UrlPath<(String, String)>) -> StatusCode {
    match file(&root, &kind, &name).map(std::fs::remove_file) {
        Some(Ok(())) => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    }
}

fn stat(path: &Path) -> Response {
    match std::fs::metadata(path) {
        Ok(meta) => ([(header::CONTENT_LENGTH, meta.len().to_string())], ()).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The file, or the byte range `Range: bytes=a-b` asks for.
fn serve(path: &Path, headers: &HeaderMap) -> Response {
    let Ok(bytes) = std::fs::read(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'));
    let Some((start, end)) = range else {
        return bytes.into_response();
    };
    let start: usize = start.parse().unwrap_or(0);
    let end: usize = end
        .parse()
        .map_or(bytes.len(), |e: usize| (e + 1).min(bytes.len()));
    if start >= end {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    (StatusCode::PARTIAL_CONTENT, bytes[start..end].to_vec()).into_response()
}

fn store(path: &Path, body: &[u8]) -> StatusCode {
    if path.exists() {
        return StatusCode::FORBIDDEN;
    }
    match std::fs::write(path, body) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
