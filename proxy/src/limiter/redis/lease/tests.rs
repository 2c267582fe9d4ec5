//! Lease sizing and the lease store, on plain values (no sockets): the
//! script's arithmetic is [`super::model::script`], compared with the real
//! script in `proxy/tests/redis_leases.rs`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tollgate_core::limits::Limit;

use super::model;
use super::*;
use crate::limiter::redis::script::decide_from_replies;
use crate::limiter::Scope;

fn bucket(name: &str, rate: u64, per: Duration, burst: u64, cost: u64) -> Bucket {
    Bucket::new(
        Scope::Key,
        Limit {
            name: name.into(),
            rate,
            per,
            burst: Some(burst),
            cost: Some(cost),
            quota: None,
            scope: Default::default(),
        },
    )
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn grant_is_large_far_below_the_limit_and_the_cost_near_it() {
    // Far below: what the proxy wants, up to a quarter of what is left.
    assert_eq!(grant(10_000, 1, 64), Some(64));
    assert_eq!(grant(100, 1, 64), Some(25));
    // Near the limit: exactly the cost.
    assert_eq!(grant(7, 1, 64), Some(1));
    assert_eq!(grant(1, 1, 64), Some(1));
    assert_eq!(grant(0, 1, 64), None);
    // No lease wanted: the cost.
    assert_eq!(grant(10_000, 3, 3), Some(3));
    assert_eq!(grant(10_000, 3, 0), Some(3));
    // A multiple of the cost, never more than is there.
    assert_eq!(grant(10_000, 3, 64), Some(63));
    assert_eq!(grant(20, 3, 64), Some(3));
    assert_eq!(grant(2, 3, 64), None);
    // Returning only (cost 0) takes nothing.
    assert_eq!(grant(10, 0, 0), Some(0));
    assert_eq!(grant(0, 0, 5), Some(0));
    for avail in 0..200 {
        for cost in 0..5 {
            for want in 0..100 {
                if let Some(g) = grant(avail, cost, want) {
                    assert!(g <= avail && g >= cost, "{avail} {cost} {want}: {g}");
                    assert!(cost == 0 || g % cost == 0);
                    assert!(g <= want.max(cost));
                }
            }
        }
    }
}

#[test]
fn want_doubles_when_a_lease_runs_out_early_and_halves_when_it_expires() {
    assert_eq!(next_want(1, 1, 1000, true), 2);
    assert_eq!(next_want(600, 1, 1000, true), 1000);
    assert_eq!(next_want(u64::MAX, 1, u64::MAX, true), u64::MAX);
    assert_eq!(next_want(64, 1, 1000, false), 32);
    assert_eq!(next_want(1, 1, 1000, false), 1);
    assert_eq!(next_want(1, 3, 1000, false), 3);
    assert_eq!(next_want(100, 3, 2, true), 3, "cost above the cap");
}

#[test]
fn cap_is_the_burst() {
    let a = ScriptArgs::new(&bucket("s", 1000, Duration::from_secs(1), 5000, 1).limit);
    assert_eq!(cap(&a), 5000);
    let a = ScriptArgs::new(&bucket("h", 1, Duration::from_secs(3600), 1, 1).limit);
    assert_eq!(cap(&a), 1);
}

/// One proxy's request against the model bucket: from its lease, else one
/// script call. Returns the decision.
fn request(
    leases: &Leases,
    tats: &mut [u64],
    subject: &Subject,
    buckets: &[&Bucket],
    now_us: u64,
    now: Instant,
) -> Decision {
    if let Some(d) = leases.try_take(subject, buckets, now) {
        return d;
    }
    let args: Vec<ScriptArgs> = buckets.iter().map(|b| ScriptArgs::new(&b.limit)).collect();
    let asked = leases.checkout(subject, buckets, &args, now);
    let replies = model::script(tats, now_us, &args, &asked);
    let (d, _) = decide_from_replies(buckets, &args, &replies);
    if d.allowed {
        leases.store(subject, buckets, &args, &asked, &replies, now);
    }
    d
}

#[test]
fn a_hot_key_is_served_from_leases_and_reports_the_exact_view() {
    let leases = Leases::new(200 * MS);
    let exact = Leases::new(Duration::ZERO);
    // 1000 per hour, burst 1000: no refill to speak of within the test.
    let b = bucket("h", 1000, Duration::from_secs(3600), 1000, 1);
    let (k, t0, us0) = (Subject::Key(1), Instant::now(), 1_000_000_000u64);
    let (mut tats, mut exact_tats) = (vec![0u64], vec![0u64]);
    let mut calls = 0;
    for i in 0..400u64 {
        let now = t0 + Duration::from_micros(i * 100);
        let now_us = us0 + i * 100;
        let before = tats[0];
        let d = request(&leases, &mut tats, &k, &[&b], now_us, now);
        if tats[0] != before {
            calls += 1;
        }
        let e = request(&exact, &mut exact_tats, &k, &[&b], now_us, now);
        assert!(d.allowed && e.allowed, "request {i}");
        // What the client is told is what it is told without leases.
        assert_eq!(d.limits[0].remaining, e.limits[0].remaining, "request {i}");
        assert!(d.limits[0].reset_secs.abs_diff(e.limits[0].reset_secs) <= 1);
    }
    assert!(calls <= 12, "{calls} script calls for 400 requests");
    assert!(leases.hits() >= 388, "{}", leases.hits());
    assert_eq!(exact.hits(), 0);
    // Redis holds this proxy's lease as taken; it comes back after expiry.
    let held = leases.outstanding();
    assert!(held > 0);
    let taken = |tats: &[u64], now_us: u64| tats[0].saturating_sub(now_us).div_ceil(3_600_000);
    let now_us = us0 + 400 * 100;
    assert_eq!(taken(&tats, now_us), 400 + held);
    let later = t0 + Duration::from_millis(500);
    assert!(leases.drain_expired(t0, 100 * MS).is_empty(), "not yet");
    let back = leases.drain_expired(later, 100 * MS);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1[0].tokens, held);
    assert_eq!(leases.outstanding(), 0);
    assert!(leases.is_empty());
    let a = [ScriptArgs {
        cost: 0,
        ..ScriptArgs::new(&b.limit)
    }];
    model::script(&mut tats, now_us, &a, &[LeaseArgs { ret: held, want: 0 }]);
    assert_eq!(taken(&tats, now_us), 400);
}

#[test]
fn an_expired_lease_is_returned_with_the_next_call_and_shrinks() {
    let leases = Leases::new(100 * MS);
    let b = bucket("h", 1000, Duration::from_secs(3600), 1000, 1);
    let (k, t0) = (Subject::Key(2), Instant::now());
    let args = [ScriptArgs::new(&b.limit)];
    // No lease yet: exactly the cost.
    assert_eq!(
        leases.checkout(&k, &[&b], &args, t0).as_slice(),
        &[LeaseArgs { ret: 0, want: 1 }]
    );
    let reply = |granted: u64| BucketReply {
        allowed: true,
        remaining: 1000 - granted,
        reset_us: granted * 3_600_000,
        retry_us: Some(0),
        granted,
    };
    leases.store(
        &k,
        &[&b],
        &args,
        &[LeaseArgs { ret: 0, want: 16 }],
        &[reply(16)],
        t0,
    );
    assert_eq!(leases.outstanding(), 15);
    for _ in 0..5 {
        assert!(leases.try_take(&k, &[&b], t0 + 10 * MS).is_some());
    }
    assert_eq!(leases.outstanding(), 10);
    // Expired: not spent any more; the next call gives it back, asks for less.
    assert!(leases.try_take(&k, &[&b], t0 + 100 * MS).is_none());
    let asked = leases.checkout(&k, &[&b], &args, t0 + 100 * MS);
    assert_eq!(asked.as_slice(), &[LeaseArgs { ret: 10, want: 8 }]);
    assert_eq!(leases.outstanding(), 0);
    // Ran out before expiring: the next call asks for more.
    leases.store(&k, &[&b], &args, &asked, &[reply(8)], t0 + 100 * MS);
    for _ in 0..7 {
        assert!(leases.try_take(&k, &[&b], t0 + 110 * MS).is_some());
    }
    assert!(leases.try_take(&k, &[&b], t0 + 110 * MS).is_none());
    let asked = leases.checkout(&k, &[&b], &args, t0 + 110 * MS);
    assert_eq!(asked.as_slice(), &[LeaseArgs { ret: 0, want: 16 }]);
}

#[test]
fn a_changed_limit_is_not_served_from_an_older_lease() {
    let leases = Leases::new(100 * MS);
    let b = bucket("h", 1000, Duration::from_secs(3600), 1000, 1);
    let (k, t0) = (Subject::Key(3), Instant::now());
    let args = [ScriptArgs::new(&b.limit)];
    let r = BucketReply {
        allowed: true,
        remaining: 984,
        reset_us: 16 * 3_600_000,
        retry_us: Some(0),
        granted: 16,
    };
    leases.store(
        &k,
        &[&b],
        &args,
        &[LeaseArgs { ret: 0, want: 16 }],
        &[r],
        t0,
    );
    let lowered = bucket("h", 10, Duration::from_secs(3600), 10, 1);
    assert_eq!(lowered.id, b.id);
    assert!(leases.try_take(&k, &[&lowered], t0).is_none());
    let a2 = [ScriptArgs::new(&lowered.limit)];
    // Dropped, not returned in the new units.
    assert_eq!(
        leases.checkout(&k, &[&lowered], &a2, t0).as_slice(),
        &[LeaseArgs { ret: 0, want: 1 }]
    );
    assert_eq!(leases.outstanding(), 0);
}

#[test]
fn a_request_is_served_from_leases_only_if_every_bucket_has_one() {
    let leases = Leases::new(100 * MS);
    let plan = bucket("plan", 1000, Duration::from_secs(3600), 1000, 1);
    let route = Bucket::new(
        Scope::Route("r"),
        Limit {
            name: "route".into(),
            rate: 5,
            per: Duration::from_secs(3600),
            burst: Some(5),
            cost: Some(2),
            quota: None,
            scope: Default::default(),
        },
    );
    let (k, t0, us0) = (Subject::Key(4), Instant::now(), 1_000_000_000u64);
    let mut tats = vec![0u64, 0];
    let mut admitted = 0;
    for i in 0..50u64 {
        let d = request(
            &leases,
            &mut tats,
            &k,
            &[&plan, &route],
            us0 + i * 10,
            t0 + Duration::from_micros(i * 10),
        );
        admitted += u64::from(d.allowed);
    }
    // The route's burst of 5 at cost 2: two requests, whatever was leased.
    assert_eq!(admitted, 2);
}

/// Two proxies, any interleaving of their requests, idle gaps and
/// background returns on one model bucket pair: admissions never exceed
/// `burst + rate × t`, and tokens are never created (admitted + held in
/// leases + left in the bucket ≤ burst + refill).
#[derive(Debug, Clone)]
struct Event {
    proxy: usize,
    gap_us: u64,
    /// 0: that proxy's background return; 1: plan bucket only; 2: both.
    kind: u8,
}

fn event() -> impl Strategy<Value = Event> {
    (
        0..2usize,
        prop_oneof![0..200u64, 0..5_000u64, 0..400_000u64],
        0..8u8,
    )
        .prop_map(|(proxy, gap_us, k)| Event {
            proxy,
            gap_us,
            kind: match k {
                0 => 0,
                1..=5 => 1,
                _ => 2,
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn two_proxies_with_leases_never_admit_more_than_the_bucket(
        rate in 1u64..2_000,
        per_ms in prop_oneof![Just(1_000u64), Just(60_000u64), 1u64..5_000],
        burst in 1u64..300,
        cost in 1u64..4,
        route_rate in 1u64..500,
        ttl_ms in 10u64..500,
        events in proptest::collection::vec(event(), 1..400),
    ) {
        let plan = bucket("plan", rate, Duration::from_millis(per_ms), burst, cost);
        let route = Bucket::new(Scope::Route("r"), Limit {
            name: "route".into(),
            rate: route_rate,
            per: Duration::from_secs(1),
            burst: None,
            cost: None,
            quota: None,
            scope: Default::default(),
        });
        let ttl = Duration::from_millis(ttl_ms);
        let proxies = [Leases::new(ttl), Leases::new(ttl)];
        let k = Subject::Key(9);
        let (t0, us0) = (Instant::now(), 1_000_000_000_000u64);
        let mut tats = vec![0u64, 0u64];
        let (pa, ra) = (ScriptArgs::new(&plan.limit), ScriptArgs::new(&route.limit));
        let mut admitted = [0u64, 0u64];
        let mut elapsed = 0u64;
        for e in &events {
            elapsed += e.gap_us;
            let (now, now_us) = (t0 + Duration::from_micros(elapsed), us0 + elapsed);
            let leases = &proxies[e.proxy];
            match e.kind {
                0 => {
                    for (_, back) in leases.drain_expired(now, Duration::ZERO) {
                        let mut args = Vec::new();
                        let mut ret = Vec::new();
                        let mut idx = Vec::new();
                        for r in back {
                            let i = usize::from(r.bucket.id != plan.id);
                            idx.push(i);
                            args.push(ScriptArgs { cost: 0, ..ScriptArgs::new(&r.bucket.limit) });
                            ret.push(LeaseArgs { ret: r.tokens, want: 0 });
                        }
                        let mut sub: Vec<u64> = idx.iter().map(|&i| tats[i]).collect();
                        model::script(&mut sub, now_us, &args, &ret);
                        for (j, &i) in idx.iter().enumerate() {
                            tats[i] = sub[j];
                        }
                    }
                }
                1 => {
                    let mut sub = vec![tats[0]];
                    let d = request(leases, &mut sub, &k, &[&plan], now_us, now);
                    tats[0] = sub[0];
                    if d.allowed {
                        admitted[0] += 1;
                    }
                }
                _ => {
                    let d = request(leases, &mut tats, &k, &[&plan, &route], now_us, now);
                    if d.allowed {
                        admitted[0] += 1;
                        admitted[1] += 1;
                    }
                }
            }
            // Per bucket: admissions × cost ≤ burst + refill since the start.
            for (i, a) in [(0, &pa), (1, &ra)] {
                let cost = if i == 0 { a.cost } else { 1 };
                let bound_us = a.burst * a.interval_us + elapsed;
                prop_assert!(
                    admitted[i] * cost * a.interval_us <= bound_us,
                    "bucket {i}: {} admitted × {cost} > burst {} + {elapsed} µs / {}",
                    admitted[i], a.burst, a.interval_us
                );
                // Nothing created: in the bucket + held in leases + spent.
                let in_bucket = (a.burst * a.interval_us)
                    .saturating_sub(tats[i].saturating_sub(now_us)) / a.interval_us;
                let id = if i == 0 { plan.id } else { route.id };
                let held: u64 = proxies.iter().map(|p| p.held(&k, id)).sum();
                prop_assert!(
                    (admitted[i] * cost + held + in_bucket) * a.interval_us
                        <= bound_us + a.interval_us,
                    "bucket {i}: tokens created: {} admitted, {held} held, {in_bucket} in the bucket",
                    admitted[i]
                );
            }
        }
    }
}
