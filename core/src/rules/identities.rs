//! Identity fields: one rule for the admin API and `tollgate identities`.
//!
//! - `external_id`: the caller's own id for the customer (1–128 characters
//!   of `A-Z a-z 0-9 . _ - : @`); unique. It is sent to the upstream in
//!   `X-Tollgate-Identity`, so nothing else may be in it (no spaces, no
//!   control characters: it cannot inject a header);
//! - `name`: as a key's name (1–200 characters, no control characters);
//! - `metadata`: a JSON object of at most [`MAX_METADATA_BYTES`];
//! - `plan`, `limits`: as on a key (a non-empty list; each limit may say
//!   `scope: identity`). Whether the plan exists is the caller's check.

use serde_json::Value;

pub use super::keys::normalise_name;
use super::keys::{check_object, check_plan_ref, check_text};
use super::limits::{check_limits, ListKind};
use super::FieldError;
use crate::db::identities::{IdentityPatch, NewIdentity};

/// The longest external id.
pub const MAX_EXTERNAL_ID_LEN: usize = 128;
/// The largest identity metadata object, in bytes of JSON (kept small: the
/// proxy holds every identity in memory).
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// An external id: 1–[`MAX_EXTERNAL_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ - : @`, which a header value carries verbatim.
pub fn check_external_id(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_EXTERNAL_ID_LEN {
        return Err(format!("must be at most {MAX_EXTERNAL_ID_LEN} characters"));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
    {
        return Err("use only A-Z, a-z, 0-9, '.', '_', '-', ':' and '@'".into());
    }
    Ok(())
}

/// A JSON object of at most [`MAX_METADATA_BYTES`].
pub fn check_metadata(v: &Value) -> Result<(), String> {
    check_object(v, MAX_METADATA_BYTES)
}

fn field(name: &'static str) -> impl Fn(String) -> FieldError {
    move |m| FieldError::new(name, m)
}

/// A new identity as sent, before it is stored: the name is checked as sent
/// (the API's `maxLength`), then stored through [`normalise_name`].
pub fn check_new_identity(i: &NewIdentity) -> Result<(), FieldError> {
    check_external_id(&i.external_id).map_err(field("external_id"))?;
    check_text(&i.name, false).map_err(field("name"))?;
    if let Some(m) = &i.metadata {
        check_metadata(m).map_err(field("metadata"))?;
    }
    if let Some(plan) = &i.plan {
        check_plan_ref(plan).map_err(field("plan"))?;
    }
    if let Some(ls) = &i.limits {
        check_limits("limits", ls, ListKind::Key)?;
    }
    Ok(())
}

/// A partial update of an identity.
pub fn check_identity_patch(p: &IdentityPatch) -> Result<(), FieldError> {
    if let Some(e) = &p.external_id {
        check_external_id(e).map_err(field("external_id"))?;
    }
    if let Some(n) = &p.name {
        check_text(n, false).map_err(field("name"))?;
    }
    if let Some(m) = &p.metadata {
        check_metadata(m).map_err(field("metadata"))?;
    }
    if let Some(Some(plan)) = &p.plan {
        check_plan_ref(plan).map_err(field("plan"))?;
    }
    if let Some(Some(ls)) = &p.limits {
        check_limits("limits", ls, ListKind::Key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn external_ids_are_header_safe_tokens() {
        for ok in [
            "cus_123",
            "acme.io",
            "org:42",
            "a@b",
            "A-Z_0.9",
            &"x".repeat(128),
        ] {
            assert_eq!(check_external_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\r\nX-Evil: 1",
            "a\0",
            "é",
            "a,b",
            "a;b",
            "\"q\"",
            &"x".repeat(129),
        ] {
            assert!(check_external_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_is_a_small_object() {
        assert!(check_metadata(&json!({"tier": "gold"})).is_ok());
        assert!(check_metadata(&json!([1])).is_err());
        assert!(check_metadata(&json!("s")).is_err());
        let big = json!({ "x": "y".repeat(MAX_METADATA_BYTES) });
        assert!(check_metadata(&big).is_err());
    }

    #[test]
    fn new_identities_name_the_bad_field() {
        let ok = NewIdentity {
            external_id: "cus_1".into(),
            name: "Acme".into(),
            ..Default::default()
        };
        assert_eq!(check_new_identity(&ok), Ok(()));
        let e = check_new_identity(&NewIdentity {
            external_id: "bad id".into(),
            ..ok.clone()
        })
        .expect_err("bad id");
        assert_eq!(e.field, "external_id");
        let e = check_new_identity(&NewIdentity {
            name: " ".into(),
            ..ok.clone()
        })
        .expect_err("blank name");
        assert_eq!(e.field, "name");
        let e = check_new_identity(&NewIdentity {
            limits: Some(vec![]),
            ..ok.clone()
        })
        .expect_err("empty limits");
        assert_eq!(e.field, "limits");
        let e = check_identity_patch(&IdentityPatch {
            plan: Some(Some(String::new())),
            ..Default::default()
        })
        .expect_err("empty plan");
        assert_eq!(e.field, "plan");
    }
}
