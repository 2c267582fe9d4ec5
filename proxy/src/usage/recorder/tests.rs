use super::*;

fn event(
    key: Option<i64>,
    route: &str,
    outcome: &'static str,
    status: u16,
    latency_us: u64,
) -> UsageEvent<'static> {
    UsageEvent {
        at_ms: 120_500,
        key_id: key,
        route: route.into(),
        method: "GET",
        path: "/api/users",
        client_ip: Some([127, 0, 0, 1].into()),
        status,
        outcome,
        violated: if outcome == outcome::LIMITED {
            vec!["minute", "route"]
        } else {
            vec![]
        },
        reason: "",
        latency_us,
    }
}

#[test]
fn a_key_lists_a_bounded_number_of_violations_per_minute_and_counts_the_rest() {
    let r = UsageRecorder::default();
    let now = tollgate_core::now_ms();
    let limited = |key| UsageEvent {
        at_ms: now,
        ..event(Some(key), "users", outcome::LIMITED, 429, 10)
    };
    for _ in 0..100 {
        r.record(limited(7));
    }
    r.record(limited(8));
    let d = r.drain();
    let per_key = |d: &Drained, k| d.violations.iter().filter(|v| v.key_id == Some(k)).count();
    assert_eq!(per_key(&d, 7), LISTED_PER_KEY_MINUTE as usize);
    assert_eq!(per_key(&d, 8), 1);
    let counted: i64 = d.aggregates.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 100 - i64::from(LISTED_PER_KEY_MINUTE));
    // Usage still counts every refusal.
    let limited_rows: i64 = d.rows.iter().map(|(_, c)| c.limited).sum();
    assert_eq!(limited_rows, 101);
    // The quota holds across flushes within the minute (unless the
    // minute just turned, in which case the key starts afresh).
    r.record(limited(7));
    let d = r.drain();
    if minute_of(tollgate_core::now_ms()) == minute_of(now) {
        assert!(d.violations.is_empty());
        assert_eq!(d.aggregates.len(), 1);
    }
}

#[test]
fn outcomes_are_counted_once_each() {
    let r = UsageRecorder::default();
    r.record(event(Some(1), "users", outcome::ALLOWED, 200, 400));
    r.record(event(Some(1), "users", outcome::ALLOWED, 404, 2_000));
    r.record(event(Some(1), "users", outcome::SHADOW_LIMITED, 200, 100));
    r.record(event(Some(1), "users", outcome::LIMITED, 429, 50));
    r.record(event(Some(1), "users", outcome::UPSTREAM_ERROR, 500, 3_000));
    r.record(event(Some(1), "users", outcome::ALLOWED, 503, 3_000));
    r.record(event(None, "users", outcome::UNAUTHORIZED, 401, 10));
    r.record(event(None, "users", outcome::FORBIDDEN, 403, 2_000_000));
    let d = r.drain();
    assert_eq!(r.held_rows(), 0);
    let rows: HashMap<_, _> = d.rows.into_iter().collect();
    assert_eq!(rows.len(), 2);
    let k1 = rows[&(120_000, 1, Arc::from("users"))];
    assert_eq!((k1.allowed, k1.limited, k1.upstream_errors), (3, 1, 2));
    assert_eq!(k1.total(), 6);
    assert_eq!(k1.latency_sum_us, 400 + 2_000 + 100 + 50 + 6_000);
    assert_eq!(k1.latency_buckets[0], 3);
    assert_eq!(k1.latency_buckets[2], 1);
    assert_eq!(k1.latency_buckets[3], 2);
    let none = rows[&(120_000, 0, Arc::from("users"))];
    assert_eq!((none.unauthorized, none.forbidden), (1, 1));
    assert_eq!(none.latency_buckets[11], 1);

    // The valid key over its limits: one row; the keyless refusals: counts.
    assert_eq!(d.violations.len(), 1);
    assert_eq!(d.violations[0].status, 429);
    assert_eq!(d.violations[0].limit_name.as_deref(), Some("minute,route"));
    assert_eq!(d.violations[0].client_ip, "127.0.0.1");
    let aggs: HashMap<_, _> = d
        .aggregates
        .iter()
        .map(|(k, n)| ((k.status, k.reason.as_str(), k.client_net.as_str()), *n))
        .collect();
    assert_eq!(
        aggs,
        HashMap::from([
            ((401, "unauthorized", "127.0.0.0/24"), 1),
            ((403, "forbidden", "127.0.0.0/24"), 1)
        ])
    );
    assert_eq!(d.last_used, HashMap::from([(1, 120_500)]));
    let t = r.totals();
    assert_eq!((t.requests, t.allowed, t.upstream_errors), (8, 3, 2));
}

#[test]
fn the_proxys_own_503_limiter_unavailable_counts_as_limited_not_a_violation() {
    let r = UsageRecorder::default();
    r.record(event(Some(1), "users", outcome::UNAVAILABLE, 503, 10));
    r.record(event(Some(1), "users", outcome::UNAVAILABLE, 503, 10));
    let d = r.drain();
    let rows: HashMap<_, _> = d.rows.into_iter().collect();
    let k1 = rows[&(120_000, 1, Arc::from("users"))];
    assert_eq!((k1.allowed, k1.limited, k1.upstream_errors), (0, 2, 0));
    assert!(d.violations.is_empty() && d.aggregates.is_empty());
    let t = r.totals();
    assert_eq!((t.limited, t.upstream_errors), (2, 0));
}

#[test]
fn rows_beyond_the_bound_are_dropped() {
    let r = UsageRecorder::default();
    r.set_max_rows(2);
    for key in 1..=4 {
        r.record(event(Some(key), "users", outcome::ALLOWED, 200, 1));
    }
    // Existing rows still count.
    r.record(event(Some(1), "users", outcome::ALLOWED, 200, 1));
    assert_eq!(r.held_rows(), 2);
    let d = r.drain();
    let total: i64 = d.rows.iter().map(|(_, c)| c.total()).sum();
    assert_eq!((d.rows.len(), total), (2, 3));
}

#[test]
fn keyless_refusals_from_many_addresses_are_counted_in_few_rows() {
    let r = UsageRecorder::default();
    for i in 0..2_000u32 {
        let mut e = event(None, "users", outcome::FORBIDDEN, 403, 5);
        e.client_ip = Some([127, 0, (i % 2) as u8, (i % 250) as u8].into());
        e.reason = "invalid-api-key:unknown";
        r.record(e);
        let mut e = event(None, "users", outcome::LIMITED, 429, 5);
        e.reason = "too-many-auth-failures";
        r.record(e);
    }
    let d = r.drain();
    assert!(d.violations.is_empty());
    let mut counts: Vec<(String, String, i64)> = d
        .aggregates
        .into_iter()
        .map(|(k, n)| (k.reason, k.client_net, n))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            (
                "invalid-api-key:unknown".into(),
                "127.0.0.0/24".into(),
                1_000
            ),
            (
                "invalid-api-key:unknown".into(),
                "127.0.1.0/24".into(),
                1_000
            ),
            (
                "too-many-auth-failures".into(),
                "127.0.0.0/24".into(),
                2_000
            ),
        ]
    );
}

#[test]
fn distinct_counts_beyond_the_bound_are_dropped() {
    let r = UsageRecorder::default();
    let routes: Vec<String> = (0..MAX_HELD_AGGREGATES + 10)
        .map(|i| format!("r{i}"))
        .collect();
    for route in &routes {
        r.record(event(None, route, outcome::UNAUTHORIZED, 401, 1));
    }
    assert_eq!(r.drain().aggregates.len(), MAX_HELD_AGGREGATES);
    assert_eq!(r.drain().aggregates.len(), 0);
}

#[test]
fn long_paths_are_cut_at_a_character_boundary() {
    let s = truncated("é".repeat(400), MAX_PATH);
    assert!(s.len() <= MAX_PATH && s.chars().all(|c| c == 'é'));
}
