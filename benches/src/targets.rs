//! The targets of issues 5 and 3, checked against a run's records: each is reached, not
//! reached (with the figures), or not measured in this run (and why). A missed target is a
//! finding to report, not something to hide.

use std::fmt::Write as _;

use crate::report::Record;

const RL: &str = "ringloop-io-uring";

#[derive(Debug)]
enum Verdict {
    Reached(String),
    Missed(String),
    NotMeasured(&'static str),
}

fn find<'a>(
    records: &'a [Record],
    workload: &str,
    contender: &str,
    conns: Option<usize>,
    size: Option<usize>,
) -> Option<&'a Record> {
    records.iter().find(|r| {
        r.workload == workload && r.contender == contender && r.conns == conns && r.size == size
    })
}

/// Echo points present in the run, as (conns, size).
fn echo_points(records: &[Record]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = records
        .iter()
        .filter(|r| r.workload == "echo")
        .filter_map(|r| Some((r.conns?, r.size?)))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Checks `pred(ringloop, other)` at every echo point where both have `metric`.
fn compare_all(
    records: &[Record],
    left: &str,
    right: &str,
    points: &[(usize, usize)],
    metric: impl Fn(&Record) -> Option<f64>,
    limit: f64,
    unit: &str,
) -> Verdict {
    let mut seen = Vec::new();
    let mut missed = false;
    for &(c, s) in points {
        let l = find(records, "echo", left, Some(c), Some(s)).and_then(&metric);
        let r = find(records, "echo", right, Some(c), Some(s)).and_then(&metric);
        if let (Some(l), Some(r)) = (l, r) {
            let ratio = l / r;
            missed |= ratio > limit;
            seen.push(format!("{c}x{s}: {l:.2} vs {r:.2} {unit} = {ratio:.2}x"));
        }
    }
    match (seen.is_empty(), missed) {
        (true, _) => Verdict::NotMeasured("needs both contenders on the same echo points"),
        (false, false) => Verdict::Reached(seen.join("; ")),
        (false, true) => Verdict::Missed(seen.join("; ")),
    }
}

fn cpu(r: &Record) -> Option<f64> {
    r.server_cpu_us_per_msg.map(|s| s.median)
}

fn instr(r: &Record) -> Option<f64> {
    r.instructions_per_msg
}

/// What the kernel alone gave in the same run (the waits ringloop's backends use), as
/// "; kernel floor p99: …" — the part of the lateness no event loop can remove.
fn lateness_floor(records: &[Record]) -> String {
    let floors: Vec<String> = ["floor-io-uring-abs", "floor-io-uring", "floor-epoll_pwait2"]
        .iter()
        .filter_map(|name| {
            records
                .iter()
                .find(|r| r.workload == "timer_lateness" && r.contender == *name)
                .and_then(|r| Some(format!("{name} {:.1} µs", r.p99_us?)))
        })
        .collect();
    if floors.is_empty() {
        String::new()
    } else {
        format!("; kernel floor p99: {}", floors.join(", "))
    }
}

/// The targets as a text block for stdout and docs.
pub(crate) fn evaluate(records: &[Record]) -> String {
    let points = echo_points(records);
    let at_100_1000: Vec<(usize, usize)> = points
        .iter()
        .copied()
        .filter(|&(c, _)| c == 100 || c == 1000)
        .collect();
    let mut checks: Vec<(&str, Verdict)> = Vec::new();

    checks.push((
        "ringloop io_uring ≤ 300 instructions/msg at 100 x 64 B",
        match find(records, "echo", RL, Some(100), Some(64)).and_then(instr) {
            Some(v) if v <= 300.0 => Verdict::Reached(format!("{v:.0}")),
            Some(v) => Verdict::Missed(format!("{v:.0}")),
            None => Verdict::NotMeasured("needs --instructions and ringloop at echo 100x64"),
        },
    ));
    checks.push((
        "ringloop io_uring ≤ 2x bare io_uring instructions/msg",
        compare_all(records, RL, "bare-io-uring", &points, instr, 2.0, "instr"),
    ));
    checks.push((
        "ringloop io_uring server CPU/msg ≤ 0.9x tokio (100, 1000 conns)",
        compare_all(records, RL, "tokio", &at_100_1000, cpu, 0.9, "µs"),
    ));
    checks.push((
        "ringloop io_uring server CPU/msg ≤ 1.05x bare io_uring (100, 1000 conns)",
        compare_all(records, RL, "bare-io-uring", &at_100_1000, cpu, 1.05, "µs"),
    ));
    checks.push((
        "ringloop io_uring ahead of monoio (server CPU/msg)",
        compare_all(records, RL, "monoio", &points, cpu, 1.0, "µs"),
    ));
    checks.push((
        "ringloop io_uring ahead of compio (server CPU/msg)",
        compare_all(records, RL, "compio", &points, cpu, 1.0, "µs"),
    ));
    checks.push(("ringloop io_uring ≤ 0.03 syscalls/msg under load", {
        let v: Vec<(String, f64)> = records
            .iter()
            .filter(|r| r.contender == RL && (r.workload == "echo" || r.workload == "http"))
            .filter_map(|r| Some((format!("{} {}", r.workload, r.conns?), r.syscalls_per_msg?)))
            .collect();
        let text = v
            .iter()
            .map(|(k, x)| format!("{k}: {x:.3}"))
            .collect::<Vec<_>>()
            .join("; ");
        if v.is_empty() {
            Verdict::NotMeasured("needs ringloop and perf")
        } else if v.iter().all(|(_, x)| *x <= 0.03) {
            Verdict::Reached(text)
        } else {
            Verdict::Missed(text)
        }
    }));
    checks.push((
        "ringloop io_uring ≤ 1 KiB RSS per idle connection",
        match records
            .iter()
            .find(|r| r.workload == "idle" && r.contender == RL)
            .and_then(|r| r.rss_bytes_per_conn)
        {
            Some(v) if v <= 1024.0 => Verdict::Reached(format!("{v:.0} B")),
            Some(v) => Verdict::Missed(format!("{v:.0} B")),
            None => Verdict::NotMeasured("needs the idle workload and ringloop"),
        },
    ));
    checks.push((
        "ringloop io_uring serves 10,000 connections without error",
        match records
            .iter()
            .find(|r| r.contender == RL && r.conns == Some(10_000) && r.workload != "idle")
        {
            Some(r) if r.note.is_none() && r.rounds > 0 => {
                Verdict::Reached(format!("{} rounds", r.rounds))
            }
            Some(r) => Verdict::Missed(
                r.note
                    .clone()
                    .unwrap_or_else(|| "no round succeeded".into()),
            ),
            None => Verdict::NotMeasured("needs --workload grid (or echo:10000xSIZE)"),
        },
    ));
    checks.push((
        "ringloop epoll no slower than tokio (server CPU/msg)",
        compare_all(records, "ringloop-epoll", "tokio", &points, cpu, 1.0, "µs"),
    ));

    // Issue 3's runtime targets.
    let ops = |w: &str, c: &str| {
        records
            .iter()
            .find(|r| r.workload == w && r.contender == c)
            .and_then(|r| r.msgs_per_s)
            .map(|s| s.median)
    };
    checks.push((
        "call_soon ≥ 30 M/s",
        match ops("call_soon", RL) {
            Some(v) if v >= 30e6 => Verdict::Reached(format!("{:.1} M/s", v / 1e6)),
            Some(v) => Verdict::Missed(format!("{:.1} M/s", v / 1e6)),
            None => Verdict::NotMeasured("needs ringloop's event loop"),
        },
    ));
    for (w, what) in [
        (
            "create_task",
            "create_task at least as fast as tokio spawn_local",
        ),
        (
            "timers",
            "1M timers (half cancelled) at least as fast as tokio sleep",
        ),
    ] {
        checks.push((
            what,
            match (ops(w, RL), ops(w, "tokio")) {
                (Some(a), Some(b)) if a >= b => Verdict::Reached(format!("{a:.0} vs {b:.0} /s")),
                (Some(a), Some(b)) => Verdict::Missed(format!("{a:.0} vs {b:.0} /s")),
                _ => Verdict::NotMeasured("needs ringloop's event loop"),
            },
        ));
    }
    checks.push((
        "0.5 ms timer lateness p99 ≤ 50 µs, never early",
        match records
            .iter()
            .find(|r| r.workload == "timer_lateness" && r.contender == RL)
        {
            Some(r) => {
                let floor = lateness_floor(records);
                match (r.p99_us, r.early) {
                    (Some(p), Some(0)) if p <= 50.0 => {
                        Verdict::Reached(format!("p99 {p:.1} µs{floor}"))
                    }
                    (Some(p), e) => {
                        Verdict::Missed(format!("p99 {p:.1} µs, early {}{floor}", e.unwrap_or(0)))
                    }
                    _ => Verdict::NotMeasured("needs ringloop's event loop"),
                }
            }
            None => Verdict::NotMeasured("needs ringloop's event loop"),
        },
    ));

    let mut out = String::from("targets (issues 5 and 3):\n");
    for (what, v) in checks {
        let (mark, detail) = match v {
            Verdict::Reached(d) => ("reached    ", d),
            Verdict::Missed(d) => ("NOT reached", d),
            Verdict::NotMeasured(why) => ("not measured", why.to_string()),
        };
        let _ = writeln!(out, "  [{mark}] {what}: {detail}");
    }
    out
}
