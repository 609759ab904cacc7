//! Finishing what was interrupted, from what the hosts say: a deploy job resumed after a
//! controller crash or a takeover, a host's own rollbacks, changes left waiting past their
//! deadline, and agentless hosts' transactions that a stopped controller left or whose
//! deadline passed.

use super::*;

impl Services {
    /// Finishes a deploy job that a controller crash interrupted, from what the hosts say.
    /// Presumed abort: before the decision to confirm was recorded (`confirming`), every
    /// target is rolled back or aborted; after it, every target is confirmed. A change that
    /// was never recorded had reached no host, so the deploy runs from the start.
    pub async fn resume_deploy(&self, ctx: &Ctx, request: ChangeRequest) -> Result<ChangeView> {
        let Some(id) = ctx.job.as_ref().map(|job| job.id().to_string()) else {
            return self.deploy_change(ctx, request).await;
        };
        let Some((row, _)) = self.store.change(&id).await? else {
            return self.deploy_change(ctx, request).await;
        };
        if row.state.is_settled() || row.state == ChangeState::AwaitingConfirmation {
            return self.change_view(ctx, &id).await;
        }
        let targets = self.targets_of(&id).await?;
        let reconciled = self.reconcile_targets(ctx, &id, &targets, RECONNECT_PATIENCE);
        ctx.step("reconcile", reconciled).await?;
        match row.state {
            ChangeState::Preparing => {
                ctx.step("abort", async {
                    self.abort_all(ctx, &id, &targets, TargetState::Aborted)
                        .await;
                    Ok(())
                })
                .await?;
                let error = "the controller restarted before the commit; nothing was applied";
                self.move_change(&id, ChangeState::Aborted, Some(error))
                    .await?;
                self.change_view(ctx, &id).await
            }
            ChangeState::Committing => {
                let reason = "the controller restarted while committing; rolled back";
                self.undo_deploy(ctx, &id, &targets, reason).await
            }
            _ => {
                ctx.step("confirm", self.confirm_targets(ctx, &id, &targets))
                    .await?;
                self.change_view(ctx, &id).await
            }
        }
    }

    /// Asks every target where the transaction is and records what it says: the host's word
    /// is the truth. A host that never had it is `aborted`; one that cannot be reached keeps
    /// its recorded state (and the step after acts on that). An agent that is not connected
    /// is waited for up to `patience` (after a controller restart, agents reconnect).
    async fn reconcile_targets(
        &self,
        ctx: &Ctx,
        id: &str,
        targets: &[Target],
        patience: Duration,
    ) -> Result<()> {
        let results = join_all(targets.iter().map(|t| async move {
            reachable(t, patience).await;
            self.target_step(ctx, t, id, ChangeStep::Status).await
        }))
        .await;
        for (target, result) in targets.iter().zip(results) {
            let device = target.device_id();
            match result {
                Ok(report) => {
                    ctx.log(&format!("{device}: host says {}", report.state.as_str()))
                        .await;
                    let error = report.reason.as_deref();
                    self.set_target(id, device, report.state.into(), error)
                        .await?;
                }
                Err(error) if error.kind() == crate::error::ErrorKind::NotFound => {
                    ctx.log(&format!("{device}: never reached it")).await;
                    let reason = Some("the transaction never reached this host");
                    self.set_target(id, device, TargetState::Aborted, reason)
                        .await?;
                }
                Err(error) => {
                    let message = error.public_message();
                    ctx.log(&format!("{device}: cannot ask: {message}")).await;
                }
            }
        }
        Ok(())
    }

    /// An agent rolled a transaction back by itself (deadline passed, or recovered after a
    /// restart): record it against the change.
    pub async fn record_change_event(&self, ctx: &Ctx, device_id: &str, event: &TxnEvent) {
        // The agent's words are untrusted: the reason is cleaned and bounded.
        let state = event.state;
        let reason = untrusted::clean(&event.reason, untrusted::MAX_LINE_CHARS, Lines::Single);
        let txn_id = event.txn_id.as_str();
        tracing::warn!(request_id = %ctx.request_id, device_id, txn_id, state = state.as_str(), %reason,
            "agent changed a transaction on its own");
        let update = TargetUpdate {
            state: state.into(),
            error: Some(&reason),
            ..Default::default()
        };
        let recorded = async {
            self.update_target(&event.txn_id, device_id, update).await?;
            self.settle_if_undone(&event.txn_id).await
        };
        if let Err(error) = recorded.await {
            tracing::error!(%error, "cannot record a change event");
        }
    }

    /// A change waiting on its hosts (awaiting confirmation, or a rollback that failed) whose
    /// every target is now undone has rolled back: record it.
    async fn settle_if_undone(&self, id: &str) -> Result<()> {
        let Some((row, targets)) = self.store.change(id).await? else {
            return Ok(());
        };
        let undone = targets.iter().all(|t| t.state.is_undone());
        let reason = match row.state {
            ChangeState::AwaitingConfirmation => "not confirmed by the deadline",
            ChangeState::RollbackFailed => "rolled back by the hosts themselves",
            _ => return Ok(()),
        };
        if undone {
            self.store
                .set_change_state(id, ChangeState::RolledBack, Some(reason), now_ms())
                .await?;
        }
        Ok(())
    }

    /// Changes left awaiting confirmation past their deadline, or whose rollback failed, are
    /// reconciled from their hosts, so an event lost while the controller was down (or a
    /// host that rolled back by itself) cannot leave a state that is not true.
    pub async fn reconcile_waiting_changes(&self) {
        let ctx = Ctx::system("change reconciliation");
        let waiting = [
            ChangeState::AwaitingConfirmation,
            ChangeState::RollbackFailed,
        ];
        let rows = match self.store.changes_in(&waiting, 200).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "cannot list waiting changes");
                return;
            }
        };
        let now = now_ms();
        for row in rows {
            let options: DeployOptions = serde_json::from_str(&row.options).unwrap_or_default();
            let deadline = row.updated_at_ms
                + i64::from(options.confirm_timeout_seconds) * 1000
                + RECONCILE_GRACE_MS;
            if row.state == ChangeState::AwaitingConfirmation && now < deadline {
                continue;
            }
            let reconciled = async {
                let targets = self.targets_of(&row.id).await?;
                self.reconcile_targets(&ctx, &row.id, &targets, Duration::ZERO)
                    .await?;
                self.settle_if_undone(&row.id).await
            };
            if let Err(error) = reconciled.await {
                tracing::warn!(change_id = %row.id, %error, "cannot reconcile change");
            }
        }
    }

    /// Agentless hosts' transactions, on whichever replica started them: finishes what a
    /// stopped controller left mid-step (its rollbacks and commits) and rolls back those
    /// whose confirmation deadline passed. Whatever it rolls back is recorded on its change.
    pub async fn watch_agentless_changes(&self) {
        let ctx = Ctx::system("agentless change deadlines");
        let devices = match self.agentless_changes.devices_with_live_journals().await {
            Ok(devices) => devices,
            Err(error) => {
                tracing::warn!(%error, "cannot list agentless transactions; will retry");
                return;
            }
        };
        for device_id in devices {
            let Some(engine) = self.agentless_engine(&device_id).await else {
                continue;
            };
            let mut finished = Vec::new();
            match engine.recover().await {
                Ok(recovered) => finished.extend(recovered),
                Err(error) => tracing::error!(device_id, %error, "cannot recover changes over SSH"),
            }
            match engine.expire().await {
                Ok(expired) => finished.extend(expired),
                Err(error) => tracing::error!(device_id, %error, "cannot expire changes over SSH"),
            }
            for report in finished {
                let event = TxnEvent {
                    txn_id: report.txn_id,
                    state: report.state,
                    reason: report.reason.unwrap_or_default(),
                };
                self.record_change_event(&ctx, &device_id, &event).await;
            }
        }
    }

    async fn agentless_engine(
        &self,
        device_id: &str,
    ) -> Option<Arc<crate::fleet::ssh_changes::AgentlessEngine>> {
        let row = self.store.find_device(device_id).await.ok()??;
        let target = crate::services::devices::ssh_target(&row).ok()?;
        match self.agentless_changes.engine(&row.id, target) {
            Ok(engine) => Some(engine),
            Err(error) => {
                tracing::error!(device_id, %error, "cannot open the change engine");
                None
            }
        }
    }
}

/// Waits up to `patience` for an agent host's stream to be up (other hosts are reached when
/// needed).
async fn reachable(target: &Target, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while matches!(target.link(), Link::Offline { .. }) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
