//! Microbenchmarks of the in-process limiter decision (the bar: ≤ 100 ns).
//!
//!     cargo bench --bench limiter
//!
//! Results and the command that produced them go to benches/RESULTS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_core::limits::Limit;
use tollgate_proxy::limiter::{Bucket, LocalLimiter, Scope, Subject};

fn limit(name: &str, rate: u64, per: u64) -> Limit {
    Limit {
        name: name.into(),
        rate,
        per: Duration::from_secs(per),
        burst: None,
        cost: None,
        quota: None,
        scope: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let limiter = LocalLimiter::default();
    let one = [Bucket::new(Scope::Key, limit("second", 1_000_000_000, 1))];
    let three = [
        Bucket::new(Scope::Key, limit("second", 1_000_000_000, 1)),
        Bucket::new(Scope::Key, limit("day", 1_000_000_000, 86_400)),
        Bucket::new(Scope::Route("users"), limit("route", 1_000_000_000, 1)),
    ];
    let one_refs: Vec<&Bucket> = one.iter().collect();
    let three_refs: Vec<&Bucket> = three.iter().collect();

    // The decision as the request path makes it: at an instant the caller
    // read once for it and for its timing metric (`check_at_instant`).
    let mut at = std::time::Instant::now();
    c.bench_function("local: hot key, 1 limit", |b| {
        b.iter(|| {
            at += std::time::Duration::from_micros(1);
            black_box(limiter.check_at_instant(&Subject::Key(1), black_box(&one_refs), at))
        })
    });
    // The same with the limiter reading the clock itself (`check`).
    c.bench_function("local: hot key, 1 limit, clock read", |b| {
        b.iter(|| black_box(limiter.check(&Subject::Key(3), black_box(&one_refs))))
    });
    c.bench_function("local: hot key, 3 limits", |b| {
        b.iter(|| black_box(limiter.check(&Subject::Key(2), black_box(&three_refs))))
    });

    let many = LocalLimiter::default();
    const KEYS: i64 = 1_000_000;
    for k in 0..KEYS {
        many.check(&Subject::Key(k), &one_refs);
    }
    let mut k = 0i64;
    c.bench_function("local: 1M distinct keys, 1 limit", |b| {
        b.iter(|| {
            k = (k + 7919) % KEYS;
            black_box(many.check(&Subject::Key(k), black_box(&one_refs)))
        })
    });
    drop(many);

    let many3 = LocalLimiter::default();
    for k in 0..KEYS {
        many3.check(&Subject::Key(k), &three_refs);
    }
    c.bench_function("local: 1M distinct keys, 3 limits", |b| {
        b.iter(|| {
            k = (k + 7919) % KEYS;
            black_box(many3.check(&Subject::Key(k), black_box(&three_refs)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
