//! Micro-workloads of the event loop itself (issue 3's benchmarks), each run in a child
//! process pinned to the server core: `call_soon` throughput, task spawning, 1,000,000 timers
//! with half cancelled, and the lateness of a 0.5 ms timer.
//!
//! This file holds the workload definitions and tokio's side; ringloop's side lives with the
//! ringloop contender. tokio has no callback queue, so its `call_soon` analogue is a task
//! that wakes itself (`yield_now`): one pass through the scheduler's ready queue, which is
//! what `call_soon` costs in a loop.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metrics::Histogram;

/// A micro-workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MicroKind {
    /// Schedule-and-run of trivial callbacks, per second.
    CallSoon,
    /// Spawning and completing trivial tasks, per second.
    CreateTask,
    /// 1,000,000 timers (0–100 ms), every other one cancelled, run until the rest fired.
    Timers,
    /// The same timers on `tokio_util::time::DelayQueue` (tokio only).
    TimersDelayQueue,
    /// How late a 0.5 ms timer fires (p50/p99/max; early firings counted).
    TimerLateness,
}

/// What a micro-workload measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MicroResult {
    /// Operations per second (callbacks, tasks, or timers scheduled per second of total time).
    pub(crate) ops_per_s: f64,
    /// Wall time of the whole workload.
    pub(crate) secs: f64,
    /// Lateness percentiles in µs (timer lateness only).
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile lateness in µs.
    pub(crate) p99_us: Option<f64>,
    /// Maximum lateness in µs.
    pub(crate) max_us: Option<f64>,
    /// Timers that fired before their deadline (must be 0).
    pub(crate) early: u64,
}

impl MicroKind {
    /// Every micro-workload, in report order.
    pub(crate) const ALL: [MicroKind; 5] = [
        MicroKind::CallSoon,
        MicroKind::CreateTask,
        MicroKind::Timers,
        MicroKind::TimersDelayQueue,
        MicroKind::TimerLateness,
    ];

    /// The workload's name on the command line and in records.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MicroKind::CallSoon => "call_soon",
            MicroKind::CreateTask => "create_task",
            MicroKind::Timers => "timers",
            MicroKind::TimersDelayQueue => "timers-delayqueue",
            MicroKind::TimerLateness => "timer_lateness",
        }
    }

    /// Parses a name.
    pub(crate) fn parse(s: &str) -> Option<MicroKind> {
        MicroKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Operation count for a full or a `--quick` run.
    pub(crate) fn count(self, quick: bool) -> u64 {
        match (self, quick) {
            (MicroKind::CallSoon, false) => 3_000_000,
            (MicroKind::CallSoon, true) => 1_000_000,
            (MicroKind::CreateTask, false) => 1_000_000,
            (MicroKind::CreateTask, true) => 200_000,
            (MicroKind::Timers | MicroKind::TimersDelayQueue, _) => 1_000_000,
            (MicroKind::TimerLateness, false) => 1_000,
            (MicroKind::TimerLateness, true) => 300,
        }
    }
}

impl fmt::Display for MicroResult {
    /// The one-line wire format the child prints and the harness parses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RESULT ops_per_s={} secs={} early={}",
            self.ops_per_s, self.secs, self.early
        )?;
        for (k, v) in [
            ("p50_us", self.p50_us),
            ("p99_us", self.p99_us),
            ("max_us", self.max_us),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        Ok(())
    }
}

impl MicroResult {
    /// Parses the line written by `Display`.
    pub(crate) fn parse(line: &str) -> Option<MicroResult> {
        let mut r = MicroResult::default();
        for kv in line.strip_prefix("RESULT ")?.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "ops_per_s" => r.ops_per_s = v.parse().ok()?,
                "secs" => r.secs = v.parse().ok()?,
                "early" => r.early = v.parse().ok()?,
                "p50_us" => r.p50_us = Some(v.parse().ok()?),
                "p99_us" => r.p99_us = Some(v.parse().ok()?),
                "max_us" => r.max_us = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(r)
    }

    /// A throughput result: `n` operations in `elapsed`.
    pub(crate) fn throughput(n: u64, elapsed: Duration) -> MicroResult {
        let secs = elapsed.as_secs_f64();
        MicroResult {
            ops_per_s: n as f64 / secs.max(1e-9),
            secs,
            ..MicroResult::default()
        }
    }

    /// A lateness result from a histogram of lateness in ns.
    pub(crate) fn lateness(hist: &Histogram, early: u64, elapsed: Duration) -> MicroResult {
        let us = |q| hist.quantile(q).map(crate::metrics::us);
        MicroResult {
            ops_per_s: hist.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            secs: elapsed.as_secs_f64(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            max_us: Some(crate::metrics::us(hist.max())),
            early,
        }
    }
}

/// The delay of timer `i` of the timers workload: spread over 0–100 ms.
pub(crate) fn timer_delay(i: u64) -> Duration {
    Duration::from_micros((i % 1000) * 100)
}

/// The lateness workload's timer.
pub(crate) const LATENESS_DELAY: Duration = Duration::from_micros(500);

/// Runs `kind` on tokio's current-thread runtime.
pub(crate) fn run_tokio(kind: MicroKind, n: u64) -> std::io::Result<MicroResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move {
        match kind {
            MicroKind::CallSoon => {
                let start = Instant::now();
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
                MicroResult::throughput(n, start.elapsed())
            }
            MicroKind::CreateTask => {
                let done = Rc::new(Cell::new(0u64));
                let start = Instant::now();
                for _ in 0..n {
                    let done = done.clone();
                    tokio::task::spawn_local(async move { done.set(done.get() + 1) });
                }
                while done.get() < n {
                    tokio::task::yield_now().await;
                }
                MicroResult::throughput(n, start.elapsed())
            }
            MicroKind::Timers => {
                let fired = Rc::new(Cell::new(0u64));
                let start = Instant::now();
                let mut handles = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let fired = fired.clone();
                    handles.push(tokio::task::spawn_local(async move {
                        tokio::time::sleep(timer_delay(i)).await;
                        fired.set(fired.get() + 1);
                    }));
                }
                for h in handles.iter().skip(1).step_by(2) {
                    h.abort();
                }
                for h in handles {
                    let _ = h.await; // aborted ones resolve to a cancellation error
                }
                debug_assert_eq!(fired.get(), n - n / 2);
                MicroResult::throughput(n, start.elapsed())
            }
            MicroKind::TimersDelayQueue => {
                let start = Instant::now();
                let mut queue = tokio_util::time::DelayQueue::with_capacity(n as usize);
                let mut keys = Vec::with_capacity(n as usize);
                for i in 0..n {
                    keys.push(queue.insert(i, timer_delay(i)));
                }
                for k in keys.iter().skip(1).step_by(2) {
                    queue.remove(k);
                }
                let mut fired = 0u64;
                while std::future::poll_fn(|cx| queue.poll_expired(cx))
                    .await
                    .is_some()
                {
                    fired += 1;
                }
                debug_assert_eq!(fired, n - n / 2);
                MicroResult::throughput(n, start.elapsed())
            }
            MicroKind::TimerLateness => {
                let mut hist = Histogram::new();
                let mut early = 0;
                let start = Instant::now();
                for _ in 0..n {
                    let t0 = Instant::now();
                    tokio::time::sleep(LATENESS_DELAY).await;
                    match t0.elapsed().checked_sub(LATENESS_DELAY) {
                        Some(late) => hist.record(late.as_nanos() as u64),
                        None => early += 1,
                    }
                }
                MicroResult::lateness(&hist, early, start.elapsed())
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips() {
        let r = MicroResult {
            ops_per_s: 1.5e6,
            secs: 0.25,
            p50_us: Some(12.5),
            p99_us: Some(40.0),
            max_us: Some(90.0),
            early: 0,
        };
        assert_eq!(MicroResult::parse(&r.to_string()), Some(r));
        let t = MicroResult::throughput(10, Duration::from_secs(2));
        assert_eq!(MicroResult::parse(&t.to_string()), Some(t));
        assert_eq!(MicroResult::parse("garbage"), None);
    }

    #[test]
    fn micro_names_round_trip() {
        for k in MicroKind::ALL {
            assert_eq!(MicroKind::parse(k.name()), Some(k));
        }
    }
}
