//! The request and response bodies of `/api/webhooks`.

use serde::{Deserialize, Serialize};
use tollgate_core::webhooks::endpoints::WebhookEndpoint;
use tollgate_core::webhooks::outbox::{AttemptLog, DeliveryLog};
use tollgate_core::webhooks::secret_hint;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{not_null, present, QueryInt};

/// Default and largest `per_page` of the delivery log.
pub const DEFAULT_PER_PAGE: i64 = 50;
pub const MAX_PER_PAGE: i64 = 200;

/// An endpoint as listed (without its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: i64,
    #[schema(example = "https://billing.internal/tollgate-events")]
    pub url: String,
    pub description: Option<String>,
    /// Event types delivered, or `["*"]` for all.
    #[schema(example = json!(["key.disabled", "key.expiring"]))]
    pub events: Vec<String>,
    pub enabled: bool,
    /// The first characters of the signing secret, to tell secrets apart;
    /// null for viewers (4 characters are 24 of its 192 bits).
    #[schema(example = "whsec_Mf3Q…")]
    pub secret_hint: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl From<WebhookEndpoint> for WebhookView {
    fn from(e: WebhookEndpoint) -> Self {
        Self {
            secret_hint: Some(secret_hint(&e.secret)),
            id: e.id,
            url: e.url,
            description: e.description,
            events: e.events,
            enabled: e.enabled,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

impl WebhookView {
    /// `e` as `role` may see it: no secret hint for viewers.
    pub fn for_role(e: WebhookEndpoint, role: tollgate_core::db::admins::Role) -> Self {
        let mut v = Self::from(e);
        if role == tollgate_core::db::admins::Role::Viewer {
            v.secret_hint = None;
        }
        v
    }
}

/// A new endpoint and its signing secret (shown only once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub record: WebhookView,
    /// `whsec_` + base64: verify `webhook-signature` with it (Standard
    /// Webhooks). Shown only in this response.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://`, no credentials in it, at most 2048
    /// characters. Private addresses are allowed.
    #[schema(
        max_length = 2048,
        example = "https://billing.internal/tollgate-events"
    )]
    pub url: String,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Event types to deliver (default `["*"]`: all): key.disabled,
    /// key.rotated, key.deleted, key.expiring, quota.warning,
    /// quota.exhausted, credits.low, credits.exhausted, webhook.test.
    pub events: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String, max_length = 2048)]
    pub url: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 500)]
    pub description: Option<Option<String>>,
    /// Cannot be null (`["*"]` for every event).
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<String>)]
    pub events: Option<Vec<String>>,
    /// Cannot be null.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = bool)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<QueryInt<1, 1_000_000>>,
    /// Deliveries per page (default 50, at most 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub per_page: Option<QueryInt<1, MAX_PER_PAGE>>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// Unix ms.
    pub at: i64,
    /// The endpoint's answer, if there was one.
    pub status_code: Option<i64>,
    /// Why there was no (2xx) answer: timeout, refused connection…
    pub error: Option<String>,
    pub duration_ms: i64,
    pub succeeded: bool,
}

impl From<AttemptLog> for AttemptView {
    fn from(a: AttemptLog) -> Self {
        Self {
            at: a.at,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
            succeeded: a.succeeded,
        }
    }
}

/// One event's delivery to the endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    #[schema(example = "key.disabled")]
    pub event_type: String,
    /// The `webhook-id` header of every attempt.
    pub msg_id: String,
    /// `pending`, `succeeded` or `failed` (every attempt failed).
    #[schema(example = "succeeded")]
    pub status: String,
    pub attempts: i64,
    /// Unix ms of the next attempt (pending only).
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms (succeeded or failed).
    pub finished_at: Option<i64>,
    /// The attempts, newest first (at most 20).
    pub log: Vec<AttemptView>,
}

impl From<DeliveryLog> for DeliveryView {
    fn from(d: DeliveryLog) -> Self {
        Self {
            id: d.id,
            event_type: d.event_type,
            msg_id: d.msg_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            finished_at: d.finished_at,
            log: d.log.into_iter().map(AttemptView::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestEvent {
    /// The enqueued event's id.
    pub event_id: Option<i64>,
}
