//! The bodies and the query string of `/api/identities`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::db::Identity;
use utoipa::{IntoParams, ToSchema};

use crate::bodies::LimitBody;
use crate::extract::{not_null, present, QueryInt};

pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 200;

/// An identity: a customer or tenant owning any number of keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityView {
    pub id: i64,
    /// Your own id for it, sent to the upstream as `X-Tollgate-Identity`.
    #[schema(example = "cus_123")]
    pub external_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Used by its keys that name no plan.
    pub plan: Option<String>,
    /// Used by its keys that have no limits of their own, instead of any plan.
    pub limits: Option<Vec<LimitBody>>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Every credit granted to the identity's shared balance (the sum of its
    /// top-ups and adjustments; absent if it has none). Its keys spend it;
    /// the live balance is that minus what they spent (a plan's refill
    /// sets it anew each period). Only on `GET /api/identities/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_granted: Option<i64>,
}

impl From<Identity> for IdentityView {
    fn from(i: Identity) -> Self {
        Self {
            limits: i
                .limits
                .as_ref()
                .map(|ls| ls.iter().map(LimitBody::from).collect()),
            id: i.id,
            external_id: i.external_id,
            name: i.name,
            metadata: i.metadata,
            plan: i.plan,
            created_at: i.created_at,
            updated_at: i.updated_at,
            credits_granted: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityPage {
    pub items: Vec<IdentityView>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    /// 1–128 characters of `A-Z a-z 0-9 . _ - : @`; unique.
    #[schema(
        example = "cus_123",
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._:@-]+$"
    )]
    pub external_id: String,
    /// 1–200 characters, not only spaces, no control characters.
    #[schema(example = "Acme Inc", min_length = 1, max_length = 200)]
    pub name: String,
    /// A JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A plan from the YAML config or `/api/plans`.
    pub plan: Option<String>,
    /// Limits for its keys (instead of any plan's); `scope: identity` makes
    /// one a single bucket for all its keys.
    #[schema(min_items = 1, max_items = 16)]
    pub limits: Option<Vec<LimitBody>>,
}

/// A partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIdentity {
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:@-]+$")]
    pub external_id: Option<String>,
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub name: Option<String>,
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
}

/// Query parameters of `GET /api/identities`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdentityListQuery {
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
    /// Case-insensitive substring of the external id or the name.
    #[param(max_length = 200)]
    pub search: Option<String>,
}
