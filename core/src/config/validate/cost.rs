//! `routes[].cost`: a reservation settled from the response (issue #20).

use super::raw::RawCost;
use super::*;
use crate::cost::{RouteCost, StatusMatch, MAX_ACTUAL_COST};

/// The largest `reserve`: a reservation must be spendable by a real limit.
pub(super) const MAX_RESERVE: u64 = 1_000_000_000;

/// Response headers the proxy itself sets, frames with or that carry state:
/// never a cost header (removing it would break the response).
const RESERVED_HEADERS: [&str; 12] = [
    "connection",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "location",
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
];

impl Validator<'_> {
    pub(super) fn route_cost(&mut self, path: &str, raw: &RawCost) -> Option<RouteCost> {
        let rp = child(path, "reserve");
        let reserve = match given(&raw.reserve) {
            None => {
                self.missing(&rp, " (tokens taken from each bucket before forwarding)");
                None
            }
            Some(s) => self.number(&rp, s, 1, MAX_RESERVE),
        };
        let hp = child(path, "from_response_header");
        let header = self
            .non_empty(&hp, &raw.from_response_header)
            .and_then(|h| {
                let h = h.trim().to_ascii_lowercase();
                if !is_token(&h) {
                    self.error(&hp, format!("{h:?} is not a header name"));
                    return None;
                }
                if RESERVED_HEADERS.contains(&h.as_str()) {
                    self.error(
                        &hp,
                        format!("{h:?} cannot carry the cost: the proxy needs it as it is"),
                    );
                    return None;
                }
                Some(h)
            });
        let op = child(path, "refund_on");
        let mut refund_on = Vec::new();
        for (i, s) in raw.refund_on.iter().flatten().enumerate() {
            let ip = item(&op, i);
            match s.text().as_deref().and_then(StatusMatch::parse) {
                Some(m) if refund_on.contains(&m) => {
                    self.error(&ip, format!("{m} is listed twice"));
                }
                Some(m) => refund_on.push(m),
                None => self.error(
                    &ip,
                    format!("expected 5xx, 4xx or a status code 100-599, got {s}"),
                ),
            }
        }
        const { assert!(MAX_RESERVE < MAX_ACTUAL_COST) };
        Some(RouteCost {
            reserve: reserve?,
            from_response_header: header?,
            refund_on,
        })
    }
}

impl Validator<'_> {
    /// A route's own limits take every request's reservation in place of
    /// their cost: one whose burst (or calendar quota) is below `reserve`
    /// refuses the whole route for ever (the rule the admin API applies to a
    /// cost above a burst, `rules::limits::check_cost_fits`). A plan's burst
    /// is not checked here: which plan (or a key's own limits) a request
    /// spends is known only then, and such a request is answered 429
    /// `cost-over-burst` without `Retry-After`.
    pub(super) fn reserve_fits(&mut self, path: &str, reserve: u64, limits: &[Limit]) {
        for (i, l) in limits.iter().enumerate() {
            if let Err(e) = limit_rules::check_cost_fits(&l.at_cost(reserve)) {
                self.error(
                    &child(path, "reserve"),
                    format!(
                        "reserve {reserve} does not fit the route's limits[{i}] ({:?}): {e}",
                        l.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(cost: &str) -> Result<Config, String> {
        let yaml = format!(
            "upstreams: {{ u: {{ targets: [\"127.0.0.1:9\"] }} }}\nroutes:\n  - {{ name: llm, match: {{ path_prefix: /v1 }}, upstream: u, cost: {cost} }}\n"
        );
        super::super::parse_and_validate(&yaml, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_cost_is_read() {
        let c =
            parse("{ reserve: 10, from_response_header: X-Tollgate-Cost, refund_on: [5xx, 429] }")
                .expect("valid");
        let cost = c.routes[0].cost.as_ref().expect("cost");
        assert_eq!(cost.reserve, 10);
        assert_eq!(cost.from_response_header, "x-tollgate-cost");
        assert!(cost.refunds(503) && cost.refunds(429) && !cost.refunds(404));
        let c = parse("{ reserve: 1, from_response_header: x-cost }").expect("valid");
        assert!(c.routes[0]
            .cost
            .as_ref()
            .expect("cost")
            .refund_on
            .is_empty());
    }

    #[test]
    fn hostile_costs_are_refused_at_their_field() {
        for (cost, needle) in [
            ("{ from_response_header: x }", "reserve"),
            ("{ reserve: 0, from_response_header: x }", "reserve"),
            ("{ reserve: -3, from_response_header: x }", "reserve"),
            ("{ reserve: 1.5, from_response_header: x }", "reserve"),
            (
                "{ reserve: 99999999999999999999, from_response_header: x }",
                "reserve",
            ),
            ("{ reserve: \"10\", from_response_header: x }", "reserve"),
            ("{ reserve: 1 }", "from_response_header"),
            (
                "{ reserve: 1, from_response_header: \"\" }",
                "from_response_header",
            ),
            (
                "{ reserve: 1, from_response_header: \"x cost\" }",
                "from_response_header",
            ),
            (
                "{ reserve: 1, from_response_header: \"x:y\" }",
                "from_response_header",
            ),
            (
                "{ reserve: 1, from_response_header: Content-Length }",
                "from_response_header",
            ),
            (
                "{ reserve: 1, from_response_header: x, refund_on: [6xx] }",
                "refund_on[0]",
            ),
            (
                "{ reserve: 1, from_response_header: x, refund_on: [5xx, 5XX] }",
                "refund_on[1]",
            ),
            (
                "{ reserve: 1, from_response_header: x, refund_on: [99] }",
                "refund_on[0]",
            ),
            (
                "{ reserve: 1, from_response_header: x, refund_on: [~] }",
                "refund_on[0]",
            ),
            (
                "{ reserve: 1, from_response_header: x, refund: [5xx] }",
                "refund",
            ),
            ("[1]", "cost"),
        ] {
            let e = parse(cost).expect_err(cost);
            assert!(e.contains(needle), "{cost}: {e}");
        }
    }

    /// Black-box round 10: a reservation above a route limit's burst was
    /// accepted by `check-config` and reload, and refused every request.
    #[test]
    fn a_reserve_above_a_route_limits_burst_is_refused() {
        let parse = |reserve: u64, limit: &str| {
            let yaml = format!(
                "upstreams: {{ u: {{ targets: [\"127.0.0.1:9\"] }} }}\nroutes:\n  - {{ name: llm, match: {{ path_prefix: /v1 }}, upstream: u, limits: [ {limit} ], cost: {{ reserve: {reserve}, from_response_header: x }} }}\n"
            );
            super::super::parse_and_validate(&yaml, "t.yaml").map_err(|e| e.to_string())
        };
        let bucket = "{ name: o, rate: 5, per: 1s }";
        assert!(parse(5, bucket).is_ok());
        let e = parse(1000, bucket).expect_err("reserve above the burst");
        assert!(
            e.contains("routes[0].cost.reserve")
                && e.contains("reserve 1000 does not fit the route's limits[0] (\"o\")")
                && e.contains("no request could ever be admitted"),
            "{e}"
        );
        let e = parse(8, "{ name: o, rate: 100, per: 1m, burst: 7 }").expect_err("burst 7");
        assert!(e.contains("burst 7"), "{e}");
        let e = parse(50, "{ name: q, quota: 10, period: day }").expect_err("quota 10");
        assert!(e.contains("cost 50 is more than quota 10"), "{e}");
        assert!(parse(10, "{ name: q, quota: 10, period: day }").is_ok());
    }
}
