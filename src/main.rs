//! Thin binary: parse the command line, start logging, run the command. Errors print as one
//! line with their causes and exit non-zero.

use clap::Parser;
use tesoro_webhooks::{cli::Cli, telemetry};

/// The hot path allocates many small, short-lived buffers, which mimalloc's thread-local free
/// lists serve far more cheaply than glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", telemetry::error_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
