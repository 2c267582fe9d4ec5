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
use crate::limiter::quota::wall_now_us;
use crate::limiter::{Bucket, Subject};
use crate::state::{CompiledRoute, ConfigState};

/// The reserving copies of a costed route's buckets
/// ([`crate::limiter::cost::reserving`]); `None` on a route without `cost`
/// or without buckets (nothing to reserve from).
#[derive(Debug)]
pub struct Reservation {
    buckets: Vec<Bucket>,
    /// The credits a credit holder's request spends (`cost.reserve`),
    /// refunded on `refund_on` like the buckets' tokens.
    reserve: u64,
    /// The wall clock (µs) before admission: its quotas are settled in
    /// this instant's period. (A request decided just after a period began
    /// settles in the period before, which has ended: its reservation then
    /// stands, fewer admissions, never more.)
    wall_us: i64,
}

impl Reservation {
    /// On a route with `cost` (with no buckets too: a credit holder's
    /// request still spends the reservation's credits).
    pub fn for_route(route: &CompiledRoute, buckets: &[&Bucket]) -> Option<Self> {
        let cost = route.route.cost.as_ref()?;
        Some(Self {
            buckets: priced(Some(route), buckets, 1).unwrap_or_default(),
            reserve: cost.reserve,
            wall_us: wall_now_us(),
        })
    }

    pub fn refs(&self) -> SmallVec<[&Bucket; 4]> {
        self.buckets.iter().collect()
    }

    /// The reservation to settle later, if the request was admitted (a
    /// refused or shadow-refused request took nothing) by a backend that
    /// holds tokens or credits.
    pub fn admitted(
        self,
        subject: Subject,
        decision: &Decision,
        decided_by: &str,
    ) -> Option<Pending> {
        if !decision.allowed || decision.limits.is_empty() {
            return None;
        }
        let credits = if spent_credits(decision) {
            self.reserve
        } else {
            0
        };
        if self.buckets.is_empty() && credits == 0 {
            return None;
        }
        Some(Pending {
            held: backend_of(decided_by)?,
            subject,
            buckets: self.buckets,
            credits,
            admitted_us: self.wall_us,
        })
    }
}

/// The buckets a request on `route` (if any) takes its tokens from when it
/// counts `n` times (the verify API's `cost`; 1 through the proxy): on a
/// route with `cost`, each bucket takes `n ×` the route's `reserve` in place
/// of its limit's own cost (the reservation, [`reserving`]), else `n ×` its
/// limit's own cost ([`Bucket::with_cost`]). `None`: the buckets as they
/// are (`n` = 1 on a route without `cost`). The proxy's reservation and the
/// verify API both take this, so a request verified and one proxied spend
/// the same tokens.
pub fn priced(route: Option<&CompiledRoute>, buckets: &[&Bucket], n: u64) -> Option<Vec<Bucket>> {
    match route.and_then(|r| r.route.cost.as_ref()) {
        Some(cost) => {
            let reserve = cost.reserve.saturating_mul(n);
            Some(buckets.iter().map(|b| reserving(b, reserve)).collect())
        }
        None if n == 1 => None,
        None => Some(buckets.iter().map(|b| b.with_cost(n)).collect()),
    }
}

/// Whether an admitted decision spent credits: it reports the balance
/// after (the `credits` member, which has no window, unlike a bucket).
fn spent_credits(decision: &Decision) -> bool {
    decision
        .limits
        .iter()
        .any(|l| l.window_secs == 0 && &*l.name == crate::limiter::credits::MEMBER)
}

/// A reservation taken and not settled yet.
#[derive(Debug)]
pub struct Pending {
    held: Held,
    subject: Subject,
    buckets: Vec<Bucket>,
    /// The credits spent (0: none), given back on `refund_on`.
    credits: u64,
    /// See [`Reservation::wall_us`].
    admitted_us: i64,
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
        let settlement = cost::settlement(cost, status, actual);
        let basis = settlement.1;
        let limiter = &config.config.limiter;
        if !self.buckets.is_empty() {
            let refs: SmallVec<[&Bucket; 4]> = self.buckets.iter().collect();
            let (held, subject) = (self.held, &self.subject);
            limiters
                .settle(limiter, held, subject, &refs, settlement, self.admitted_us)
                .await;
        }
        // Credits are charged the reservation (the response's actual cost
        // settles the buckets and quotas) and given back whole on `refund_on`.
        if self.credits > 0 && basis == cost::Basis::Refund {
            limiters
                .refund_credits(limiter, self.held, &self.subject, self.credits)
                .await;
        }
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
