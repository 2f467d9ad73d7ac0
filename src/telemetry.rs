//! Logs (tracing) and the Prometheus recorder.

use std::{io::IsTerminal, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default: `info`, with refinery's
/// per-migration lines left out: `migrate` logs each applied migration itself). Text has
/// colours only on a terminal: a log file gets plain text. JSON is one object per line, the
/// event's fields at its top level.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps each histogram sample until upkeep folds it into the buckets, which a
/// scrape also does; with nobody scraping, the samples (two per delivery) would pile up
/// without bound. A thread of its own, so it runs whatever runtime is up.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; scrapes still fold samples");
    }
}

/// `error` and its causes on one line, each cause once: a layer whose message already
/// quotes its source (many crates' do) would otherwise print the same words twice.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The process's Prometheus handle. The `metrics` facade has one recorder per process, so this
/// is installed once and shared by every worker the process runs (tests run several).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = crate::metrics::histogram_buckets().into_iter().fold(
                PrometheusBuilder::new(),
                |builder, (name, buckets)| {
                    builder
                        .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                        .unwrap_or_else(|_| unreachable!("bucket lists are not empty"))
                },
            );
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            crate::metrics::describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("broker: {0}")]
        Quoting(#[from] std::io::Error),
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(Outer::from(io)).context("connecting");
        assert_eq!(error_line(error.as_ref()), "connecting: broker: refused");
    }
}
