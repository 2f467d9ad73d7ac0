//! The process under test: spawned as a child so its CPU time and peak memory are its own.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::process::{Child, Command};

/// Linux reports CPU times in clock ticks of USER_HZ, which is 100 on every mainstream arch.
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Measured {
    child: Child,
    pid: u32,
}

impl Measured {
    /// Runs `program` with `args`, the environment overrides in `env`, and `--config`
    /// passed through when the bench got one.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command.args(args);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Self::start(command)
    }

    fn start(mut command: Command) -> anyhow::Result<Self> {
        let child = command.spawn().context("starting the process under test")?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self { child, pid })
    }

    /// User plus system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((ticks(11) + ticks(12)) / TICKS_PER_SECOND)
    }

    /// Peak resident set size in MiB (VmHWM).
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok(kb / 1024.0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process as an operator would (SIGTERM: it finishes and acks what it holds),
    /// so no unacked work leaks into the next run; kills it if it takes too long.
    pub async fn stop(mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .is_ok_and(|status| status.success());
        if terminated
            && tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Dropped before it was stopped (the run was interrupted or failed): kill the process and
/// reap it before the bench goes on to delete the run's queues, so nothing the process still
/// had to send can declare them again afterwards. Blocking, but briefly: a killed process is
/// gone within milliseconds.
impl Drop for Measured {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_process_is_killed_and_reaped_at_once() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let process = Measured::start(command).expect("spawn sleep");
        let proc_dir = format!("/proc/{}", process.pid);
        assert!(Path::new(&proc_dir).exists());
        drop(process);
        // Neither running nor a zombie waiting to be reaped.
        assert!(!Path::new(&proc_dir).exists(), "{proc_dir} still exists");
    }
}
