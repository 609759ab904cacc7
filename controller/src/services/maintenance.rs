//! Maintenance mode for one device, as a job. Enabling silences the device's alerts and sets
//! its `maintenance` flag (who, why, until when) in one transaction, then stops what the
//! caller listed, in that order — an application's members in its dependency order — adding
//! each to the flag's record as it goes, so a crash leaves an exact list to come back from.
//! Disabling starts what was stopped in the reverse order, diagnoses the device, and clears
//! the flag; the silence ends only when the device is healthy, otherwise it stays until the
//! maintenance's own end (never longer) and the answer says what is wrong. Maintenance ends
//! on its own at its end: the evaluator runs the disable path as a job.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::Scope as Access;
use crate::ctx::Ctx;
use crate::domain::Health;
use crate::error::{Error, Result};
use crate::services::alerts::silences::{Schedule, Scope};
use crate::services::applications::plan::AppAction;
use crate::services::applications::{ManageRequest, RunOutcome};
use crate::services::containers::ContainerActionRequest;
use crate::services::diagnostics::DeviceDiagnosis;
use crate::services::jobs::JobClaims;
use crate::services::{parse_duration, rfc3339, Services};
use crate::store::{JobLock, MaintenanceRow, SilenceRow};
use infrastructor_hostops::container_ops::ContainerAction;

/// The longest maintenance: a forgotten one must end.
const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);
/// What the job holds on the device, so two maintenance jobs cannot interleave.
const LOCK: &str = "maintenance";

/// Something maintenance stops and starts again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Service {
    /// A declared or discovered application (all its members, in dependency order).
    Application(String),
    /// One container on the device.
    Container(String),
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Application(name) => write!(f, "application {name}"),
            Self::Container(name) => write!(f, "container {name}"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// `true` to enter maintenance, `false` to leave it.
    pub enable: bool,
    /// Why (required to enable): shown with the flag and in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long (required to enable), e.g. `2h`; at most 7d. Maintenance ends on its own
    /// then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// What to stop when entering, in order (started again in reverse when leaving), e.g.
    /// `[{"kind": "application", "name": "shop"}, {"kind": "container", "name": "cron"}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<Service>,
}

/// A device's maintenance, as views show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct MaintenanceView {
    pub reason: String,
    pub by: String,
    pub since: String,
    pub until: String,
    /// What the maintenance stopped, in order.
    pub stopped: Vec<Service>,
    /// The silence holding the device's alerts.
    pub silence_id: String,
}

/// What a maintenance job did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct MaintenanceOutcome {
    pub device_id: String,
    pub enabled: bool,
    /// The maintenance now (absent once it ended).
    pub maintenance: Option<MaintenanceView>,
    /// Stopped (entering) or started again (leaving), in order.
    pub services: Vec<Service>,
    /// Leaving: the diagnosis it ran.
    pub diagnosis: Option<DeviceDiagnosis>,
    /// Leaving: whether the device's alerts are sent again (only when it is healthy;
    /// otherwise its silence runs to `silenced_until`).
    pub alerting: bool,
    pub silenced_until: Option<String>,
    /// Why it did not finish cleanly, with what is wrong.
    pub problem: Option<String>,
}

pub fn view(row: &MaintenanceRow) -> MaintenanceView {
    MaintenanceView {
        reason: row.reason.clone(),
        by: row.started_by.clone(),
        since: rfc3339(row.started_at_ms),
        until: rfc3339(row.until_ms),
        stopped: serde_json::from_str(&row.stopped).unwrap_or_default(),
        silence_id: row.silence_id.clone(),
    }
}

impl Services {
    pub async fn maintenance_claims(&self, device: &str) -> Result<JobClaims> {
        let id = self.require_device(device).await?.id;
        Ok(JobClaims {
            devices: vec![id.clone()],
            locks: vec![JobLock {
                device_id: id,
                resource: LOCK.into(),
            }],
        })
    }

    /// What `request` would do, checked, touching nothing.
    pub async fn maintenance_plan(
        &self,
        device: &str,
        request: &MaintenanceRequest,
    ) -> Result<Value> {
        let row = self.require_device(device).await?;
        let current = self.store.maintenance(&row.id).await?;
        if request.enable {
            let (reason, duration) = enable_terms(request)?;
            if let Some(current) = &current {
                return Err(already(current));
            }
            for service in &request.stop {
                self.check_service(&row.id, service).await?;
            }
            let mut steps =
                vec!["silence the device's alerts and set its maintenance flag".to_string()];
            steps.extend(request.stop.iter().map(|s| format!("stop {s}")));
            let until = rfc3339(self.now_ms() + duration.as_millis() as i64);
            Ok(
                json!({"device": row.name, "enable": true, "reason": reason, "until": until,
                "steps": steps}),
            )
        } else {
            let current = current.ok_or_else(|| not_in(&row.name))?;
            let stopped: Vec<Service> = serde_json::from_str(&current.stopped).unwrap_or_default();
            let mut steps: Vec<String> =
                stopped.iter().rev().map(|s| format!("start {s}")).collect();
            steps.push("diagnose the device".into());
            steps.push("clear the flag; end the silence if the device is healthy".into());
            Ok(json!({"device": row.name, "enable": false, "steps": steps}))
        }
    }

    /// Enters or leaves maintenance (run as a job; each stop and start is a step).
    pub async fn set_maintenance_mode(
        &self,
        ctx: &Ctx,
        device: &str,
        request: &MaintenanceRequest,
    ) -> Result<MaintenanceOutcome> {
        ctx.principal.require(Access::Operate)?;
        let row = self.require_device(device).await?;
        if request.enable {
            self.enter_maintenance(ctx, &row.id, &row.name, request)
                .await
        } else {
            self.leave_maintenance(ctx, &row.id, &row.name).await
        }
    }

    async fn enter_maintenance(
        &self,
        ctx: &Ctx,
        device_id: &str,
        name: &str,
        request: &MaintenanceRequest,
    ) -> Result<MaintenanceOutcome> {
        let (reason, duration) = enable_terms(request)?;
        let resumed = ctx.job.as_ref().is_some_and(|j| j.is_resumed());
        let entry = match self.store.maintenance(device_id).await? {
            // A crash mid-way: go on from what the flag records.
            Some(current) if resumed => current,
            Some(current) => return Err(already(&current)),
            None => {
                for service in &request.stop {
                    self.check_service(device_id, service).await?;
                }
                let work = self.start_maintenance(ctx, device_id, reason, duration);
                ctx.step("silence and flag", work).await?
            }
        };
        let mut stopped: Vec<Service> = serde_json::from_str(&entry.stopped).unwrap_or_default();
        let total = request.stop.len();
        for (done, service) in request.stop.iter().enumerate() {
            ctx.progress(done, total).await;
            if stopped.contains(service) {
                continue;
            }
            let work = self.stop_or_start(ctx, device_id, service, false);
            if let Err(error) = ctx.step(&format!("stop {service}"), work).await {
                let problem = format!(
                    "{service} did not stop: {}; {name} stays in maintenance (leave it to start \
                     again what was stopped)",
                    error.public_message()
                );
                return self.entered(device_id, stopped, Some(problem)).await;
            }
            stopped.push(service.clone());
            let record = serde_json::to_string(&stopped).unwrap_or_default();
            self.store
                .record_maintenance_stopped(device_id, &record)
                .await?;
        }
        ctx.progress(total, total).await;
        self.entered(device_id, stopped, None).await
    }

    async fn entered(
        &self,
        device_id: &str,
        stopped: Vec<Service>,
        problem: Option<String>,
    ) -> Result<MaintenanceOutcome> {
        self.cache
            .invalidate(&crate::cache::key::of_device(device_id))
            .await;
        let current = self.store.maintenance(device_id).await?;
        Ok(MaintenanceOutcome {
            device_id: device_id.to_string(),
            enabled: true,
            maintenance: current.as_ref().map(view),
            services: stopped,
            diagnosis: None,
            alerting: false,
            silenced_until: current.map(|c| rfc3339(c.until_ms)),
            problem,
        })
    }

    /// The silence and the flag, in one transaction.
    async fn start_maintenance(
        &self,
        ctx: &Ctx,
        device_id: &str,
        reason: &str,
        duration: Duration,
    ) -> Result<MaintenanceRow> {
        let now = self.now_ms();
        let until = now + duration.as_millis() as i64;
        let silence = SilenceRow {
            id: uuid::Uuid::new_v4().to_string(),
            scope: serde_json::to_string(&Scope::Devices {
                devices: vec![device_id.to_string()],
            })
            .unwrap_or_default(),
            schedule: serde_json::to_string(&Schedule::Once { starts_at_ms: now })
                .unwrap_or_default(),
            reason: format!("maintenance: {reason}"),
            created_by: ctx.principal.name.clone(),
            created_at_ms: now,
            expires_at_ms: until,
            ended_at_ms: None,
            ended_by: None,
        };
        let entry = MaintenanceRow {
            device_id: device_id.to_string(),
            reason: reason.to_string(),
            started_by: ctx.principal.name.clone(),
            started_at_ms: now,
            until_ms: until,
            stopped: "[]".into(),
            silence_id: silence.id.clone(),
        };
        self.store.start_maintenance(&entry, &silence).await?;
        self.cache
            .invalidate(&crate::cache::key::of_device(device_id))
            .await;
        Ok(entry)
    }

    async fn leave_maintenance(
        &self,
        ctx: &Ctx,
        device_id: &str,
        name: &str,
    ) -> Result<MaintenanceOutcome> {
        let Some(entry) = self.store.maintenance(device_id).await? else {
            if ctx.job.as_ref().is_some_and(|j| j.is_resumed()) {
                // A crash after the flag was cleared: the work is done.
                return Ok(left(device_id, Vec::new(), None, true, None, None));
            }
            return Err(not_in(name));
        };
        let stopped: Vec<Service> = serde_json::from_str(&entry.stopped).unwrap_or_default();
        let mut started = Vec::new();
        let mut problems = Vec::new();
        let total = stopped.len() + 1;
        for (done, service) in stopped.iter().rev().enumerate() {
            ctx.progress(done, total).await;
            let work = self.stop_or_start(ctx, device_id, service, true);
            match ctx.step(&format!("start {service}"), work).await {
                Ok(()) => started.push(service.clone()),
                Err(error) => problems.push(format!(
                    "{service} did not start: {}",
                    error.public_message()
                )),
            }
        }
        let diagnosis = ctx
            .step("diagnose", self.diagnose_device(ctx, device_id))
            .await?;
        ctx.progress(total, total).await;
        let healthy = problems.is_empty()
            && !matches!(diagnosis.status, Health::Critical | Health::Unreachable);
        if !healthy {
            problems.push(format!(
                "the device is {}: {}",
                serde_json::to_value(diagnosis.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                diagnosis.summary
            ));
        }
        let silence = entry.silence_id.clone();
        let until = entry.until_ms;
        let work = async {
            if healthy {
                self.store
                    .end_silence(&silence, &ctx.principal.name, self.now_ms())
                    .await?;
            }
            self.store.end_maintenance(device_id).await?;
            Ok(())
        };
        ctx.step("clear the flag", work).await?;
        self.cache
            .invalidate(&crate::cache::key::of_device(device_id))
            .await;
        let problem = (!problems.is_empty()).then(|| {
            format!(
                "{}; its alerts stay silenced until {}, then whatever still fires is sent",
                problems.join("; "),
                rfc3339(until)
            )
        });
        let silenced_until = (!healthy).then(|| rfc3339(until));
        Ok(left(
            device_id,
            started,
            Some(diagnosis),
            healthy,
            silenced_until,
            problem,
        ))
    }

    /// Stops (`start: false`) or starts one service, idempotently.
    async fn stop_or_start(
        &self,
        ctx: &Ctx,
        device_id: &str,
        service: &Service,
        start: bool,
    ) -> Result<()> {
        match service {
            Service::Application(app) => {
                let request = ManageRequest {
                    action: if start {
                        AppAction::Start
                    } else {
                        AppAction::Stop
                    },
                    dry_run: false,
                    timeout_seconds: None,
                    settle_delay_ms: None,
                    grace_seconds: None,
                    restore_on_failure: false,
                };
                let run = self.manage_application(ctx, app, &request).await?;
                match (run.outcome, run.failed) {
                    (RunOutcome::Failed, Some(failed)) => Err(Error::Unavailable(format!(
                        "{} failed: {}",
                        failed.member, failed.reason
                    ))),
                    (RunOutcome::Failed, None) => Err(Error::Unavailable("the run failed".into())),
                    _ => Ok(()),
                }
            }
            Service::Container(container) => {
                let request = ContainerActionRequest {
                    action: if start {
                        ContainerAction::Start
                    } else {
                        ContainerAction::Stop
                    },
                    grace_seconds: None,
                    signal: None,
                };
                self.container_action(ctx, device_id, container, &request)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// A listed service exists: the application is known, the container name is valid.
    async fn check_service(&self, device_id: &str, service: &Service) -> Result<()> {
        match service {
            Service::Application(app) => self.application_claims(app).await.map(|_| ()),
            Service::Container(container) => {
                infrastructor_hostops::names::ContainerName::new(container)
                    .map(|_| ())
                    .map_err(|e| Error::invalid(format!("{e} (in `stop`, device {device_id})")))
            }
        }
    }

    /// Ends every maintenance whose time is up, through the disable job (once: its lock
    /// refuses a second while one runs).
    pub(crate) async fn expire_maintenance(&self, now: i64) -> Result<()> {
        for entry in self.store.all_maintenance().await? {
            if entry.until_ms > now {
                break;
            }
            let ctx = Ctx::system("maintenance");
            let claims = self.maintenance_claims(&entry.device_id).await?;
            let mut arguments = Map::new();
            arguments.insert("device".into(), Value::String(entry.device_id.clone()));
            arguments.insert("enable".into(), Value::Bool(false));
            match self
                .submit_job(&ctx, "system", "set_maintenance_mode", &arguments, claims)
                .await
            {
                Ok(job) => {
                    tracing::info!(device_id = %entry.device_id, job_id = %job.id,
                        "maintenance time is up; ending it");
                    crate::jobs::runner::spawn(self.clone(), job.id);
                }
                // A disable job already holds the device.
                Err(Error::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn left(
    device_id: &str,
    started: Vec<Service>,
    diagnosis: Option<DeviceDiagnosis>,
    alerting: bool,
    silenced_until: Option<String>,
    problem: Option<String>,
) -> MaintenanceOutcome {
    MaintenanceOutcome {
        device_id: device_id.to_string(),
        enabled: false,
        maintenance: None,
        services: started,
        diagnosis,
        alerting,
        silenced_until,
        problem,
    }
}

fn enable_terms(request: &MaintenanceRequest) -> Result<(&str, Duration)> {
    let reason = request.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Error::invalid(
            "entering maintenance needs a `reason` (at most 500 characters)",
        ));
    }
    let Some(duration) = request.duration.as_deref() else {
        return Err(Error::invalid(
            "entering maintenance needs a `duration` (e.g. 2h, at most 7d): it ends on its own",
        ));
    };
    let duration = parse_duration("duration", Some(duration), MAX_DURATION, MAX_DURATION)?;
    if request.stop.len() > 50 {
        return Err(Error::invalid("`stop` lists at most 50 services"));
    }
    Ok((reason, duration))
}

fn already(current: &MaintenanceRow) -> Error {
    Error::Conflict(format!(
        "the device is already in maintenance until {} ({}); leave it first",
        rfc3339(current.until_ms),
        current.reason
    ))
}

fn not_in(name: &str) -> Error {
    Error::Conflict(format!("{name} is not in maintenance"))
}
