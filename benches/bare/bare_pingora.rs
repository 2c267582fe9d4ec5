//! `bare-pingora`: the pass-through ceiling, with the same global allocator
//! as the `tollgate` binary (mimalloc). See `pass.rs`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod floor;
mod pass;

fn main() -> std::process::ExitCode {
    pass::main()
}
