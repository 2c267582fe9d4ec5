//! Standard output of the CLI commands. A reader that closes the pipe early
//! (`tollgate audit list | head -c5`) ends the command quietly, exit 0,
//! where `println!` panicked with "failed printing to stdout: Broken pipe"
//! (black-box round 15). The serving roles (`run`) keep `println!`.

use std::io::{ErrorKind, Write};

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` through [`write`].
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Write `args` to stdout; a closed pipe exits 0 at once (nobody reads the
/// rest), another write error exits 1 with its reason.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        exit_on(&e);
    }
}

/// Whether `e` is a closed standard output (the reader went away).
pub fn is_closed_pipe(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::BrokenPipe
}

fn exit_on(e: &std::io::Error) -> ! {
    if is_closed_pipe(e) {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1)
}
