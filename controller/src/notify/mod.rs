//! Notifications: what each channel receives (`payload`: the signed generic webhook, ntfy,
//! Gotify, Slack- and Discord-compatible webhooks, and email), which channels a notification
//! goes to (`routing`: by severity and label matchers, in order), the configured channels and
//! one send through each (`channels`), and the outbox's delivery with retries, backoff, rate
//! limits and dead letters (`deliver`).

pub mod channels;
pub mod deliver;
pub mod payload;
pub mod routing;
