//! Thin binary: parse the command line, start logging, run the command. Errors print as one
//! line with their causes and exit non-zero.

use clap::Parser;
use tesoro_webhooks::{cli::Cli, telemetry};

/// glibc's allocator spent about a sixth of the worker's CPU under load (perf: _int_malloc,
/// malloc_consolidate, free); the hot path allocates many small, short-lived buffers, which
/// mimalloc's thread-local free lists serve far more cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", telemetry::error_line(error.as_ref()));
            if error.is::<tesoro_webhooks::bench::Interrupted>() {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
