//! What Tollgate's header edits cost on Pingora's header types: the
//! `upstream_request_filter` edits (remove the key and Tollgate's own
//! headers, add key id, plan, request id and Host) and the `response_filter`
//! edits (render and add `RateLimit-Policy`, `RateLimit`, `X-Request-Id`),
//! as `proxy/src/service.rs` does them, and the same with the values
//! prepared once (what RESULTS.md proposes).
//!
//!     cargo bench --features bench-tools --bench pingora_headers

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pingora::http::{RequestHeader, ResponseHeader};
use tollgate_core::limits::LimitState;
use tollgate_proxy::headers;

const KEY: &str = "tg_0123456789ABCDEFGHIJabcdefghij012345";

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/bench", None).expect("request");
    r.insert_header("Host", "127.0.0.1:21502").expect("host");
    r.insert_header("User-Agent", "wrk").expect("ua");
    r.insert_header("x-api-key", KEY).expect("key");
    r
}

fn response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).expect("response");
    r.insert_header("Server", "nginx").expect("server");
    r.insert_header("Content-Type", "text/plain").expect("ct");
    r.insert_header("Content-Length", "3").expect("cl");
    r.insert_header("Connection", "keep-alive").expect("conn");
    r
}

fn limits() -> Vec<LimitState> {
    vec![LimitState {
        name: "second".into(),
        quota: 1_000_000_000,
        window_secs: 1,
        remaining: 999_999_999,
        reset_secs: 1,
        violated: false,
        retry_after_secs: 0,
    }]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingora headers");
    let key_id = String::from("1");
    let plan = String::from("bench");
    let request_id = String::from("0f9d1c2e3a4b5c6d7e8f90a1b2c3d4e5");
    let host = ("127.0.0.1".to_string(), 21500u16);

    // As service.rs::upstream_request_filter does it today.
    g.bench_function("upstream request edits (as today)", |b| {
        b.iter_batched(
            request,
            |mut r| {
                r.remove_header("x-api-key");
                for h in ["x-tollgate-key-id", "x-tollgate-plan"] {
                    r.remove_header(h);
                }
                r.insert_header("X-Tollgate-Key-Id", key_id.as_str())
                    .expect("insert");
                r.insert_header("X-Tollgate-Plan", plan.as_str())
                    .expect("insert");
                r.insert_header("X-Request-Id", request_id.as_str())
                    .expect("insert");
                let authority = format!("{}:{}", host.0, host.1);
                r.insert_header("Host", authority).expect("insert");
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });

    // The same edits with every value prepared once (per key, plan, target).
    let key_id_v = http::HeaderValue::from_static("1");
    let plan_v = http::HeaderValue::from_static("bench");
    let host_v = http::HeaderValue::from_static("127.0.0.1:21500");
    g.bench_function("upstream request edits (values prepared)", |b| {
        b.iter_batched(
            request,
            |mut r| {
                r.remove_header("x-api-key");
                for h in ["x-tollgate-key-id", "x-tollgate-plan"] {
                    r.remove_header(h);
                }
                r.insert_header("X-Tollgate-Key-Id", key_id_v.clone())
                    .expect("insert");
                r.insert_header("X-Tollgate-Plan", plan_v.clone())
                    .expect("insert");
                r.insert_header("X-Request-Id", request_id.as_str())
                    .expect("insert");
                r.insert_header("Host", host_v.clone()).expect("insert");
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });

    let l = limits();
    g.bench_function("response edits (as today)", |b| {
        b.iter_batched(
            response,
            |mut r| {
                r.insert_header(headers::POLICY, headers::policy(&l))
                    .expect("insert");
                r.insert_header(headers::RATELIMIT, headers::ratelimit(&l))
                    .expect("insert");
                r.insert_header("X-Request-Id", request_id.as_str())
                    .expect("insert");
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });
    let policy_v = http::HeaderValue::from_str(&headers::policy(&l)).expect("value");
    g.bench_function("response edits (policy prepared per plan)", |b| {
        b.iter_batched(
            response,
            |mut r| {
                r.insert_header(headers::POLICY, policy_v.clone())
                    .expect("insert");
                r.insert_header(headers::RATELIMIT, headers::ratelimit(&l))
                    .expect("insert");
                r.insert_header("X-Request-Id", request_id.as_str())
                    .expect("insert");
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("serialize the request head (h1 wire)", |b| {
        let r = request();
        let mut buf = bytes::BytesMut::with_capacity(512);
        b.iter(|| {
            buf.clear();
            r.header_to_h1_wire(&mut buf);
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
