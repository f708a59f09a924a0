//! Results: one [`Record`] per workload × contender, printed as a table and written as JSON,
//! and the issue's targets checked against them.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::metrics::Spread;
use crate::workload::fmt_size;

/// The summary of all rounds of one contender on one workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Record {
    /// Workload name (`echo`, `http`, `idle`, or a micro-workload).
    pub(crate) workload: String,
    /// Contender name.
    pub(crate) contender: String,
    /// Connections (network workloads).
    pub(crate) conns: Option<usize>,
    /// Message size in bytes (echo).
    pub(crate) size: Option<usize>,
    /// Messages (or operations) per second across rounds.
    pub(crate) msgs_per_s: Option<Spread>,
    /// Median over rounds of the per-round p50 latency (or timer lateness), µs.
    pub(crate) p50_us: Option<f64>,
    /// Median over rounds of the per-round p99, µs.
    pub(crate) p99_us: Option<f64>,
    /// Largest maximum over rounds, µs.
    pub(crate) max_us: Option<f64>,
    /// Server CPU time per message across rounds, µs.
    pub(crate) server_cpu_us_per_msg: Option<Spread>,
    /// Median share of the window the server spent on CPU (1.0 = saturated).
    pub(crate) server_busy: Option<f64>,
    /// Median server syscalls per message.
    pub(crate) syscalls_per_msg: Option<f64>,
    /// User-space instructions per message (callgrind).
    pub(crate) instructions_per_msg: Option<f64>,
    /// Median resident memory per idle connection, bytes.
    pub(crate) rss_bytes_per_conn: Option<f64>,
    /// Rounds that produced a measurement.
    pub(crate) rounds: usize,
    /// Total seconds of a micro-workload (median).
    pub(crate) secs: Option<f64>,
    /// Early timer firings (lateness workload).
    pub(crate) early: Option<u64>,
    /// Why figures are missing, if they are.
    pub(crate) note: Option<String>,
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            if x == x.trunc() && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{x:.4}")
            }
        }
        _ => "null".to_string(),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Record {
    /// The record as one JSON object with exactly the issue's keys.
    pub(crate) fn to_json(&self) -> String {
        let median = |s: Option<Spread>| s.map(|s| s.median);
        format!(
            "{{\"workload\":{},\"contender\":{},\"conns\":{},\"size\":{},\"msgs_per_s\":{},\"p50_us\":{},\
             \"p99_us\":{},\"server_cpu_us_per_msg\":{},\"syscalls_per_msg\":{},\"instructions_per_msg\":{},\
             \"rss_bytes_per_conn\":{},\"rounds\":{}}}",
            json_str(&self.workload),
            json_str(&self.contender),
            num(self.conns.map(|c| c as f64)),
            num(self.size.map(|s| s as f64)),
            num(median(self.msgs_per_s)),
            num(self.p50_us),
            num(self.p99_us),
            num(median(self.server_cpu_us_per_msg)),
            num(self.syscalls_per_msg),
            num(self.instructions_per_msg),
            num(self.rss_bytes_per_conn),
            self.rounds
        )
    }
}

/// Writes `records` to `path` as a JSON array, one record per line.
pub(crate) fn write_json(path: &Path, records: &[Record]) -> io::Result<()> {
    let body: Vec<String> = records
        .iter()
        .map(|r| format!("  {}", r.to_json()))
        .collect();
    std::fs::write(path, format!("[\n{}\n]\n", body.join(",\n")))
}

/// `1.23M`, `456.7k`, `89`.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn spread(s: Option<Spread>, f: impl Fn(f64) -> String) -> String {
    s.map_or_else(
        || "-".to_string(),
        |s| format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
    )
}

/// Renders the table printed on stdout.
pub(crate) fn table(records: &[Record]) -> String {
    let mut out = String::new();
    let net: Vec<&Record> = records.iter().filter(|r| r.conns.is_some()).collect();
    if !net.is_empty() {
        let _ = writeln!(
            out,
            "{:<22} {:<18} {:>26} {:>8} {:>8} {:>5} {:>22} {:>9} {:>9} {:>10}",
            "workload",
            "contender",
            "msgs/s median (min–max)",
            "p50 µs",
            "p99 µs",
            "busy",
            "server CPU µs/msg",
            "sysc/msg",
            "instr/msg",
            "RSS B/conn"
        );
        let mut last = String::new();
        for r in net {
            let label = match (r.workload.as_str(), r.conns, r.size) {
                ("echo", Some(c), Some(s)) => format!("echo {c} x {}", fmt_size(s)),
                (w, Some(c), _) => format!("{w} {c} conns"),
                (w, _, _) => w.to_string(),
            };
            if !last.is_empty() && label != last {
                out.push('\n');
            }
            let shown = unless_repeated(label, &mut last);
            let _ = write!(
                out,
                "{:<22} {:<18} {:>26} {:>8} {:>8} {:>5} {:>22} {:>9} {:>9} {:>10}",
                shown,
                r.contender,
                spread(r.msgs_per_s, si),
                opt(r.p50_us, |v| format!("{v:.0}")),
                opt(r.p99_us, |v| format!("{v:.0}")),
                opt(r.server_busy, |v| format!("{:.0}%", v * 100.0)),
                spread(r.server_cpu_us_per_msg, |v| format!("{v:.2}")),
                opt(r.syscalls_per_msg, |v| format!("{v:.3}")),
                opt(r.instructions_per_msg, |v| format!("{v:.0}")),
                opt(r.rss_bytes_per_conn, |v| format!("{v:.0}")),
            );
            end_row(&mut out, r);
        }
    }
    let micro: Vec<&Record> = records.iter().filter(|r| r.conns.is_none()).collect();
    if !micro.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<22} {:<21} {:>26} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "micro-workload",
            "contender",
            "ops/s median (min–max)",
            "total s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "early"
        );
        let mut last = String::new();
        for r in micro {
            let shown = unless_repeated(r.workload.clone(), &mut last);
            let _ = write!(
                out,
                "{:<22} {:<21} {:>26} {:>9} {:>9} {:>9} {:>9} {:>6}",
                shown,
                r.contender,
                spread(r.msgs_per_s, si),
                opt(r.secs, |v| format!("{v:.3}")),
                opt(r.p50_us, |v| format!("{v:.1}")),
                opt(r.p99_us, |v| format!("{v:.1}")),
                opt(r.max_us, |v| format!("{v:.1}")),
                r.early.map_or_else(|| "-".to_string(), |e| e.to_string()),
            );
            end_row(&mut out, r);
        }
    }
    out
}

/// The group label a row shows: `label`, or nothing when it repeats the previous row's
/// (`last`, which becomes `label`).
fn unless_repeated(label: String, last: &mut String) -> String {
    if label == *last {
        String::new()
    } else {
        last.clone_from(&label);
        label
    }
}

/// Ends a table row: the record's note, if any, then the newline.
fn end_row(out: &mut String, r: &Record) {
    if let Some(n) = &r.note {
        let _ = write!(out, "  [{n}]");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_record_has_exactly_the_issue_keys() {
        let r = Record {
            workload: "echo".into(),
            contender: "tokio".into(),
            conns: Some(100),
            size: Some(64),
            msgs_per_s: Some(Spread {
                median: 1000.5,
                min: 900.0,
                max: 1100.0,
            }),
            server_cpu_us_per_msg: Some(Spread {
                median: 5.25,
                min: 5.0,
                max: 6.0,
            }),
            rounds: 3,
            note: Some("a \"quoted\" note".into()),
            ..Record::default()
        };
        let json = r.to_json();
        assert_eq!(
            json,
            "{\"workload\":\"echo\",\"contender\":\"tokio\",\"conns\":100,\"size\":64,\"msgs_per_s\":1000.5000,\
             \"p50_us\":null,\"p99_us\":null,\"server_cpu_us_per_msg\":5.2500,\"syscalls_per_msg\":null,\
             \"instructions_per_msg\":null,\"rss_bytes_per_conn\":null,\"rounds\":3}"
        );
        let keys: Vec<&str> = json
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| json.contains(&format!("\"{k}\":")))
            .collect();
        assert_eq!(
            keys,
            [
                "workload",
                "contender",
                "conns",
                "size",
                "msgs_per_s",
                "p50_us",
                "p99_us",
                "server_cpu_us_per_msg",
                "syscalls_per_msg",
                "instructions_per_msg",
                "rss_bytes_per_conn",
                "rounds"
            ]
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn table_shows_spread_and_dashes() {
        let r = Record {
            workload: "echo".into(),
            contender: "bare-epoll".into(),
            conns: Some(100),
            size: Some(64),
            msgs_per_s: Some(Spread {
                median: 150_000.0,
                min: 140_000.0,
                max: 160_000.0,
            }),
            rounds: 3,
            ..Record::default()
        };
        let t = table(&[r]);
        assert!(t.contains("echo 100 x 64 B"), "{t}");
        assert!(t.contains("150.0k (140.0k–160.0k)"), "{t}");
    }
}
