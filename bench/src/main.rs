//! `tesoro-bench`: parse the command line, run the benchmark (or, as a child of a run, the bare
//! baseline loop). A run stopped by SIGINT or SIGTERM exits with 130, as a shell reports a
//! command ended by Ctrl-C, so scripts can tell it from a failed run.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tesoro_bench::{BenchArgs, Interrupted, Programs};
use tesoro_webhooks::{cli::stop_signal, config::Config, telemetry};
use tokio_util::sync::CancellationToken;

/// The allocator the worker runs with: the benchmark's publisher and receiver share the two
/// cores with the worker, so their cost is part of every figure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tesoro-bench",
    version,
    about = "Load benchmark of tesoro-webhooks against the real broker and database (its own \
             prefix and database, removed at the end)"
)]
struct Cli {
    /// The worker's configuration file, layered over its defaults; the run's own prefix,
    /// database and API address replace those it names.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The worker binary to measure; by default `tesoro-webhooks` beside this one.
    #[arg(long, value_name = "PATH")]
    worker: Option<PathBuf>,
    #[command(flatten)]
    args: BenchArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bare consume → POST → ack loop that `--baseline` measures (started by the run).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        url: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", telemetry::error_line(error.as_ref()));
            if error.is::<Interrupted>() {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    telemetry::init_logging(config.log.format);
    if let Some(Command::Baseline { queue, url }) = cli.command {
        return testkit::baseline::run(&config.amqp.url, &queue, &url, config.amqp.prefetch).await;
    }
    let bench = std::env::current_exe().context("locating this binary")?;
    let worker = match cli.worker {
        Some(worker) => worker,
        None => bench.with_file_name("tesoro-webhooks"),
    };
    if !worker.is_file() {
        anyhow::bail!(
            "no worker binary at {}: build it (`cargo build --release`) or name it with --worker",
            worker.display()
        );
    }
    let programs = Programs {
        worker,
        bench,
        config: cli.config,
    };
    let interrupted = CancellationToken::new();
    tokio::spawn({
        let interrupted = interrupted.clone();
        async move {
            stop_signal().await;
            interrupted.cancel();
        }
    });
    tesoro_bench::run(config, programs, cli.args, interrupted).await
}
