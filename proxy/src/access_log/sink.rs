//! Where access lines go: one shared buffer that a writer thread empties
//! into stdout in batches. A request appends its finished line under a
//! short lock; the writer is woken only when the buffer was empty (once per
//! batch, not per line) and waits [`BATCH`] for more lines before it
//! writes them with one `write_all`. Nothing on the request path allocates,
//! formats through `fmt`, or makes a system call per line.
//!
//! Like the non-blocking writer of the other log lines, it is lossy when
//! the output cannot keep up: past [`MAX_PENDING`] bytes waiting, lines are
//! dropped and counted, and the count is logged once the output drains.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long the writer waits, once woken, for more lines to write together.
pub const BATCH: Duration = Duration::from_millis(20);
/// Bytes waiting past which new lines are dropped (stdout is stuck).
pub const MAX_PENDING: usize = 8 << 20;

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
    dropped: u64,
}

#[derive(Default)]
pub struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    /// Queue one whole line. `false` once closed (the caller logs it
    /// another way).
    pub fn push(&self, line: &[u8]) -> bool {
        let mut p = self.pending.lock();
        if p.closed {
            return false;
        }
        if p.buf.len() + line.len() > MAX_PENDING {
            p.dropped += 1;
            return true;
        }
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(line);
        drop(p);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }
}

/// Stops the writer when dropped, after it wrote every queued line.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the writer thread over `out`.
pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<(Arc<Shared>, Guard)> {
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("tollgate-access-log".into())
        .spawn(move || run(&s, out))?;
    Ok((
        shared.clone(),
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        let closed = {
            let mut p = shared.pending.lock();
            while p.buf.is_empty() && !p.closed {
                shared.wake.wait(&mut p);
            }
            if p.buf.is_empty() {
                return; // closed, and everything was written
            }
            p.closed
        };
        if !closed {
            std::thread::sleep(BATCH);
        }
        let dropped = {
            let mut p = shared.pending.lock();
            std::mem::swap(&mut p.buf, &mut batch);
            std::mem::take(&mut p.dropped)
        };
        // Nowhere to report a failed write of the log itself.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > (1 << 20) {
            batch.shrink_to(64 << 10);
        }
        if dropped > 0 {
            tracing::warn!("access log: {dropped} lines dropped (the output did not keep up)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test reads.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_end() {
        let cap = Capture::default();
        let (shared, guard) = start(Box::new(cap.clone())).expect("thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        assert!(s.push(format!("t{t} line {i}\n").as_bytes()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
        drop(guard);
        assert!(!shared.push(b"late\n"), "closed after the guard");
        let text = String::from_utf8(cap.0.lock().clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..500).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(own, want, "thread {t}: whole lines in order");
        }
    }

    #[test]
    fn lines_are_written_without_a_shutdown() {
        let cap = Capture::default();
        let (shared, _guard) = start(Box::new(cap.clone())).expect("thread");
        assert!(shared.push(b"one\n"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while cap.0.lock().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cap.0.lock().as_slice(), b"one\n");
    }

    /// A writer that blocks until the test lets it go.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Capture);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.0;
            let mut go = m.lock();
            while !*go {
                c.wait(&mut go);
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_lines_instead_of_growing() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let cap = Capture::default();
        let (shared, guard) = start(Box::new(Stuck(gate.clone(), cap.clone()))).expect("thread");
        let line = vec![b'x'; 1023];
        let mut line = line;
        line.push(b'\n');
        // Far more than MAX_PENDING while the writer is stuck.
        for _ in 0..(3 * MAX_PENDING / line.len()) {
            assert!(shared.push(&line));
        }
        assert!(shared.pending.lock().buf.len() <= MAX_PENDING);
        *gate.0.lock() = true;
        gate.1.notify_all();
        drop(guard);
        let written = cap.0.lock().len();
        assert!(written <= 2 * MAX_PENDING, "{written}");
        assert_eq!(written % line.len(), 0, "whole lines only");
    }
}
