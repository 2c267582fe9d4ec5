//! Memory probe (the bar: 1 M keys held in ≤ 300 MB).
//!
//!     cargo bench --bench memory
//!
//! Loads 1 M keys into a `KeySet` and gives 1 M subjects three token buckets
//! each in the `LocalLimiter`, and reports resident memory (VmRSS from
//! /proc/self/status). Each part runs in a fresh child process with
//! `MIMALLOC_PURGE_DELAY=0`, so pages the allocator freed (the transient
//! key records) are returned at once and do not count; same global allocator
//! as the `tollgate` binary (mimalloc).
//!
//! The compact layouts this probe once prototyped are now the real ones
//! (`proxy/src/keyset.rs`: 128-bit hash prefix index, shared plan names;
//! `proxy/src/limiter/local.rs`: 32-bit bucket slots beside the TATs).

use std::process::{Command, ExitCode};
use std::time::Duration;

use tollgate_core::db::{ApiKey, KeyRecord};
use tollgate_core::keys;
use tollgate_core::limits::Limit;
use tollgate_proxy::keyset::KeySet;
use tollgate_proxy::limiter::{Bucket, LocalLimiter, Scope, Subject};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: i64 = 1_000_000;
const BAR_MB: f64 = 300.0;
const PART_ENV: &str = "TOLLGATE_MEMPROBE_PART";

/// Resident memory in MB (VmRSS), 0 if unreadable.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// RSS after the allocator had a moment to purge what was freed.
fn settled_rss_mb() -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    // A small allocation lets mimalloc run its deferred purge.
    drop(std::hint::black_box(vec![0u8; 64]));
    rss_mb()
}

/// A key as the database layer hands it to the proxy.
fn record(id: i64) -> KeyRecord {
    let plain = format!("tg_synthetic_key_{id:032}");
    KeyRecord {
        key: ApiKey {
            id,
            name: format!("customer-{id}"),
            owner: None,
            metadata: serde_json::Value::Null,
            plan: Some("pro".into()),
            limits: None,
            concurrency: None,
            scopes: None,
            allowed_ips: None,
            enabled: true,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            key_prefix: keys::display_prefix(&plain),
            identity_id: None,
        },
        hash: keys::hash(&plain),
        previous: None,
    }
}

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

fn buckets() -> [Bucket; 3] {
    [
        Bucket::new(Scope::Key, limit("second", 50, 1)),
        Bucket::new(Scope::Key, limit("day", 100_000, 86_400)),
        Bucket::new(Scope::Route("users"), limit("route", 10, 1)),
    ]
}

// --- parts ------------------------------------------------------------------

/// Runs in the child: one part, prints `RESULT part=… mb=…` last.
fn run_part(part: &str) -> ExitCode {
    let base = rss_mb();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut items = 0usize;
    if part == "keys" || part == "both" {
        let set = KeySet::from_records((1..=KEYS).map(record).collect());
        items = set.len();
        held.push(Box::new(set));
    }
    if part == "limiter" || part == "both" {
        let limiter = LocalLimiter::default();
        let b = buckets();
        let refs: Vec<&Bucket> = b.iter().collect();
        for id in 1..=KEYS {
            limiter.check(&Subject::Key(id), &refs);
        }
        items = items.max(limiter.len());
        held.push(Box::new(limiter));
    }
    if held.is_empty() {
        eprintln!("unknown part {part}");
        return ExitCode::FAILURE;
    }
    let after = settled_rss_mb();
    println!(
        "RESULT part={part} items={items} base_mb={base:.1} after_mb={after:.1} mb={:.1}",
        after - base
    );
    drop(held);
    ExitCode::SUCCESS
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn main() -> ExitCode {
    if let Ok(part) = std::env::var(PART_ENV) {
        return run_part(&part);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("memory probe: 1M keys, 1M limiter subjects × 3 buckets (VmRSS, each part in a fresh process)");
    println!("{:<58} {:>8}", "part", "MB");
    let mut both = None;
    for (part, label) in [
        ("keys", "KeySet, 1M keys (proxy/src/keyset.rs)"),
        ("limiter", "LocalLimiter, 1M subjects × 3 buckets"),
        ("both", "both: 1M keys with buckets (the bar)"),
    ] {
        let out = Command::new(&exe)
            .env(PART_ENV, part)
            .env("MIMALLOC_PURGE_DELAY", "0")
            .output();
        let line = match &out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("RESULT"))
                .map(str::to_string),
            _ => None,
        };
        let Some(mb) = line.as_deref().and_then(|l| field(l, "mb")) else {
            eprintln!("part {part} failed: {out:?}");
            return ExitCode::FAILURE;
        };
        println!("{label:<58} {mb:>8.1}");
        if part == "both" {
            both = Some(mb);
        }
    }
    if let Some(total) = both {
        println!(
            "1M keys with buckets: {total:.1} MB ({:.0} bytes/key); bar ≤ {BAR_MB} MB: {}",
            total * 1024.0 * 1024.0 / KEYS as f64,
            if total <= BAR_MB { "met" } else { "MISSED" }
        );
    }
    ExitCode::SUCCESS
}
