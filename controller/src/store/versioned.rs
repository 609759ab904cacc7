//! Declarations kept with every version: applications, backup targets and DR plans. A
//! declaration adds a version and a removal adds one without a spec, so what was declared, by
//! whom and when is never lost. The version a caller read can be named to refuse a
//! declaration made over someone else's; two declarations racing for one version cannot both
//! land (the key).

use super::{on_pool, read, Store, StoreError, StoreResult};

/// The kinds of versioned declaration, each its own table (a closed set: the table name
/// never comes from a caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    Application,
    BackupTarget,
    DrPlan,
}

impl Declared {
    fn table(self) -> &'static str {
        match self {
            Self::Application => "applications",
            Self::BackupTarget => "backup_targets",
            Self::DrPlan => "dr_plans",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::BackupTarget => "backup target",
            Self::DrPlan => "DR plan",
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow, PartialEq)]
pub struct DeclaredRow {
    pub name: String,
    pub version: i64,
    /// The declaration (JSON, or a plan's YAML); `None`: removed in this version.
    pub spec: Option<String>,
    pub declared_by: String,
    pub declared_at_ms: i64,
}

/// Applications were the first versioned declarations.
pub type ApplicationRow = DeclaredRow;

const COLUMNS: &str = "name, version, spec, declared_by, declared_at_ms";

impl Store {
    /// Adds the next version of `name` (`spec: None` removes it) and returns it. With
    /// `expected`, refuses (`Conflict`) unless the latest version is that one (0: none yet).
    pub async fn declare(
        &self,
        kind: Declared,
        name: &str,
        spec: Option<&str>,
        expected: Option<i64>,
        declared_by: &str,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let latest = self
            .declared(kind, name, None)
            .await?
            .map_or(0, |a| a.version);
        if let Some(expected) = expected.filter(|e| *e != latest) {
            return Err(StoreError::Conflict(format!(
                "{} {name:?} is at version {latest}, not {expected}",
                kind.noun()
            )));
        }
        let version = latest + 1;
        let sql = format!(
            "INSERT INTO {} (name, version, spec, declared_by, declared_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            kind.table()
        );
        on_pool!(&self.writer, |p| sqlx::query(&sql)
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
    pub async fn declared(
        &self,
        kind: Declared,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<DeclaredRow>> {
        let table = kind.table();
        let sql = match version {
            Some(_) => format!("SELECT {COLUMNS} FROM {table} WHERE name = $1 AND version = $2"),
            None => format!(
                "SELECT {COLUMNS} FROM {table} WHERE name = $1 ORDER BY version DESC LIMIT 1"
            ),
        };
        Ok(read!(self, |p| {
            let query = sqlx::query_as::<_, DeclaredRow>(&sql).bind(name);
            match version {
                Some(v) => query.bind(v).fetch_optional(p).await,
                None => query.fetch_optional(p).await,
            }
        })?)
    }

    /// Every version of `name`, newest first.
    pub async fn declared_versions(
        &self,
        kind: Declared,
        name: &str,
    ) -> StoreResult<Vec<DeclaredRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE name = $1 ORDER BY version DESC",
            kind.table()
        );
        Ok(read!(self, |p| sqlx::query_as::<_, DeclaredRow>(&sql)
            .bind(name)
            .fetch_all(p)
            .await)?)
    }

    /// The latest version of every declaration that is not removed, by name.
    pub async fn declared_all(&self, kind: Declared) -> StoreResult<Vec<DeclaredRow>> {
        let table = kind.table();
        let sql = format!(
            "SELECT {COLUMNS} FROM {table} a WHERE version = \
             (SELECT MAX(version) FROM {table} b WHERE b.name = a.name) \
             AND spec IS NOT NULL ORDER BY name"
        );
        Ok(read!(self, |p| sqlx::query_as::<_, DeclaredRow>(&sql)
            .fetch_all(p)
            .await)?)
    }

    pub async fn declare_application(
        &self,
        name: &str,
        spec: Option<&str>,
        expected: Option<i64>,
        declared_by: &str,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let kind = Declared::Application;
        self.declare(kind, name, spec, expected, declared_by, now_ms)
            .await
    }

    pub async fn application(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<ApplicationRow>> {
        self.declared(Declared::Application, name, version).await
    }

    pub async fn applications(&self) -> StoreResult<Vec<ApplicationRow>> {
        self.declared_all(Declared::Application).await
    }
}
