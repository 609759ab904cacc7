//! Declared applications, versioned: every declaration is a new version, a removal a version
//! without a spec. The version a caller read can be named to refuse a declaration made over
//! someone else's; two declarations racing for one version cannot both land (the key).

use super::{on_pool, read, Store, StoreError, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct ApplicationRow {
    pub name: String,
    pub version: i64,
    /// JSON; `None`: removed in this version.
    pub spec: Option<String>,
    pub declared_by: String,
    pub declared_at_ms: i64,
}

const COLUMNS: &str = "name, version, spec, declared_by, declared_at_ms";

impl Store {
    /// Adds the next version of `name` (`spec: None` removes it) and returns it. With
    /// `expected`, refuses (`Conflict`) unless the latest version is that one (0: none yet).
    pub async fn declare_application(
        &self,
        name: &str,
        spec: Option<&str>,
        expected: Option<i64>,
        declared_by: &str,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let latest = self.application(name, None).await?.map_or(0, |a| a.version);
        if let Some(expected) = expected.filter(|e| *e != latest) {
            return Err(StoreError::Conflict(format!(
                "application {name:?} is at version {latest}, not {expected}"
            )));
        }
        let version = latest + 1;
        on_pool!(&self.writer, |p| sqlx::query(
            "INSERT INTO applications (name, version, spec, declared_by, declared_at_ms) \
             VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(name)
        .bind(version)
        .bind(spec)
        .bind(declared_by)
        .bind(now_ms)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(version)
    }

    /// `name` at `version`, or its latest version (removed ones included).
    pub async fn application(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<ApplicationRow>> {
        let sql = match version {
            Some(_) => {
                format!("SELECT {COLUMNS} FROM applications WHERE name = $1 AND version = $2")
            }
            None => format!(
                "SELECT {COLUMNS} FROM applications WHERE name = $1 \
                 ORDER BY version DESC LIMIT 1"
            ),
        };
        Ok(read!(self, |p| {
            let query = sqlx::query_as::<_, ApplicationRow>(&sql).bind(name);
            match version {
                Some(v) => query.bind(v).fetch_optional(p).await,
                None => query.fetch_optional(p).await,
            }
        })?)
    }

    /// The latest version of every application that is not removed, by name.
    pub async fn applications(&self) -> StoreResult<Vec<ApplicationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM applications a WHERE version = \
             (SELECT MAX(version) FROM applications b WHERE b.name = a.name) \
             AND spec IS NOT NULL ORDER BY name"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, ApplicationRow>(&sql)
            .fetch_all(p)
            .await)?)
    }
}
