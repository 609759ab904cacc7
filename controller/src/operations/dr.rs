//! DR plans: list, show, declare, and `execute_dr_plan` — the plan's steps run in order,
//! each a call of a registry operation through the same pipeline as any other (audited,
//! scoped to the caller, its jobs with their own progress), or `wait_until`. Every step's
//! output is recorded before the next begins; a critical failure halts the run, and a later
//! run with `resume` starts at the step that failed. A dry run is real: every step's own
//! plan (a mutation's preview: diffs, orders, what would be restored), every read run, every
//! reference checked.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::params::{DrPlanPath, JobId};
use super::pipeline::{How, Outcome};
use super::registry::{by_id, by_tool, Registered};
use super::{Arguments, Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::dr::plan::{self, OnFailure, Step, WAIT_UNTIL};
use crate::services::dr::{DrPlanDetail, DrPlanDocument, DrPlanView};
use crate::services::Services;
use crate::store::DrStepRow;

/// How often `wait_until` looks again.
const POLL: Duration = Duration::from_secs(2);

/// The operation a plan's step names (by operation ID or MCP tool name); never a decision on
/// a held request, never a plan run.
pub fn step_entry(name: &str) -> Option<&'static dyn Registered> {
    let entry = by_id(name).or_else(|| by_tool(name).map(|(entry, _)| entry))?;
    let meta = entry.meta();
    (meta.effect != Effect::Decision && meta.id != ExecuteDrPlan::META.id).then_some(entry)
}

fn known(name: &str) -> bool {
    step_entry(name).is_some()
}

pub struct ListDrPlans;

impl Operation for ListDrPlans {
    const META: Meta = Meta {
        id: "list_dr_plans",
        method: Method::Get,
        path: "/dr-plans",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "DR plans, each at its latest revision with its checked steps",
        description: "Every plan that is not removed: its revision, who declared it (a person, \
            or `directory:<file>` for plans loaded from the plan directory), and its steps.",
        success: 200,
        tool: None,
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<DrPlanView>;

    async fn run(services: &Services, ctx: &Ctx, _: Input<Self>) -> Result<Self::Response> {
        services.list_dr_plans(ctx, &known).await
    }
}

pub struct GetDrPlan;

impl Operation for GetDrPlan {
    const META: Meta = Meta {
        id: "get_dr_plan",
        method: Method::Get,
        path: "/dr-plans/{plan}",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "A DR plan: its YAML, checked steps and every revision",
        description: "The latest revision's YAML and steps (operation, critical, timeout, \
            on_failure, the steps whose outputs it uses), and the list of revisions.",
        success: 200,
        tool: None,
    };
    type Path = DrPlanPath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = DrPlanDetail;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .get_dr_plan(ctx, input.path.plan.as_str(), &known)
            .await
    }
}

pub struct DeclareDrPlan;

impl Operation for DeclareDrPlan {
    const META: Meta = Meta {
        id: "declare_dr_plan",
        method: Method::Put,
        path: "/dr-plans/{plan}",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Store a new revision of a DR plan (YAML)",
        description: "The plan is checked first: YAML syntax, known fields, step IDs, \
            operations, timeouts, references to earlier steps' outputs; every mistake is \
            refused with its line and column, and nothing is stored. `expected_revision` \
            refuses a revision made over one the caller has not seen.",
        success: 200,
        tool: None,
    };
    type Path = DrPlanPath;
    type Query = Nothing;
    type Body = DrPlanDocument;
    type Response = DrPlanView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services
            .declare_dr_plan(ctx, input.path.plan.as_str(), &input.body, &known)
            .await
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Run every step's own plan, every read, check every reference; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The revision to run (default: the latest; a resumed run keeps its run's revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revision: Option<i64>,
    /// A halted run's job ID: its succeeded steps are kept (with their outputs) and this run
    /// starts at the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<JobId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Succeeded,
    /// Failed; the run went on (a step that is not critical, `on_failure: continue`).
    Failed,
    /// Succeeded in the run this one resumes: its output is reused.
    Reused,
    /// A dry run's: its plan (or a read's real answer) is the output.
    Planned,
    /// After a halt.
    NotRun,
}

impl StepState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Reused => "reused",
            Self::Planned => "planned",
            Self::NotRun => "not_run",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed, Self::Reused, Self::Planned]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    fn done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Reused)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepOutcome {
    pub id: String,
    pub operation: String,
    pub state: StepState,
    /// The operation's answer (a dry run's: its plan); host text in it is untrusted.
    pub output: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step's own job, for operations that are jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub duration_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Completed,
    /// A critical step failed; `halted_at` names it, and `resume` starts there.
    Halted,
    /// A dry run went through every step.
    Planned,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrRun {
    pub plan: String,
    pub revision: i64,
    pub dry_run: bool,
    pub outcome: RunOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<String>,
    pub steps: Vec<StepOutcome>,
    pub duration_ms: u64,
}

pub struct ExecuteDrPlan;

impl Operation for ExecuteDrPlan {
    const META: Meta = Meta {
        id: "execute_dr_plan",
        method: Method::Post,
        path: "/dr-plans/{plan}/executions",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Run a DR plan (or dry-run it), halting on a critical failure; resume",
        description: "A job. Each step is a call of its operation through the pipeline \
            (audited, under the caller's scope; a step that is a job runs as its own job, \
            followed to its end), with references to earlier steps' outputs resolved first, \
            within the step's timeout. Every step's output is recorded. A critical failure \
            halts the run; `resume` with the halted run's job ID keeps its succeeded steps and \
            starts at the failed one. `dry_run` runs each step's own plan and every read, and \
            checks every reference, changing nothing.",
        success: 200,
        tool: Some(Tool {
            name: "execute_dr_plan",
            title: "Run a disaster-recovery plan",
            description: "Use to recover a service by a stored plan (list them with \
                GET /dr-plans): each step calls an operation (set_maintenance_mode, \
                manage_backups, manage_application, diagnose_device, wait_until, ...) in \
                order; a critical failure halts there. Run it with dry_run=true first: every \
                step's plan (diffs, orders, what would be restored) is returned without \
                changing anything. After fixing what halted a run, call again with \
                resume=<that run's job id> to continue from the failed step. Returns every \
                step's state, output and error. Example: {\"plan\": \"restore-web\", \
                \"dry_run\": true}",
            destructive: true,
            idempotent: false,
            open_world: true,
            defaults: &[],
        }),
    };
    type Path = DrPlanPath;
    type Query = Nothing;
    type Body = ExecuteRequest;
    type Response = DrRun;

    const JOB: bool = true;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        execute(services, ctx, input.path.plan.as_str(), &input.body).await
    }

    async fn claims(
        services: &Services,
        _: &Ctx,
        input: &Input<Self>,
    ) -> Result<crate::services::jobs::JobClaims> {
        // Refused now, not as a failed job: an unknown or invalid plan, a run to resume that
        // is not this plan's.
        services
            .dr_plan(input.path.plan.as_str(), input.body.revision, &known)
            .await?;
        if let Some(resumed) = &input.body.resume {
            resumable(services, input.path.plan.as_str(), resumed.as_str()).await?;
        }
        Ok(Default::default())
    }

    fn failure(run: &DrRun) -> Option<String> {
        let halted = run.halted_at.as_ref()?;
        let failed = run.steps.iter().find(|s| s.id == *halted)?;
        Some(format!(
            "halted at step {}: {}",
            failed.id,
            failed.error.as_deref().unwrap_or("it failed")
        ))
    }
}

/// The steps of the run to resume, which must be this plan's.
async fn resumable(services: &Services, plan: &str, run_id: &str) -> Result<Vec<DrStepRow>> {
    let rows = services.store.dr_steps(run_id).await?;
    match rows.first() {
        None => Err(Error::NotFound(format!(
            "run {run_id} has no recorded steps to resume"
        ))),
        Some(row) if row.plan != plan => Err(Error::invalid(format!(
            "run {run_id} ran plan {:?}, not {plan:?}",
            row.plan
        ))),
        Some(_) => Ok(rows),
    }
}

/// What the run knows as it goes: every step's output by ID, and which are only plans.
#[derive(Default)]
struct Known {
    outputs: BTreeMap<String, Value>,
    planned: HashSet<String>,
}

async fn execute(
    services: &Services,
    ctx: &Ctx,
    name: &str,
    request: &ExecuteRequest,
) -> Result<DrRun> {
    ctx.principal.require(Scope::Operate)?;
    let began = Instant::now();
    let resumed = match &request.resume {
        Some(id) => resumable(services, name, id.as_str()).await?,
        None => Vec::new(),
    };
    let revision = request
        .revision
        .or_else(|| resumed.first().map(|r| r.revision));
    let (view, plan) = services.dr_plan(name, revision, &known).await?;
    let run_id = match &ctx.job {
        Some(job) => job.id().to_string(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    // A run taken over after a crash keeps what it had done.
    let taken = services.store.dr_steps(&run_id).await?;
    let mut run = DrRun {
        plan: view.name.clone(),
        revision: view.revision,
        dry_run: request.dry_run,
        outcome: if request.dry_run {
            RunOutcome::Planned
        } else {
            RunOutcome::Completed
        },
        halted_at: None,
        resumed: request.resume.as_ref().map(|r| r.as_str().to_string()),
        steps: Vec::new(),
        duration_ms: 0,
    };
    let mut known_so_far = Known::default();
    let total = plan.steps.len();
    for (position, step) in plan.steps.iter().enumerate() {
        ctx.progress(position, total).await;
        if run.halted_at.is_some() {
            run.steps.push(not_run(step));
            continue;
        }
        let earlier = done_before(&taken, step)
            .map(|row| (row, false))
            .or_else(|| {
                (!request.dry_run)
                    .then(|| done_before(&resumed, step).map(|row| (row, true)))
                    .flatten()
            });
        let outcome = match earlier {
            Some((row, from_resumed)) => {
                let mut outcome = from_row(row);
                if from_resumed {
                    outcome.state = StepState::Reused;
                    record(services, &run_id, &view, position, step, &outcome).await?;
                }
                outcome
            }
            None => {
                let started = Instant::now();
                let mut outcome = take(services, ctx, step, &known_so_far, request.dry_run).await;
                outcome.duration_ms = started.elapsed().as_millis() as u64;
                record(services, &run_id, &view, position, step, &outcome).await?;
                outcome
            }
        };
        if outcome.state == StepState::Failed && halts(step) {
            run.halted_at = Some(step.id.clone());
            run.outcome = RunOutcome::Halted;
        }
        if outcome.state == StepState::Planned {
            known_so_far.planned.insert(step.id.clone());
        }
        known_so_far
            .outputs
            .insert(step.id.clone(), outcome.output.clone());
        run.steps.push(outcome);
    }
    ctx.progress(total, total).await;
    run.duration_ms = began.elapsed().as_millis() as u64;
    Ok(run)
}

fn halts(step: &Step) -> bool {
    step.critical || step.on_failure == OnFailure::Halt
}

/// The step as a run recorded it, when that run got it done.
fn done_before<'a>(rows: &'a [DrStepRow], step: &Step) -> Option<&'a DrStepRow> {
    rows.iter().find(|row| {
        row.step_id == step.id && StepState::parse(&row.state).is_some_and(StepState::done)
    })
}

fn from_row(row: &DrStepRow) -> StepOutcome {
    StepOutcome {
        id: row.step_id.clone(),
        operation: row.operation.clone(),
        state: StepState::parse(&row.state).unwrap_or(StepState::Failed),
        output: serde_json::from_str(&row.output).unwrap_or(Value::Null),
        error: row.error.clone(),
        job_id: row.job_id.clone(),
        duration_ms: (row.finished_at_ms - row.started_at_ms).max(0) as u64,
    }
}

fn not_run(step: &Step) -> StepOutcome {
    StepOutcome {
        id: step.id.clone(),
        operation: step.operation.clone(),
        state: StepState::NotRun,
        output: Value::Null,
        error: None,
        job_id: None,
        duration_ms: 0,
    }
}

async fn record(
    services: &Services,
    run_id: &str,
    view: &DrPlanView,
    position: usize,
    step: &Step,
    outcome: &StepOutcome,
) -> Result<()> {
    let now = services.now_ms();
    let row = DrStepRow {
        run_id: run_id.to_string(),
        step_id: step.id.clone(),
        plan: view.name.clone(),
        revision: view.revision,
        position: position as i64,
        operation: step.operation.clone(),
        state: outcome.state.as_str().to_string(),
        output: outcome.output.to_string(),
        error: outcome.error.clone(),
        job_id: outcome.job_id.clone(),
        started_at_ms: now - outcome.duration_ms as i64,
        finished_at_ms: now,
    };
    services.store.record_dr_step(&row).await?;
    Ok(())
}

/// Takes one step (as a step of the run's job, when it is one).
async fn take(
    services: &Services,
    ctx: &Ctx,
    step: &Step,
    known: &Known,
    dry_run: bool,
) -> StepOutcome {
    let work = async {
        let timeout = Duration::from_millis(step.timeout_ms);
        match tokio::time::timeout(timeout, attempt(services, ctx, step, known, dry_run)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "step {} did not finish within {}",
                step.id,
                humantime::format_duration(timeout)
            ))),
        }
    };
    let result = match &ctx.job {
        Some(job) => {
            job.step(&format!("{} ({})", step.id, step.operation), work)
                .await
        }
        None => work.await,
    };
    let mut outcome = not_run(step);
    match result {
        Ok(taken) => {
            outcome.state = taken.state;
            outcome.output = taken.output;
            outcome.job_id = taken.job_id;
            outcome.error = taken.error;
        }
        Err(error) => {
            outcome.state = StepState::Failed;
            outcome.error = Some(error.public_message());
        }
    }
    outcome
}

struct Taken {
    state: StepState,
    output: Value,
    job_id: Option<String>,
    /// A job that answered, and still failed.
    error: Option<String>,
}

impl Taken {
    fn new(state: StepState, output: Value) -> Self {
        Self {
            state,
            output,
            job_id: None,
            error: None,
        }
    }
}

async fn attempt(
    services: &Services,
    ctx: &Ctx,
    step: &Step,
    known: &Known,
    dry_run: bool,
) -> Result<Taken> {
    let arguments = match plan::resolve(&step.arguments, &known.outputs) {
        Ok(arguments) => arguments,
        // A dry run cannot know what a planned step will answer: the reference was checked
        // against the plan when it was read, and resolves when the plan runs.
        Err(_) if dry_run && step.uses.iter().any(|u| known.planned.contains(u)) => {
            let note = json!({"deferred": format!(
                "uses the output of {}, known when the plan runs",
                step.uses.join(", ")
            )});
            return Ok(Taken::new(StepState::Planned, note));
        }
        Err(message) => {
            return Err(Error::invalid(format!("step {}: {message}", step.id)));
        }
    };
    if step.operation == WAIT_UNTIL {
        return wait_until(services, ctx, step, arguments, dry_run).await;
    }
    let entry = step_entry(&step.operation)
        .ok_or_else(|| Error::invalid(format!("no operation {:?}", step.operation)))?;
    let reads = matches!(entry.meta().effect, Effect::Read | Effect::Probe);
    if dry_run && !reads {
        return match entry.plan(services, ctx, arguments).await {
            Ok(plan) => Ok(Taken::new(StepState::Planned, plan)),
            // Refused because of the state now, which an earlier step would change (leaving
            // a maintenance an earlier step enters): the plan is known only when it runs.
            Err(error @ (Error::Conflict(_) | Error::NotFound(_))) if !known.planned.is_empty() => {
                let note = json!({"deferred": "its plan depends on what earlier steps change",
                                  "now": error.public_message()});
                Ok(Taken::new(StepState::Planned, note))
            }
            Err(error) => Err(error),
        };
    }
    let state = if dry_run {
        StepState::Planned
    } else {
        StepState::Succeeded
    };
    let step_ctx = Ctx::new(
        ctx.principal.clone(),
        format!("{}-{}", ctx.request_id, step.id),
    );
    match entry
        .call(services, &step_ctx, How::PlanStep, arguments)
        .await?
    {
        Outcome::Done(output) => Ok(Taken::new(state, output)),
        Outcome::Accepted(job) => follow(services, ctx, step, &job.id, state).await,
        Outcome::Held(approval) => Err(Error::Conflict(format!(
            "step {} is held for approval ({})",
            step.id, approval.id
        ))),
        Outcome::Planned(plan) => Ok(Taken::new(StepState::Planned, plan)),
    }
}

/// Waits for a step's own job to end: its result is the output; a failed job fails the step
/// (with its result, when it answered one).
async fn follow(
    services: &Services,
    ctx: &Ctx,
    step: &Step,
    job_id: &str,
    state: StepState,
) -> Result<Taken> {
    let timeout = Duration::from_millis(step.timeout_ms);
    let row = services.wait_for_job(job_id, timeout).await?;
    if !row.state.is_final() {
        return Err(Error::Unavailable(format!(
            "step {}'s job {job_id} did not end within its timeout",
            step.id
        )));
    }
    let output = services.job_outcome(ctx, &row);
    let failed = row.state != crate::domain::JobState::Succeeded;
    let mut taken = match output {
        Ok(output) => Taken::new(state, output),
        Err(error) => Taken::new(StepState::Failed, json!({"error": error.public_message()})),
    };
    taken.job_id = Some(job_id.to_string());
    if failed {
        taken.state = StepState::Failed;
        taken.error = Some(row.error.unwrap_or_else(|| format!("job {job_id} failed")));
    }
    Ok(taken)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitFor {
    device: String,
    /// A check name (or a prefix ending in `*`) that must pass; absent: no check warns.
    #[serde(default)]
    check: Option<String>,
}

/// `wait_until`: runs the device's checks until the condition holds, within the step's
/// timeout (a dry run looks once and says whether it holds now).
async fn wait_until(
    services: &Services,
    ctx: &Ctx,
    step: &Step,
    arguments: Arguments,
    dry_run: bool,
) -> Result<Taken> {
    let wait: WaitFor = serde_json::from_value(Value::Object(arguments))
        .map_err(|e| Error::invalid(format!("step {} (wait_until): {e}", step.id)))?;
    let run_checks = step_entry("run_checks")
        .ok_or_else(|| Error::Internal("run_checks is not registered".into()))?;
    let began = Instant::now();
    loop {
        let mut arguments = Arguments::new();
        arguments.insert("device".into(), wait.device.clone().into());
        let step_ctx = Ctx::new(ctx.principal.clone(), ctx.request_id.clone());
        let round = match run_checks
            .call(services, &step_ctx, How::PlanStep, arguments)
            .await
        {
            Ok(Outcome::Done(round)) => Some(round),
            _ => None,
        };
        let holds = round
            .as_ref()
            .and_then(|r| holding(r, wait.check.as_deref()));
        let waited = began.elapsed().as_millis() as u64;
        let answer = |holds: bool| {
            json!({"device": wait.device, "check": wait.check, "holds": holds,
                   "checks": holds_now(round.as_ref(), wait.check.as_deref()), "waited_ms": waited})
        };
        if dry_run {
            return Ok(Taken::new(StepState::Planned, answer(holds.is_some())));
        }
        if holds.is_some() {
            return Ok(Taken::new(StepState::Succeeded, answer(true)));
        }
        // The step's timeout (around this call) ends the wait.
        tokio::time::sleep(POLL).await;
    }
}

/// `Some` when the round meets the condition.
fn holding(round: &Value, check: Option<&str>) -> Option<()> {
    let checks = round.as_array()?;
    let passes = |c: &&Value| c["status"] == "ok";
    let met = match check {
        Some(pattern) => {
            let chosen: Vec<&Value> = checks
                .iter()
                .filter(|c| {
                    let name = c["check"].as_str().unwrap_or_default();
                    match pattern.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => name == pattern,
                    }
                })
                .collect();
            !chosen.is_empty() && chosen.iter().all(passes)
        }
        None => checks
            .iter()
            .all(|c| !matches!(c["status"].as_str(), Some("warning" | "critical"))),
    };
    met.then_some(())
}

/// The checks the condition looks at, as they are now (name and status).
fn holds_now(round: Option<&Value>, check: Option<&str>) -> Value {
    let Some(checks) = round.and_then(Value::as_array) else {
        return Value::Null;
    };
    let listed: Vec<Value> = checks
        .iter()
        .filter(|c| {
            check.is_none_or(|p| {
                let name = c["check"].as_str().unwrap_or_default();
                p.strip_suffix('*')
                    .map_or(name == p, |prefix| name.starts_with(prefix))
            })
        })
        .map(|c| json!({"check": c["check"], "status": c["status"]}))
        .collect();
    Value::Array(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_holds_when_its_checks_pass() {
        let round = json!([
            {"check": "docker.containers", "status": "ok"},
            {"check": "zfs.pool:tank", "status": "warning"},
            {"check": "zfs.pool:backup", "status": "ok"},
        ]);
        assert!(holding(&round, Some("docker.containers")).is_some());
        assert!(
            holding(&round, Some("zfs.pool:*")).is_none(),
            "one pool warns"
        );
        assert!(
            holding(&round, Some("systemd.units")).is_none(),
            "no such check yet"
        );
        assert!(holding(&round, None).is_none(), "a warning anywhere");
        let calm = json!([{"check": "a", "status": "ok"}, {"check": "b", "status": "unknown"}]);
        assert!(holding(&calm, None).is_some());
        assert_eq!(
            holds_now(Some(&round), Some("zfs.pool:*"))
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn decisions_and_plans_are_not_steps() {
        assert!(step_entry("manage_backups").is_some());
        assert!(
            step_entry("deploy_configuration_change").is_some(),
            "by tool name"
        );
        assert!(step_entry("approve_request").is_none());
        assert!(step_entry("execute_dr_plan").is_none());
        assert!(step_entry("no_such_thing").is_none());
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_shipped_example_plan_checks_out() {
        let yaml = include_str!("../../../deploy/dr-plan.example.yaml");
        let plan = crate::services::dr::plan::parse(yaml, super::known).unwrap();
        assert_eq!(plan.name, "restore-web");
        assert_eq!(plan.steps.len(), 7);
        assert_eq!(plan.steps[5].uses, ["restore"]);
    }
}
