//! A deploy as it runs: prepare everywhere (or abort all), commit all at once or in
//! batches, confirm once every target is healthy — or roll back what was committed — with
//! each phase a step of its job and a cancel request honoured between steps.

use super::*;

impl Services {
    /// Prepares on every target; any failure aborts all. Then commits (all at once, or
    /// `max_parallel` at a time) and confirms once every target is healthy; a failed target
    /// rolls back every committed one. The result says how it ended.
    ///
    /// As a job, each phase is a step, recorded before it is taken; a cancel request is
    /// honoured between steps (before the commit it aborts, after it rolls back what was
    /// committed) until the decision to confirm is recorded.
    pub async fn deploy_change(&self, ctx: &Ctx, request: ChangeRequest) -> Result<ChangeView> {
        ctx.principal.require(Scope::Operate)?;
        request.options.validate()?;
        let (id, targets) = self.begin_change(ctx, &request, "deploy").await?;
        let total = targets.len();
        let prepared = ctx
            .step(
                "prepare",
                self.prepare_all(ctx, &id, &targets, &request.change),
            )
            .await?;
        if !prepared || ctx.cancel_requested() {
            let error = if prepared {
                cancelled("before anything was committed; nothing was applied")
            } else {
                self.failed_targets_summary(&id).await?
            };
            ctx.step("abort", async {
                self.abort_all(ctx, &id, &targets, TargetState::Aborted)
                    .await;
                Ok(())
            })
            .await?;
            self.move_change(&id, ChangeState::Aborted, Some(&error))
                .await?;
            return self.change_view(ctx, &id).await;
        }
        self.move_change(&id, ChangeState::Committing, None).await?;
        let batch = request.options.max_parallel.unwrap_or(total).max(1);
        let batches = total.div_ceil(batch);
        let options = request.options.commit_options();
        let mut failure = None;
        for (index, chunk) in targets.chunks(batch).enumerate() {
            if ctx.cancel_requested() {
                failure = Some(cancelled("while committing; rolled back"));
                break;
            }
            let name = format!("commit {}/{batches}", index + 1);
            failure = ctx
                .step(&name, self.commit_batch(ctx, &id, chunk, options))
                .await?;
            ctx.progress((index * batch + chunk.len()).min(total), total)
                .await;
            if failure.is_some() {
                break;
            }
        }
        if failure.is_none() && ctx.cancel_requested() {
            failure = Some(cancelled("before it was confirmed; rolled back"));
        }
        if let Some(failure) = failure {
            return self.undo_deploy(ctx, &id, &targets, &failure).await;
        }
        if request.options.auto_confirm {
            // The decision record: from here on a restarted controller confirms too.
            self.move_change(&id, ChangeState::Confirming, None).await?;
            ctx.step("confirm", self.confirm_targets(ctx, &id, &targets))
                .await?;
        } else {
            self.move_change(&id, ChangeState::AwaitingConfirmation, None)
                .await?;
        }
        self.change_view(ctx, &id).await
    }

    /// Commits one batch; the first failure, if any (its targets are recorded either way).
    async fn commit_batch(
        &self,
        ctx: &Ctx,
        id: &str,
        chunk: &[Target],
        options: CommitOptions,
    ) -> Result<Option<String>> {
        for target in chunk {
            self.set_target(id, target.device_id(), TargetState::Committing, None)
                .await?;
        }
        let results = join_all(
            chunk
                .iter()
                .map(|t| self.target_commit(ctx, t, id, options)),
        )
        .await;
        let mut failure = None;
        for (target, result) in chunk.iter().zip(results) {
            let device = target.device_id();
            match result {
                Ok(report) if report.state != TxnState::RolledBack => {
                    self.record_commit(id, target, &report, None).await?;
                    ctx.log(&format!("{device}: {}", report.state.as_str()))
                        .await;
                }
                Ok(report) => {
                    let reason = report.reason.clone().unwrap_or_default();
                    self.record_commit(id, target, &report, Some(&reason))
                        .await?;
                    ctx.log(&format!("{device}: rolled back: {reason}")).await;
                    failure = Some(format!("{device}: {reason}"));
                }
                Err(error) => {
                    // Unknown outcome (e.g. the link dropped): treated as applied, so the
                    // rollback covers it.
                    self.record_target(id, device, TargetState::Failed, &error)
                        .await?;
                    let message = error.public_message();
                    ctx.log(&format!("{device}: {message}")).await;
                    failure = Some(format!("{device}: {message}"));
                }
            }
        }
        Ok(failure)
    }

    /// Rolls back every target the change may be applied on and aborts the ones only
    /// prepared; the change ends `rolled_back`, or `rollback_failed` naming each device
    /// that could not be rolled back and why.
    pub(super) async fn undo_deploy(
        &self,
        ctx: &Ctx,
        id: &str,
        targets: &[Target],
        failure: &str,
    ) -> Result<ChangeView> {
        let failed = ctx
            .step("rollback", async {
                let applied = self.applied_targets(id, targets).await?;
                let failed = self
                    .roll_back_targets(ctx, id, &applied, "the deploy did not complete")
                    .await;
                self.abort_all(ctx, id, targets, TargetState::Aborted).await;
                Ok(failed)
            })
            .await?;
        let (_, rows) = self.require_change(id).await?;
        let never_applied = rows.iter().all(|t| t.state == TargetState::Aborted);
        if never_applied {
            // No host had applied it: nothing was rolled back, the change never happened.
            self.move_change(id, ChangeState::Aborted, Some(failure))
                .await?;
        } else if failed.is_empty() {
            self.move_change(id, ChangeState::RolledBack, Some(failure))
                .await?;
        } else {
            let error = format!("{failure}; rollback failed on {}", failed.join("; "));
            self.move_change(id, ChangeState::RollbackFailed, Some(&error))
                .await?;
        }
        self.change_view(ctx, id).await
    }

    /// The targets whose recorded state says the change may be applied there.
    async fn applied_targets(&self, id: &str, targets: &[Target]) -> Result<Vec<Target>> {
        let (_, rows) = self.require_change(id).await?;
        Ok(targets
            .iter()
            .filter(|t| {
                rows.iter()
                    .any(|r| r.device_id == t.device_id() && r.state.may_be_applied())
            })
            .cloned()
            .collect())
    }
}

/// Why a cancelled deploy ended as it did.
fn cancelled(when: &str) -> String {
    format!("cancelled by request {when}")
}
