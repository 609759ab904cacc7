//! Disaster-recovery plans as code: YAML documents stored with every revision, declared
//! through the API or loaded from a directory, and checked when they arrive (every mistake
//! with its line and column).
//!
//! - [`plan`]: reading a YAML plan into checked steps and resolving the references between
//!   steps' outputs and arguments.
//!
//! Running a plan calls operations of the registry, so it lives with them
//! (`operations::dr`); this module keeps the plans and the runs' step records.

pub mod plan;

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::{rfc3339, Services};
use crate::store::{Declared, DeclaredRow};

/// Plans are small documents.
const MAX_PLAN_BYTES: usize = 256 * 1024;

/// A plan as sent: its YAML, and the revision the caller last read.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrPlanDocument {
    /// The plan's YAML (`name`, `description`, `steps`).
    pub yaml: String,
    /// Refuse unless the plan is at this revision (0: new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<i64>,
}

/// A step as checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepView {
    pub id: String,
    pub operation: String,
    pub critical: bool,
    pub timeout_seconds: u64,
    /// `halt` or `continue`.
    pub on_failure: String,
    /// The earlier steps whose outputs its arguments use.
    pub uses: Vec<String>,
    pub line: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrPlanView {
    pub name: String,
    pub revision: i64,
    pub description: String,
    pub declared_by: String,
    pub declared_at: String,
    pub steps: Vec<StepView>,
    pub yaml: String,
}

/// A plan's revisions, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrPlanDetail {
    #[serde(flatten)]
    pub plan: DrPlanView,
    pub revisions: Vec<RevisionView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionView {
    pub revision: i64,
    pub declared_by: String,
    pub declared_at: String,
    /// This revision removed the plan.
    pub removed: bool,
}

/// Whether a name is an operation a plan may call.
pub type Known<'a> = &'a (dyn Fn(&str) -> bool + Sync);

/// A plan refused: every mistake, each with its line and column.
fn refused(errors: &[plan::PlanError]) -> Error {
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Error::invalid(format!("the plan is not valid: {}", listed.join("; ")))
}

/// Reads a stored or sent plan.
pub fn read_plan(yaml: &str, known: Known<'_>) -> Result<plan::Plan> {
    if yaml.len() > MAX_PLAN_BYTES {
        return Err(Error::invalid(format!(
            "a plan is at most {MAX_PLAN_BYTES} bytes"
        )));
    }
    plan::parse(yaml, known).map_err(|errors| refused(&errors))
}

impl Services {
    /// Stores a new revision of plan `name`, after checking it.
    pub async fn declare_dr_plan(
        &self,
        ctx: &Ctx,
        name: &str,
        document: &DrPlanDocument,
        known: Known<'_>,
    ) -> Result<DrPlanView> {
        ctx.principal.require(Scope::Operate)?;
        let plan = read_plan(&document.yaml, known)?;
        if plan.name != name {
            return Err(Error::invalid(format!(
                "the plan names itself {:?}, not {name:?}",
                plan.name
            )));
        }
        let (by, now) = (ctx.principal.name.clone(), self.now_ms());
        let expected = document.expected_revision;
        self.store
            .declare(
                Declared::DrPlan,
                name,
                Some(&document.yaml),
                expected,
                &by,
                now,
            )
            .await?;
        self.dr_plan(name, None, known).await.map(|(view, _)| view)
    }

    pub async fn list_dr_plans(&self, ctx: &Ctx, known: Known<'_>) -> Result<Vec<DrPlanView>> {
        ctx.principal.require(Scope::Read)?;
        let rows = self.store.declared_all(Declared::DrPlan).await?;
        rows.iter()
            .map(|row| plan_view(row, known).map(|(v, _)| v))
            .collect()
    }

    pub async fn get_dr_plan(
        &self,
        ctx: &Ctx,
        name: &str,
        known: Known<'_>,
    ) -> Result<DrPlanDetail> {
        ctx.principal.require(Scope::Read)?;
        let (plan, _) = self.dr_plan(name, None, known).await?;
        let revisions = self
            .store
            .declared_versions(Declared::DrPlan, name)
            .await?
            .into_iter()
            .map(|row| RevisionView {
                revision: row.version,
                declared_by: row.declared_by,
                declared_at: rfc3339(row.declared_at_ms),
                removed: row.spec.is_none(),
            })
            .collect();
        Ok(DrPlanDetail { plan, revisions })
    }

    /// A plan at `revision` (its latest when `None`), checked again as it is read: an
    /// operation it names may have gone since it was stored.
    pub async fn dr_plan(
        &self,
        name: &str,
        revision: Option<i64>,
        known: Known<'_>,
    ) -> Result<(DrPlanView, plan::Plan)> {
        let row = self
            .store
            .declared(Declared::DrPlan, name, revision)
            .await?;
        match row {
            Some(row) if row.spec.is_some() => plan_view(&row, known),
            Some(row) => Err(Error::NotFound(format!(
                "DR plan {name:?} was removed in revision {}",
                row.version
            ))),
            None => Err(Error::NotFound(format!("no DR plan {name:?}"))),
        }
    }

    /// Loads every `*.yaml` / `*.yml` file of `dir` as a plan, storing a new revision of each
    /// whose text changed. A file that does not check out is reported and skipped; the
    /// others still load.
    pub async fn load_dr_plans(&self, dir: &Path, known: Known<'_>) -> Result<usize> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::invalid(format!("DR plan directory {}: {e}", dir.display())))?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut loaded = 0;
        for file in files {
            match self.load_dr_plan(&file, known).await {
                Ok(true) => loaded += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(file = %file.display(), %error, "DR plan not loaded"),
            }
        }
        Ok(loaded)
    }

    async fn load_dr_plan(&self, file: &Path, known: Known<'_>) -> Result<bool> {
        let yaml = std::fs::read_to_string(file)
            .map_err(|e| Error::invalid(format!("reading {}: {e}", file.display())))?;
        let plan = read_plan(&yaml, known)?;
        let latest = self
            .store
            .declared(Declared::DrPlan, &plan.name, None)
            .await?;
        if latest.as_ref().and_then(|r| r.spec.as_deref()) == Some(yaml.as_str()) {
            return Ok(false);
        }
        let by = format!("directory:{}", file.display());
        let expected = Some(latest.map_or(0, |r| r.version));
        self.store
            .declare(
                Declared::DrPlan,
                &plan.name,
                Some(&yaml),
                expected,
                &by,
                self.now_ms(),
            )
            .await?;
        tracing::info!(plan = %plan.name, file = %file.display(), "DR plan loaded");
        Ok(true)
    }
}

fn plan_view(row: &DeclaredRow, known: Known<'_>) -> Result<(DrPlanView, plan::Plan)> {
    let yaml = row.spec.clone().unwrap_or_default();
    let plan = read_plan(&yaml, known)?;
    let view = DrPlanView {
        name: row.name.clone(),
        revision: row.version,
        description: plan.description.clone(),
        declared_by: row.declared_by.clone(),
        declared_at: rfc3339(row.declared_at_ms),
        steps: plan
            .steps
            .iter()
            .map(|s| StepView {
                id: s.id.clone(),
                operation: s.operation.clone(),
                critical: s.critical,
                timeout_seconds: s.timeout_ms / 1000,
                on_failure: match s.on_failure {
                    plan::OnFailure::Halt => "halt".into(),
                    plan::OnFailure::Continue => "continue".into(),
                },
                uses: s.uses.clone(),
                line: s.line,
            })
            .collect(),
        yaml,
    };
    Ok((view, plan))
}
