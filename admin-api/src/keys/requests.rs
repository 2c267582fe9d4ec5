//! The bodies and the query string of `/api/keys`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::bodies::{KeyView, LimitBody, ScopesBody};
use crate::extract::{not_null, present, QueryBool, QueryInt};

/// Default and largest `per_page` of `GET /api/keys`.
pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 200;

/// A key record plus the full key: returned only by create and rotate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub record: KeyView,
    /// The full API key. Shown exactly once: store it now.
    #[schema(example = "tg_4fZq81AbTWb2LQfDXb6o0nT7kKzJ9r2h1Qw3aB")]
    pub key: String,
}

/// A page of keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPage {
    pub items: Vec<KeyView>,
    /// How many keys match the filters in all.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1–200 characters, not only spaces, no control characters.
    #[schema(
        example = "mobile app",
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// At most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub owner: Option<String>,
    /// A JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A plan from the YAML config or `/api/plans`.
    pub plan: Option<String>,
    /// Own limits (instead of the plan's).
    #[schema(min_items = 1, max_items = 16)]
    pub limits: Option<Vec<LimitBody>>,
    #[schema(minimum = 1)]
    pub concurrency: Option<u32>,
    /// Unix ms, in the future.
    #[schema(minimum = 1)]
    pub expires_at: Option<i64>,
    /// Routes and methods the key may use; anything else is 403 `scope-denied`.
    pub scopes: Option<ScopesBody>,
    /// Client networks (CIDRs or addresses, 1–256) the key may be used from;
    /// from anywhere else it is 403 `ip-not-allowed`.
    #[schema(min_items = 1, max_items = 256, example = json!(["203.0.113.0/24", "2001:db8::/32"]))]
    pub allowed_ips: Option<Vec<String>>,
    /// The identity (`/api/identities`) the key belongs to; it must exist.
    #[schema(minimum = 1)]
    pub identity_id: Option<i64>,
}

/// A partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKeyRequest {
    /// 1–200 characters, not only spaces, no control characters. Cannot be
    /// null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub owner: Option<Option<String>>,
    /// `null` resets it to `{}`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>, nullable)]
    pub metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub plan: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<LimitBody>>, nullable, min_items = 1, max_items = 16)]
    pub limits: Option<Option<Vec<LimitBody>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, nullable, minimum = 1)]
    pub concurrency: Option<Option<u32>>,
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    pub enabled: Option<bool>,
    /// Unix ms.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1)]
    pub expires_at: Option<Option<i64>>,
    /// `null` removes the key's own scopes.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<ScopesBody>, nullable)]
    pub scopes: Option<Option<ScopesBody>>,
    /// `null`: usable from anywhere.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, nullable, min_items = 1, max_items = 256)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// Move the key to this identity (it must exist); `null` detaches it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1)]
    pub identity_id: Option<Option<i64>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret stays valid, in seconds (default 0, at most 30 days).
    #[schema(minimum = 0, maximum = 2592000)]
    pub grace_seconds: Option<u64>,
}

/// Query parameters of `GET /api/keys`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    /// Keys per page (default 50, at most 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
    /// Case-insensitive substring of the name (`%` and `_` match themselves).
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// Exact plan name.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub plan: Option<String>,
    /// `true` or `false`.
    #[param(value_type = Option<bool>)]
    pub enabled: Option<QueryBool>,
    /// Only the keys of this identity.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub identity_id: Option<QueryInt<1, { i64::MAX }>>,
    /// `enabled` or `disabled` (the same filter as `enabled`).
    #[param(inline)]
    pub state: Option<KeyState>,
}

/// The `state` filter of `GET /api/keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Enabled,
    Disabled,
}
