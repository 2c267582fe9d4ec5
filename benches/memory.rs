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
//! Parts `keys-compact` and `limiter-compact` are prototypes of the layouts
//! proposed in benches/RESULTS.md ("Memory"), measured the same way: they
//! show what the proposed changes to `proxy/src/keyset.rs` and
//! `proxy/src/limiter/local.rs` would save. They are not used by the proxy.

use std::collections::HashMap;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate_core::db::{ApiKey, KeyRecord};
use tollgate_core::keys::{self, KeyHash};
use tollgate_core::limits::Limit;
use tollgate_proxy::keyset::KeySet;
use tollgate_proxy::limiter::{Bucket, Buckets, LocalLimiter, Scope, Subject};

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
    }
}

fn buckets() -> [Bucket; 3] {
    [
        Bucket::new(Scope::Key, limit("second", 50, 1)),
        Bucket::new(Scope::Key, limit("day", 100_000, 86_400)),
        Bucket::new(Scope::Route("users"), limit("route", 10, 1)),
    ]
}

// --- prototypes of the proposed layouts -------------------------------------

/// Proposed `ActiveKey`: no `name` (unused on the request path), no
/// pre-rendered `id_str` (render the id when the header is written), the plan
/// name interned once per plan instead of one `String` per key.
#[allow(dead_code)]
struct CompactKey {
    id: i64,
    plan: Option<Arc<str>>,
    own_buckets: Option<Buckets>,
    concurrency: Option<u32>,
    enabled: bool,
    expires_at: Option<i64>,
}

/// Proposed `KeySet`: indexed by the first 128 bits of the SHA-256 (a forged
/// match still needs a 2^128 preimage), the value just the `Arc`; the few
/// rotated-out secrets with a deadline would live in a second, small map.
struct CompactKeySet {
    by_hash: HashMap<[u8; 16], Arc<CompactKey>>,
}

impl CompactKeySet {
    fn from_records(records: Vec<KeyRecord>) -> Self {
        let mut plans: HashMap<String, Arc<str>> = HashMap::new();
        let mut by_hash = HashMap::with_capacity(records.len());
        for r in records {
            let k = r.key;
            let plan = k.plan.map(|p| {
                plans
                    .entry(p)
                    .or_insert_with_key(|p| Arc::from(p.as_str()))
                    .clone()
            });
            let key = Arc::new(CompactKey {
                id: k.id,
                plan,
                own_buckets: None,
                concurrency: k.concurrency,
                enabled: k.enabled,
                expires_at: k.expires_at,
            });
            by_hash.insert(prefix(&r.hash), key);
        }
        Self { by_hash }
    }
}

fn prefix(h: &KeyHash) -> [u8; 16] {
    let mut p = [0u8; 16];
    p.copy_from_slice(&h[..16]);
    p
}

/// Proposed local limiter entry: keyed by the key id (IP subjects in a
/// second map), bucket ids as 32-bit indexes and the TATs beside them; a
/// real implementation keeps a `SmallVec` for subjects with > 3 buckets.
#[allow(dead_code)]
struct CompactEntry {
    ids: [u32; 3],
    tats: [u64; 3],
}

struct CompactLimiter {
    shards: Vec<Mutex<HashMap<u64, CompactEntry>>>,
}

impl CompactLimiter {
    fn new() -> Self {
        Self {
            shards: (0..256).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn take(&self, id: u64, now: u64) {
        let shard = &self.shards[(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(id).or_insert(CompactEntry {
            ids: [1, 2, 3],
            tats: [0; 3],
        });
        for t in e.tats.iter_mut() {
            *t = (*t).max(now) + 1;
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
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
    if part == "keys-compact" {
        let set = CompactKeySet::from_records((1..=KEYS).map(record).collect());
        items = set.by_hash.len();
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
    if part == "limiter-compact" {
        let limiter = CompactLimiter::new();
        for id in 1..=KEYS {
            limiter.take(id as u64, 1);
        }
        items = limiter.len();
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
        ("keys-compact", "prototype: compact KeySet (proposal)"),
        (
            "limiter-compact",
            "prototype: compact limiter entries (proposal)",
        ),
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
