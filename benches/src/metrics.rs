//! What the harness measures and how it summarises it: a latency histogram, the server
//! process's CPU time and resident memory read from `/proc`, and medians with their spread.

use std::fs;
use std::io;
use std::time::Duration;

/// Sub-buckets per power of two: 32 gives a relative error under 3.2 %.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-linear histogram of durations in nanoseconds (HdrHistogram's idea, fixed precision).
///
/// Values below 32 ns are exact; above, each power of two is cut into 32 buckets, so a
/// percentile is reported within 3.2 % of the true value. Recording is a shift and an add.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn bucket_of(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        (shift as usize + 1) * SUB + sub
    }

    /// The largest value that falls into bucket `b`.
    fn bucket_high(b: usize) -> u64 {
        if b < SUB {
            return b as u64;
        }
        let shift = (b / SUB - 1) as u32;
        let sub = (b % SUB) as u64;
        let low = (SUB as u64 + sub) << shift;
        low + ((1u64 << shift) - 1)
    }

    /// Records one value in nanoseconds.
    pub(crate) fn record(&mut self, ns: u64) {
        self.counts[Self::bucket_of(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Number of values recorded.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0), as the upper bound of its bucket, clamped to
    /// the exact maximum. `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bucket_high(b).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Nanoseconds to microseconds as a float.
pub(crate) fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

/// Median and min–max spread of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    /// The median (mean of the two middle values for an even count).
    pub(crate) median: f64,
    /// The smallest sample.
    pub(crate) min: f64,
    /// The largest sample.
    pub(crate) max: f64,
}

impl Spread {
    /// Summarises the samples that are present; `None` when there are none.
    pub(crate) fn of(samples: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
        let mut v: Vec<f64> = samples
            .into_iter()
            .flatten()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// Total CPU time (user + system) consumed so far by every thread of process `pid`.
///
/// Sums `/proc/PID/task/*/schedstat` (nanoseconds, includes io_uring worker threads);
/// falls back to `/proc/PID/stat` utime+stime (clock ticks) where schedstat is absent.
pub(crate) fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    let mut total_ns: u64 = 0;
    let mut found = false;
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let path = entry.path().join("schedstat");
            if let Ok(text) = fs::read_to_string(path) {
                if let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    total_ns += ns;
                    found = true;
                }
            }
        }
    }
    if found {
        return Ok(Duration::from_nanos(total_ns));
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, skipping the `(comm)` field,
/// which may itself contain spaces and parentheses.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn process_rss(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident bytes one more connection costs, from `rss`: the readings before any connection
/// and after each of the steps that opened `per_step[i]` more. The median of the steps'
/// slopes, the first step's left out (it pays the one-off costs of the first connections):
/// a one-off that lands in a later step (a pool deepening, a table's growth) moves one
/// slope, not the figure. `None` without at least two later steps.
pub(crate) fn per_connection_growth(rss: &[u64], per_step: &[usize]) -> Option<f64> {
    let mut slopes: Vec<f64> = rss
        .windows(2)
        .zip(per_step)
        .skip(1)
        .filter(|(_, &n)| n > 0)
        .map(|(w, &n)| w[1].saturating_sub(w[0]) as f64 / n as f64)
        .collect();
    if slopes.len() < 2 {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    Some(if slopes.len() % 2 == 0 {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    } else {
        slopes[mid]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_one_off_step_moves_one_slope_not_the_per_connection_figure() {
        // 1,000 B per connection, a 270 KiB one-off in the fourth step, first-step extras.
        let steps = [200; 5];
        let mut rss = vec![10_000_000u64];
        for (i, n) in steps.iter().enumerate() {
            let one_off = match i {
                0 => 500_000,
                3 => 270 * 1024,
                _ => 0,
            };
            rss.push(rss[i] + *n as u64 * 1_000 + one_off);
        }
        assert_eq!(super::per_connection_growth(&rss, &steps), Some(1_000.0));
        assert_eq!(super::per_connection_growth(&rss[..3], &steps[..2]), None);
    }

    use super::*;

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.035, "p50 {p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.035, "p99 {p99}");
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.len(), 10_000);
    }

    #[test]
    fn small_values_are_exact_and_empty_has_no_quantile() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        for v in [3, 3, 7] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(3));
        assert_eq!(h.quantile(0.99), Some(7));
    }

    #[test]
    fn every_bucket_upper_bound_maps_back_to_its_bucket() {
        for b in 0..BUCKETS - SUB {
            let hi = Histogram::bucket_high(b);
            assert_eq!(Histogram::bucket_of(hi), b, "bucket {b}");
            assert_eq!(Histogram::bucket_of(hi + 1), b + 1, "bucket {b}");
        }
    }

    #[test]
    fn spread_takes_median_and_extremes() {
        let s = Spread::of([Some(3.0), None, Some(1.0), Some(2.0)]).unwrap();
        assert_eq!(
            s,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let even = Spread::of([Some(1.0), Some(2.0), Some(4.0), Some(10.0)]).unwrap();
        assert_eq!(even.median, 3.0);
        assert_eq!(Spread::of([None, Some(f64::NAN)]), None);
    }

    #[test]
    fn proc_parsers() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(
            parse_vm_rss("Name: x\nVmRSS:\t   1024 kB\n"),
            Some(1024 * 1024)
        );
    }
}
