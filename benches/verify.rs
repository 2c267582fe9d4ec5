//! The verify API's in-process work (issue #21 item 3: "well under a
//! millisecond locally"): parsing a request body and the whole decision
//! (route, key lookup, scopes, applicable limits, local limiter) on the
//! proxy's state, without the HTTP listener. The listener adds one HTTP/1
//! exchange on a kept-alive connection; measure that end to end with a load
//! generator (README, "Verify API").
//!
//!     cargo bench --bench verify

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_core::config;
use tollgate_core::db::{ApiKey, KeyRecord};
use tollgate_core::keys;
use tollgate_proxy::keyset::KeySet;
use tollgate_proxy::limiter::backends::Limiters;
use tollgate_proxy::limiter::LocalLimiter;
use tollgate_proxy::state::{ConfigState, DbState, State};
use tollgate_proxy::verify::{check, request};

const YAML: &str = "proxy: { listen: \"127.0.0.1:18080\", threads: 1 }\n\
    storage: { database_url: \"sqlite::memory:\" }\n\
    plans:\n  pro: { limits: [ { name: second, rate: 1000000000, per: 1s } ] }\n\
    upstreams:\n  up: { targets: [\"127.0.0.1:9\"] }\n\
    routes:\n  - { name: users, match: { path_prefix: /users }, upstream: up, \
    limits: [ { name: route, rate: 1000000000, per: 1s } ] }\n";

fn bench_verify(c: &mut Criterion) {
    let cfg = match config::parse(YAML, "bench.yaml") {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e:?}"),
    };
    let k = keys::generate().expect("rng");
    let record = KeyRecord {
        key: ApiKey {
            id: 1,
            name: "bench".into(),
            owner: None,
            metadata: serde_json::Value::Null,
            plan: Some("pro".into()),
            limits: None,
            concurrency: None,
            scopes: None,
            allowed_ips: None,
            identity_id: None,
            enabled: true,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            key_prefix: String::new(),
        },
        hash: k.hash,
        previous: None,
    };
    let state = State::new(
        ConfigState::compile(cfg, None),
        DbState::new(KeySet::from_records(vec![record]), Vec::new()),
    );
    let limiters = Limiters::new(Arc::new(LocalLimiter::default()));
    let body = format!(
        r#"{{"key":"{}","route":"users","method":"GET","ip":"203.0.113.7"}}"#,
        k.plain
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("verify");
    g.bench_function("parse body", |b| {
        b.iter(|| request::parse(black_box(body.as_bytes())).map(|r| r.cost))
    });
    g.bench_function("parse + decide (local limiter)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let req = match request::parse(black_box(body.as_bytes())) {
                    Ok(r) => r,
                    Err(_) => panic!("body"),
                };
                let cfg = state.config.load_full();
                let db = state.db.load_full();
                let route = check::route_named(&cfg, "users").ok();
                let c = check::check(&state, &limiters, &cfg, &db, route.as_deref(), &req).await;
                black_box(c.code)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
