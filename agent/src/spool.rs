//! The on-disk spool of metric batches not yet acknowledged by the controller.
//!
//! Each batch is one file named by its sequence number, written atomically before it is sent.
//! A batch is deleted only once the controller has acknowledged it (or a later one). The spool
//! is bounded: when full, the oldest batches are dropped and the loss is counted, persisted
//! and reported to the controller with every batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use infrastructor_proto::v1::{MetricBatch, Sample};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use infrastructor_hostops::fsutil::{create_private_dir, sync_dir, write_atomic};

const STATE_FILE: &str = "state.toml";
const BATCH_SUFFIX: &str = ".batch";

/// Counters that must survive restarts.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpoolState {
    /// Highest sequence number ever assigned; the next batch gets this + 1.
    pub last_assigned_seq: u64,
    pub dropped_batches: u64,
    pub dropped_samples: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// seq → (file size, sample count) of every spooled batch.
    index: BTreeMap<u64, (u64, u64)>,
    total_bytes: u64,
    state: SpoolState,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, rebuilding the index from the files present.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        create_private_dir(dir)
            .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))?;
        let state_path = dir.join(STATE_FILE);
        let mut state = match std::fs::read_to_string(&state_path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| AgentError::Config(format!("{}: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SpoolState::default(),
            Err(e) => {
                return Err(AgentError::io(
                    format!("reading {}", state_path.display()),
                    e,
                ))
            }
        };
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            index: BTreeMap::new(),
            total_bytes: 0,
            state,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| AgentError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| AgentError::io("listing spool", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                // An interrupted atomic write: the batch was never acknowledged as spooled.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(BATCH_SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let batch = spool.read(seq)?;
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            spool.index.insert(seq, (size, batch.samples.len() as u64));
            spool.total_bytes += size;
        }
        // The state file is written after each batch file, so a crash between the two leaves
        // a batch newer than the recorded counter.
        if let Some(&max_seq) = spool.index.keys().next_back() {
            state.last_assigned_seq = state.last_assigned_seq.max(max_seq);
        }
        spool.state = state;
        Ok(spool)
    }

    fn batch_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{BATCH_SUFFIX}"))
    }

    pub fn state(&self) -> SpoolState {
        self.state
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Assigns the next sequence number to `samples` and stores the batch durably.
    pub fn append(&mut self, samples: Vec<Sample>) -> Result<u64> {
        let seq = self.state.last_assigned_seq + 1;
        let batch = MetricBatch {
            seq,
            samples,
            spool_dropped_batches: 0,
            spool_dropped_samples: 0,
        };
        let bytes = batch.encode_to_vec();
        let path = self.batch_path(seq);
        write_atomic(&path, &bytes, 0o600)
            .map_err(|e| AgentError::io(format!("writing {}", path.display()), e))?;
        self.index
            .insert(seq, (bytes.len() as u64, batch.samples.len() as u64));
        self.total_bytes += bytes.len() as u64;
        self.state.last_assigned_seq = seq;
        self.enforce_bound()?;
        self.save_state()?;
        Ok(seq)
    }

    /// Drops the oldest batches while over the size bound, counting what is lost. The newest
    /// batch is always kept.
    fn enforce_bound(&mut self) -> Result<()> {
        while self.total_bytes > self.max_bytes && self.index.len() > 1 {
            let Some((&seq, &(size, samples))) = self.index.iter().next() else {
                break;
            };
            self.remove_file(seq)?;
            self.index.remove(&seq);
            self.total_bytes -= size;
            self.state.dropped_batches += 1;
            self.state.dropped_samples += samples;
            tracing::warn!(
                seq,
                samples,
                "spool full: dropped the oldest unacknowledged batch"
            );
        }
        Ok(())
    }

    fn remove_file(&self, seq: u64) -> Result<()> {
        let path = self.batch_path(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io(format!("removing {}", path.display()), e)),
        }
    }

    fn save_state(&self) -> Result<()> {
        let text = toml::to_string(&self.state).map_err(|e| AgentError::Config(e.to_string()))?;
        let path = self.dir.join(STATE_FILE);
        write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| AgentError::io(format!("writing {}", path.display()), e))
    }

    /// The controller durably holds every batch up to `seq`: forget them.
    pub fn acknowledge_through(&mut self, seq: u64) -> Result<()> {
        let acknowledged: Vec<u64> = self.index.range(..=seq).map(|(s, _)| *s).collect();
        if acknowledged.is_empty() {
            return Ok(());
        }
        for s in &acknowledged {
            self.remove_file(*s)?;
            if let Some((size, _)) = self.index.remove(s) {
                self.total_bytes -= size;
            }
        }
        sync_dir(&self.dir).map_err(|e| AgentError::io("syncing spool directory", e))
    }

    /// Never reuse a sequence number the controller has already seen (e.g. after the spool
    /// directory was wiped but the identity kept).
    pub fn advance_to(&mut self, seq: u64) -> Result<()> {
        if seq > self.state.last_assigned_seq {
            self.state.last_assigned_seq = seq;
            self.save_state()?;
        }
        Ok(())
    }

    /// Sequence numbers of spooled batches after `seq`, oldest first, at most `limit`.
    pub fn pending_after(&self, seq: u64, limit: usize) -> Vec<u64> {
        self.index
            .range(seq.saturating_add(1)..)
            .take(limit)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Reads a spooled batch, stamped with the current loss counters.
    pub fn read(&self, seq: u64) -> Result<MetricBatch> {
        let path = self.batch_path(seq);
        let bytes = std::fs::read(&path)
            .map_err(|e| AgentError::io(format!("reading {}", path.display()), e))?;
        let mut batch = MetricBatch::decode(bytes.as_slice()).map_err(|e| {
            AgentError::Protocol(format!("corrupt spool file {}: {e}", path.display()))
        })?;
        batch.spool_dropped_batches = self.state.dropped_batches;
        batch.spool_dropped_samples = self.state.dropped_samples;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: f64) -> Sample {
        Sample {
            series: "test.value".into(),
            labels: Default::default(),
            timestamp_ms: 1,
            value,
        }
    }

    #[test]
    fn batches_survive_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.append(vec![sample(1.0)]).unwrap(), 1);
        assert_eq!(spool.append(vec![sample(2.0)]).unwrap(), 2);
        assert_eq!(spool.append(vec![sample(3.0)]).unwrap(), 3);
        spool.acknowledge_through(1).unwrap();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.pending_after(0, 10), vec![2, 3]);
        assert_eq!(spool.read(3).unwrap().samples[0].value, 3.0);
        assert_eq!(spool.state().last_assigned_seq, 3);
    }

    #[test]
    fn sequence_continues_after_everything_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(vec![sample(1.0)]).unwrap();
        spool.acknowledge_through(1).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.append(vec![sample(2.0)]).unwrap(), 2);
        spool.advance_to(10).unwrap();
        assert_eq!(spool.append(vec![sample(3.0)]).unwrap(), 11);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let one_batch = MetricBatch {
            seq: 1,
            samples: vec![sample(1.0), sample(2.0)],
            ..Default::default()
        }
        .encoded_len() as u64;
        let mut spool = Spool::open(dir.path(), one_batch * 3).unwrap();
        for i in 0..5 {
            spool
                .append(vec![sample(i as f64), sample(i as f64)])
                .unwrap();
        }
        assert_eq!(spool.pending_after(0, 10), vec![3, 4, 5]);
        assert_eq!(spool.state().dropped_batches, 2);
        assert_eq!(spool.state().dropped_samples, 4);
        let batch = spool.read(5).unwrap();
        assert_eq!(batch.spool_dropped_batches, 2);
        drop(spool);
        let spool = Spool::open(dir.path(), one_batch * 3).unwrap();
        assert_eq!(spool.state().dropped_batches, 2, "loss counters persist");
    }

    #[test]
    fn interrupted_writes_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".00000000000000000001.batch.tmp-42"),
            b"partial",
        )
        .unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
