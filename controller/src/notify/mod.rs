//! Notification channels. So far, what each channel receives (`payload`: the signed generic
//! webhook, ntfy, Gotify, Slack- and Discord-compatible webhooks, and email) and which
//! channels a notification goes to (`routing`: by severity and label matchers, in order).

pub mod payload;
pub mod routing;
