//! Signed webhooks: the rules (event types, endpoint URLs, secrets, the
//! retry schedule) and the Standard Webhooks signature
//! (<https://www.standardwebhooks.com>); the endpoints table ([`endpoints`])
//! and the outbox ([`outbox`]); the delivery worker runs in the admin API.
//!
//! Events are enqueued with [`enqueue_event`]: once per
//! `(type, subject, period)` however many processes notice the same event
//! (a UNIQUE dedup key), then delivered to every enabled endpoint whose
//! filter takes the type, each with retries.

mod address;
pub mod endpoints;
pub mod outbox;

pub use address::is_refused_ip;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::db::{ApiKey, Db, DbError};
use crate::keys::RandomError;

/// A key was disabled.
pub const KEY_DISABLED: &str = "key.disabled";
/// A key got a new secret.
pub const KEY_ROTATED: &str = "key.rotated";
/// A key was deleted.
pub const KEY_DELETED: &str = "key.deleted";
/// A key expires within [`EXPIRING_WITHIN`] (once per key and expiry).
pub const KEY_EXPIRING: &str = "key.expiring";
/// The "send test event" of one endpoint (sent to it whatever its filter).
pub const WEBHOOK_TEST: &str = "webhook.test";

/// Every event type an endpoint may subscribe to. The quota and credit
/// events are noticed by the proxies in their limiter's decisions and
/// enqueued through [`enqueue_event`] (`tollgate_proxy::events`).
pub const EVENT_TYPES: [&str; 9] = [
    KEY_DISABLED,
    KEY_ROTATED,
    KEY_DELETED,
    KEY_EXPIRING,
    "quota.warning",
    "quota.exhausted",
    "credits.low",
    "credits.exhausted",
    WEBHOOK_TEST,
];

/// How far ahead `key.expiring` looks.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts per delivery before it is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;
/// The wait after the first failed attempt; each next wait is
/// [`BACKOFF_FACTOR`] times longer, at most [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const BACKOFF_FACTOR: u32 = 6;
pub const MAX_BACKOFF: Duration = Duration::from_secs(10 * 3600);
/// The longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;
/// Secret bytes (before base64): 192 bits.
const SECRET_BYTES: usize = 24;
pub const SECRET_PREFIX: &str = "whsec_";

/// A refused endpoint field: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WebhookFieldError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> WebhookFieldError {
    WebhookFieldError {
        field,
        message: message.into(),
    }
}

/// Check an endpoint URL: `http` or `https`, a host, no credentials
/// (`user:pass@`), no fragment, at most [`MAX_URL_LEN`] characters, a port
/// (if given) of 1 to 65535. Private and loopback addresses are allowed:
/// endpoints are set by admins, who typically point them at internal
/// services; the delivery log shows only the status code of an answer,
/// never its body. Refused hosts ([`check_host`]): link-local addresses
/// (`169.254.0.0/16` — the cloud metadata service — and `fe80::/10`) and the
/// other metadata services' (`fd00:ec2::254`, `100.100.100.200`), also
/// inside the IPv6 forms that carry them: [`is_refused_ip`]), zone-scoped IPv6 and IPv4 addresses not written as a dotted quad.
pub fn check_url(url: &str) -> Result<String, WebhookFieldError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(refuse("url", "is required"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(refuse(
            "url",
            format!("is longer than {MAX_URL_LEN} characters"),
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse(
            "url",
            "must not contain spaces or control characters",
        ));
    }
    if url.contains('#') {
        return Err(refuse("url", "must not have a fragment (#…)"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| refuse("url", "is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(refuse("url", "must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(refuse("url", "has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(refuse(
            "url",
            "must not hold credentials (user:password@): authenticate with the signature",
        ));
    }
    if authority.host().is_empty() {
        return Err(refuse("url", "has no host"));
    }
    // As written (`Authority::port` is `None` for a port past 65535).
    let auth = authority.as_str();
    let after_host = auth.rfind(']').map_or(auth, |i| &auth[i + 1..]);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(refuse("url", "the port must be 1 to 65535"));
        }
    }
    check_host(authority.host())?;
    Ok(url.to_string())
}

/// The host rules of [`check_url`] (`host` as in the URL: IPv6 in brackets).
fn check_host(host: &str) -> Result<(), WebhookFieldError> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if v6.contains('%') {
            return Err(refuse("url", "must not use a zone-scoped IPv6 address"));
        }
        let ip: std::net::Ipv6Addr = v6
            .parse()
            .map_err(|_| refuse("url", "is not a valid IPv6 address"))?;
        return check_ip(std::net::IpAddr::V6(ip));
    }
    // A host whose last label is a number is an IPv4 address to HTTP
    // clients (WHATWG URL: `2852039166`, `0xa9fea9fe`, `169.254.43518`):
    // only the dotted quad is taken, so that the rule below sees it.
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
                && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit()));
    if numeric {
        let ip: std::net::Ipv4Addr = host.parse().map_err(|_| {
            refuse(
                "url",
                "an IPv4 address must be written as four decimal numbers (a.b.c.d)",
            )
        })?;
        return check_ip(std::net::IpAddr::V4(ip));
    }
    Ok(())
}

/// Link-local addresses (also IPv4-mapped) are refused: `169.254.169.254`
/// is the cloud metadata service of most clouds; so are the other metadata
/// addresses ([`is_refused_ip`]).
fn check_ip(ip: std::net::IpAddr) -> Result<(), WebhookFieldError> {
    if is_refused_ip(ip) {
        return Err(refuse(
            "url",
            "must not be a link-local address (169.254.0.0/16, fe80::/10), \
             a cloud metadata service's (fd00:ec2::254, 100.100.100.200) \
             nor an IPv6 address that carries one",
        ));
    }
    Ok(())
}

/// Check an event filter: known types, or `*` for all. An empty list is
/// refused (it would read as "no events"); leave the field out for all.
pub fn check_events(events: &[String]) -> Result<Vec<String>, WebhookFieldError> {
    if events.is_empty() {
        return Err(refuse(
            "events",
            "must list at least one event type, or * for all (leave it out for all)",
        ));
    }
    if events.len() > EVENT_TYPES.len() + 1 {
        return Err(refuse("events", "lists too many event types"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(refuse(
                "events",
                format!(
                    "unknown event type {e:?}: expected * or one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// Check a description: at most 500 characters, no control characters.
pub fn check_description(d: Option<String>) -> Result<Option<String>, WebhookFieldError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(refuse(
            "description",
            format!("is longer than {MAX_DESCRIPTION_LEN} characters"),
        )),
        Some(d) if d.chars().any(char::is_control) => {
            Err(refuse("description", "must not contain control characters"))
        }
        other => Ok(other),
    }
}

/// Whether an endpoint with filter `events` receives `event_type`.
pub fn wants(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event_type)
}

/// A new signing secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> Result<String, RandomError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// A new message id (`msg_` and 128 random bits, hex), the `webhook-id`.
pub fn new_msg_id() -> Result<String, RandomError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(format!("msg_{}", hex::encode(bytes)))
}

/// What a listing shows of a secret: its first characters.
pub fn secret_hint(secret: &str) -> String {
    let shown: String = secret.chars().take(SECRET_PREFIX.len() + 4).collect();
    format!("{shown}…")
}

/// A secret that is not `whsec_` + base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the webhook secret is not whsec_ followed by base64")]
pub struct BadSecret;

/// The `webhook-signature` header of one attempt: `v1,` and the base64 of
/// the HMAC-SHA256, keyed with the secret's bytes, of
/// `{msg_id}.{timestamp}.{body}` (Standard Webhooks).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or(BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The wait before the next attempt after `attempts` failed ones, or
/// `None` once [`MAX_ATTEMPTS`] have failed: 5 s, 30 s, 3 min, 18 min,
/// 1.8 h, then 10 h.
pub fn backoff(attempts: i64) -> Option<Duration> {
    if !(1..MAX_ATTEMPTS).contains(&attempts) {
        return None;
    }
    let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX);
    let factor = BACKOFF_FACTOR.checked_pow(exp).unwrap_or(u32::MAX);
    Some(
        FIRST_BACKOFF
            .checked_mul(factor)
            .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF)),
    )
}

/// Enqueue an event: once per `(event_type, subject, period)` (a second
/// enqueue of the same triple, from any process, does nothing and answers
/// `None`), with a delivery for every enabled endpoint whose filter takes
/// `event_type`. `payload` is the event's `data`; the body sent is
/// `{"type", "timestamp", "data"}`. Returns the event's row id.
///
/// `period` names the occurrence: the quota period of a quota event, the
/// expiry instant of `key.expiring`, the change's time of a key change.
pub async fn enqueue_event(
    db: &Db,
    event_type: &str,
    subject: &str,
    period: &str,
    payload: serde_json::Value,
) -> Result<Option<i64>, DbError> {
    db.enqueue_webhook_event(event_type, subject, period, payload, None)
        .await
}

/// Enqueue a key event (`key.disabled`, `key.rotated`, `key.deleted`)
/// about `key` as it is after the change (before it, for a deletion). The
/// period is the key's `updated_at` (each change is one event; a deletion
/// is one event per key, ids are never reused). The data is the key's
/// record without any secret.
pub async fn enqueue_key_event(
    db: &Db,
    event_type: &str,
    key: &ApiKey,
) -> Result<Option<i64>, DbError> {
    let period = if event_type == KEY_DELETED {
        String::new()
    } else {
        key.updated_at.to_string()
    };
    let data = serde_json::json!({
        "key_id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "owner": key.owner,
        "plan": key.plan,
        "enabled": key.enabled,
        "expires_at": key.expires_at,
    });
    enqueue_event(db, event_type, &key.id.to_string(), &period, data).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_without_credentials() {
        for ok in [
            "https://hooks.example.com/tollgate",
            "http://127.0.0.1:9000/x?y=1",
            "http://[::1]:8080/",
            "https://10.0.0.5/hook",
            "http://192.168.1.2:65535/",
            "http://[fd00::1]/",
            "https://api.example.123a/",
            "https://face.bad/",
        ] {
            assert_eq!(check_url(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pw@example.com/",
            "https://token@example.com/",
            "https://example.com/a b",
            "https://example.com/a\nb",
            "https://example.com/\u{7f}",
            "https://example.com/#frag",
            "//example.com/",
            "https:///path",
            "example.com",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        // Ports, zones, link-local (the metadata service) in every spelling
        // an HTTP client reads as that address (attack round 3, B12).
        for bad in [
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:/",
            "http://[::1]:99999/",
            "http://[fe80::1%25eth0]/",
            "http://[fe80::1%eth0]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.0.1:8080/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0xA9.0xFE.0xA9.0xFE/",
            "http://169.254.43518/",
            "http://0251.0376.0251.0376/",
            // IPv6 forms that carry the address to an IPv4 network (round 6).
            "http://[::169.254.169.254]/",
            "http://[::ffff:0:169.254.169.254]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[2002:a9fe:a9fe::1]/",
        ] {
            let e = check_url(bad).expect_err(bad);
            assert_eq!(e.field, "url", "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
        // Surrounding spaces are trimmed, not kept.
        assert_eq!(
            check_url(" https://e.com/x\n").as_deref(),
            Ok("https://e.com/x")
        );
    }

    #[test]
    fn event_filters_name_known_types() {
        assert_eq!(check_events(&[]).map_err(|e| e.field), Err("events"));
        let f = check_events(&["key.disabled".into(), "key.disabled".into()]);
        assert_eq!(f, Ok(vec!["key.disabled".to_string()]));
        assert!(check_events(&["key.created".into()]).is_err());
        assert!(wants(&["*".into()], KEY_ROTATED));
        assert!(!wants(&[KEY_DELETED.into()], KEY_ROTATED));
    }

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signatures_match_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("nope", "m", 1, b""), Err(BadSecret));
        let s = new_secret().unwrap_or_default();
        assert!(s.starts_with("whsec_") && sign(&s, "m", 1, b"x").is_ok());
        assert_eq!(secret_hint(&s).chars().count(), 11);
    }

    #[test]
    fn backoff_grows_then_stops() {
        let waits: Vec<_> = (1..=MAX_ATTEMPTS).map(backoff).collect();
        assert_eq!(waits[0], Some(Duration::from_secs(5)));
        assert_eq!(waits[1], Some(Duration::from_secs(30)));
        assert_eq!(waits[2], Some(Duration::from_secs(180)));
        assert_eq!(waits[6], Some(MAX_BACKOFF));
        assert_eq!(waits[7], None);
        assert_eq!(backoff(0), None);
        assert_eq!(backoff(i64::MAX), None);
    }
}
