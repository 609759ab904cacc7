//! Alerts: rules over check verdicts, metrics, forecasts, links and jobs (`rules`), what holds
//! now (`observe`), each alert a persisted state machine (`state`) evaluated with silences,
//! maintenance windows and inhibition (`silences`, `evaluate`), and what it says queued in
//! the notification outbox in the same transaction. One controller evaluates and delivers,
//! the one holding the `alerts` lease; the others wait their turn.
//!
//! Here: the evaluator's loop, and the views and calls of alerts, rules, silences, channels
//! and notifications.

pub mod evaluate;
pub mod observe;
pub mod rules;
pub mod silences;
pub mod state;

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::evaluate::{Alert, Announced, Inputs, Suppression, Told};
use self::observe::ForecastMemory;
use self::rules::Rule;
use self::silences::{Live, Recurrence, Schedule, Scope, EXPIRING_SOON, MAX_LIFETIME};
use self::state::{Record, State};
use crate::auth::Scope as Access;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::notify::channels::ChannelView;
use crate::notify::payload::{Event, Item, Notification, Severity};
use crate::notify::routing::{channels_for, Matcher};
use crate::services::{rfc3339, Services};
use crate::store::{AlertRow, NewNotification, NotificationRow, SilenceRow};

/// The lease whose holder evaluates alerts and delivers notifications.
const LEASE: &str = "alerts";

/// The evaluator: while this controller holds the lease, evaluate every rule and deliver
/// what is due, every `alerts.interval`.
pub async fn run(services: Services, stop: CancellationToken) {
    let interval = services.config.alerts.interval;
    // Longer than a pass can take, so a live holder never loses it between passes.
    let lease = services.config.jobs.lease.max(interval * 3);
    let mut forecasts = ForecastMemory::default();
    loop {
        let now = services.now_ms();
        let until = now + lease.as_millis() as i64;
        match services
            .store
            .hold_lease(LEASE, &services.jobs.replica, until, now)
            .await
        {
            Ok(true) => services.alerting_pass(&mut forecasts, now).await,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot take the alerts lease; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => break,
        }
    }
}

impl Services {
    async fn alerting_pass(&self, forecasts: &mut ForecastMemory, now: i64) {
        if let Err(error) = self.evaluate_alerts(forecasts, now).await {
            tracing::warn!(%error, "alert evaluation failed; will retry");
        }
        if let Err(error) = self.expire_maintenance(now).await {
            tracing::warn!(%error, "cannot end expired maintenance; will retry");
        }
        if let Err(error) = self.start_due_backups(now).await {
            tracing::warn!(%error, "cannot start scheduled backup work; will retry");
        }
        let (store, channels) = (&self.store, &self.channels);
        let config = &self.config.notifications;
        if let Err(error) = crate::notify::deliver::deliver_due(store, channels, config, now).await
        {
            tracing::warn!(%error, "notification delivery failed; will retry");
        }
    }

    /// One evaluation of every rule, saved with the notifications it calls for.
    pub async fn evaluate_alerts(&self, forecasts: &mut ForecastMemory, now: i64) -> Result<()> {
        let ctx = Ctx::system("alerts");
        let rules: Vec<_> = self.config.alerts.enabled().collect();
        let observed = self.observe(&ctx, &rules, forecasts, now).await?;
        let stored = self.store.alerts().await?;
        let stored: Vec<Alert> = stored.into_iter().filter_map(from_row).collect();
        let silences = self.live_silences(now).await?;
        let inputs = Inputs {
            now_ms: now,
            config: &self.config.alerts,
            device_names: &observed.device_names,
            silences: &silences,
        };
        let outcome = evaluate::evaluate(stored, observed.holding, &inputs);
        let outbox = self.outbox(&outcome.told, &observed.device_names);
        let changed: Vec<AlertRow> = outcome
            .alerts
            .iter()
            .filter(|a| outcome.changed.contains(&a.key))
            .map(|a| to_row(a, now))
            .collect();
        if changed.is_empty() && outcome.forgotten.is_empty() && outbox.is_empty() {
            return Ok(());
        }
        self.store
            .save_evaluation(&changed, &outcome.forgotten, &outbox, now)
            .await?;
        if !outcome.told.is_empty() {
            tracing::info!(
                items = outcome.told.len(),
                notifications = outbox.len(),
                "alerts changed"
            );
        }
        Ok(())
    }

    /// What was told, routed to channels and grouped per channel and device.
    fn outbox(&self, told: &[Told], names: &HashMap<String, String>) -> Vec<NewNotification> {
        let all: Vec<&str> = self.channels.names().collect();
        let mut groups: BTreeMap<(String, String), Vec<Item>> = BTreeMap::new();
        for one in told {
            let routed = if self.channels.routes.is_empty() {
                all.clone()
            } else {
                channels_for(&self.channels.routes, one.item.severity, &one.labels)
            };
            for channel in routed {
                groups
                    .entry((channel.to_string(), one.device_id.clone()))
                    .or_default()
                    .push(one.item.clone());
            }
        }
        groups
            .into_iter()
            .map(|((channel, device_id), items)| {
                let device = names
                    .get(&device_id)
                    .cloned()
                    .unwrap_or_else(|| device_id.clone());
                let body =
                    serde_json::to_string(&Notification { device, items }).unwrap_or_default();
                NewNotification {
                    channel,
                    device_id,
                    body,
                }
            })
            .collect()
    }

    /// Silences that hold now or may later, ready to ask.
    async fn live_silences(&self, now: i64) -> Result<Vec<Live>> {
        let rows = self.store.silences(now).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let scope = serde_json::from_str(&row.scope).ok()?;
                let schedule = serde_json::from_str(&row.schedule).ok()?;
                Some(Live::new(row.id, scope, schedule, row.expires_at_ms))
            })
            .collect())
    }

    /// Alerts of every device or of one; `all` adds the inactive ones kept for flap
    /// detection.
    pub async fn list_alerts(
        &self,
        ctx: &Ctx,
        device: Option<&str>,
        all: bool,
    ) -> Result<Vec<AlertView>> {
        ctx.principal.require(Access::Read)?;
        let device = self.device_filter(device).await?;
        let names: HashMap<String, String> = self
            .store
            .list_devices()
            .await?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        let alerts = self.store.alerts().await?;
        Ok(alerts
            .into_iter()
            .filter_map(from_row)
            .filter(|a| device.as_ref().is_none_or(|d| *d == a.device_id))
            .map(|a| view(a, &names))
            .filter(|v| all || v.state != AlertState::Inactive)
            .collect())
    }

    pub fn list_alert_rules(&self, ctx: &Ctx) -> Result<Vec<NamedRule>> {
        ctx.principal.require(Access::Read)?;
        Ok(self
            .config
            .alerts
            .rules
            .iter()
            .map(|(name, rule)| NamedRule {
                name: name.clone(),
                rule: rule.clone(),
            })
            .collect())
    }

    pub async fn create_silence(&self, ctx: &Ctx, request: &NewSilence) -> Result<SilenceView> {
        ctx.principal.require(Access::Operate)?;
        let now = self.now_ms();
        let row = self.silence_row(ctx, request, now).await?;
        self.store.insert_silence(&row).await?;
        self.silence_view(row, now).await
    }

    /// A silence from a request, checked: scope, reason, times.
    async fn silence_row(&self, ctx: &Ctx, request: &NewSilence, now: i64) -> Result<SilenceRow> {
        let scope = match (&request.devices, &request.matchers) {
            (Some(devices), None) if !devices.is_empty() && devices.len() <= 500 => {
                let mut ids = Vec::new();
                for device in devices {
                    ids.push(self.require_device(device).await?.id);
                }
                Scope::Devices { devices: ids }
            }
            (None, Some(matchers)) if !matchers.is_empty() && matchers.len() <= 20 => {
                for m in matchers {
                    let label_ok = !m.label.is_empty()
                        && m.label.len() <= 64
                        && m.label.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                    if !label_ok || m.value.is_empty() || m.value.len() > 128 {
                        return Err(Error::invalid(
                            "a matcher is {label (a-z, _), value (1-128 chars), not?}",
                        ));
                    }
                }
                Scope::Matchers {
                    matchers: matchers.clone(),
                }
            }
            _ => {
                return Err(Error::invalid(
                    "give `devices` (1-500 IDs or names) or `matchers` (1-20), not both",
                ))
            }
        };
        let reason = request.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::invalid(
                "`reason` is required (at most 500 characters)",
            ));
        }
        let expires_at_ms = self.expiry(&request.expires, now)?;
        let schedule = match &request.recurrence {
            Some(recurrence) => {
                recurrence.compile().map_err(Error::invalid)?;
                if request.starts.is_some() {
                    return Err(Error::invalid("a recurring window has `at`, not `starts`"));
                }
                Schedule::Recurring(recurrence.clone())
            }
            None => Schedule::Once {
                starts_at_ms: match &request.starts {
                    Some(starts) => timestamp("starts", starts)?,
                    None => now,
                },
            },
        };
        if let Schedule::Once { starts_at_ms } = schedule {
            if starts_at_ms >= expires_at_ms {
                return Err(Error::invalid("`starts` must be before `expires`"));
            }
        }
        Ok(SilenceRow {
            id: uuid::Uuid::new_v4().to_string(),
            scope: json(&scope),
            schedule: json(&schedule),
            reason: reason.to_string(),
            created_by: ctx.principal.name.clone(),
            created_at_ms: now,
            expires_at_ms,
            ended_at_ms: None,
            ended_by: None,
        })
    }

    /// `expires`: a duration from now (`2h`) or an RFC 3339 time, at most 90 days away.
    fn expiry(&self, expires: &str, now: i64) -> Result<i64> {
        let at = match humantime::parse_duration(expires) {
            Ok(duration) => now.saturating_add(duration.as_millis() as i64),
            Err(_) => timestamp("expires", expires)?,
        };
        if at <= now {
            return Err(Error::invalid("`expires` must be in the future"));
        }
        if at - now > MAX_LIFETIME.as_millis() as i64 {
            return Err(Error::invalid(
                "`expires` is at most 90 days away: a silence nobody renews must end",
            ));
        }
        Ok(at)
    }

    pub async fn list_silences(&self, ctx: &Ctx) -> Result<Vec<SilenceView>> {
        ctx.principal.require(Access::Read)?;
        let now = self.now_ms();
        let mut views = Vec::new();
        for row in self.store.silences(now).await? {
            views.push(self.silence_view(row, now).await?);
        }
        Ok(views)
    }

    pub async fn end_silence(&self, ctx: &Ctx, id: &str) -> Result<SilenceView> {
        ctx.principal.require(Access::Operate)?;
        let now = self.now_ms();
        let missing = || Error::NotFound(format!("silence {id:?} not found"));
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(missing());
        }
        let row = self.store.silence(id).await?.ok_or_else(missing)?;
        if row.ended_at_ms.is_some() || row.expires_at_ms <= now {
            return Err(Error::Conflict(format!("silence {id} has already ended")));
        }
        let maintained = self.store.all_maintenance().await?;
        if let Some(m) = maintained.iter().find(|m| m.silence_id == id) {
            return Err(Error::Conflict(format!(
                "silence {id} belongs to device {}'s maintenance; end the maintenance instead",
                m.device_id
            )));
        }
        self.store.end_silence(id, &ctx.principal.name, now).await?;
        let row = self.store.silence(id).await?.ok_or_else(missing)?;
        self.silence_view(row, now).await
    }

    async fn silence_view(&self, row: SilenceRow, now: i64) -> Result<SilenceView> {
        let scope: Scope = serde_json::from_str(&row.scope)
            .map_err(|e| Error::Internal(format!("stored silence scope: {e}")))?;
        let schedule: Schedule = serde_json::from_str(&row.schedule)
            .map_err(|e| Error::Internal(format!("stored silence schedule: {e}")))?;
        let live = Live::new(
            row.id.clone(),
            scope.clone(),
            schedule.clone(),
            row.expires_at_ms,
        );
        let ended = row.ended_at_ms.is_some();
        let remaining = row.expires_at_ms - now;
        Ok(SilenceView {
            active: !ended && live.holds(now),
            next_start: if ended {
                None
            } else {
                live.next_start(now).map(rfc3339)
            },
            expires_in_seconds: remaining.max(0) / 1000,
            expiring_soon: !ended && remaining > 0 && remaining <= EXPIRING_SOON.as_millis() as i64,
            id: row.id,
            scope,
            schedule,
            reason: row.reason,
            created_by: row.created_by,
            created_at: rfc3339(row.created_at_ms),
            expires_at: rfc3339(row.expires_at_ms),
            ended_at: row.ended_at_ms.map(rfc3339),
            ended_by: row.ended_by,
        })
    }

    pub fn list_channels(&self, ctx: &Ctx) -> Result<Vec<ChannelView>> {
        ctx.principal.require(Access::Read)?;
        Ok(self.channels.views())
    }

    /// Sends a test notification through one channel now (outside the queue and its rate
    /// limit), and says how it went.
    pub async fn test_channel(&self, ctx: &Ctx, channel: &str) -> Result<ChannelTest> {
        ctx.principal.require(Access::Operate)?;
        if !self.channels.contains(channel) {
            return Err(Error::NotFound(format!(
                "no notification channel named {channel:?}"
            )));
        }
        let now = self.now_ms();
        let notification = Notification {
            device: observe::CONTROLLER.to_string(),
            items: vec![Item {
                alert: "test".into(),
                severity: Severity::Warning,
                event: Event::Test,
                summary: format!("A test notification, sent by {}.", ctx.principal.name),
                since_ms: now,
            }],
        };
        let started = std::time::Instant::now();
        let outcome = self.channels.send(channel, &notification, now).await;
        Ok(ChannelTest {
            channel: channel.to_string(),
            delivered: outcome.is_ok(),
            error: outcome.err().map(|e| e.to_string()),
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    pub async fn list_notifications(
        &self,
        ctx: &Ctx,
        query: &NotificationQuery,
    ) -> Result<Vec<NotificationView>> {
        ctx.principal.require(Access::Read)?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit is 1..=1000"));
        }
        let state = query.state.map(DeliveryState::as_str);
        let rows = self.store.notifications(state, limit).await?;
        Ok(rows.into_iter().map(notification_view).collect())
    }

    /// Sends a dead letter again (from its first attempt).
    pub async fn retry_notification(&self, ctx: &Ctx, id: i64) -> Result<NotificationView> {
        ctx.principal.require(Access::Operate)?;
        if !self.store.requeue_notification(id, self.now_ms()).await? {
            return Err(Error::NotFound(format!("no dead notification {id}")));
        }
        self.store
            .notification(id)
            .await?
            .map(notification_view)
            .ok_or_else(|| Error::NotFound(format!("no notification {id}")))
    }
}

/// JSON text of a stored value (these types always serialize).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A unit enum's word (`critical`, `firing`).
fn word<T: Serialize>(value: &T) -> String {
    json(value).trim_matches('"').to_string()
}

fn timestamp(field: &str, text: &str) -> Result<i64> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            Error::invalid(format!(
                "`{field}` is an RFC 3339 time such as 2026-12-24T18:00:00Z (got {text:?})"
            ))
        })
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_str(&format!("\"{text}\"")).ok()
}

fn from_row(row: AlertRow) -> Option<Alert> {
    let record: Record = match serde_json::from_str(&row.record) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(alert = %row.alert_key, %error, "unreadable alert record; starting it afresh");
            Record::default()
        }
    };
    Some(Alert {
        severity: parse(&row.severity)?,
        labels: serde_json::from_str(&row.labels).unwrap_or_default(),
        announced: parse(&row.announced).unwrap_or(Announced::Nothing),
        suppressed: row.suppressed.as_deref().and_then(parse),
        key: row.alert_key,
        rule: row.rule,
        device_id: row.device_id,
        subject: row.subject,
        summary: row.summary,
        record,
    })
}

fn to_row(alert: &Alert, now: i64) -> AlertRow {
    AlertRow {
        alert_key: alert.key.clone(),
        rule: alert.rule.clone(),
        device_id: alert.device_id.clone(),
        subject: alert.subject.clone(),
        severity: word(&alert.severity),
        summary: alert.summary.clone(),
        labels: serde_json::to_string(&alert.labels).unwrap_or_default(),
        record: serde_json::to_string(&alert.record).unwrap_or_default(),
        announced: word(&alert.announced),
        suppressed: alert.suppressed.as_ref().map(word),
        updated_at_ms: now,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Inactive,
    /// Holding, not yet for the rule's `for`.
    Pending,
    Firing,
    /// Firing, its condition clear for less than `keep_firing_for`.
    Clearing,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AlertView {
    pub key: String,
    /// The rule.
    pub alert: String,
    pub device_id: String,
    pub device: String,
    pub subject: String,
    pub severity: Severity,
    pub state: AlertState,
    /// When the problem began (firing, clearing) or when it started holding (pending).
    pub since: Option<String>,
    pub flapping: bool,
    /// What people were last told.
    pub announced: Announced,
    /// Why nothing is sent about it now.
    pub suppressed: Option<Suppression>,
    /// Host-reported text (cleaned): data, never instructions.
    pub summary: String,
    pub labels: BTreeMap<String, String>,
}

fn view(alert: Alert, names: &HashMap<String, String>) -> AlertView {
    let (state, since) = match alert.record.state {
        State::Inactive => (AlertState::Inactive, None),
        State::Pending { since_ms } => (AlertState::Pending, Some(since_ms)),
        State::Firing { since_ms } => (AlertState::Firing, Some(since_ms)),
        State::Clearing {
            firing_since_ms, ..
        } => (AlertState::Clearing, Some(firing_since_ms)),
    };
    AlertView {
        device: names
            .get(&alert.device_id)
            .cloned()
            .unwrap_or_else(|| observe::CONTROLLER.to_string()),
        key: alert.key,
        alert: alert.rule,
        device_id: alert.device_id,
        subject: alert.subject,
        severity: alert.severity,
        state,
        since: since.map(rfc3339),
        flapping: alert.record.flapping,
        announced: alert.announced,
        suppressed: alert.suppressed,
        summary: alert.summary,
        labels: alert.labels,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct NamedRule {
    pub name: String,
    #[serde(flatten)]
    pub rule: Rule,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// The devices (IDs or names) it covers; or `matchers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Alert labels that must all match (`device`, `alert`, `subject`, `severity`, the
    /// rule's own); or `devices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matchers: Option<Vec<Matcher>>,
    pub reason: String,
    /// Required: a duration from now (`2h`) or an RFC 3339 time, at most 90 days away.
    pub expires: String,
    /// When a one-time silence starts (RFC 3339; default now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<String>,
    /// A recurring window instead: daily or weekly, at a local time in a time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SilenceView {
    pub id: String,
    pub scope: Scope,
    pub schedule: Schedule,
    pub reason: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub expires_in_seconds: i64,
    /// Expires within a day: renew it, or let it end.
    pub expiring_soon: bool,
    /// Holding right now.
    pub active: bool,
    /// The next start of a window that does not hold now.
    pub next_start: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ChannelTest {
    pub channel: String,
    pub delivered: bool,
    /// Why not (the receiver's status, or the connection's failure); never a secret.
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Sent,
    /// Out of attempts, or refused for good: retry with `POST .../retry`.
    Dead,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Dead => "dead",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeliveryState>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct NotificationView {
    pub id: i64,
    pub channel: String,
    pub device_id: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub title: String,
    pub items: Vec<Item>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
}

fn notification_view(row: NotificationRow) -> NotificationView {
    let notification: Option<Notification> = serde_json::from_str(&row.body).ok();
    let state = parse(&row.state).unwrap_or(DeliveryState::Dead);
    NotificationView {
        id: row.id,
        channel: row.channel,
        device_id: row.device_id,
        state,
        attempts: row.attempts,
        title: notification.as_ref().map(|n| n.title()).unwrap_or_default(),
        items: notification.map(|n| n.items).unwrap_or_default(),
        created_at: rfc3339(row.created_at_ms),
        next_attempt_at: (state == DeliveryState::Pending).then(|| rfc3339(row.next_attempt_at_ms)),
        sent_at: row.sent_at_ms.map(rfc3339),
        last_error: row.last_error,
    }
}
