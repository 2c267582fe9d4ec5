//! The request path's part of `routes[].cost` (rules in
//! `tollgate_core::cost`, buckets and backends in [`crate::limiter::cost`]):
//! reserve at admission, settle when the response headers arrive (or, for
//! an answer the proxy gave itself after admitting, e.g. an upstream
//! failure, when the request is logged), and strip the upstream's cost
//! header before the client sees it.
//!
//! The `RateLimit` headers of a costed request report the buckets as the
//! reservation left them (the settlement happens after they are written).

use pingora::http::ResponseHeader;
use smallvec::SmallVec;
use tollgate_core::cost::{self, CostHeaderError, RouteCost};
use tollgate_core::limits::Decision;

use crate::limiter::backends::Limiters;
use crate::limiter::cost::{backend_of, reserving, Held};
use crate::limiter::{Bucket, Subject};
use crate::state::{CompiledRoute, ConfigState};

/// The reserving copies of a costed route's buckets
/// ([`crate::limiter::cost::reserving`]); `None` on a route without `cost`
/// or without buckets (nothing to reserve from).
#[derive(Debug)]
pub struct Reservation {
    buckets: Vec<Bucket>,
}

impl Reservation {
    pub fn for_route(route: &CompiledRoute, buckets: &[&Bucket]) -> Option<Self> {
        let cost = route.route.cost.as_ref()?;
        if buckets.is_empty() {
            return None;
        }
        Some(Self {
            buckets: buckets.iter().map(|b| reserving(b, cost.reserve)).collect(),
        })
    }

    pub fn refs(&self) -> SmallVec<[&Bucket; 4]> {
        self.buckets.iter().collect()
    }

    /// The reservation to settle later, if the request was admitted (a
    /// refused or shadow-refused request took nothing) by a backend that
    /// holds tokens.
    pub fn admitted(
        self,
        subject: Subject,
        decision: &Decision,
        decided_by: &str,
    ) -> Option<Pending> {
        if !decision.allowed || decision.limits.is_empty() {
            return None;
        }
        Some(Pending {
            held: backend_of(decided_by)?,
            subject,
            buckets: self.buckets,
        })
    }
}

/// A reservation taken and not settled yet.
#[derive(Debug)]
pub struct Pending {
    held: Held,
    subject: Subject,
    buckets: Vec<Bucket>,
}

impl Pending {
    async fn settle(
        self,
        limiters: &Limiters,
        config: &ConfigState,
        cost: &RouteCost,
        status: u16,
        actual: Result<u64, CostHeaderError>,
    ) {
        let (s, basis) = cost::settlement(cost, status, actual);
        let refs: SmallVec<[&Bucket; 4]> = self.buckets.iter().collect();
        let limiter = &config.config.limiter;
        limiters
            .settle(limiter, self.held, &self.subject, &refs, s, basis)
            .await;
    }
}

/// The actual cost from the upstream's header, which is removed.
pub fn take_header(cost: &RouteCost, resp: &mut ResponseHeader) -> Result<u64, CostHeaderError> {
    let name = cost.from_response_header.as_str();
    let actual = cost::parse_actual(resp.headers.get_all(name).iter().map(|v| v.as_bytes()));
    resp.remove_header(name);
    actual
}

/// The upstream's response headers arrived: strip the cost header and
/// settle a pending reservation. An informational answer (1xx but 101)
/// settles nothing: the final one follows.
pub async fn on_response(
    limiters: &Limiters,
    config: Option<&ConfigState>,
    route: Option<&CompiledRoute>,
    pending: &mut Option<Pending>,
    resp: &mut ResponseHeader,
) {
    let Some(cost) = route.and_then(|r| r.route.cost.as_ref()) else {
        return;
    };
    let status = resp.status.as_u16();
    if status < 200 && status != 101 {
        return;
    }
    let actual = take_header(cost, resp);
    if let (Some(p), Some(config)) = (pending.take(), config) {
        p.settle(limiters, config, cost, status, actual).await;
    }
}

/// The request is over and its reservation was not settled from a
/// response (the proxy answered itself, e.g. 502/504 for an upstream that
/// failed, or the client went away: `status` 0): a status in `refund_on`
/// refunds it, anything else keeps it.
pub async fn on_end(
    limiters: &Limiters,
    config: Option<&ConfigState>,
    route: Option<&CompiledRoute>,
    pending: Option<Pending>,
    status: u16,
) {
    let (Some(p), Some(config), Some(cost)) =
        (pending, config, route.and_then(|r| r.route.cost.as_ref()))
    else {
        return;
    };
    p.settle(
        limiters,
        config,
        cost,
        status,
        Err(CostHeaderError::NoResponse),
    )
    .await;
}
