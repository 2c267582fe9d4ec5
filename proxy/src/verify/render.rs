//! The verify answers: the 200 decision and the problem+json refusals.

use http::Response;
use serde::Serialize;
use tollgate_core::limits::RetryAfter;
use tollgate_core::problem;

use super::check::Checked;
use super::request::Refusal;

/// A complete answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub close: bool,
    pub bearer_challenge: bool,
}

impl Reply {
    pub fn into_response(self) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(self.status)
            .header("Content-Type", self.content_type)
            .header("Content-Length", self.body.len())
            .header("Cache-Control", "no-store");
        if self.close {
            b = b.header("Connection", "close");
        }
        if self.status == 415 {
            // RFC 9110 §15.5.16: which request content codings would do.
            b = b.header("Accept-Encoding", "identity");
        }
        if self.bearer_challenge {
            b = b.header("WWW-Authenticate", "Bearer realm=\"tollgate-verify\"");
        }
        b.body(self.body).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    valid: bool,
    code: &'a str,
    key_id: Option<i64>,
    /// The key's identity's external id (null without one).
    identity: Option<&'a str>,
    plan: Option<&'a str>,
    limits: Vec<LimitView<'a>>,
    /// Seconds until a refused request could be admitted (rate-limited only;
    /// null when it never could: its cost is above a limit's burst).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<Option<u64>>,
    /// The key's prepaid balance after the request (null: no credits).
    credits: Option<i64>,
}

#[derive(Serialize)]
struct LimitView<'a> {
    name: &'a str,
    /// Tokens per window.
    limit: u64,
    remaining: u64,
    /// Seconds until the limit is whole again.
    reset: u64,
}

/// The 200 answer of a decision.
pub fn decision(c: &Checked) -> Reply {
    let limits = c
        .decision
        .as_ref()
        .map(|d| {
            d.limits
                .iter()
                .map(|s| LimitView {
                    name: &s.name,
                    limit: s.quota,
                    remaining: s.remaining,
                    reset: s.reset_secs,
                })
                .collect()
        })
        .unwrap_or_default();
    let retry_after = match (&c.decision, c.code) {
        (Some(d), super::check::Code::RateLimited) => match d.retry_after() {
            RetryAfter::Secs(s) => Some(Some(s)),
            RetryAfter::Never => Some(None),
        },
        _ => None,
    };
    let body = Body {
        valid: c.code == super::check::Code::Valid,
        code: c.code.as_str(),
        key_id: c.key.as_ref().map(|k| k.id),
        identity: c.identity.as_deref().and_then(|i| i.external_id.as_deref()),
        plan: c
            .plan
            .as_deref()
            .or(c.key.as_ref().and_then(|k| k.plan.as_deref())),
        limits,
        retry_after,
        credits: c.credits,
    };
    Reply {
        status: 200,
        content_type: "application/json",
        body: serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()),
        close: false,
        bearer_challenge: false,
    }
}

/// A refused request.
pub fn refusal(r: &Refusal) -> Reply {
    Reply {
        status: r.problem.status,
        content_type: problem::CONTENT_TYPE,
        body: r.problem.to_json(),
        close: r.close,
        bearer_challenge: r.problem.status == 401,
    }
}
