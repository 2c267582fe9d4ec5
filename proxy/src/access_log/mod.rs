//! The access log (`log.access_log`): one line per request, the
//! `tollgate::access` event of DESIGN.md ("Logs").
//!
//! The binary installs a fast writer ([`install`]) when its log filter is
//! the config's own level: each line is then written by hand ([`format`],
//! the same bytes `tracing-subscriber`'s `fmt` layer writes for the event, in
//! text or JSON) and queued for a writer thread ([`sink`]). Without it
//! (`RUST_LOG` set, or an embedding such as the tests) the line is the
//! `tracing` event itself ([`emit`]), through whatever subscriber there is.
//! The harness's cost ladder measured the `fmt` path at ~32 k instructions
//! per request, more than the rest of the request filter together.

pub mod format;
pub mod sink;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use tollgate_core::config::{LogFormat, Target};

/// What one request did, for its access line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub request_id: &'a str,
    /// The route's name; empty when no route matched.
    pub route: &'a str,
    pub key_id: Option<i64>,
    pub method: &'a str,
    /// The canonical path (the request's own when it had none).
    pub path: &'a str,
    pub client: Option<IpAddr>,
    /// The status sent (0: none).
    pub status: u16,
    pub outcome: &'a str,
    pub limiter: &'a str,
    pub upstream: Option<&'a Target>,
    pub trace_id: Option<&'a [u8; 16]>,
    pub duration_us: u64,
}

struct Installed {
    shared: Arc<sink::Shared>,
    format: LogFormat,
    ansi: bool,
}

static FAST: OnceLock<Installed> = OnceLock::new();

thread_local! {
    /// Each thread formats its lines here (no allocation per line).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Write access lines by hand, in `format` (`ansi`: the text styling the
/// `fmt` layer uses), to stdout through a writer thread. Call it after the
/// global subscriber is set, and only when that subscriber's filter is the
/// config's level (not `RUST_LOG`'s, whose filters may look at more than a
/// level). Does nothing when that level does not take info lines of
/// `tollgate::access`, or when already installed. Keep the guard until exit:
/// dropping it writes what is queued.
pub fn install(format: LogFormat, ansi: bool) -> Option<sink::Guard> {
    install_to(format, ansi, Box::new(std::io::stdout()))
}

fn install_to(
    format: LogFormat,
    ansi: bool,
    out: Box<dyn std::io::Write + Send>,
) -> Option<sink::Guard> {
    if !tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) || FAST.get().is_some()
    {
        return None;
    }
    let (shared, guard) = match sink::start(out) {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!("access log: no writer thread ({e}); lines go through tracing");
            return None;
        }
    };
    FAST.set(Installed {
        shared,
        format,
        ansi,
    })
    .ok()?;
    Some(guard)
}

/// Log one request.
pub fn write(line: &Line<'_>) {
    if let Some(fast) = FAST.get() {
        let queued = SCRATCH.with(|b| {
            let Ok(mut buf) = b.try_borrow_mut() else {
                return false;
            };
            buf.clear();
            let now = format::now_us();
            match fast.format {
                LogFormat::Text => format::text(&mut buf, line, fast.ansi, now),
                LogFormat::Json => format::json(&mut buf, line, now),
            }
            let queued = fast.shared.push(&buf);
            if buf.capacity() > 64 << 10 {
                *buf = Vec::with_capacity(512);
            }
            queued
        });
        if queued {
            return;
        }
    }
    emit(line);
}

/// A client address as logged: the address, or `-`.
pub(crate) struct Client(pub Option<std::net::IpAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("-"),
        }
    }
}

/// The line as a `tracing` event (the subscriber formats and writes it).
pub fn emit(l: &Line<'_>) {
    tracing::info!(
        target: "tollgate::access",
        request_id = %l.request_id,
        route = l.route,
        key_id = l.key_id,
        method = %l.method,
        path = %tollgate_core::keys::redact_keys(l.path),
        client = %Client(l.client),
        status = l.status,
        outcome = l.outcome,
        limiter = l.limiter,
        upstream = l.upstream.map(|t| t.to_string()),
        trace_id = l.trace_id.map(hex),
        duration_us = l.duration_us,
    );
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// The bytes a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// What the `fmt` layer (as `src/logging.rs` sets it up) writes for
    /// [`emit`] of `line`.
    fn by_tracing(line: &Line<'_>, format: LogFormat, ansi: bool) -> String {
        let cap = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,pingora=warn"))
            .with_ansi(ansi)
            .with_writer(cap.clone());
        match format {
            LogFormat::Json => {
                tracing::subscriber::with_default(builder.json().finish(), || emit(line))
            }
            LogFormat::Text => tracing::subscriber::with_default(builder.finish(), || emit(line)),
        }
        let bytes = cap.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    /// The microseconds of the line's RFC 3339 timestamp.
    fn stamp_of(line: &str) -> u64 {
        let start = line.find("20").expect("a timestamp");
        let t: jiff::Timestamp = line[start..start + 27].parse().expect("timestamp");
        t.as_microsecond() as u64
    }

    fn by_hand(line: &Line<'_>, format: LogFormat, ansi: bool, now: u64) -> String {
        let mut v = Vec::new();
        match format {
            LogFormat::Text => format::text(&mut v, line, ansi, now),
            LogFormat::Json => format::json(&mut v, line, now),
        }
        String::from_utf8(v).expect("utf-8")
    }

    fn lines() -> Vec<Line<'static>> {
        static UP: OnceLock<[Target; 3]> = OnceLock::new();
        let up = UP.get_or_init(|| {
            [
                Target {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: 8080,
                },
                Target {
                    tls: true,
                    host: "::1".into(),
                    port: 443,
                },
                Target {
                    tls: false,
                    host: "odd\"host\\é".into(),
                    port: 1,
                },
            ]
        });
        static TRACE: [u8; 16] = [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ];
        let base = Line {
            request_id: "9be60304a24e430ece3939ceaa0a9130",
            route: "api",
            key_id: Some(42),
            method: "GET",
            path: "/v1/users/7",
            client: Some("203.0.113.5".parse().expect("ip")),
            status: 200,
            outcome: "allowed",
            limiter: "local",
            upstream: Some(&up[0]),
            trace_id: Some(&TRACE),
            duration_us: 1234,
        };
        vec![
            base,
            // Refused at the edge: no route, key, upstream or trace.
            Line {
                route: "",
                key_id: None,
                path: "/nope%zz",
                status: 400,
                outcome: "bad_request",
                limiter: "none",
                upstream: None,
                trace_id: None,
                duration_us: 0,
                ..base
            },
            Line {
                request_id: "client-chosen!\"id",
                route: "odd \"route\" \\ é\t",
                key_id: Some(-9),
                method: "PURGE",
                path: "/ünï/%00/\"q\"",
                client: Some("2001:db8::1".parse().expect("ip")),
                status: 0,
                upstream: Some(&up[1]),
                duration_us: u64::MAX,
                ..base
            },
            Line {
                client: None,
                upstream: Some(&up[2]),
                key_id: Some(i64::MIN),
                ..base
            },
        ]
    }

    #[test]
    fn the_hand_written_line_is_the_fmt_layers_line() {
        for line in lines() {
            for (format, ansi) in [
                (LogFormat::Text, true),
                (LogFormat::Text, false),
                (LogFormat::Json, false),
                (LogFormat::Json, true),
            ] {
                let want = by_tracing(&line, format, ansi);
                assert!(
                    want.ends_with('\n') && want.contains("tollgate::access"),
                    "{want}"
                );
                let got = by_hand(&line, format, ansi, stamp_of(&want));
                assert_eq!(got, want, "{format:?} ansi={ansi} {line:?}");
            }
        }
    }

    #[test]
    fn json_lines_parse_with_their_fields() {
        for line in lines() {
            let text = by_hand(&line, LogFormat::Json, false, 1_796_150_113_178_118);
            let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
            assert_eq!(v["target"], "tollgate::access");
            assert_eq!(v["fields"]["route"], line.route);
            assert_eq!(v["fields"]["path"], line.path);
            assert_eq!(v["fields"]["status"], line.status);
            assert_eq!(v["fields"]["key_id"].as_i64(), line.key_id);
        }
    }
}
