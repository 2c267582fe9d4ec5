//! `tollgate-loadgen`: the harness's own HTTP/1.1 load client, for what wrk
//! cannot give: per-second latency percentiles (the Redis-outage timeline),
//! a fixed offered rate with coordinated-omission correction (the added
//! latency table), counts by status per target, and the largest number of
//! admitted (2xx) requests in any sliding window (the accuracy runs).
//!
//! One thread (a tokio current-thread runtime), so it can be pinned to one
//! core with `taskset`; keep-alive connections, no pipelining.
//!
//! ```text
//! tollgate-loadgen --target 127.0.0.1:21502 [--target …] [--path /bench]
//!     [--header 'x-api-key: tg_…'] [--conns 16] [--duration 10] [--warmup 1]
//!     [--rate 0] [--pattern constant|edge] [--edge-period 2] [--edge-width-ms 100]
//!     [--timeline] [--window 1.0 …] [--timeout-ms 5000]
//! ```
//!
//! `--rate 0` (default) is closed loop: every connection sends its next
//! request when the previous answer is in. `--rate R` is open loop: R
//! requests/s in total, on a fixed schedule; a request that could not be
//! sent on time (its connection was still waiting) is timed from its
//! scheduled instant. `--pattern edge` sends only within `--edge-width-ms` of
//! every `--edge-period`-th wall-clock second boundary: the pattern that
//! makes a fixed-window counter admit twice its limit.
//!
//! Output, one record per line, `key=value` fields (see benches/README.md):
//! `second …` (with `--timeline`), `target …`, `window …` (with `--window`),
//! then `summary …`. Exit status 1 if nothing answered.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: tollgate-loadgen --target HOST:PORT [--target …] [--path P] \
[--header 'K: V'] [--conns N] [--duration S] [--warmup S] [--rate R] \
[--pattern constant|edge] [--edge-period S] [--edge-width-ms MS] [--timeline] \
[--window S …] [--timeout-ms MS]";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pattern {
    Constant,
    /// Active within `half_width` of every `period`-th Unix second boundary.
    Edge {
        period: u64,
        half_width: Duration,
    },
}

#[derive(Debug, Clone)]
struct Opts {
    targets: Vec<String>,
    path: String,
    headers: Vec<String>,
    conns: usize,
    duration: Duration,
    warmup: Duration,
    rate: f64,
    pattern: Pattern,
    timeline: bool,
    windows: Vec<f64>,
    timeout: Duration,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        targets: Vec::new(),
        path: "/bench".into(),
        headers: Vec::new(),
        conns: 16,
        duration: Duration::from_secs(10),
        warmup: Duration::ZERO,
        rate: 0.0,
        pattern: Pattern::Constant,
        timeline: false,
        windows: Vec::new(),
        timeout: Duration::from_secs(5),
    };
    let mut edge_period = 2u64;
    let mut edge_width_ms = 100u64;
    let mut edge = false;
    let mut it = std::env::args().skip(1);
    let secs = |v: String, flag: &str| -> Result<Duration, String> {
        let f: f64 = v.parse().map_err(|e| format!("{flag}: {e}"))?;
        if !(0.0..=86_400.0).contains(&f) {
            return Err(format!("{flag}: out of range"));
        }
        Ok(Duration::from_secs_f64(f))
    };
    while let Some(flag) = it.next() {
        if flag == "--timeline" {
            o.timeline = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num =
            |v: &str| -> Result<f64, String> { v.parse().map_err(|e| format!("{flag}: {e}")) };
        match flag.as_str() {
            "--target" => o.targets.push(v),
            "--path" => o.path = v,
            "--header" => o.headers.push(v),
            "--conns" => o.conns = num(&v)? as usize,
            "--duration" => o.duration = secs(v, &flag)?,
            "--warmup" => o.warmup = secs(v, &flag)?,
            "--rate" => o.rate = num(&v)?,
            "--pattern" => {
                edge = match v.as_str() {
                    "constant" => false,
                    "edge" => true,
                    other => return Err(format!("--pattern: unknown pattern {other}")),
                }
            }
            "--edge-period" => edge_period = num(&v)? as u64,
            "--edge-width-ms" => edge_width_ms = num(&v)? as u64,
            "--window" => o.windows.push(num(&v)?),
            "--timeout-ms" => o.timeout = Duration::from_millis(num(&v)? as u64),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.targets.is_empty() {
        return Err(format!("--target is required\n{USAGE}"));
    }
    if o.conns == 0 || o.rate < 0.0 {
        return Err("--conns must be ≥ 1 and --rate ≥ 0".into());
    }
    if edge {
        o.pattern = Pattern::Edge {
            period: edge_period.max(1),
            half_width: Duration::from_millis(edge_width_ms),
        };
    }
    Ok(o)
}

/// A log-linear latency histogram in µs: exact below 128 µs, then 64
/// sub-buckets per power of two (≤ 1.6 % error). Percentiles report the
/// upper edge of their bucket.
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const LINEAR: u64 = 2 << SUB_BITS; // 128
const BUCKETS: usize = 128 + 30 * 64;

impl Hist {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let p = 63 - v.leading_zeros(); // ≥ 7
        let shift = p - SUB_BITS;
        let idx = LINEAR as usize + (p as usize - 7) * 64 + ((v >> shift) as usize - 64);
        idx.min(BUCKETS - 1)
    }

    fn upper(idx: usize) -> u64 {
        if (idx as u64) < LINEAR {
            return idx as u64;
        }
        let i = idx - LINEAR as usize;
        let p = (i / 64) as u32 + 7;
        let m = (i % 64) as u64 + 64;
        ((m + 1) << (p - SUB_BITS)) - 1
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    s429: u64,
    s4xx: u64,
    s5xx: u64,
    other: u64,
    errors: u64,
}

impl Counts {
    fn add(&mut self, status: Option<u16>) {
        match status {
            None => self.errors += 1,
            Some(200..=299) => self.ok += 1,
            Some(429) => self.s429 += 1,
            Some(400..=499) => self.s4xx += 1,
            Some(500..=599) => self.s5xx += 1,
            Some(_) => self.other += 1,
        }
    }

    fn responses(&self) -> u64 {
        self.ok + self.s429 + self.s4xx + self.s5xx + self.other
    }

    fn fields(&self) -> String {
        format!(
            "ok={} s429={} s4xx={} s5xx={} other={} errors={}",
            self.ok, self.s429, self.s4xx, self.s5xx, self.other, self.errors
        )
    }
}

struct Second {
    counts: Counts,
    hist: Hist,
}

struct Stats {
    measure_start: Instant,
    end: Instant,
    total: Hist,
    counts: Counts,
    per_target: Vec<Counts>,
    seconds: Vec<Second>,
    /// µs after `measure_start` at which each 2xx arrived (accuracy runs).
    admitted_at: Vec<u64>,
    keep_admitted: bool,
    first_send: Option<Instant>,
    last_recv: Option<Instant>,
}

impl Stats {
    fn record(&mut self, target: usize, sent: Instant, done: Instant, status: Option<u16>) {
        if sent < self.measure_start || sent >= self.end {
            return;
        }
        let us = done.saturating_duration_since(sent).as_micros() as u64;
        self.first_send = Some(self.first_send.map_or(sent, |f| f.min(sent)));
        self.last_recv = Some(self.last_recv.map_or(done, |l| l.max(done)));
        self.counts.add(status);
        self.per_target[target].add(status);
        // Timeline rows are by send time: "requests sent in second t took …".
        let sec = sent.saturating_duration_since(self.measure_start).as_secs() as usize;
        while self.seconds.len() <= sec {
            self.seconds.push(Second {
                counts: Counts::default(),
                hist: Hist::new(),
            });
        }
        self.seconds[sec].counts.add(status);
        if status.is_some() {
            self.total.record(us);
            self.seconds[sec].hist.record(us);
        }
        if self.keep_admitted && matches!(status, Some(200..=299)) {
            self.admitted_at.push(
                done.saturating_duration_since(self.measure_start)
                    .as_micros() as u64,
            );
        }
    }
}

/// When the edge pattern is active; maps wall-clock second boundaries onto
/// the monotonic clock once at start.
#[derive(Clone, Copy)]
struct Gate {
    pattern: Pattern,
    /// The monotonic instant of Unix second `base_sec`.
    base: Instant,
    base_sec: u64,
}

impl Gate {
    fn new(pattern: Pattern) -> Self {
        let now_i = Instant::now();
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let base_sec = since.as_secs() + 1;
        let to_next = Duration::from_secs(base_sec) - since;
        Self {
            pattern,
            base: now_i + to_next,
            base_sec,
        }
    }

    /// `None` if sending is allowed at `now`, else when it next is.
    fn next_open(&self, now: Instant) -> Option<Instant> {
        let Pattern::Edge { period, half_width } = self.pattern else {
            return None;
        };
        // Edge k is at base + k s (Unix second base_sec + k); it counts when
        // (base_sec + k) is a multiple of `period`. `base` is < 1 s after start.
        let rel = |k: i64| -> Instant {
            if k >= 0 {
                self.base + Duration::from_secs(k as u64)
            } else {
                self.base
                    .checked_sub(Duration::from_secs(k.unsigned_abs()))
                    .unwrap_or(self.base)
            }
        };
        let k0: i64 = if now >= self.base {
            now.duration_since(self.base).as_secs() as i64 - 1
        } else {
            -1
        };
        let period = period as i64;
        let base_sec = self.base_sec as i64;
        for k in k0..=k0 + 2 * period + 1 {
            if (base_sec + k).rem_euclid(period) != 0 {
                continue;
            }
            let edge = rel(k);
            let open = edge.checked_sub(half_width).unwrap_or(edge);
            if now < edge + half_width {
                return if now >= open { None } else { Some(open) };
            }
        }
        // Not reached: some edge within 2 periods is always ahead.
        Some(now + Duration::from_millis(1))
    }
}

struct Conn {
    addr: String,
    request: Vec<u8>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    /// One request and its response; the status, or an error.
    async fn exchange(&mut self) -> std::io::Result<u16> {
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
            }
            match self.once().await {
                Ok(status) => return Ok(status),
                Err(Failure::BeforeResponse(e)) if reused && attempt == 0 => {
                    // The server closed an idle keep-alive connection: retry once.
                    self.stream = None;
                    let _ = e;
                }
                Err(Failure::BeforeResponse(e)) | Err(Failure::During(e)) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err(std::io::Error::other("unreachable"))
    }

    async fn once(&mut self) -> Result<u16, Failure> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::BeforeResponse(std::io::Error::other(
                "no connection",
            )));
        };
        self.buf.clear();
        stream
            .write_all(&self.request)
            .await
            .map_err(Failure::BeforeResponse)?;
        let mut r = Reader {
            stream,
            buf: &mut self.buf,
            pos: 0,
        };
        let head_end = r.until_blank_line().await?;
        let head = &r.buf[..head_end];
        let status = parse_status(head).ok_or_else(|| bad("malformed status line"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = trim(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = contains_ci(value, b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = contains_ci(value, b"close");
            }
        }
        r.pos = head_end;
        if chunked {
            loop {
                let line_end = r.line().await?;
                let size_str = std::str::from_utf8(&r.buf[r.pos..line_end - 2])
                    .map_err(|_| bad("bad chunk size"))?;
                let size_hex = size_str.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
                r.pos = line_end;
                if size == 0 {
                    // Trailers, then a blank line.
                    loop {
                        let end = r.line().await?;
                        let blank = end - r.pos == 2;
                        r.pos = end;
                        if blank {
                            break;
                        }
                    }
                    break;
                }
                r.fill(r.pos + size + 2).await?;
                r.pos += size + 2;
            }
        } else if let Some(n) = length {
            r.fill(r.pos + n).await?;
        } else if !(100..200).contains(&status) && status != 204 && status != 304 {
            // No length: the body runs to the end of the connection.
            close = true;
            loop {
                let n = r.stream.read_buf(r.buf).await.map_err(Failure::During)?;
                if n == 0 {
                    break;
                }
            }
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

enum Failure {
    /// Nothing of the response arrived (a dead keep-alive connection).
    BeforeResponse(std::io::Error),
    During(std::io::Error),
}

fn bad(msg: &str) -> Failure {
    Failure::During(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut Vec<u8>,
    pos: usize,
}

impl Reader<'_> {
    async fn read_more(&mut self) -> Result<(), Failure> {
        let before = self.buf.len();
        let n = self.stream.read_buf(self.buf).await.map_err(|e| {
            if before == 0 {
                Failure::BeforeResponse(e)
            } else {
                Failure::During(e)
            }
        })?;
        if n == 0 {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
            return Err(if before == 0 {
                Failure::BeforeResponse(e)
            } else {
                Failure::During(e)
            });
        }
        Ok(())
    }

    async fn fill(&mut self, upto: usize) -> Result<(), Failure> {
        while self.buf.len() < upto {
            self.read_more().await?;
        }
        Ok(())
    }

    /// Index just after the `\r\n\r\n` that ends the head.
    async fn until_blank_line(&mut self) -> Result<usize, Failure> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], b"\r\n\r\n") {
                return Ok(from + i + 4);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(bad("response head too large"));
            }
            from = self.buf.len().saturating_sub(3);
            self.read_more().await?;
        }
    }

    /// Index just after the next `\r\n` at or after `pos`.
    async fn line(&mut self) -> Result<usize, Failure> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                return Ok(self.pos + i + 2);
            }
            self.read_more().await?;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn parse_status(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn build_request(o: &Opts, target: &str) -> Vec<u8> {
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: tollgate-loadgen\r\n",
        o.path
    );
    for h in &o.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

async fn run_conn(
    index: usize,
    o: Rc<Opts>,
    gate: Gate,
    start: Instant,
    end: Instant,
    stats: Rc<RefCell<Stats>>,
) {
    let target = index % o.targets.len();
    let mut conn = Conn {
        addr: o.targets[target].clone(),
        request: build_request(&o, &o.targets[target]),
        stream: None,
        buf: Vec::with_capacity(4096),
    };
    let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(o.conns as f64 / o.rate));
    // Spread the connections' schedules evenly over one interval.
    let mut next_at = match interval {
        Some(iv) => start + iv.mul_f64(index as f64 / o.conns as f64),
        None => start,
    };
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(open) = gate.next_open(now) {
            if open >= end {
                break;
            }
            tokio::time::sleep_until(open.into()).await;
            next_at = next_at.max(open);
            continue;
        }
        let sent = match interval {
            Some(iv) => {
                let at = next_at;
                next_at += iv;
                if at > now {
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                } else {
                    // Late: the connection was busy. Time it from its schedule.
                    at
                }
            }
            None => now,
        };
        let result = tokio::time::timeout(o.timeout, conn.exchange()).await;
        let done = Instant::now();
        let status = match result {
            Ok(Ok(status)) => Some(status),
            Ok(Err(_)) => None,
            Err(_) => {
                conn.stream = None;
                None
            }
        };
        stats.borrow_mut().record(target, sent, done, status);
        if status.is_none() {
            // Do not spin on a refused connection.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn max_in_window(sorted_us: &[u64], len_us: u64) -> u64 {
    let mut best = 0;
    let mut i = 0;
    for j in 0..sorted_us.len() {
        while sorted_us[j] - sorted_us[i] >= len_us {
            i += 1;
        }
        best = best.max(j - i + 1);
    }
    best as u64
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let o = Rc::new(o);
    let local = tokio::task::LocalSet::new();
    let stats = local.block_on(&rt, run(o.clone()));
    report(&o, &stats)
}

async fn run(o: Rc<Opts>) -> Stats {
    let gate = Gate::new(o.pattern);
    let start = Instant::now();
    let measure_start = start + o.warmup;
    let end = measure_start + o.duration;
    let stats = Rc::new(RefCell::new(Stats {
        measure_start,
        end,
        total: Hist::new(),
        counts: Counts::default(),
        per_target: vec![Counts::default(); o.targets.len()],
        seconds: Vec::new(),
        admitted_at: Vec::new(),
        keep_admitted: !o.windows.is_empty(),
        first_send: None,
        last_recv: None,
    }));
    let tasks: Vec<_> = (0..o.conns)
        .map(|i| tokio::task::spawn_local(run_conn(i, o.clone(), gate, start, end, stats.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    match Rc::try_unwrap(stats) {
        Ok(cell) => cell.into_inner(),
        Err(rc) => {
            // Every task has finished, so this is not reached; copy to be safe.
            let s = rc.borrow();
            Stats {
                measure_start: s.measure_start,
                end: s.end,
                total: s.total.clone(),
                counts: s.counts,
                per_target: s.per_target.clone(),
                seconds: Vec::new(),
                admitted_at: s.admitted_at.clone(),
                keep_admitted: s.keep_admitted,
                first_send: s.first_send,
                last_recv: s.last_recv,
            }
        }
    }
}

fn report(o: &Opts, s: &Stats) -> ExitCode {
    if o.timeline {
        for (t, sec) in s.seconds.iter().enumerate() {
            println!(
                "second t={t} {} p50_us={} p99_us={} max_us={}",
                sec.counts.fields(),
                sec.hist.percentile(50.0),
                sec.hist.percentile(99.0),
                sec.hist.max
            );
        }
    }
    for (addr, c) in o.targets.iter().zip(&s.per_target) {
        println!("target addr={addr} {}", c.fields());
    }
    let span = match (s.first_send, s.last_recv) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    if !o.windows.is_empty() {
        let mut at = s.admitted_at.clone();
        at.sort_unstable();
        for w in &o.windows {
            let len_us = (w * 1e6) as u64;
            println!(
                "window len_s={w} max_admitted={}",
                max_in_window(&at, len_us.max(1))
            );
        }
    }
    let secs = o.duration.as_secs_f64().max(1e-9);
    let responses = s.counts.responses();
    println!(
        "summary duration_s={:.3} span_s={span:.6} responses={responses} {} rps={:.1} ok_rps={:.1} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        secs,
        s.counts.fields(),
        responses as f64 / secs,
        s.counts.ok as f64 / secs,
        s.total.percentile(50.0),
        s.total.percentile(90.0),
        s.total.percentile(99.0),
        s.total.percentile(99.9),
        s.total.max
    );
    if responses == 0 {
        eprintln!("tollgate-loadgen: no response from any target");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [0u64, 1, 127, 128, 129, 1000, 65_535, 1 << 30] {
            let i = Hist::index(v);
            assert!(Hist::upper(i) >= v, "{v}");
            if v >= 128 {
                assert!(Hist::upper(i) as f64 <= v as f64 * 1.02 + 1.0, "{v}");
            }
        }
        let mut h = Hist::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 500u64.max(h.percentile(50.0)).min(507));
        assert!(h.percentile(99.0) >= 990);
    }

    #[test]
    fn sliding_window_max() {
        let t = [0, 100, 200, 1_000_000, 1_000_050, 1_000_060];
        assert_eq!(max_in_window(&t, 1_000_000), 5);
        assert_eq!(max_in_window(&t, 1_000), 3);
    }
}
