//! Thin binary: parse the command line, start logging, run the command. Errors print as one
//! line with their causes and exit non-zero.

use clap::Parser;
use tesoro_webhooks::{cli::Cli, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    match cli.execute().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
