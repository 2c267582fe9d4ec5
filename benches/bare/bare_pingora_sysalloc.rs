//! `bare-pingora-sysalloc`: the same pass-through as `bare-pingora`, on the
//! system allocator (glibc malloc), to measure what the allocator is worth.

mod floor;
mod pass;

fn main() -> std::process::ExitCode {
    pass::main()
}
