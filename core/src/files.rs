//! Reading the files an operator names (config, certificates, CA files)
//! without letting the file system stall a background task.
//!
//! A path that is briefly a named pipe, a device or a directory must never
//! block the reader: `open(2)` on a FIFO waits for a writer, and a read from a
//! device may never end. Files are opened non-blocking, the *opened* file is
//! checked to be a regular file (no race between a check and the open), and at
//! most `max_bytes` are read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest file [`read_regular`] callers should accept by default.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The bytes of the regular file at `path`, at most `max_bytes` of them.
/// Anything else (a FIFO, a socket, a device, a directory) or a larger file is
/// an error, returned at once.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let file = open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max_bytes {
        return Err(too_large(meta.len(), max_bytes));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the size check and the read.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, max_bytes: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max_bytes)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_large(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{len} bytes is more than such a file may have ({max})"),
    )
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "routes: []\n").expect("write");
        assert_eq!(read_regular_text(&p, 100).expect("read"), "routes: []\n");
    }

    #[test]
    fn a_fifo_a_directory_and_a_device_are_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let start = Instant::now();
        for p in [fifo.as_path(), dir.path(), Path::new("/dev/zero")] {
            let e = read_regular(p, 100).expect_err("refused");
            assert!(e.to_string().contains("not a regular file"), "{p:?}: {e}");
        }
        // Nothing waited for a writer (a blocking open would hang forever).
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'a'; 101]).expect("write");
        assert!(read_regular(&p, 100).is_err());
        assert!(read_regular(&p, 101).is_ok());
    }
}
