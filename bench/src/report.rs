//! Figures from raw arrivals, and how they are printed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BenchArgs, preload::Preloaded, reads::ReadTimes};

/// One measured run (the worker's, or the baseline loop's).
#[derive(Debug, Clone)]
pub struct Phase {
    pub deliveries: usize,
    pub deliveries_per_sec: f64,
    pub events_per_sec: f64,
    pub latency_ms: [f64; 4],
    /// The longest time between two arrivals at steady state: a stall anywhere on the path
    /// (the broker's, the database's, the process's) shows here, next to the tail it caused.
    pub longest_gap_ms: f64,
    pub cpu_s_per_1k: f64,
    pub peak_rss_mb: f64,
}

impl Phase {
    pub fn measure(
        received: &[(u32, Instant)],
        published_at: &[Instant],
        publish_time: Duration,
        cpu_seconds: f64,
        peak_rss_mb: f64,
    ) -> Self {
        let mut arrivals: Vec<Instant> = received.iter().map(|(_, at)| *at).collect();
        arrivals.sort_unstable();
        let mut latencies: Vec<f64> = received
            .iter()
            .filter_map(|(n, at)| {
                let sent = published_at.get(*n as usize)?;
                Some(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_unstable_by(f64::total_cmp);
        let deliveries = received.len();
        Self {
            deliveries,
            deliveries_per_sec: steady_rate(&arrivals),
            events_per_sec: published_at.len() as f64 / publish_time.as_secs_f64().max(1e-9),
            latency_ms: [0.50, 0.90, 0.99, 1.0].map(|q| percentile(&latencies, q)),
            longest_gap_ms: longest_steady_gap(&arrivals).as_secs_f64() * 1000.0,
            cpu_s_per_1k: if deliveries == 0 {
                0.0
            } else {
                cpu_seconds / deliveries as f64 * 1000.0
            },
            peak_rss_mb,
        }
    }
}

/// The arrivals between the first and last 10 % (ramp-up and drain excluded).
fn steady(sorted_arrivals: &[Instant]) -> &[Instant] {
    let cut = sorted_arrivals.len() / 10;
    &sorted_arrivals[cut..sorted_arrivals.len() - cut]
}

/// Arrivals per second at steady state.
pub fn steady_rate(sorted_arrivals: &[Instant]) -> f64 {
    let middle = steady(sorted_arrivals);
    match (middle.first(), middle.last()) {
        (Some(first), Some(last)) if last > first => {
            (middle.len() - 1) as f64 / (*last - *first).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// The longest wait between consecutive arrivals at steady state.
pub fn longest_steady_gap(sorted_arrivals: &[Instant]) -> Duration {
    steady(sorted_arrivals)
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

/// The `q` quantile (0..=1) of sorted values, nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// With `--failing-webhooks`: what the failing endpoint got, and the deliveries queue.
pub struct Neighbour {
    pub webhooks: u32,
    pub attempts: usize,
    pub attempts_per_sec: f64,
    /// Over the run's second half, once the retry flow (or the circuit) is in its steady
    /// state.
    pub attempts_per_sec_second_half: f64,
    /// The deliveries queue's ready messages, sampled every second.
    pub queue_depths: Vec<u32>,
}

impl Neighbour {
    pub fn measure(
        webhooks: u32,
        failures: &testkit::receiver::Failures,
        started: Instant,
        ended: Instant,
        queue_depths: Vec<u32>,
    ) -> Self {
        let middle = started + (ended - started) / 2;
        let attempts = failures.between(started, ended);
        let per_sec =
            |count: usize, from: Instant| count as f64 / (ended - from).as_secs_f64().max(1e-9);
        Self {
            webhooks,
            attempts,
            attempts_per_sec: per_sec(attempts, started),
            attempts_per_sec_second_half: per_sec(failures.between(middle, ended), middle),
            queue_depths,
        }
    }

    fn deepest(&self) -> u32 {
        self.queue_depths.iter().copied().max().unwrap_or(0)
    }

    fn to_json(&self) -> Value {
        json!({
            "webhooks": self.webhooks,
            "attempts": self.attempts,
            "attempts_per_sec": round(self.attempts_per_sec, 1),
            "attempts_per_sec_second_half": round(self.attempts_per_sec_second_half, 1),
            "deliveries_queue_max": self.deepest(),
            "deliveries_queue_last": self.queue_depths.last().copied().unwrap_or(0),
            // One sample in ten: every 10 s.
            "deliveries_queue_every_10s": self.queue_depths.iter().step_by(10).collect::<Vec<_>>(),
        })
    }
}

pub struct Report {
    pub args: BenchArgs,
    pub worker: Phase,
    pub baseline: Option<Phase>,
    /// The worker with the dead webhooks disabled (only with `--dead-webhooks`).
    pub without_dead: Option<Phase>,
    /// With `--prune`: the worker without pruning, and the deliveries pruned while the
    /// measured worker ran.
    pub pruning: Option<Pruning>,
    pub preloading: Option<Preloading>,
    pub neighbour: Option<Neighbour>,
    pub signatures_checked: u64,
    pub signatures_bad: u64,
}

/// With `--preload`: what it wrote, the run on the empty database before it, and the
/// dashboard's reads during each.
pub struct Preloading {
    pub preloaded: Preloaded,
    pub empty: Phase,
    pub empty_reads: ReadTimes,
    pub reads: ReadTimes,
    /// Database size growth over the measured run, divided by its deliveries: what the
    /// worker's own writes cost, one attempt each.
    pub bytes_per_delivery: f64,
}

/// The reference for `--prune`.
pub struct Pruning {
    pub without: Phase,
    pub pruned_deliveries: u64,
}

pub fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

impl Report {
    fn ratio(&self) -> Option<f64> {
        let baseline = self.baseline.as_ref()?.deliveries_per_sec;
        (baseline > 0.0).then(|| self.worker.deliveries_per_sec / baseline)
    }

    /// Deliveries/s while pruning, against without it.
    fn kept_while_pruning(&self) -> Option<f64> {
        let without = self.pruning.as_ref()?.without.deliveries_per_sec;
        (without > 0.0).then(|| self.worker.deliveries_per_sec / without)
    }

    /// Deliveries/s with the preloaded log, against on the empty database.
    fn ratio_to_empty(&self) -> Option<f64> {
        let empty = self.preloading.as_ref()?.empty.deliveries_per_sec;
        (empty > 0.0).then(|| self.worker.deliveries_per_sec / empty)
    }

    /// Healthy deliveries/s with the dead webhooks, against without them.
    fn kept_with_dead(&self) -> Option<f64> {
        let without = self.without_dead.as_ref()?.deliveries_per_sec;
        (without > 0.0).then(|| self.worker.deliveries_per_sec / without)
    }

    pub fn to_json(&self) -> Value {
        let w = &self.worker;
        let [p50, p90, p99, max] = w.latency_ms.map(|v| round(v, 2));
        let mut out = json!({
            "events": self.args.events,
            "webhooks": self.args.webhooks,
            "dead_webhooks": self.args.dead_webhooks,
            "failing_webhooks": self.args.failing_webhooks,
            "rate": self.args.rate,
            "payload_bytes": self.args.payload_bytes.as_u64(),
            "deliveries": w.deliveries,
            "deliveries_per_sec": round(w.deliveries_per_sec, 1),
            "events_per_sec": round(w.events_per_sec, 1),
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
            "longest_gap_ms": round(w.longest_gap_ms, 2),
            "worker_cpu_s_per_1k": round(w.cpu_s_per_1k, 4),
            "peak_rss_mb": round(w.peak_rss_mb, 1),
            "signatures_checked": self.signatures_checked,
            "signatures_bad": self.signatures_bad,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        });
        if self.args.dead_webhooks > 0 {
            out["healthy_deliveries_per_sec"] = json!(round(w.deliveries_per_sec, 1));
        }
        if let (Some(without), Some(kept)) = (&self.without_dead, self.kept_with_dead()) {
            out["without_dead_deliveries_per_sec"] = json!(round(without.deliveries_per_sec, 1));
            out["healthy_ratio_to_without_dead"] = json!(round(kept, 3));
        }
        if let (Some(pruning), Some(kept)) = (&self.pruning, self.kept_while_pruning()) {
            out["without_pruning_deliveries_per_sec"] =
                json!(round(pruning.without.deliveries_per_sec, 1));
            out["pruning_ratio_to_without"] = json!(round(kept, 3));
            out["pruned_deliveries"] = json!(pruning.pruned_deliveries);
        }
        if let (Some(p), Some(ratio)) = (&self.preloading, self.ratio_to_empty()) {
            out["preload"] = json!(p.preloaded.deliveries);
            out["preload_seconds"] = json!(round(p.preloaded.seconds, 1));
            out["preload_bytes_per_delivery"] = json!(round(p.preloaded.bytes_per_delivery, 0));
            out["empty_deliveries_per_sec"] = json!(round(p.empty.deliveries_per_sec, 1));
            out["ratio_to_empty"] = json!(round(ratio, 3));
            out["api_latency_ms"] = p.reads.to_json();
            out["empty_api_latency_ms"] = p.empty_reads.to_json();
            out["bytes_per_delivery"] = json!(round(p.bytes_per_delivery, 0));
        }
        if let Some(neighbour) = &self.neighbour {
            out["failing"] = neighbour.to_json();
        }
        if let (Some(baseline), Some(ratio)) = (&self.baseline, self.ratio()) {
            out["baseline_deliveries_per_sec"] = json!(round(baseline.deliveries_per_sec, 1));
            out["baseline_latency_ms"] = json!({
                "p50": round(baseline.latency_ms[0], 2), "p99": round(baseline.latency_ms[2], 2)
            });
            out["baseline_longest_gap_ms"] = json!(round(baseline.longest_gap_ms, 2));
            out["baseline_cpu_s_per_1k"] = json!(round(baseline.cpu_s_per_1k, 4));
            out["ratio_to_baseline"] = json!(round(ratio, 3));
        }
        out
    }

    pub fn table(&self) -> String {
        let a = &self.args;
        let mut out = format!(
            "tesoro-webhooks bench: {} events x {} webhooks (+{} dead), {}, {} payload\n",
            a.events,
            a.webhooks,
            a.dead_webhooks,
            a.rate.map_or("max rate".to_owned(), |r| format!("{r}/s")),
            a.payload_bytes,
        );
        out += &format!("{:<26}{:>14}{:>14}\n", "", "worker", "baseline");
        let row = |name: &str, f: &dyn Fn(&Phase) -> String| {
            format!(
                "{name:<26}{:>14}{:>14}\n",
                f(&self.worker),
                self.baseline.as_ref().map_or("-".into(), f)
            )
        };
        out += &row("deliveries", &|p| p.deliveries.to_string());
        out += &row("deliveries/s (steady)", &|p| {
            format!("{:.0}", p.deliveries_per_sec)
        });
        out += &row("events/s published", &|p| {
            format!("{:.0}", p.events_per_sec)
        });
        for (i, name) in [
            "latency p50 ms",
            "latency p90 ms",
            "latency p99 ms",
            "latency max ms",
        ]
        .iter()
        .enumerate()
        {
            out += &row(name, &|p| format!("{:.2}", p.latency_ms[i]));
        }
        out += &row("longest gap ms (steady)", &|p| {
            format!("{:.2}", p.longest_gap_ms)
        });
        out += &row("cpu s / 1k deliveries", &|p| {
            format!("{:.3}", p.cpu_s_per_1k)
        });
        out += &row("peak RSS MiB", &|p| format!("{:.1}", p.peak_rss_mb));
        if let Some(ratio) = self.ratio() {
            out += &format!("ratio to baseline: {:.1} %\n", ratio * 100.0);
        }
        if let (Some(without), Some(kept)) = (&self.without_dead, self.kept_with_dead()) {
            out += &format!(
                "healthy deliveries/s without the dead webhooks: {:.0}; kept with them: {:.1} %\n",
                without.deliveries_per_sec,
                kept * 100.0
            );
        }
        if let (Some(pruning), Some(kept)) = (&self.pruning, self.kept_while_pruning()) {
            out += &format!(
                "deliveries/s without pruning: {:.0}; kept while pruning: {:.1} % \
                 ({} deliveries pruned meanwhile)\n",
                pruning.without.deliveries_per_sec,
                kept * 100.0,
                pruning.pruned_deliveries
            );
        }
        if let (Some(p), Some(ratio)) = (&self.preloading, self.ratio_to_empty()) {
            out += &format!(
                "with {} deliveries preloaded ({:.0} s, {:.0} bytes each): {:.1} % of the \
                 empty database's {:.0} deliveries/s; {:.0} bytes per delivery written; \
                 dashboard reads p99 at most {:.1} ms (empty: {:.1} ms)\n",
                p.preloaded.deliveries,
                p.preloaded.seconds,
                p.preloaded.bytes_per_delivery,
                ratio * 100.0,
                p.empty.deliveries_per_sec,
                p.bytes_per_delivery,
                p.reads.worst_p99(),
                p.empty_reads.worst_p99(),
            );
        }
        if let Some(n) = &self.neighbour {
            out += &format!(
                "{} failing webhooks: {} attempts, {:.1}/s ({:.1}/s over the second half); \
                 deliveries queue at most {} ready, {} at the end\n",
                n.webhooks,
                n.attempts,
                n.attempts_per_sec,
                n.attempts_per_sec_second_half,
                n.deepest(),
                n.queue_depths.last().copied().unwrap_or(0),
            );
        }
        out += &format!(
            "signatures checked: {} ({} bad)\n",
            self.signatures_checked, self.signatures_bad
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn steady_rate_ignores_ramp_up_and_drain() {
        let start = Instant::now();
        // 10 slow arrivals, 80 at 1 ms apart, 10 slow ones: the middle rate is 1000/s.
        let mut arrivals = Vec::new();
        let mut t = start;
        for i in 0..100 {
            t += if (10..90).contains(&i) {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            arrivals.push(t);
        }
        let rate = steady_rate(&arrivals);
        assert!((rate - 1000.0).abs() < 30.0, "{rate}");
        assert_eq!(steady_rate(&[]), 0.0);
    }

    #[test]
    fn the_longest_gap_is_a_stall_at_steady_state_not_the_ramp() {
        let start = Instant::now();
        // 100 arrivals 1 ms apart, but the first and the last come 500 ms off (ramp and
        // drain, excluded) and one 300 ms stall in the middle.
        let mut arrivals = Vec::new();
        let mut t = start;
        for i in 0..100 {
            t += match i {
                1 | 99 => Duration::from_millis(500),
                50 => Duration::from_millis(300),
                _ => Duration::from_millis(1),
            };
            arrivals.push(t);
        }
        assert_eq!(longest_steady_gap(&arrivals), Duration::from_millis(300));
        assert_eq!(longest_steady_gap(&[]), Duration::ZERO);
        assert_eq!(longest_steady_gap(&[start]), Duration::ZERO);
    }

    /// 100 events to one webhook, neither against the baseline nor while pruning.
    fn hundred_events() -> BenchArgs {
        BenchArgs {
            events: 100,
            webhooks: 1,
            dead_webhooks: 0,
            failing_webhooks: 0,
            rate: None,
            payload_bytes: bytesize::ByteSize::kib(1),
            baseline: false,
            prune: false,
            preload: None,
            json: true,
        }
    }

    #[test]
    fn the_report_gives_each_phase_its_longest_gap() {
        let start = Instant::now();
        let phase = |stall_ms: u64| {
            let published: Vec<Instant> = (0..100).map(|_| start).collect();
            let mut t = start;
            let received: Vec<(u32, Instant)> = (0..100u32)
                .map(|n| {
                    t += Duration::from_millis(if n == 50 { stall_ms } else { 1 });
                    (n, t)
                })
                .collect();
            Phase::measure(&received, &published, Duration::from_secs(1), 1.0, 10.0)
        };
        let report = Report {
            args: BenchArgs {
                baseline: true,
                prune: false,
                ..hundred_events()
            },
            worker: phase(400),
            baseline: Some(phase(20)),
            without_dead: None,
            pruning: None,
            preloading: None,
            neighbour: None,
            signatures_checked: 0,
            signatures_bad: 0,
        };
        let json = report.to_json();
        assert_eq!(json["longest_gap_ms"], 400.0);
        assert_eq!(json["baseline_longest_gap_ms"], 20.0);
        let table = report.table();
        let row = table
            .lines()
            .find(|line| line.starts_with("longest gap ms (steady)"))
            .unwrap_or_else(|| panic!("no gap row in:\n{table}"));
        assert!(row.contains("400.00") && row.contains("20.00"), "{row}");
    }

    /// 100 arrivals at `ms` apart: a steady rate of 1000 / ms per second.
    fn steady_phase(ms: u64) -> Phase {
        let start = Instant::now();
        let published: Vec<Instant> = (0..100).map(|_| start).collect();
        let received: Vec<(u32, Instant)> = (0..100u32)
            .map(|n| (n, start + Duration::from_millis(ms * u64::from(n))))
            .collect();
        Phase::measure(&received, &published, Duration::from_secs(1), 1.0, 10.0)
    }

    #[test]
    fn the_report_compares_a_preloaded_run_with_the_empty_one() {
        let phase = steady_phase;
        let mut reads = ReadTimes::default();
        for ms in 1..=100 {
            reads.add(
                super::super::reads::Read::Delivery,
                Duration::from_millis(ms),
            );
        }
        let report = Report {
            args: BenchArgs {
                preload: Some(5000),
                ..hundred_events()
            },
            worker: phase(4),
            baseline: None,
            without_dead: None,
            pruning: None,
            preloading: Some(Preloading {
                preloaded: Preloaded {
                    deliveries: 5000,
                    seconds: 2.0,
                    bytes_per_delivery: 2100.0,
                    webhooks: Vec::new(),
                },
                empty: phase(2),
                empty_reads: ReadTimes::default(),
                reads,
                bytes_per_delivery: 1900.4,
            }),
            neighbour: None,
            signatures_checked: 0,
            signatures_bad: 0,
        };
        let json = report.to_json();
        assert_eq!(json["preload"], 5000);
        assert_eq!(json["ratio_to_empty"], 0.5);
        assert_eq!(json["bytes_per_delivery"], 1900.0);
        assert_eq!(json["api_latency_ms"]["delivery"]["p50"], 50.0);
        assert_eq!(json["api_latency_ms"]["delivery"]["p99"], 99.0);
        let table = report.table();
        assert!(
            table.contains("with 5000 deliveries preloaded") && table.contains("50.0 % of"),
            "{table}"
        );
    }

    #[test]
    fn the_report_compares_a_pruning_run_with_one_without() {
        let phase = steady_phase;
        let report = Report {
            args: BenchArgs {
                baseline: false,
                prune: true,
                ..hundred_events()
            },
            worker: phase(2),
            baseline: None,
            without_dead: None,
            pruning: Some(Pruning {
                without: phase(1),
                pruned_deliveries: 1234,
            }),
            preloading: None,
            neighbour: None,
            signatures_checked: 0,
            signatures_bad: 0,
        };
        let json = report.to_json();
        assert_eq!(json["pruning_ratio_to_without"], 0.5);
        assert_eq!(json["pruned_deliveries"], 1234);
        let table = report.table();
        assert!(
            table.contains("kept while pruning: 50.0 % (1234 deliveries pruned meanwhile)"),
            "{table}"
        );
    }
}
