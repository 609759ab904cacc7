//! Notification channels. So far, what each channel receives (`payload`): the signed generic
//! webhook, ntfy, Gotify, Slack- and Discord-compatible webhooks, and email.

pub mod payload;
