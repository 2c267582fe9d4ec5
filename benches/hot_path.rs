//! Microbenchmarks of the request path's in-process steps, each alone and all
//! together:
//!
//! - route matching among 100 routes (`Router::find`, the compiled config);
//! - key parse (format + checksum + SHA-256) and lookup among 1 M keys;
//! - `RateLimit-Policy` / `RateLimit` header rendering and the 429 answer;
//! - the whole in-process decision: route → key → applicable limits → local
//!   limiter → headers (what `request_filter` computes besides Pingora I/O,
//!   metrics and usage recording; reading the header itself is left out).
//!
//!     cargo bench --bench hot_path
//!
//! Results and the command that produced them go to benches/RESULTS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_core::config;
use tollgate_core::db::{ApiKey, KeyRecord};
use tollgate_core::keys::{self, KeyHash};
use tollgate_core::limits::{Decision, LimitState};
use tollgate_proxy::answer;
use tollgate_proxy::headers;
use tollgate_proxy::keyset::KeySet;
use tollgate_proxy::limiter::{LocalLimiter, Subject};
use tollgate_proxy::router::RouteMatch;
use tollgate_proxy::state::{self, ConfigState, DbState};

const KEYS: usize = 1_000_000;
/// Keys whose plain text the benchmarks present (the rest only exist as hashes).
const PRESENTED: usize = 1024;

/// A config with 100 routes: 50 services and 50 nested `/items` routes.
fn config_100_routes() -> ConfigState {
    let mut yaml = String::from(
        "proxy: { listen: \"127.0.0.1:18080\", threads: 1 }\n\
         storage: { database_url: \"sqlite::memory:\" }\n\
         plans:\n  \
           pro: { limits: [ { name: second, rate: 1000000000, per: 1s }, \
                            { name: day, rate: 1000000000, per: 1d } ] }\n\
         upstreams:\n  up: { targets: [\"127.0.0.1:9\"] }\n\
         routes:\n",
    );
    for i in 0..50 {
        yaml.push_str(&format!(
            "  - {{ name: s{i}, match: {{ path_prefix: /api/v1/s{i}, methods: [GET, POST] }}, \
             upstream: up, auth: api_key, default_plan: pro }}\n\
             \x20 - {{ name: s{i}-items, match: {{ path_prefix: /api/v1/s{i}/items }}, \
             upstream: up, auth: api_key, default_plan: pro, \
             limits: [ {{ name: route, rate: 1000000000, per: 1s }} ] }}\n"
        ));
    }
    let cfg = match config::parse(&yaml, "bench.yaml") {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e:?}"),
    };
    assert_eq!(cfg.routes.len(), 100);
    ConfigState::compile(cfg, None)
}

fn record(id: i64, hash: KeyHash, plan: Option<&str>) -> KeyRecord {
    KeyRecord {
        key: ApiKey {
            id,
            name: format!("key-{id}"),
            owner: None,
            metadata: serde_json::Value::Null,
            plan: plan.map(str::to_string),
            limits: None,
            concurrency: None,
            scopes: None,
            allowed_ips: None,
            enabled: true,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            key_prefix: String::new(),
            identity_id: None,
        },
        hash,
        previous: None,
    }
}

/// 1 M keys; the first `PRESENTED` are real generated keys whose plain text is returned.
fn key_set() -> (KeySet, Vec<String>) {
    let mut plains = Vec::with_capacity(PRESENTED);
    let mut records = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let id = i as i64 + 1;
        if i < PRESENTED {
            let k = keys::generate().expect("rng");
            records.push(record(id, k.hash, Some("pro")));
            plains.push(k.plain);
        } else {
            records.push(record(
                id,
                keys::hash(&format!("synthetic-{i}")),
                Some("pro"),
            ));
        }
    }
    (KeySet::from_records(records), plains)
}

fn state(name: &str, quota: u64) -> LimitState {
    LimitState {
        name: name.into(),
        quota,
        window_secs: 60,
        remaining: quota / 2,
        reset_secs: 30,
        violated: false,
        retry_after_secs: 0,
    }
}

fn bench_router(c: &mut Criterion, cfg: &ConfigState) {
    let mut g = c.benchmark_group("router (100 routes)");
    // Longest prefixes are tried first: a nested route is found early, a
    // service route after the 50 nested ones, a miss after all 100.
    for (label, path, method) in [
        ("nested route", "/api/v1/s49/items/7", "GET"),
        ("service route", "/api/v1/s0/orders/7", "GET"),
        ("not found", "/other/path", "GET"),
        ("method not allowed", "/api/v1/s3/x", "DELETE"),
    ] {
        g.bench_function(label, |b| {
            b.iter(
                || match cfg.router.find(black_box(path), black_box(method)) {
                    RouteMatch::Found(r) => black_box(Arc::as_ptr(r) as usize),
                    RouteMatch::MethodNotAllowed(m) => black_box(m.len()),
                    RouteMatch::NotFound => 0,
                },
            )
        });
    }
    g.finish();
}

fn bench_keys(c: &mut Criterion, set: &KeySet, plains: &[String]) {
    let mut g = c.benchmark_group("key (1M loaded)");
    let mut i = 0usize;
    g.bench_function("parse (format, checksum, SHA-256)", |b| {
        b.iter(|| {
            i = (i + 1) % plains.len();
            black_box(keys::parse(black_box(&plains[i])).ok())
        })
    });
    let hashes: Vec<KeyHash> = plains.iter().map(|p| keys::hash(p)).collect();
    let now = tollgate_core::now_ms();
    g.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 1) % hashes.len();
            black_box(set.lookup(black_box(&hashes[i]), now).map(|k| k.id).ok())
        })
    });
    g.bench_function("parse + lookup", |b| {
        b.iter(|| {
            i = (i + 1) % plains.len();
            let found = keys::parse(black_box(&plains[i]))
                .ok()
                .and_then(|h| set.lookup(&h, now).ok().map(|k| k.id));
            black_box(found)
        })
    });
    let mut typo = plains[0].clone().into_bytes();
    typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    g.bench_function("malformed key refused (checksum)", |b| {
        b.iter(|| black_box(keys::parse(black_box(&typo)).is_err()))
    });
    g.finish();
}

fn bench_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    let one = vec![state("second", 50)];
    let three = vec![
        state("second", 50),
        state("day", 100_000),
        state("route", 10),
    ];
    g.bench_function("policy + ratelimit, 1 limit", |b| {
        b.iter(|| {
            let p = headers::policy(black_box(&one));
            let r = headers::ratelimit(black_box(&one));
            black_box(p.len() + r.len())
        })
    });
    g.bench_function("policy + ratelimit, 3 limits", |b| {
        b.iter(|| {
            let p = headers::policy(black_box(&three));
            let r = headers::ratelimit(black_box(&three));
            black_box(p.len() + r.len())
        })
    });
    let mut refused = three.clone();
    refused[2].violated = true;
    refused[2].remaining = 0;
    refused[2].retry_after_secs = 1;
    let decision = Decision {
        allowed: false,
        limits: refused.into(),
    };
    g.bench_function("429 answer (problem+json + headers), 3 limits", |b| {
        b.iter(|| {
            let a = answer::quota_exceeded(black_box(&decision));
            black_box(a.body.len() + a.headers.len())
        })
    });
    g.finish();
}

fn bench_decision(c: &mut Criterion, cfg: &ConfigState, db: &DbState, plains: &[String]) {
    let limiter = LocalLimiter::default();
    let now = tollgate_core::now_ms();
    let mut i = 0usize;
    let mut g = c.benchmark_group("whole decision");
    g.bench_function("route + key + 3 limits + headers (admitted)", |b| {
        b.iter(|| {
            i = (i + 1) % 64;
            let RouteMatch::Found(route) = cfg.router.find("/api/v1/s7/items/9", "GET") else {
                return 0;
            };
            let Ok(hash) = keys::parse(&plains[i]) else {
                return 0;
            };
            let Ok(key) = db.keys.lookup(&hash, now) else {
                return 0;
            };
            let applicable = state::applicable(route, Some(key), cfg, db);
            let d = limiter.check(&Subject::Key(key.id), &applicable.buckets);
            let p = headers::policy(&d.limits);
            let r = headers::ratelimit(&d.limits);
            black_box(p.len() + r.len() + usize::from(d.allowed))
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let cfg = config_100_routes();
    bench_router(c, &cfg);
    let (set, plains) = key_set();
    bench_keys(c, &set, &plains);
    bench_headers(c);
    let db = DbState::new(set, Vec::new());
    bench_decision(c, &cfg, &db, &plains);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
