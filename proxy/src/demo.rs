//! The demo upstream `tollgate dev` runs: a tiny JSON shop API (`/users`,
//! `/products`, `/orders`, `/health`). Every answer also echoes what the
//! upstream received (`request`: method, path, headers), which shows what the
//! proxy forwards. `/status/{code}` and `/slow/{ms}` help exercise failures.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Serve the demo API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("demo upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            // Everything the proxy forwards: its 256 fields plus the ones
            // it adds (hyper's default is 100).
            let conn = hyper::server::conn::http1::Builder::new()
                .max_headers(512)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            if let Err(e) = conn.await {
                tracing::debug!("demo upstream connection: {e}");
            }
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let echo = json!({
        "method": method.as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
            .collect::<serde_json::Map<String, Value>>(),
    });
    // Drain the body so keep-alive works.
    let _ = req.into_body().collect().await;
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, data) = match (method.as_str(), segments.as_slice()) {
        (_, ["health"]) => (StatusCode::OK, json!({"status": "ok"})),
        ("GET", ["users"]) => (StatusCode::OK, users()),
        ("GET", ["users", id]) => find(users(), id),
        ("GET", ["products"]) => (StatusCode::OK, products()),
        ("GET", ["products", id]) => find(products(), id),
        ("GET", ["orders"]) => (StatusCode::OK, orders()),
        ("GET", ["orders", id]) => find(orders(), id),
        ("POST", ["users" | "orders" | "products"]) => {
            (StatusCode::CREATED, json!({"id": 1000, "created": true}))
        }
        (_, ["status", code]) => (
            code.parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST),
            json!({"status": code}),
        ),
        (_, ["slow", ms]) => {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, json!({"slept_ms": ms}))
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
    };
    let body = json!({"data": data, "request": echo}).to_string();
    let resp = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(resp)
}

fn find(list: Value, id: &str) -> (StatusCode, Value) {
    let found = list.as_array().and_then(|items| {
        items
            .iter()
            .find(|i| i["id"].as_i64().is_some_and(|n| n.to_string() == id))
            .cloned()
    });
    match found {
        Some(item) => (StatusCode::OK, item),
        None => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

fn users() -> Value {
    json!([
        {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
        {"id": 2, "name": "Grace Hopper", "email": "grace@example.com"},
        {"id": 3, "name": "Alan Turing", "email": "alan@example.com"}
    ])
}

fn products() -> Value {
    json!([
        {"id": 1, "name": "Mechanical keyboard", "price_cents": 12900, "stock": 14},
        {"id": 2, "name": "USB-C cable", "price_cents": 990, "stock": 250},
        {"id": 3, "name": "27\" monitor", "price_cents": 32900, "stock": 3}
    ])
}

fn orders() -> Value {
    json!([
        {"id": 1, "user_id": 1, "product_id": 2, "quantity": 3, "status": "shipped"},
        {"id": 2, "user_id": 2, "product_id": 1, "quantity": 1, "status": "processing"}
    ])
}
