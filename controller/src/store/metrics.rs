//! Metric storage: named series with labels, raw samples, 5-minute and 1-hour rollups,
//! exactly-once ingest per `(device, seq)`, rollup maintenance and retention.

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgConnection, QueryBuilder, SqliteConnection};

use super::{on_pool, read, Backend, Store, StoreError, StoreResult};

/// One validated sample; `labels` is canonical JSON (sorted keys).
#[derive(Clone, Debug)]
pub struct IngestSample {
    pub series: String,
    pub labels: String,
    pub ts_ms: i64,
    pub value: f64,
}

/// One agent batch on its way into storage.
#[derive(Clone, Debug)]
pub struct BatchToIngest {
    pub device_id: String,
    pub seq: u64,
    /// The batch submitted just before this one on the same stream (or the resume point).
    /// Storing requires the high-water mark to have reached it, so a batch whose predecessor
    /// failed to commit is refused instead of leaving a hole. 0 means no constraint.
    pub after_seq: u64,
    pub samples: Vec<IngestSample>,
    /// Cumulative (batches, samples) the agent dropped from its full spool.
    pub dropped: (u64, u64),
}

/// One rollup-pending range per device per group, instead of one per batch.
fn merge_ranges(ranges: Vec<(&str, i64, i64)>) -> Vec<(&str, i64, i64)> {
    let mut merged: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (device, from, to) in ranges {
        let range = merged.entry(device).or_insert((from, to));
        range.0 = range.0.min(from);
        range.1 = range.1.max(to);
    }
    merged
        .into_iter()
        .map(|(device, (from, to))| (device, from, to))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed now; the high-water mark moved to this batch.
    Stored,
    /// At or below the high-water mark: already stored once, nothing written.
    Duplicate,
    /// Its predecessor on the stream is not stored (its commit failed): nothing written; the
    /// stream must restart from the high-water mark.
    OutOfOrder,
}

/// Which table answers a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Raw,
    FiveMinutes,
    OneHour,
}

impl Resolution {
    pub fn bucket_ms(self) -> i64 {
        match self {
            Self::Raw => 1,
            Self::FiveMinutes => 300_000,
            Self::OneHour => 3_600_000,
        }
    }

    pub(super) fn table(self) -> &'static str {
        match self {
            Self::Raw => "samples",
            Self::FiveMinutes => "rollups_5m",
            Self::OneHour => "rollups_1h",
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize, PartialEq)]
pub struct Bucket {
    #[serde(rename = "ts_ms")]
    pub bucket: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub count: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SeriesRow {
    pub id: i64,
    pub labels: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LatestSample {
    pub device_id: String,
    pub name: String,
    pub labels: String,
    pub ts_ms: i64,
    pub value: f64,
}

/// Everything older than these instants is deleted.
#[derive(Clone, Copy, Debug)]
pub struct RetentionCutoffs {
    pub raw_before_ms: i64,
    pub rollup_5m_before_ms: i64,
    pub rollup_1h_before_ms: i64,
}

/// Backend-specific bulk insert of `(series_id, ts_ms, value)` rows.
trait InsertSamples {
    async fn insert_samples(&mut self, rows: &[(i64, i64, f64)]) -> sqlx::Result<()>;
}

impl InsertSamples for SqliteConnection {
    async fn insert_samples(&mut self, rows: &[(i64, i64, f64)]) -> sqlx::Result<()> {
        // SQLite allows 32766 bound parameters per statement; 3 per row.
        for chunk in rows.chunks(10_000) {
            let mut insert = QueryBuilder::new("INSERT INTO samples (series_id, ts_ms, value) ");
            insert.push_values(chunk, |mut row, (series_id, ts_ms, value)| {
                row.push_bind(*series_id)
                    .push_bind(*ts_ms)
                    .push_bind(*value);
            });
            insert.push(" ON CONFLICT (series_id, ts_ms) DO NOTHING");
            insert.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

impl InsertSamples for PgConnection {
    async fn insert_samples(&mut self, rows: &[(i64, i64, f64)]) -> sqlx::Result<()> {
        let series_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let values: Vec<f64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(
            "INSERT INTO samples (series_id, ts_ms, value) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::DOUBLE PRECISION[]) \
             ON CONFLICT (series_id, ts_ms) DO NOTHING",
        )
        .bind(series_ids)
        .bind(timestamps)
        .bind(values)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

/// A device whose high-water mark a group moves, from `from` (as read) to `to`.
#[derive(Debug, PartialEq)]
struct MarkAdvance<'a> {
    device_id: &'a str,
    from: i64,
    to: i64,
    /// Spool loss as reported by the last batch stored.
    dropped: (u64, u64),
}

/// What a group does to high-water marks, decided in memory from the marks read at the start
/// of its transaction — exactly what applying the batches one by one in `order` (device, then
/// seq) would do. A batch is stored when it is above its device's mark and its predecessor
/// (`after_seq`) is not; at or below the mark it is a duplicate; otherwise (or for an unknown
/// device) it is out of order. Outcomes are in input order.
fn plan_marks<'a>(
    batches: &'a [BatchToIngest],
    order: &[usize],
    marks: &HashMap<String, i64>,
) -> (Vec<IngestOutcome>, Vec<MarkAdvance<'a>>) {
    let mut outcomes = vec![IngestOutcome::OutOfOrder; batches.len()];
    let mut advances: Vec<MarkAdvance<'a>> = Vec::new();
    for &index in order {
        let batch = &batches[index];
        let Some(&read) = marks.get(&batch.device_id) else {
            continue;
        };
        let current = match advances.last() {
            Some(advance) if advance.device_id == batch.device_id => advance.to,
            _ => read,
        };
        let seq = batch.seq as i64;
        outcomes[index] = if current < seq && current >= batch.after_seq as i64 {
            match advances.last_mut() {
                Some(advance) if advance.device_id == batch.device_id => {
                    advance.to = seq;
                    advance.dropped = batch.dropped;
                }
                _ => advances.push(MarkAdvance {
                    device_id: &batch.device_id,
                    from: read,
                    to: seq,
                    dropped: batch.dropped,
                }),
            }
            IngestOutcome::Stored
        } else if current >= seq {
            IngestOutcome::Duplicate
        } else {
            IngestOutcome::OutOfOrder
        };
    }
    (outcomes, advances)
}

impl Store {
    /// Series ids of every sample already known, looked up under one lock for the group.
    fn cached_series_ids(&self, batches: &[BatchToIngest]) -> Vec<Vec<Option<i64>>> {
        let cache = match self.series_ids.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        batches
            .iter()
            .map(|batch| {
                let device = cache.get(batch.device_id.as_str());
                batch
                    .samples
                    .iter()
                    .map(|sample| {
                        device
                            .and_then(|names| names.get(sample.series.as_str()))
                            .and_then(|labels| labels.get(sample.labels.as_str()))
                            .copied()
                    })
                    .collect()
            })
            .collect()
    }

    fn remember_series_ids(&self, new_series: Vec<((String, String, String), i64)>) {
        if new_series.is_empty() {
            return;
        }
        let mut cache = match self.series_ids.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        for ((device, name, labels), id) in new_series {
            cache
                .entry(device)
                .or_default()
                .entry(name)
                .or_default()
                .insert(labels, id);
        }
    }

    /// Stores one batch exactly once (see [`Store::ingest_batches`]).
    pub async fn ingest_batch(
        &self,
        device_id: &str,
        seq: u64,
        samples: &[IngestSample],
        dropped: (u64, u64),
        now_ms: i64,
    ) -> StoreResult<IngestOutcome> {
        let batch = BatchToIngest {
            device_id: device_id.to_string(),
            seq,
            after_seq: 0,
            samples: samples.to_vec(),
            dropped,
        };
        let outcomes = self
            .ingest_batches(std::slice::from_ref(&batch), now_ms)
            .await?;
        Ok(outcomes[0])
    }

    /// Stores a group of batches in one transaction (group commit), each exactly once: a
    /// batch's samples are written only if its conditional high-water-mark update succeeds,
    /// in the same transaction. Batches are applied in (device, seq) order, so concurrent
    /// groups take device row locks in the same order and cannot deadlock. Outcomes are
    /// returned in input order.
    pub async fn ingest_batches(
        &self,
        batches: &[BatchToIngest],
        now_ms: i64,
    ) -> StoreResult<Vec<IngestOutcome>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by(|a, b| {
            (batches[*a].device_id.as_str(), batches[*a].seq)
                .cmp(&(batches[*b].device_id.as_str(), batches[*b].seq))
        });
        let known = self.cached_series_ids(batches);
        let mut devices: Vec<&str> = order
            .iter()
            .map(|&i| batches[i].device_id.as_str())
            .collect();
        devices.dedup();
        // One read of every mark the group touches; PostgreSQL locks those rows (in ID order,
        // so concurrent groups cannot deadlock) until the commit, as the updates did before.
        let params: Vec<String> = (1..=devices.len()).map(|n| format!("${n}")).collect();
        let mut read_marks = format!(
            "SELECT id, high_water_mark FROM devices WHERE id IN ({}) ORDER BY id",
            params.join(", ")
        );
        if self.backend() == Backend::Postgres {
            read_marks += " FOR UPDATE";
        }
        let mut new_series: Vec<((String, String, String), i64)> = Vec::new();
        let outcomes = on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            let mut select = sqlx::query_as::<_, (String, i64)>(&read_marks);
            for device_id in &devices {
                select = select.bind(*device_id);
            }
            let marks: HashMap<String, i64> =
                select.fetch_all(&mut *tx).await?.into_iter().collect();
            let (outcomes, advances) = plan_marks(batches, &order, &marks);
            if !advances.is_empty() {
                let mut update = QueryBuilder::new(
                    "WITH moved (id, from_seq, to_seq, dropped_batches, dropped_samples) AS (",
                );
                update.push_values(&advances, |mut row, advance| {
                    row.push_bind(advance.device_id)
                        .push_bind(advance.from)
                        .push_bind(advance.to)
                        .push_bind(advance.dropped.0 as i64)
                        .push_bind(advance.dropped.1 as i64);
                });
                update
                    .push(
                        ") UPDATE devices SET high_water_mark = moved.to_seq, \
                         spool_dropped_batches = moved.dropped_batches, \
                         spool_dropped_samples = moved.dropped_samples, last_seen_ms = ",
                    )
                    .push_bind(now_ms)
                    .push(
                        " FROM moved WHERE devices.id = moved.id \
                         AND devices.high_water_mark = moved.from_seq",
                    );
                let updated = update.build().execute(&mut *tx).await?.rows_affected();
                if updated != advances.len() as u64 {
                    // Another writer moved a mark since it was read: store nothing; the
                    // batches are resent and decided again.
                    return Err(StoreError::Conflict(
                        "a high-water mark moved during ingest".into(),
                    ));
                }
            }
            let mut rows = Vec::new();
            let mut pending = Vec::new();
            let mut resolved: HashMap<(String, String, String), i64> = HashMap::new();
            for &index in &order {
                if outcomes[index] != IngestOutcome::Stored {
                    continue;
                }
                let batch = &batches[index];
                for (sample, cached) in batch.samples.iter().zip(&known[index]) {
                    if let Some(id) = cached {
                        rows.push((*id, sample.ts_ms, sample.value));
                        continue;
                    }
                    let key = (
                        batch.device_id.clone(),
                        sample.series.clone(),
                        sample.labels.clone(),
                    );
                    let id = match resolved.get(&key).copied() {
                        Some(id) => id,
                        None => {
                            sqlx::query(
                                "INSERT INTO series (device_id, name, labels) VALUES ($1, $2, $3) \
                                 ON CONFLICT (device_id, name, labels) DO NOTHING",
                            )
                            .bind(&key.0)
                            .bind(&key.1)
                            .bind(&key.2)
                            .execute(&mut *tx)
                            .await?;
                            let (id,): (i64,) = sqlx::query_as(
                                "SELECT id FROM series WHERE device_id = $1 AND name = $2 AND labels = $3",
                            )
                            .bind(&key.0)
                            .bind(&key.1)
                            .bind(&key.2)
                            .fetch_one(&mut *tx)
                            .await?;
                            new_series.push((key.clone(), id));
                            id
                        }
                    };
                    resolved.insert(key, id);
                    rows.push((id, sample.ts_ms, sample.value));
                }
                let from = batch.samples.iter().map(|s| s.ts_ms).min();
                let to = batch.samples.iter().map(|s| s.ts_ms).max();
                if let (Some(from), Some(to)) = (from, to) {
                    pending.push((batch.device_id.as_str(), from, to));
                }
            }
            if !rows.is_empty() {
                tx.insert_samples(&rows).await?;
            }
            let pending = merge_ranges(pending);
            if !pending.is_empty() {
                let mut insert =
                    QueryBuilder::new("INSERT INTO rollup_pending (device_id, from_ms, to_ms) ");
                insert.push_values(&pending, |mut row, (device_id, from, to)| {
                    row.push_bind(*device_id).push_bind(*from).push_bind(*to);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            outcomes
        });
        self.remember_series_ids(new_series);
        Ok(outcomes)
    }

    /// Every series of `name` on the device.
    pub async fn find_series(&self, device_id: &str, name: &str) -> StoreResult<Vec<SeriesRow>> {
        Ok(read!(self, |p| sqlx::query_as::<_, SeriesRow>(
            "SELECT id, labels FROM series WHERE device_id = $1 AND name = $2 ORDER BY labels"
        )
        .bind(device_id)
        .bind(name)
        .fetch_all(p)
        .await)?)
    }

    /// avg/min/max/count per `step_ms` bucket in `[from_ms, to_ms)`, from the chosen table.
    pub async fn query_buckets(
        &self,
        series_id: i64,
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> StoreResult<Vec<Bucket>> {
        let sql = Self::buckets_sql(resolution);
        Ok(read!(self, |p| sqlx::query_as::<_, Bucket>(&sql)
            .bind(series_id)
            .bind(step_ms)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(p)
            .await)?)
    }

    /// The bucket query: `$1` series, `$2` step, `[$3, $4)` the range; columns `bucket`,
    /// `avg`, `min`, `max`, `count`, ordered by bucket.
    pub(super) fn buckets_sql(resolution: Resolution) -> String {
        match resolution {
            Resolution::Raw => "SELECT (ts_ms / $2) * $2 AS bucket, AVG(value) AS avg, MIN(value) AS min, \
                 MAX(value) AS max, COUNT(*) AS count FROM samples \
                 WHERE series_id = $1 AND ts_ms >= $3 AND ts_ms < $4 GROUP BY 1 ORDER BY 1"
                .to_string(),
            rollup => format!(
                "SELECT (bucket_ms / $2) * $2 AS bucket, \
                 SUM(sum) / CAST(SUM(count) AS DOUBLE PRECISION) AS avg, MIN(min) AS min, MAX(max) AS max, \
                 CAST(SUM(count) AS BIGINT) AS count FROM {} \
                 WHERE series_id = $1 AND bucket_ms >= $3 AND bucket_ms < $4 GROUP BY 1 ORDER BY 1",
                rollup.table()
            ),
        }
    }

    /// The newest sample of every series of the device (optionally only the named series).
    pub async fn latest_samples(
        &self,
        device_id: &str,
        names: &[&str],
    ) -> StoreResult<Vec<LatestSample>> {
        self.latest_samples_where(Some(device_id), names).await
    }

    /// The newest sample of the named series of every live device, in one query: a device list
    /// shows a summary per device without a query per device.
    pub async fn latest_samples_of_all(&self, names: &[&str]) -> StoreResult<Vec<LatestSample>> {
        self.latest_samples_where(None, names).await
    }

    async fn latest_samples_where(
        &self,
        device_id: Option<&str>,
        names: &[&str],
    ) -> StoreResult<Vec<LatestSample>> {
        // The newest timestamp is found once per series (an index lookup), then its sample by
        // primary key: the cost follows the number of series, not of samples kept.
        let mut filter = String::from("TRUE");
        let mut params = 0;
        let mut next = || {
            params += 1;
            format!("${params}")
        };
        match device_id {
            Some(_) => filter += &format!(" AND device_id = {}", next()),
            None => {
                filter += " AND device_id IN (SELECT id FROM devices WHERE revoked_at_ms IS NULL)"
            }
        }
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|_| next()).collect();
            filter += &format!(" AND name IN ({})", list.join(", "));
        }
        let sql = format!(
            "SELECT s.device_id, s.name, s.labels, m.ts_ms, m.value FROM \
             (SELECT id, device_id, name, labels, \
              (SELECT MAX(ts_ms) FROM samples WHERE series_id = series.id) AS newest \
              FROM series WHERE {filter}) s \
             JOIN samples m ON m.series_id = s.id AND m.ts_ms = s.newest \
             ORDER BY s.device_id, s.name, s.labels"
        );
        Ok(read!(self, |p| {
            let mut query = sqlx::query_as::<_, LatestSample>(&sql);
            if let Some(device_id) = device_id {
                query = query.bind(device_id);
            }
            for name in names {
                query = query.bind(*name);
            }
            query.fetch_all(p).await
        })?)
    }

    /// Number of raw samples of one series in a window (tests and exactly-once checks).
    pub async fn count_samples(&self, device_id: &str, name: &str) -> StoreResult<Vec<(f64, i64)>> {
        Ok(read!(self, |p| {
            sqlx::query_as::<_, (f64, i64)>(
                "SELECT m.value, COUNT(*) FROM series s JOIN samples m ON m.series_id = s.id \
             WHERE s.device_id = $1 AND s.name = $2 GROUP BY m.value ORDER BY m.value",
            )
            .bind(device_id)
            .bind(name)
            .fetch_all(p)
            .await
        })?)
    }

    /// Recomputes the rollup buckets touched by recent ingests, from raw samples. Buckets that
    /// raw retention has already thinned are left alone. Two runs may take the same range at
    /// once (replicas on one PostgreSQL database each run maintenance): both compute the
    /// same buckets, and the upsert keeps one of each. Returns how many pending ranges it
    /// processed.
    pub async fn run_rollups(&self, raw_cutoff_ms: i64, limit: i64) -> StoreResult<usize> {
        on_pool!(&self.writer, |p| {
            let mut tx = p.begin().await?;
            let pending: Vec<(i64, String, i64, i64)> = sqlx::query_as(
                "SELECT id, device_id, from_ms, to_ms FROM rollup_pending ORDER BY id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
            for (_, device, from, to) in &pending {
                let range = ranges.entry(device.as_str()).or_insert((*from, *to));
                range.0 = range.0.min(*from);
                range.1 = range.1.max(*to);
            }
            for (device, (from, to)) in &ranges {
                for resolution in [Resolution::FiveMinutes, Resolution::OneHour] {
                    let width = resolution.bucket_ms();
                    let complete_after = (raw_cutoff_ms.div_euclid(width) + 1) * width;
                    let start = (from.div_euclid(width) * width).max(complete_after);
                    let end = (to.div_euclid(width) + 1) * width;
                    if start >= end {
                        continue;
                    }
                    let table = resolution.table();
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE bucket_ms >= $2 AND bucket_ms < $3 \
                         AND series_id IN (SELECT id FROM series WHERE device_id = $1)"
                    ))
                    .bind(*device)
                    .bind(start)
                    .bind(end)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(&format!(
                        "INSERT INTO {table} (series_id, bucket_ms, count, sum, min, max) \
                         SELECT m.series_id, (m.ts_ms / $4) * $4, COUNT(*), SUM(m.value), MIN(m.value), MAX(m.value) \
                         FROM samples m JOIN series s ON s.id = m.series_id \
                         WHERE s.device_id = $1 AND m.ts_ms >= $2 AND m.ts_ms < $3 GROUP BY 1, 2 \
                         ON CONFLICT (series_id, bucket_ms) DO UPDATE SET count = excluded.count, \
                         sum = excluded.sum, min = excluded.min, max = excluded.max"
                    ))
                    .bind(*device)
                    .bind(start)
                    .bind(end)
                    .bind(width)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (id, _, _, _) in &pending {
                sqlx::query("DELETE FROM rollup_pending WHERE id = $1")
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(pending.len())
        })
    }

    /// Deletes data past its retention; returns rows deleted per table (raw, 5m, 1h).
    pub async fn apply_retention(&self, cutoffs: RetentionCutoffs) -> StoreResult<(u64, u64, u64)> {
        let mut deleted = [0u64; 3];
        for (index, (sql, cutoff)) in [
            (
                "DELETE FROM samples WHERE ts_ms < $1",
                cutoffs.raw_before_ms,
            ),
            (
                "DELETE FROM rollups_5m WHERE bucket_ms < $1",
                cutoffs.rollup_5m_before_ms,
            ),
            (
                "DELETE FROM rollups_1h WHERE bucket_ms < $1",
                cutoffs.rollup_1h_before_ms,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            deleted[index] = on_pool!(&self.writer, |p| sqlx::query(sql)
                .bind(cutoff)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))?;
        }
        Ok((deleted[0], deleted[1], deleted[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IngestOutcome::{Duplicate, OutOfOrder, Stored};

    fn batch(device: &str, seq: u64, after_seq: u64) -> BatchToIngest {
        BatchToIngest {
            device_id: device.into(),
            seq,
            after_seq,
            samples: Vec::new(),
            dropped: (seq, seq * 10),
        }
    }

    fn plan(batches: &[BatchToIngest], marks: &[(&str, i64)]) -> Vec<IngestOutcome> {
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by_key(|&i| (batches[i].device_id.clone(), batches[i].seq));
        let marks = marks.iter().map(|(d, m)| (d.to_string(), *m)).collect();
        plan_marks(batches, &order, &marks).0
    }

    #[test]
    fn a_chain_of_batches_moves_the_mark_once_to_its_end() {
        let batches = [batch("a", 6, 5), batch("a", 4, 3), batch("a", 5, 4)];
        let order = vec![1, 2, 0];
        let marks = HashMap::from([("a".to_string(), 3)]);
        let (outcomes, advances) = plan_marks(&batches, &order, &marks);
        assert_eq!(outcomes, vec![Stored, Stored, Stored]);
        assert_eq!(
            advances,
            vec![MarkAdvance {
                device_id: "a",
                from: 3,
                to: 6,
                dropped: (6, 60)
            }]
        );
    }

    #[test]
    fn replays_are_duplicates_and_a_hole_stops_the_stream() {
        // Mark at 4: 3 and 4 are replays, 5 follows, 7 waits on 6 which never came.
        let batches = [
            batch("a", 3, 2),
            batch("a", 4, 3),
            batch("a", 5, 4),
            batch("a", 7, 6),
        ];
        assert_eq!(
            plan(&batches, &[("a", 4)]),
            vec![Duplicate, Duplicate, Stored, OutOfOrder]
        );
    }

    #[test]
    fn the_same_seq_twice_in_one_group_is_stored_once() {
        let batches = [batch("a", 1, 0), batch("a", 1, 0)];
        let outcomes = plan(&batches, &[("a", 0)]);
        assert_eq!(outcomes.iter().filter(|o| **o == Stored).count(), 1);
        assert_eq!(outcomes.iter().filter(|o| **o == Duplicate).count(), 1);
    }

    #[test]
    fn devices_are_decided_independently_and_unknown_ones_are_refused() {
        let batches = [batch("b", 2, 1), batch("a", 9, 0), batch("gone", 1, 0)];
        let marks = HashMap::from([("a".to_string(), 0), ("b".to_string(), 5)]);
        let order = vec![1, 0, 2];
        let (outcomes, advances) = plan_marks(&batches, &order, &marks);
        assert_eq!(outcomes, vec![Duplicate, Stored, OutOfOrder]);
        assert_eq!(advances.len(), 1);
        assert_eq!(
            (advances[0].device_id, advances[0].from, advances[0].to),
            ("a", 0, 9)
        );
    }
}
