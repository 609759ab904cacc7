//! What each channel receives for one notification, built once here: a generic webhook's
//! JSON (signed with HMAC-SHA256 over the timestamp and the body, so a receiver can check
//! who sent it and refuse a replay), ntfy's headers and text, Gotify's message, Slack- and
//! Discord-compatible webhook bodies, and an email's subject and text. Alert text that came
//! from hosts is already cleaned; here it is only placed, never interpreted.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

/// The header carrying the signature, `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-infrastructor-signature";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Firing,
    Resolved,
    Flapping,
    Settled,
}

/// One notification about one alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    pub alert: String,
    pub device: String,
    pub severity: Severity,
    pub event: Event,
    /// One line, for people.
    pub summary: String,
    /// When the problem began (firing) or ended (resolved), Unix milliseconds.
    pub since_ms: i64,
}

impl Notification {
    /// `[CRITICAL] nas: zfs.pool:tank firing` and the like.
    pub fn title(&self) -> String {
        let severity = match self.severity {
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        };
        let event = match self.event {
            Event::Firing => "firing",
            Event::Resolved => "resolved",
            Event::Flapping => "flapping",
            Event::Settled => "settled",
        };
        format!("[{severity}] {}: {} {event}", self.device, self.alert)
    }
}

/// The generic webhook's body.
pub fn webhook_body(notification: &Notification) -> Value {
    json!({
        "alert": notification.alert,
        "device": notification.device,
        "severity": notification.severity,
        "event": notification.event,
        "summary": notification.summary,
        "since_ms": notification.since_ms,
        "title": notification.title(),
    })
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." followed by the body>`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("t={unix_seconds},v1={digest}")
}

/// ntfy: the text as the body, the rest as headers (`Title`, `Priority` 1–5, `Tags`).
pub fn ntfy(notification: &Notification) -> (Vec<(&'static str, String)>, String) {
    let (priority, tag) = match (notification.event, notification.severity) {
        (Event::Resolved | Event::Settled, _) => ("3", "white_check_mark"),
        (_, Severity::Critical) => ("5", "rotating_light"),
        (_, Severity::Warning) => ("4", "warning"),
    };
    let headers = vec![
        ("Title", notification.title()),
        ("Priority", priority.to_string()),
        ("Tags", tag.to_string()),
    ];
    (headers, notification.summary.clone())
}

/// Gotify's `POST /message` body (priority 0–10).
pub fn gotify(notification: &Notification) -> Value {
    let priority = match (notification.event, notification.severity) {
        (Event::Resolved | Event::Settled, _) => 2,
        (_, Severity::Critical) => 8,
        (_, Severity::Warning) => 5,
    };
    json!({"title": notification.title(), "message": notification.summary,
        "priority": priority})
}

/// A Slack-compatible incoming webhook's body.
pub fn slack(notification: &Notification) -> Value {
    json!({"text": format!("*{}*\n{}", notification.title(), notification.summary)})
}

/// A Discord webhook's body; mentions are switched off, so host text cannot ping anyone.
pub fn discord(notification: &Notification) -> Value {
    json!({"content": format!("**{}**\n{}", notification.title(), notification.summary),
        "allowed_mentions": {"parse": []}})
}

/// An email's subject and plain-text body.
pub fn email(notification: &Notification) -> (String, String) {
    let body = format!(
        "{}\n\nalert: {}\ndevice: {}\nsince: {} (Unix ms)\n",
        notification.summary, notification.alert, notification.device, notification.since_ms
    );
    (notification.title(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Notification {
        Notification {
            alert: "zfs.pool:tank".into(),
            device: "nas".into(),
            severity: Severity::Critical,
            event: Event::Firing,
            summary: "tank is DEGRADED: 1 faulted vdev".into(),
            since_ms: 1_796_310_000_000,
        }
    }

    #[test]
    fn hmac_sha256_matches_the_rfc_4231_vector() {
        // RFC 4231, test case 2, through the same MAC (the timestamp framing aside).
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let signed = signature(b"secret", 1_796_310_000, b"{}");
        assert!(signed.starts_with("t=1796310000,v1="), "{signed}");
        assert_ne!(
            signed,
            signature(b"secret", 1_796_310_001, b"{}"),
            "the time is signed"
        );
        assert_ne!(signed, signature(b"other", 1_796_310_000, b"{}"));
    }

    #[test]
    fn each_channel_gets_its_own_shape() {
        let n = pool();
        assert_eq!(n.title(), "[CRITICAL] nas: zfs.pool:tank firing");
        let body = webhook_body(&n);
        assert_eq!(body["event"], "firing");
        assert_eq!(body["severity"], "critical");
        let (headers, text) = ntfy(&n);
        assert!(headers.contains(&("Priority", "5".to_string())));
        assert_eq!(text, n.summary);
        assert_eq!(gotify(&n)["priority"], 8);
        assert!(slack(&n)["text"]
            .as_str()
            .unwrap()
            .starts_with("*[CRITICAL]"));
        assert_eq!(discord(&n)["allowed_mentions"]["parse"], json!([]));
        let resolved = Notification {
            event: Event::Resolved,
            ..n
        };
        assert_eq!(gotify(&resolved)["priority"], 2);
        let (subject, body) = email(&resolved);
        assert!(subject.ends_with("resolved"));
        assert!(body.contains("device: nas"));
    }
}
