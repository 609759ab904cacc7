//! Group commit for metric ingest. Sessions enqueue batches without waiting; writer tasks take
//! everything queued at that moment and commit it in one transaction, then answer each batch.
//! Under load one fsync covers many batches; when idle a batch commits at once.
//!
//! Each device always goes to the same writer, so one device's batches reach storage in the
//! order its stream sent them — which is what lets a session keep many batches in flight.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::store::{BatchToIngest, IngestOutcome, Store, StoreError};

const QUEUE_DEPTH: usize = 4096;
const MAX_GROUP_BATCHES: usize = 512;
const MAX_GROUP_SAMPLES: usize = 100_000;

struct Request {
    batch: BatchToIngest,
    reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// The answer for one enqueued batch, available once its group has committed.
pub struct PendingOutcome(oneshot::Receiver<Result<IngestOutcome, StoreError>>);

impl PendingOutcome {
    pub async fn outcome(self) -> Result<IngestOutcome> {
        self.0
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?
            .map_err(Error::from)
    }
}

#[derive(Clone)]
pub struct IngestQueue {
    writers: Arc<Vec<mpsc::Sender<Request>>>,
}

impl IngestQueue {
    /// Starts the writer tasks; they stop when the last queue handle is dropped.
    pub fn start(store: Arc<Store>, now_ms: fn() -> i64) -> Self {
        let writers = (0..store.ingest_writers())
            .map(|_| {
                let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
                tokio::spawn(run_writer(store.clone(), receiver, now_ms));
                sender
            })
            .collect();
        Self {
            writers: Arc::new(writers),
        }
    }

    fn writer_for(&self, device_id: &str) -> &mpsc::Sender<Request> {
        let mut hasher = DefaultHasher::new();
        device_id.hash(&mut hasher);
        &self.writers[(hasher.finish() % self.writers.len() as u64) as usize]
    }

    /// Queues `batch`; batches of one device are committed in the order they were enqueued.
    pub async fn enqueue(&self, batch: BatchToIngest) -> Result<PendingOutcome> {
        let (reply, answer) = oneshot::channel();
        self.writer_for(&batch.device_id)
            .send(Request { batch, reply })
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?;
        Ok(PendingOutcome(answer))
    }
}

async fn next_group(receiver: &mut mpsc::Receiver<Request>) -> Option<Vec<Request>> {
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

async fn run_writer(store: Arc<Store>, mut receiver: mpsc::Receiver<Request>, now_ms: fn() -> i64) {
    while let Some(group) = next_group(&mut receiver).await {
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
