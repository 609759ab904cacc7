//! Reads for the analyses: series by name across devices, the history of many series in one
//! pass over a rollup, per-series shares of buckets below a threshold, the size of the metric
//! store per tier, and the aggregates PostgreSQL computes itself (the regression moments of a
//! bucket series, bucket percentiles) where SQLite has none.

use super::{on_pool, read, Backend, Resolution, Store, StoreResult};
use crate::services::analytics::stats::Moments;

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct NamedSeries {
    pub id: i64,
    pub device_id: String,
    pub name: String,
    pub labels: String,
}

/// One bucket of one series from a rollup.
#[derive(Clone, Copy, Debug, sqlx::FromRow, PartialEq)]
pub struct RollupRow {
    pub series_id: i64,
    pub bucket_ms: i64,
    pub avg: f64,
    pub max: f64,
}

/// One UTC day of one series from the 1-hour rollup ([`Store::daily_summary`]).
#[derive(Clone, Copy, Debug, sqlx::FromRow, PartialEq)]
pub struct DayRow {
    pub series_id: i64,
    /// Days since the Unix epoch.
    pub day: i64,
    pub peak: f64,
    /// The mean of the day's hourly means.
    pub mean: f64,
    pub hours: i64,
}

/// Per-series counts over 5-minute buckets ([`Store::share_below_5m`]).
#[derive(Clone, Copy, Debug, sqlx::FromRow, PartialEq)]
pub struct ShareRow {
    pub series_id: i64,
    pub buckets: i64,
    pub below: i64,
    pub mean: f64,
    pub peak: f64,
}

/// What the metric history takes on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreUsage {
    /// Raw samples, then the 5-minute and the 1-hour rollups.
    pub tiers: Vec<TierUsage>,
    pub database_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TierUsage {
    pub resolution: Resolution,
    pub table: &'static str,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
}

/// Series ids per query: well under both backends' bound-parameter limits.
const IDS_PER_QUERY: usize = 500;
/// Series ids per history read, so a fleet's history is read over several connections.
const IDS_PER_READ: usize = 50;

/// `$first, $first+1, …`: `count` numbered bind parameters.
fn bind_params(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Every series with one of `names` on the given devices (every live device: `None`).
    pub async fn series_named(
        &self,
        devices: Option<&[String]>,
        names: &[&str],
    ) -> StoreResult<Vec<NamedSeries>> {
        if names.is_empty() || devices.is_some_and(|d| d.is_empty()) {
            return Ok(Vec::new());
        }
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let names_list: Vec<String> = names.iter().map(|_| next()).collect();
        let device_filter = match devices {
            Some(ids) => {
                let list: Vec<String> = ids.iter().map(|_| next()).collect();
                format!("device_id IN ({})", list.join(", "))
            }
            None => "device_id IN (SELECT id FROM devices WHERE revoked_at_ms IS NULL)".into(),
        };
        let sql = format!(
            "SELECT id, device_id, name, labels FROM series WHERE name IN ({}) AND {device_filter} \
             ORDER BY device_id, name, labels",
            names_list.join(", ")
        );
        Ok(read!(self, |p| {
            let mut query = sqlx::query_as::<_, NamedSeries>(&sql);
            for name in names {
                query = query.bind(*name);
            }
            for id in devices.unwrap_or_default() {
                query = query.bind(id);
            }
            query.fetch_all(p).await
        })?)
    }

    /// Mean and peak of each series per bucket of `resolution` in `[from_ms, to_ms)` (raw:
    /// each sample is its own bucket), ordered by series and time.
    pub async fn rollup_history(
        &self,
        resolution: Resolution,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        let (columns, table, time) = match resolution {
            Resolution::Raw => (
                "ts_ms AS bucket_ms, value AS avg, value AS max",
                "samples",
                "ts_ms",
            ),
            rollup => (
                "bucket_ms, sum / CAST(count AS DOUBLE PRECISION) AS avg, max",
                rollup.table(),
                "bucket_ms",
            ),
        };
        // Several reads at once on the reader pool: decoding rows is most of the work, and
        // each connection decodes on its own thread.
        let reads = series.chunks(IDS_PER_READ).map(|chunk| async move {
            let sql = format!(
                "SELECT series_id, {columns} FROM {table} WHERE series_id IN ({}) \
                 AND {time} >= $1 AND {time} < $2 ORDER BY series_id, {time}",
                bind_params(chunk.len(), 3)
            );
            let rows: Vec<RollupRow> = read!(self, |p| {
                let mut query = sqlx::query_as::<_, RollupRow>(&sql)
                    .bind(from_ms)
                    .bind(to_ms);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(p).await
            })?;
            Ok::<_, super::StoreError>(rows)
        });
        Ok(futures::future::try_join_all(reads).await?.concat())
    }

    /// Each series' UTC days in `[from_ms, to_ms)` of the 1-hour rollup, grouped by the
    /// database: the peak of the hourly peaks, the mean of the hourly means, the hours
    /// counted (a day cut by either bound counts only its hours inside). Ordered by series
    /// and day.
    pub async fn daily_summary(
        &self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<DayRow>> {
        let reads = series.chunks(IDS_PER_READ).map(|chunk| async move {
            let sql = format!(
                "SELECT series_id, bucket_ms / 86400000 AS day, MAX(max) AS peak, \
                 AVG(sum / CAST(count AS DOUBLE PRECISION)) AS mean, COUNT(*) AS hours \
                 FROM rollups_1h WHERE series_id IN ({}) AND bucket_ms >= $1 AND bucket_ms < $2 \
                 GROUP BY series_id, bucket_ms / 86400000",
                bind_params(chunk.len(), 3)
            );
            let rows: Vec<DayRow> = read!(self, |p| {
                let mut query = sqlx::query_as::<_, DayRow>(&sql).bind(from_ms).bind(to_ms);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(p).await
            })?;
            Ok::<_, super::StoreError>(rows)
        });
        // Ordered here: without an ORDER BY, PostgreSQL aggregates in a hash table instead
        // of sorting every hour first.
        let mut days = futures::future::try_join_all(reads).await?.concat();
        days.sort_unstable_by_key(|d| (d.series_id, d.day));
        Ok(days)
    }

    /// The sum of the series' bucket means per 5-minute bucket in `[from_ms, to_ms)`: one
    /// host's traffic over all its interfaces, say. Oldest first.
    pub async fn summed_5m(
        &self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<(i64, f64)>> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let mut sums: std::collections::BTreeMap<i64, f64> = Default::default();
        for chunk in series.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT bucket_ms, SUM(sum / CAST(count AS DOUBLE PRECISION)) FROM rollups_5m \
                 WHERE series_id IN ({}) AND bucket_ms >= $1 AND bucket_ms < $2 \
                 GROUP BY bucket_ms",
                bind_params(chunk.len(), 3)
            );
            let rows: Vec<(i64, f64)> = read!(self, |p| {
                let mut query = sqlx::query_as(&sql).bind(from_ms).bind(to_ms);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(p).await
            })?;
            for (bucket, sum) in rows {
                *sums.entry(bucket).or_default() += sum;
            }
        }
        Ok(sums.into_iter().collect())
    }

    /// Per series, over the 5-minute buckets in `[from_ms, to_ms)`: how many there are, how
    /// many have a mean below `threshold`, the mean of the means and the peak.
    pub async fn share_below_5m(
        &self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
        threshold: f64,
    ) -> StoreResult<Vec<ShareRow>> {
        let mut rows = Vec::new();
        for chunk in series.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT series_id, COUNT(*) AS buckets, \
                 SUM(CASE WHEN sum / CAST(count AS DOUBLE PRECISION) < $3 THEN 1 ELSE 0 END) \
                 AS below, AVG(sum / CAST(count AS DOUBLE PRECISION)) AS mean, MAX(max) AS peak \
                 FROM rollups_5m WHERE series_id IN ({}) AND bucket_ms >= $1 AND bucket_ms < $2 \
                 GROUP BY series_id ORDER BY series_id",
                bind_params(chunk.len(), 4)
            );
            rows.extend(read!(self, |p| {
                let mut query = sqlx::query_as::<_, ShareRow>(&sql)
                    .bind(from_ms)
                    .bind(to_ms)
                    .bind(threshold);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(p).await
            })?);
        }
        Ok(rows)
    }

    /// Bytes on disk of each metric tier (table and indexes) and the oldest time it holds,
    /// and the whole database's size.
    pub async fn metric_store_usage(&self) -> StoreResult<StoreUsage> {
        let mut tiers = Vec::with_capacity(3);
        for (resolution, table, column) in [
            (Resolution::Raw, "samples", "ts_ms"),
            (Resolution::FiveMinutes, "rollups_5m", "bucket_ms"),
            (Resolution::OneHour, "rollups_1h", "bucket_ms"),
        ] {
            tiers.push(TierUsage {
                resolution,
                table,
                bytes: self.table_bytes(table).await?,
                oldest_ms: self.oldest(table, column).await?,
            });
        }
        let database_bytes = match self.backend() {
            Backend::Postgres => {
                let (bytes,): (i64,) = read!(self, |p| sqlx::query_as(
                    "SELECT pg_database_size(current_database())"
                )
                .fetch_one(p)
                .await)?;
                bytes
            }
            Backend::Sqlite => {
                let (bytes,): (i64,) = read!(self, |p| {
                    sqlx::query_as(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
                )
                .fetch_one(p)
                .await
                })?;
                bytes
            }
        };
        Ok(StoreUsage {
            tiers,
            database_bytes: u64::try_from(database_bytes).unwrap_or(0),
        })
    }

    /// A table with its indexes: PostgreSQL's relation sizes, SQLite's pages (`dbstat`).
    async fn table_bytes(&self, table: &str) -> StoreResult<u64> {
        let (bytes,): (Option<i64>,) = match self.backend() {
            Backend::Postgres => read!(self, |p| sqlx::query_as(
                "SELECT CAST(pg_total_relation_size(to_regclass($1)) AS BIGINT)"
            )
            .bind(table)
            .fetch_one(p)
            .await)?,
            Backend::Sqlite => read!(self, |p| sqlx::query_as(
                "SELECT CAST(SUM(pgsize) AS BIGINT) FROM dbstat WHERE name IN \
                 (SELECT name FROM sqlite_master WHERE tbl_name = $1)"
            )
            .bind(table)
            .fetch_one(p)
            .await)?,
        };
        Ok(bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0))
    }

    /// The oldest time a tier holds: one index lookup per series rather than a scan.
    async fn oldest(&self, table: &str, column: &str) -> StoreResult<Option<i64>> {
        let sql = format!(
            "SELECT MIN((SELECT MIN({column}) FROM {table} t WHERE t.series_id = s.id)) \
             FROM series s"
        );
        let (oldest,): (Option<i64>,) = read!(self, |p| sqlx::query_as(&sql).fetch_one(p).await)?;
        Ok(oldest)
    }

    /// On PostgreSQL, the least-squares moments of the bucket means against time in days,
    /// from its `regr_*` aggregates; `None` on SQLite, which has none (the caller computes
    /// them from the buckets).
    pub async fn bucket_moments(
        &self,
        series_id: i64,
        resolution: Resolution,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> StoreResult<Option<Moments>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let buckets = Self::buckets_sql(resolution);
        let sql = format!(
            "SELECT CAST(regr_count(avg, x) AS DOUBLE PRECISION), regr_avgx(avg, x), \
             regr_avgy(avg, x), regr_sxx(avg, x), regr_syy(avg, x), regr_sxy(avg, x) \
             FROM (SELECT bucket / 86400000.0 AS x, avg FROM ({buckets}) b) t"
        );
        type Row = (
            f64,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        );
        let row: Row = read!(self, |p| sqlx::query_as(&sql)
            .bind(series_id)
            .bind(step_ms)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_one(p)
            .await)?;
        let (n, Some(mx), Some(my), Some(sxx), Some(syy), Some(sxy)) = row else {
            return Ok(Some(Moments::default()));
        };
        Ok(Some(Moments {
            n,
            sx: mx * n,
            sy: my * n,
            sxx,
            syy,
            sxy,
        }))
    }

    /// On PostgreSQL, the 95th percentile of the raw samples in each `step_ms` bucket
    /// (`percentile_cont`); `None` on SQLite (the caller computes it from [`Self::raw_values`]).
    pub async fn bucket_p95(
        &self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> StoreResult<Option<Vec<(i64, f64)>>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let rows: Vec<(i64, f64)> = read!(self, |p| sqlx::query_as(
            "SELECT (ts_ms / $2) * $2 AS bucket, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FROM samples \
             WHERE series_id = $1 AND ts_ms >= $3 AND ts_ms < $4 GROUP BY 1 ORDER BY 1"
        )
        .bind(series_id)
        .bind(step_ms)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(p)
        .await)?;
        Ok(Some(rows))
    }

    /// The raw samples of a series in `[from_ms, to_ms)`, oldest first.
    pub async fn raw_values(
        &self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<(i64, f64)>> {
        Ok(read!(self, |p| sqlx::query_as(
            "SELECT ts_ms, value FROM samples WHERE series_id = $1 AND ts_ms >= $2 \
             AND ts_ms < $3 ORDER BY ts_ms"
        )
        .bind(series_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(p)
        .await)?)
    }
}
