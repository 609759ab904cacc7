//! What each channel receives for one notification, built once here: a generic webhook's
//! JSON (signed with HMAC-SHA256 over the timestamp and the body, so a receiver can check
//! who sent it and refuse a replay), ntfy's headers and text, Gotify's message, Slack- and
//! Discord-compatible webhook bodies, and an email's subject and text. Alert text that came
//! from hosts is already cleaned; here it is only placed, never interpreted.

use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

/// The header carrying the signature, `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-infrastructor-signature";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    fn upper(self) -> &'static str {
        match self {
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Firing,
    Resolved,
    Flapping,
    Settled,
    /// A channel's test message (`POST /notifications/channels/{c}/test`).
    Test,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Flapping => "flapping",
            Self::Settled => "settled",
            Self::Test => "test",
        }
    }

    /// Whether it says something is wrong (as opposed to fixed); a test looks like trouble,
    /// so it tests the path real trouble takes.
    fn is_trouble(self) -> bool {
        matches!(self, Self::Firing | Self::Flapping | Self::Test)
    }
}

/// What one notification says about one alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    pub alert: String,
    pub severity: Severity,
    pub event: Event,
    /// One line, for people.
    pub summary: String,
    /// When the problem began (firing) or ended (resolved), Unix milliseconds.
    pub since_ms: i64,
}

/// One notification: what one evaluation has to say about one device's alerts, grouped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub device: String,
    pub items: Vec<Item>,
}

impl Notification {
    /// The most severe of what is wrong (or of everything, when all is fixed).
    pub fn severity(&self) -> Severity {
        let trouble = self.items.iter().filter(|i| i.event.is_trouble());
        trouble
            .map(|i| i.severity)
            .max()
            .or_else(|| self.items.iter().map(|i| i.severity).max())
            .unwrap_or(Severity::Warning)
    }

    fn is_trouble(&self) -> bool {
        self.items.iter().any(|i| i.event.is_trouble())
    }

    /// `[CRITICAL] nas: zfs.pool:tank firing`, or `[CRITICAL] nas: 3 alerts (2 firing,
    /// 1 resolved)` for a group.
    pub fn title(&self) -> String {
        let severity = self.severity().upper();
        match self.items.as_slice() {
            [one] => format!(
                "[{severity}] {}: {} {}",
                self.device,
                one.alert,
                one.event.as_str()
            ),
            items => {
                let mut counts: Vec<(&str, usize)> = Vec::new();
                for item in items {
                    match counts.iter_mut().find(|(e, _)| *e == item.event.as_str()) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((item.event.as_str(), 1)),
                    }
                }
                let counts: Vec<String> = counts.iter().map(|(e, n)| format!("{n} {e}")).collect();
                format!(
                    "[{severity}] {}: {} alerts ({})",
                    self.device,
                    items.len(),
                    counts.join(", ")
                )
            }
        }
    }

    /// The summary, or one line per alert for a group.
    pub fn text(&self) -> String {
        match self.items.as_slice() {
            [one] => one.summary.clone(),
            items => items
                .iter()
                .map(|i| format!("- {} {}: {}", i.alert, i.event.as_str(), i.summary))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The generic webhook's body.
pub fn webhook_body(notification: &Notification) -> Value {
    json!({
        "device": notification.device,
        "severity": notification.severity(),
        "title": notification.title(),
        "alerts": notification.items,
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
    let (priority, tag) = match (notification.is_trouble(), notification.severity()) {
        (false, _) => ("3", "white_check_mark"),
        (true, Severity::Critical) => ("5", "rotating_light"),
        (true, Severity::Warning) => ("4", "warning"),
    };
    let headers = vec![
        ("Title", notification.title()),
        ("Priority", priority.to_string()),
        ("Tags", tag.to_string()),
    ];
    (headers, notification.text())
}

/// Gotify's `POST /message` body (priority 0–10).
pub fn gotify(notification: &Notification) -> Value {
    let priority = match (notification.is_trouble(), notification.severity()) {
        (false, _) => 2,
        (true, Severity::Critical) => 8,
        (true, Severity::Warning) => 5,
    };
    json!({"title": notification.title(), "message": notification.text(),
        "priority": priority})
}

/// A Slack-compatible incoming webhook's body. `&`, `<` and `>` are escaped as Slack asks,
/// so host text cannot form `<!channel>`, `<@user>` or a link.
pub fn slack(notification: &Notification) -> Value {
    let text = format!("*{}*\n{}", notification.title(), notification.text());
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    json!({"text": escaped})
}

/// A Discord webhook's body; mentions are switched off, so host text cannot ping anyone.
pub fn discord(notification: &Notification) -> Value {
    json!({"content": format!("**{}**\n{}", notification.title(), notification.text()),
        "allowed_mentions": {"parse": []}})
}

/// An email's subject and plain-text body.
pub fn email(notification: &Notification) -> (String, String) {
    let mut body = format!(
        "{}\n\ndevice: {}\n",
        notification.text(),
        notification.device
    );
    for item in &notification.items {
        body += &format!(
            "alert: {} ({}, {}) since {}\n",
            item.alert,
            item.event.as_str(),
            item.severity.upper().to_lowercase(),
            crate::services::rfc3339(item.since_ms)
        );
    }
    (notification.title(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(alert: &str, severity: Severity, event: Event) -> Item {
        Item {
            alert: alert.into(),
            severity,
            event,
            summary: format!("{alert} is DEGRADED: 1 faulted vdev"),
            since_ms: 1_796_310_000_000,
        }
    }

    fn pool() -> Notification {
        Notification {
            device: "nas".into(),
            items: vec![item("zfs.pool:tank", Severity::Critical, Event::Firing)],
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
        assert_eq!(body["alerts"][0]["event"], "firing");
        assert_eq!(body["severity"], "critical");
        let (headers, text) = ntfy(&n);
        assert!(headers.contains(&("Priority", "5".to_string())));
        assert_eq!(text, n.items[0].summary);
        assert_eq!(gotify(&n)["priority"], 8);
        assert!(slack(&n)["text"]
            .as_str()
            .unwrap()
            .starts_with("*[CRITICAL]"));
        assert_eq!(discord(&n)["allowed_mentions"]["parse"], json!([]));
        let mut loud = n.clone();
        loud.items[0].summary = "<!channel> see <https://evil.example|here> & more".into();
        let text = slack(&loud)["text"].as_str().unwrap().to_string();
        assert!(
            text.contains("&lt;!channel&gt;") && !text.contains('<'),
            "{text}"
        );
        assert!(text.contains("&amp; more"), "{text}");
        let mut resolved = n.clone();
        resolved.items[0].event = Event::Resolved;
        assert_eq!(gotify(&resolved)["priority"], 2);
        let (subject, body) = email(&resolved);
        assert!(subject.ends_with("resolved"));
        assert!(body.contains("device: nas"));
        assert!(body.contains("since 2026-"), "{body}");
    }

    #[test]
    fn a_group_names_its_alerts_and_takes_the_worst_severity_of_what_is_wrong() {
        let group = Notification {
            device: "nas".into(),
            items: vec![
                item("disk_space", Severity::Warning, Event::Firing),
                item("degraded_pools", Severity::Critical, Event::Resolved),
                item("failed_units", Severity::Warning, Event::Firing),
            ],
        };
        assert_eq!(
            group.title(),
            "[WARNING] nas: 3 alerts (2 firing, 1 resolved)",
            "a resolved critical does not make the group critical"
        );
        assert_eq!(group.text().lines().count(), 3);
        assert!(group.text().contains("- degraded_pools resolved:"));
        let stored = serde_json::to_string(&group).unwrap();
        assert_eq!(
            serde_json::from_str::<Notification>(&stored).unwrap(),
            group
        );
    }
}
