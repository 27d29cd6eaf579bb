//! The `idflow` binary: the process allocator, logging, and the command line of [`cli`].

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// The process allocator: mimalloc. Model steps allocate and free many tensor buffers of every
/// size from several threads. glibc's malloc either hoarded them (its dynamic mmap threshold let
/// a toy diffusion training grow past 10 GiB) or, with a fixed low threshold, mapped and unmapped
/// every large buffer, so training spent as much time in page faults as in arithmetic; mimalloc
/// reuses freed memory per thread and returns it to the system in bounded pieces.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3, which the Rust bindings do not
/// name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for reuse instead of purging it after 10 ms (mimalloc's
/// default), unless `MIMALLOC_PURGE_DELAY` is set. With transparent huge pages on, every purged
/// and re-touched buffer is a 2 MiB page the kernel zeroes again: a quarter of a toy-encoder
/// training step went to `clear_page`, and keeping memory made training 1.35x faster for 7 %
/// more peak RSS (`docs/performance.md`). The resident size stays bounded by the peak working
/// set, since mimalloc reuses what it keeps.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists; the option is a
        // plain integer that mimalloc reads when it considers purging.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IDFLOW_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
