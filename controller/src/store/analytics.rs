//! Reads for the analyses: series by name across devices, hourly history of many series in
//! one pass over the 1-hour rollup, and the aggregates PostgreSQL computes itself (the
//! regression moments of a bucket series, bucket percentiles) where SQLite has none.

use super::{on_pool, read, Backend, Resolution, Store, StoreResult};
use crate::services::analytics::stats::Moments;

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct NamedSeries {
    pub id: i64,
    pub device_id: String,
    pub name: String,
    pub labels: String,
}

/// One hour of one series from the 1-hour rollup.
#[derive(Clone, Copy, Debug, sqlx::FromRow, PartialEq)]
pub struct HourRow {
    pub series_id: i64,
    pub bucket_ms: i64,
    pub avg: f64,
    pub max: f64,
}

/// Series ids per query: well under both backends' bound-parameter limits.
const IDS_PER_QUERY: usize = 500;

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

    /// Hourly mean and peak of each series in `[from_ms, to_ms)`, ordered by series and time.
    pub async fn hourly_history(
        &self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<HourRow>> {
        let mut rows = Vec::new();
        for chunk in series.chunks(IDS_PER_QUERY) {
            let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT series_id, bucket_ms, sum / CAST(count AS DOUBLE PRECISION) AS avg, max \
                 FROM rollups_1h WHERE series_id IN ({}) AND bucket_ms >= $1 AND bucket_ms < $2 \
                 ORDER BY series_id, bucket_ms",
                ids.join(", ")
            );
            rows.extend(read!(self, |p| {
                let mut query = sqlx::query_as::<_, HourRow>(&sql).bind(from_ms).bind(to_ms);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(p).await
            })?);
        }
        Ok(rows)
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
