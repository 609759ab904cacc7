//! Delivery of the outbox: every due notification is sent through its channel — in order
//! within a channel, channels side by side — and its outcome recorded: sent; held back by the
//! channel's rate limit (not an attempt); retried after a doubling wait; or, once out of
//! attempts or refused for good, a dead letter that the API shows and can send again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::channels::{Channels, NotificationsConfig, SendError};
use super::payload::Notification;
use crate::store::{Delivery, NotificationRow, Store, StoreResult};

/// Notifications one pass takes on.
const BATCH: i64 = 200;

/// The wait before attempt `attempts + 1`: `retry_after`, doubled per failed attempt, capped.
pub fn backoff(config: &NotificationsConfig, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    config
        .retry_after
        .saturating_mul(1 << doublings)
        .min(config.retry_max)
}

/// Sends what is due at `now_ms`; how many notifications were sent.
pub async fn deliver_due(
    store: &Store,
    channels: &Channels,
    config: &NotificationsConfig,
    now_ms: i64,
) -> StoreResult<usize> {
    let due = store.due_notifications(now_ms, BATCH).await?;
    let mut by_channel: BTreeMap<&str, Vec<&NotificationRow>> = BTreeMap::new();
    for row in &due {
        by_channel
            .entry(row.channel.as_str())
            .or_default()
            .push(row);
    }
    let passes = by_channel
        .into_values()
        .map(|rows| deliver_in_order(store, channels, config, rows, now_ms));
    let sent = futures::future::join_all(passes).await;
    sent.into_iter().try_fold(0, |all, one| Ok(all + one?))
}

async fn deliver_in_order(
    store: &Store,
    channels: &Channels,
    config: &NotificationsConfig,
    rows: Vec<&NotificationRow>,
    now_ms: i64,
) -> StoreResult<usize> {
    let mut sent = 0;
    for row in rows {
        let attempts = u32::try_from(row.attempts).unwrap_or(0) + 1;
        let outcome = match serde_json::from_str::<Notification>(&row.body) {
            Err(error) => Err(SendError::Permanent(format!(
                "unreadable notification: {error}"
            ))),
            Ok(notification) => {
                let wait = channels.wait(&row.channel);
                if !wait.is_zero() {
                    // The rest of this channel's queue waits too, in order.
                    let at_ms = now_ms + wait.as_millis() as i64;
                    store
                        .record_delivery(row.id, row.attempts, Delivery::Deferred { at_ms }, now_ms)
                        .await?;
                    break;
                }
                channels.send(&row.channel, &notification, now_ms).await
            }
        };
        let attempts_i32 = i32::try_from(attempts).unwrap_or(i32::MAX);
        match outcome {
            Ok(()) => {
                sent += 1;
                store
                    .record_delivery(row.id, attempts_i32, Delivery::Sent, now_ms)
                    .await?;
            }
            Err(SendError::Transient(error)) if attempts < config.max_attempts => {
                let at_ms = now_ms + backoff(config, attempts).as_millis() as i64;
                tracing::warn!(notification = row.id, channel = %row.channel, attempts, %error,
                    "notification not delivered; will retry");
                let retry = Delivery::Retry {
                    at_ms,
                    error: &error,
                };
                store
                    .record_delivery(row.id, attempts_i32, retry, now_ms)
                    .await?;
                // Later notifications of this channel must not overtake this one.
                break;
            }
            Err(SendError::Transient(error) | SendError::Permanent(error)) => {
                tracing::error!(notification = row.id, channel = %row.channel, attempts, %error,
                    "notification is a dead letter");
                store
                    .record_delivery(
                        row.id,
                        attempts_i32,
                        Delivery::Dead { error: &error },
                        now_ms,
                    )
                    .await?;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_cap() {
        let config = NotificationsConfig {
            retry_after: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
            ..NotificationsConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&config, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
        assert_eq!(backoff(&config, u32::MAX).as_secs(), 300);
    }
}
