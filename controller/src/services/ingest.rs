//! Group commit for metric ingest: every session submits its batch to a queue; writer tasks
//! take everything queued at that moment and commit it in one transaction, then answer each
//! session. Under load, one fsync covers many batches; when idle, a batch commits at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::{Error, Result};
use crate::store::{BatchToIngest, IngestOutcome, Store, StoreError};

const QUEUE_DEPTH: usize = 4096;
const MAX_GROUP_BATCHES: usize = 512;
const MAX_GROUP_SAMPLES: usize = 100_000;

struct Request {
    batch: BatchToIngest,
    reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct IngestQueue {
    sender: mpsc::Sender<Request>,
}

impl IngestQueue {
    /// Starts the writer tasks; they stop when the last queue handle is dropped.
    pub fn start(store: Arc<Store>, now_ms: fn() -> i64) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..store.ingest_writers() {
            tokio::spawn(run_writer(store.clone(), receiver.clone(), now_ms));
        }
        Self { sender }
    }

    /// Commits `batch` (with others queued alongside it) and returns its outcome.
    pub async fn submit(&self, batch: BatchToIngest) -> Result<IngestOutcome> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request { batch, reply })
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?
            .map_err(Error::from)
    }
}

async fn next_group(receiver: &Mutex<mpsc::Receiver<Request>>) -> Option<Vec<Request>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut samples = first.batch.samples.len();
    let mut group = vec![first];
    while group.len() < MAX_GROUP_BATCHES && samples < MAX_GROUP_SAMPLES {
        match receiver.try_recv() {
            Ok(request) => {
                samples += request.batch.samples.len();
                group.push(request);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

async fn run_writer(
    store: Arc<Store>,
    receiver: Arc<Mutex<mpsc::Receiver<Request>>>,
    now_ms: fn() -> i64,
) {
    while let Some(group) = next_group(&receiver).await {
        let (batches, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.reply)).unzip();
        match store.ingest_batches(&batches, now_ms()).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, batches = batches.len(), "group commit failed; batches will be resent");
                let kind = error.kind();
                let message = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Group {
                        kind,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}
