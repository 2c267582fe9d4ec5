//! Who is calling: the key presented (header or `Authorization: Bearer`),
//! the bad-key throttle, and `proxy.usage_path`, where a caller reads its
//! own limits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use pingora::http::RequestHeader;
use tollgate_core::net;

use crate::answer::{self, Answer};
use crate::auth::{self, Presented};
use crate::edge_metrics;
use crate::gate;
use crate::keyset::ActiveKey;
use crate::limiter::backends;
use crate::limiter::identity;
use crate::metrics::{self, outcome};
use crate::self_usage;
use crate::state::{ConfigState, DbState};
use crate::throttle;

use super::{Ctx, Gateway};

impl Gateway {
    /// Count a missing or invalid key from `addr`; `Some(429)` when the
    /// address has used up its failures (`proxy.auth_failures_per_second`).
    fn auth_failure(&self, addr: IpAddr, per_second: u32, ctx: &mut Ctx) -> Option<Answer> {
        let (ok, evicted) =
            self.auth_failures
                .fail(net::bucket_key(addr), per_second, Instant::now());
        if evicted > 0 {
            edge_metrics::THROTTLE_EVICTIONS.inc_by(evicted as u64);
        }
        if ok {
            return None;
        }
        metrics::AUTH_THROTTLED.inc();
        ctx.outcome = Some(outcome::LIMITED);
        Some(answer::auth_throttled(1))
    }

    /// The caller's key (`Authorization: Bearer` or the key header), or the
    /// 401/403 (or 429 of the bad-key throttle; 400 for two credentials) to
    /// answer.
    pub(super) fn authenticate(
        &self,
        req: &RequestHeader,
        client_addr: IpAddr,
        cfg: &ConfigState,
        db: &DbState,
        ctx: &mut Ctx,
    ) -> Result<Arc<ActiveKey>, Answer> {
        let proxy_cfg = &cfg.config.proxy;
        let per_second = proxy_cfg.auth_failures_per_second;
        // The key is looked up first (in memory): a valid key is never
        // refused for other callers' failures.
        let presented = auth::extract(&req.headers, &proxy_cfg.key_header);
        ctx.key_from_bearer = matches!(presented, Presented::Bearer(_));
        let plain = match presented {
            Presented::Missing => {
                if let Some(a) = self.auth_failure(client_addr, per_second, ctx) {
                    return Err(a);
                }
                ctx.outcome = Some(outcome::UNAUTHORIZED);
                return Err(answer::missing_key(&proxy_cfg.key_header));
            }
            // Two credentials: a malformed request, not a failed key (the
            // bad-key throttle counts keys tried; none was).
            Presented::Several(several) => {
                edge_metrics::REFUSED
                    .with_label_values(&[auth::SEVERAL_REASON])
                    .inc();
                ctx.outcome = Some(edge_metrics::BAD_REQUEST);
                return Err(answer::bad_request(
                    auth::SEVERAL_REASON,
                    &several.detail(&proxy_cfg.key_header),
                ));
            }
            Presented::Garbled => None,
            Presented::Header(k) | Presented::Bearer(k) => Some(k),
        };
        match gate::find_key(db, plain, ctx.start_ms) {
            Ok((key, hash)) => {
                ctx.key_hash = Some(hash);
                Ok(key)
            }
            Err(reason) => {
                if let Some(a) = self.auth_failure(client_addr, per_second, ctx) {
                    return Err(a);
                }
                ctx.outcome = Some(outcome::FORBIDDEN);
                Err(answer::forbidden_key(reason))
            }
        }
    }

    /// `proxy.usage_path`: the caller's own limits, read without taking
    /// (see [`self_usage`]); never forwarded, never counted as route usage.
    pub(super) async fn self_usage(
        &self,
        req: &RequestHeader,
        client_addr: IpAddr,
        cfg: &ConfigState,
        ctx: &mut Ctx,
    ) -> Answer {
        let method = req.method.as_str();
        // HEAD rides on GET as on every route (Pingora sends no body for it).
        if !tollgate_core::rules::access::takes_method(&["GET"], method) {
            ctx.outcome = Some(outcome::METHOD_NOT_ALLOWED);
            return answer::method_not_allowed(method, &["GET".to_string(), "HEAD".to_string()]);
        }
        let db = self.state.db.load_full();
        let key = match self.authenticate(req, client_addr, cfg, &db, ctx) {
            Ok(key) => key,
            Err(a) => return a,
        };
        ctx.key = Some(key.clone());
        let per_second = throttle::USAGE_READS_PER_SECOND;
        if !self.usage_reads.fail(key.id, per_second, Instant::now()).0 {
            ctx.outcome = Some(outcome::LIMITED);
            return answer::usage_reads_throttled(per_second);
        }
        let allowed_ips = key.access.as_deref().and_then(|a| a.allowed_ips.as_deref());
        if let Err(d) = tollgate_core::rules::access::check_key(
            Default::default(),
            allowed_ips,
            "",
            method,
            client_addr,
        ) {
            ctx.outcome = Some(outcome::FORBIDDEN);
            return answer::access_denied(&d);
        }
        let listed = self_usage::buckets(&key, cfg, &db);
        let refs: Vec<&crate::limiter::Bucket> = listed.iter().map(|l| l.bucket).collect();
        let limiter = &cfg.config.limiter;
        let deadline = backends::redis_deadline(limiter);
        match self
            .limiters
            .peek(
                limiter,
                &identity::subject_for(key.id, key.identity_id()),
                &refs,
                deadline,
            )
            .await
        {
            Some((states, backend)) => {
                ctx.backend = backend;
                ctx.outcome = Some(outcome::ALLOWED);
                let credits = self_usage::credits(&self.limiters, limiter, &key, deadline).await;
                self_usage::render(&key, None, &listed, &states, backend, cfg, credits)
            }
            None => {
                ctx.outcome = Some(outcome::UNAVAILABLE);
                ctx.backend = "redis";
                answer::limiter_unavailable()
            }
        }
    }
}
