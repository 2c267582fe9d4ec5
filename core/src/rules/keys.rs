//! API key fields: one rule for the admin API and `tollgate keys`.
//!
//! Whether a named plan exists needs the config and the database; callers
//! check that themselves and word the refusal with [`super::unknown_plan`].

use std::time::Duration;

use serde_json::Value;

use super::access::{normalise_ips, normalise_scopes, Scopes};
use super::limits::{check_concurrency, check_limits, ListKind};
use super::FieldError;
use crate::db::{KeyPatch, NewApiKey};

/// The longest key name or owner, in characters.
pub const MAX_TEXT: usize = 200;
/// The largest metadata object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest rotation grace period: 30 days.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// A name (`allow_empty: false`) or an owner (`true`): at most
/// [`MAX_TEXT`] characters, no control characters.
pub fn check_text(v: &str, allow_empty: bool) -> Result<(), String> {
    if !allow_empty && v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.chars().count() > MAX_TEXT {
        return Err(format!("must be at most {MAX_TEXT} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A JSON object of at most [`MAX_METADATA_BYTES`].
pub fn check_metadata(v: &Value) -> Result<(), String> {
    check_object(v, MAX_METADATA_BYTES)
}

/// A JSON object of at most `max` bytes written as JSON (a key's or an
/// identity's metadata).
pub fn check_object(v: &Value, max: usize) -> Result<(), String> {
    if !v.is_object() {
        return Err("must be a JSON object".into());
    }
    if v.to_string().len() > max {
        return Err(format!("must be at most {max} bytes of JSON"));
    }
    Ok(())
}

/// A plan reference (whether it exists is the caller's check).
pub fn check_plan_ref(plan: &str) -> Result<(), String> {
    if plan.is_empty() {
        return Err("must not be empty (use null for no plan)".into());
    }
    Ok(())
}

/// The refusal of a key's plan that is neither one of the YAML plans (the
/// names of `Config::plans`) nor one of the `stored` plans (their names),
/// naming the known ones.
pub fn unknown_key_plan<'a>(
    plan: &str,
    yaml_plans: impl IntoIterator<Item = &'a String>,
    stored: impl IntoIterator<Item = &'a str>,
) -> String {
    let known: Vec<&str> = yaml_plans
        .into_iter()
        .map(String::as_str)
        .chain(stored)
        .collect();
    super::unknown_plan(plan, &known)
}

/// A rotation grace period.
pub fn check_grace(grace: Duration) -> Result<(), String> {
    if grace > MAX_GRACE {
        return Err(format!(
            "must be at most {} seconds (30 days)",
            MAX_GRACE.as_secs()
        ));
    }
    Ok(())
}

fn field(name: &'static str) -> impl Fn(String) -> FieldError {
    move |m| FieldError::new(name, m)
}

/// Check and normalise a key's `scopes` and `allowed_ips` in place (see
/// [`super::access`]). Scopes with no list at all are stored as none.
pub fn normalise_access(
    scopes: &mut Option<Scopes>,
    allowed_ips: &mut Option<Vec<String>>,
) -> Result<(), FieldError> {
    if let Some(s) = scopes.as_ref() {
        let n = normalise_scopes("scopes", s)?;
        *scopes = (!n.is_open()).then_some(n);
    }
    if let Some(ips) = allowed_ips.as_ref() {
        *allowed_ips = Some(normalise_ips("allowed_ips", ips)?);
    }
    Ok(())
}

fn check_access(scopes: Option<&Scopes>, ips: Option<&[String]>) -> Result<(), FieldError> {
    if let Some(s) = scopes {
        normalise_scopes("scopes", s)?;
    }
    if let Some(ips) = ips {
        normalise_ips("allowed_ips", ips)?;
    }
    Ok(())
}

/// A new key, before it is stored (`now`: Unix ms). Call
/// [`normalise_name`] on the name afterwards.
pub fn check_new_key(k: &NewApiKey, now: i64) -> Result<(), FieldError> {
    check_text(&k.name, false).map_err(field("name"))?;
    if let Some(owner) = &k.owner {
        check_text(owner, true).map_err(field("owner"))?;
    }
    if let Some(m) = &k.metadata {
        check_metadata(m).map_err(field("metadata"))?;
    }
    if let Some(ls) = &k.limits {
        check_limits("limits", ls, ListKind::Key)?;
    }
    if let Some(c) = k.concurrency {
        check_concurrency(u64::from(c)).map_err(field("concurrency"))?;
    }
    if let Some(at) = k.expires_at {
        if at <= now {
            return Err(FieldError::new(
                "expires_at",
                "must be in the future (Unix ms)",
            ));
        }
        check_expiry_bound(at)?;
    }
    if let Some(plan) = &k.plan {
        check_plan_ref(plan).map_err(field("plan"))?;
    }
    check_access(k.scopes.as_ref(), k.allowed_ips.as_deref())
}

/// The latest expiry a key may have: the last millisecond of the year 9999
/// (UTC), so every expiry is a date a client, the dashboard and the CLI can
/// print (`i64::MAX` ms is the year 292 million).
pub const MAX_EXPIRES_AT_MS: i64 = 253_402_300_799_999;

fn check_expiry_bound(at: i64) -> Result<(), FieldError> {
    if at > MAX_EXPIRES_AT_MS {
        return Err(FieldError::new(
            "expires_at",
            format!("must be at most {MAX_EXPIRES_AT_MS} (9999-12-31T23:59:59.999Z, Unix ms)"),
        ));
    }
    Ok(())
}

/// A change to a key (an expiry in the past is allowed: it expires the key).
pub fn check_patch(p: &KeyPatch) -> Result<(), FieldError> {
    if let Some(name) = &p.name {
        check_text(name, false).map_err(field("name"))?;
    }
    if let Some(Some(owner)) = &p.owner {
        check_text(owner, true).map_err(field("owner"))?;
    }
    if let Some(m) = &p.metadata {
        check_metadata(m).map_err(field("metadata"))?;
    }
    if let Some(Some(ls)) = &p.limits {
        check_limits("limits", ls, ListKind::Key)?;
    }
    if let Some(Some(c)) = p.concurrency {
        check_concurrency(u64::from(c)).map_err(field("concurrency"))?;
    }
    if let Some(Some(at)) = p.expires_at {
        if at <= 0 {
            return Err(FieldError::new(
                "expires_at",
                "must be a positive Unix ms timestamp",
            ));
        }
        check_expiry_bound(at)?;
    }
    if let Some(Some(plan)) = &p.plan {
        check_plan_ref(plan).map_err(field("plan"))?;
    }
    check_access(
        p.scopes.as_ref().and_then(Option::as_ref),
        p.allowed_ips.as_ref().and_then(Option::as_deref),
    )
}

/// A key name as stored: without surrounding white space.
pub fn normalise_name(name: &str) -> String {
    name.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_keys() {
        let ok = NewApiKey {
            name: " app ".into(),
            ..NewApiKey::default()
        };
        assert_eq!(check_new_key(&ok, 0), Ok(()));
        let cases: Vec<(NewApiKey, &str)> = vec![
            (
                NewApiKey {
                    name: "  ".into(),
                    ..Default::default()
                },
                "name",
            ),
            (
                NewApiKey {
                    name: "x".repeat(201),
                    ..Default::default()
                },
                "name",
            ),
            (
                NewApiKey {
                    name: "a\0b".into(),
                    ..Default::default()
                },
                "name",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    owner: Some("\u{7}".into()),
                    ..Default::default()
                },
                "owner",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    metadata: Some(json!([1])),
                    ..Default::default()
                },
                "metadata",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    limits: Some(vec![]),
                    ..Default::default()
                },
                "limits",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    concurrency: Some(0),
                    ..Default::default()
                },
                "concurrency",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    expires_at: Some(10),
                    ..Default::default()
                },
                "expires_at",
            ),
            (
                NewApiKey {
                    name: "a".into(),
                    plan: Some(String::new()),
                    ..Default::default()
                },
                "plan",
            ),
        ];
        for (k, f) in cases {
            assert_eq!(
                check_new_key(&k, 10).map_err(|e| e.field),
                Err(f.to_string()),
                "{k:?}"
            );
        }
    }

    #[test]
    fn patches_and_grace() {
        assert_eq!(check_patch(&KeyPatch::default()), Ok(()));
        let past = KeyPatch {
            expires_at: Some(Some(1)),
            ..KeyPatch::default()
        };
        assert_eq!(check_patch(&past), Ok(()));
        let zero = KeyPatch {
            expires_at: Some(Some(0)),
            ..KeyPatch::default()
        };
        assert_eq!(
            check_patch(&zero).map_err(|e| e.field),
            Err("expires_at".into())
        );
        for at in [MAX_EXPIRES_AT_MS + 1, i64::MAX] {
            let far = KeyPatch {
                expires_at: Some(Some(at)),
                ..KeyPatch::default()
            };
            assert_eq!(
                check_patch(&far).map_err(|e| e.field),
                Err("expires_at".into())
            );
            let new = NewApiKey {
                name: "a".into(),
                expires_at: Some(at),
                ..Default::default()
            };
            assert_eq!(
                check_new_key(&new, 10).map_err(|e| e.field),
                Err("expires_at".into())
            );
        }
        let last = KeyPatch {
            expires_at: Some(Some(MAX_EXPIRES_AT_MS)),
            ..KeyPatch::default()
        };
        assert_eq!(check_patch(&last), Ok(()));
        assert!(check_grace(MAX_GRACE).is_ok());
        assert!(check_grace(MAX_GRACE + Duration::from_secs(1)).is_err());
    }
}
