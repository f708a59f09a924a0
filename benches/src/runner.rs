//! The benchmark run: for each workload, rounds of every contender interleaved
//! (A B C A B C …), each measurement against a fresh server process; then the summaries.
//!
//! Progress goes to stderr, the table to stdout. A failing contender is reported in its
//! record's note and the run goes on.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::callgrind;
use crate::cli::BenchArgs;
use crate::contenders::http::{REQUEST, RESPONSE};
use crate::contenders::Contender;
use crate::floor::Floor;
use crate::loadgen::LoadGen;
use crate::metrics::{per_connection_growth, process_cpu_time, process_rss, us, Spread};
use crate::micro::{MicroKind, MicroResult};
use crate::report::Record;
use crate::server::{spawn_pinned, ServerProcess};
use crate::syscalls::{self, SyscallCounter};
use crate::{pin, workload::Workload};

/// One round of one contender on a network workload.
#[derive(Clone, Copy, Debug, Default)]
struct NetSample {
    msgs_per_s: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    max_us: Option<f64>,
    cpu_us_per_msg: Option<f64>,
    syscalls_per_msg: Option<f64>,
    /// Server CPU time over wall time in the window: near 1 means the server saturated.
    server_busy: f64,
    /// The same for the load generator's thread: near 1 means the client saturated.
    client_busy: f64,
}

/// Settings shared by every measurement of a run.
#[derive(Debug)]
struct Plan<'a> {
    args: &'a BenchArgs,
    perf: bool,
    /// What each contender's server said it runs on (first READY line seen).
    server_info: std::cell::RefCell<Vec<(Contender, String)>>,
}

/// Runs everything `args` asks for and returns one record per workload × contender.
pub(crate) fn run(args: &BenchArgs) -> (Vec<Record>, Vec<(Contender, String)>) {
    let mut net_contenders = Vec::new();
    for &c in &args.contenders {
        match c.unavailable_reason() {
            None => net_contenders.push(c),
            Some(why) => eprintln!("note: {} skipped: {why}", c.name()),
        }
    }
    let perf = args.syscalls && syscalls::perf_usable();
    if args.syscalls && !perf {
        eprintln!("note: `perf stat -e raw_syscalls:sys_enter` is not usable here: syscalls/msg reported as null");
    }
    let plan = Plan {
        args,
        perf,
        server_info: Default::default(),
    };
    let mut records = Vec::new();
    for w in &args.workloads {
        eprintln!("== {w}");
        match *w {
            Workload::Echo { .. } | Workload::Http { .. } => {
                records.extend(plan.network(*w, &net_contenders))
            }
            Workload::Idle { conns } => records.extend(plan.idle(conns, &net_contenders)),
            Workload::Micro(kind) => records.extend(plan.micro(kind)),
        }
    }
    if args.instructions {
        plan.instructions(&mut records, &net_contenders);
    }
    (records, plan.server_info.into_inner())
}

/// The request and the expected response length of a network workload.
fn traffic(w: Workload) -> (Vec<u8>, usize) {
    match w {
        Workload::Http { .. } => (REQUEST.to_vec(), RESPONSE.len()),
        _ => {
            let size = w.size().unwrap_or(64);
            ((0..size).map(|i| (i % 251) as u8).collect(), size)
        }
    }
}

/// Time allowed to open `conns` connections.
fn connect_timeout(conns: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(conns as u64 * 2)
}

fn err_note(e: &io::Error) -> String {
    let s = e.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

impl Plan<'_> {
    fn network(&self, w: Workload, contenders: &[Contender]) -> Vec<Record> {
        let gathered = self.rounds(
            contenders,
            |c| self.measure_network(c, w),
            |s| {
                format!(
                    "{:>10.0} msgs/s  busy: server {:>3.0} % client {:>3.0} %  cpu {} µs/msg  syscalls {}",
                    s.msgs_per_s,
                    s.server_busy * 100.0,
                    s.client_busy * 100.0,
                    s.cpu_us_per_msg.map_or("-".into(), |v| format!("{v:.2}")),
                    s.syscalls_per_msg.map_or("-".into(), |v| format!("{v:.3}")),
                )
            },
        );
        contenders
            .iter()
            .zip(gathered)
            .map(|(c, (s, note))| Record {
                workload: w.name().into(),
                contender: c.name().into(),
                conns: w.conns(),
                size: w.size().filter(|_| matches!(w, Workload::Echo { .. })),
                msgs_per_s: Spread::of(s.iter().map(|x| Some(x.msgs_per_s))),
                p50_us: Spread::of(s.iter().map(|x| x.p50_us)).map(|s| s.median),
                p99_us: Spread::of(s.iter().map(|x| x.p99_us)).map(|s| s.median),
                max_us: Spread::of(s.iter().map(|x| x.max_us)).map(|s| s.max),
                server_cpu_us_per_msg: Spread::of(s.iter().map(|x| x.cpu_us_per_msg)),
                syscalls_per_msg: Spread::of(s.iter().map(|x| x.syscalls_per_msg))
                    .map(|s| s.median),
                server_busy: Spread::of(s.iter().map(|x| Some(x.server_busy))).map(|s| s.median),
                rounds: s.len(),
                note,
                ..Record::default()
            })
            .collect()
    }

    /// Runs the rounds of one workload, every runner once per round (interleaved), printing
    /// a progress line per measurement: `describe` of its sample, or its failure. Returns,
    /// per runner, its samples and the note of its first failure (or why it cannot run).
    fn rounds<R: RoundRunner, T>(
        &self,
        runners: &[R],
        mut measure: impl FnMut(R) -> io::Result<T>,
        describe: impl Fn(&T) -> String,
    ) -> Vec<(Vec<T>, Option<String>)> {
        let mut gathered: Vec<(Vec<T>, Option<String>)> =
            runners.iter().map(|_| (Vec::new(), None)).collect();
        let rounds = self.args.rounds;
        for round in 1..=rounds {
            for (&runner, (samples, note)) in runners.iter().zip(&mut gathered) {
                if let Some(why) = runner.unavailable() {
                    note.get_or_insert_with(|| why.to_string());
                    continue;
                }
                let (name, width) = (runner.name(), R::NAME_WIDTH);
                match measure(runner) {
                    Ok(s) => {
                        eprintln!("  round {round}/{rounds}: {name:<width$} {}", describe(&s));
                        samples.push(s);
                    }
                    Err(e) => {
                        eprintln!("  round {round}/{rounds}: {name:<width$} failed: {e}");
                        note.get_or_insert_with(|| err_note(&e));
                    }
                }
            }
        }
        gathered
    }

    fn measure_network(&self, c: Contender, w: Workload) -> io::Result<NetSample> {
        let (mode, conns) = (
            w.mode().unwrap_or(crate::contenders::Mode::Echo),
            w.conns().unwrap_or(1),
        );
        let (request, response_len) = traffic(w);
        let window = self.args.duration;
        let mut server = ServerProcess::spawn(c, mode, &[], Duration::from_secs(10))?;
        {
            let mut info = self.server_info.borrow_mut();
            if !info.iter().any(|(k, _)| *k == c) {
                info.push((c, server.info.clone()));
            }
        }
        let pid = server.pid();
        let mut lg = LoadGen::connect(
            server.addr,
            conns,
            request,
            response_len,
            connect_timeout(conns),
        )?;
        lg.run((window / 2).clamp(Duration::from_millis(100), Duration::from_millis(300)))?;
        let (cpu0, client0) = (process_cpu_time(pid)?, thread_cpu_time());
        let win = lg.run(window)?;
        let (cpu1, client1) = (process_cpu_time(pid)?, thread_cpu_time());
        let syscalls_per_msg = if self.perf {
            match count_syscalls(pid, &mut lg, (window / 3).max(Duration::from_millis(100))) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("  note: syscall count failed: {e}");
                    None
                }
            }
        } else {
            None
        };
        if !server.is_alive() {
            return Err(io::Error::other("server exited during the run"));
        }
        if win.messages == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no message completed in the window",
            ));
        }
        let cpu = cpu1.saturating_sub(cpu0);
        Ok(NetSample {
            msgs_per_s: win.msgs_per_s(),
            p50_us: win.latency.quantile(0.5).map(us),
            p99_us: win.latency.quantile(0.99).map(us),
            max_us: Some(us(win.latency.max())),
            cpu_us_per_msg: Some(cpu.as_secs_f64() * 1e6 / win.messages as f64),
            server_busy: cpu.as_secs_f64() / win.elapsed.as_secs_f64().max(1e-9),
            client_busy: client1.saturating_sub(client0).as_secs_f64()
                / win.elapsed.as_secs_f64().max(1e-9),
            syscalls_per_msg,
        })
    }

    fn idle(&self, conns: usize, contenders: &[Contender]) -> Vec<Record> {
        let gathered = self.rounds(
            contenders,
            |c| measure_idle(c, conns),
            |m| {
                format!(
                    "{:>8.0} B/conn, fixed {:>6.0} KiB ({:.0} B/conn over all {conns})",
                    m.per_conn,
                    m.fixed / 1024.0,
                    m.overall
                )
            },
        );
        contenders
            .iter()
            .zip(gathered)
            .map(|(c, (m, note))| Record {
                workload: "idle".into(),
                contender: c.name().into(),
                conns: Some(conns),
                rss_bytes_per_conn: Spread::of(m.iter().map(|m| Some(m.per_conn)))
                    .map(|s| s.median),
                rounds: m.len(),
                note,
                ..Record::default()
            })
            .collect()
    }

    fn micro(&self, kind: MicroKind) -> Vec<Record> {
        let mut runners = vec![MicroRunner::Contender(Contender::Tokio)];
        if kind != MicroKind::TimersDelayQueue {
            for c in [Contender::RingloopIoUring, Contender::RingloopEpoll] {
                if self.args.contenders.contains(&c) {
                    runners.push(MicroRunner::Contender(c));
                }
            }
        }
        if kind == MicroKind::TimerLateness {
            runners.extend(Floor::ALL.map(MicroRunner::Floor));
        }
        let n = kind.count(self.args.quick);
        let gathered = self.rounds(
            &runners,
            |runner| run_micro_child(runner, kind, n),
            |r| format!("{:>12.0} ops/s  {:.3} s", r.ops_per_s, r.secs),
        );
        runners
            .iter()
            .zip(gathered)
            .map(|(runner, (s, note))| Record {
                workload: kind.name().into(),
                contender: runner.name().into(),
                msgs_per_s: Spread::of(s.iter().map(|r| Some(r.ops_per_s))),
                p50_us: Spread::of(s.iter().map(|r| r.p50_us)).map(|s| s.median),
                p99_us: Spread::of(s.iter().map(|r| r.p99_us)).map(|s| s.median),
                max_us: Spread::of(s.iter().map(|r| r.max_us)).map(|s| s.max),
                secs: Spread::of(s.iter().map(|r| Some(r.secs))).map(|s| s.median),
                early: (!s.is_empty()).then(|| s.iter().map(|r| r.early).sum()),
                rounds: s.len(),
                note,
                ..Record::default()
            })
            .collect()
    }

    /// Fills `instructions_per_msg` of the network records, one callgrind run per contender
    /// and echo/http workload.
    fn instructions(&self, records: &mut [Record], contenders: &[Contender]) {
        if !callgrind::usable() {
            eprintln!(
                "note: valgrind/callgrind_control not found: instructions/msg reported as null"
            );
            return;
        }
        if let Some(dir) = &self.args.callgrind_out {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("note: cannot create {}: {e}; dumps not kept", dir.display());
            }
        }
        let window = self.args.duration.max(Duration::from_secs(1));
        for w in &self.args.workloads {
            let (Some(mode), Some(conns)) = (w.mode(), w.conns()) else {
                continue;
            };
            if matches!(w, Workload::Idle { .. }) {
                continue;
            }
            eprintln!("== instructions: {w} (callgrind)");
            let (request, response_len) = traffic(*w);
            for &c in contenders {
                let load = callgrind::Load {
                    mode,
                    conns,
                    response_len,
                    window,
                };
                let keep = self.args.callgrind_out.as_ref().map(|dir| {
                    let size = w.size().map_or(String::new(), |s| format!("x{s}"));
                    dir.join(format!(
                        "callgrind.{}.{}-{conns}{size}.out",
                        c.name(),
                        w.name()
                    ))
                });
                let result =
                    callgrind::instructions_per_msg(c, load, request.clone(), keep.as_deref());
                let rec = records.iter_mut().find(|r| {
                    r.workload == w.name()
                        && r.contender == c.name()
                        && r.conns == w.conns()
                        && (r.size == w.size() || r.size.is_none())
                });
                match result {
                    Ok(ir) => {
                        eprintln!("  {:<18} {ir:>8.0} instructions/msg", c.name());
                        if let Some(r) = rec {
                            r.instructions_per_msg = Some(ir);
                        }
                    }
                    Err(e) => {
                        eprintln!("  {:<18} callgrind failed: {e}", c.name());
                        if let Some(r) = rec {
                            let n = format!("callgrind: {}", err_note(&e));
                            r.note =
                                Some(r.note.take().map_or(n.clone(), |old| format!("{old}; {n}")));
                        }
                    }
                }
            }
        }
    }
}

/// CPU time of the calling thread (the load generator).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Counts the server's syscalls over a `window` of load; `None` if nothing completed.
fn count_syscalls(pid: u32, lg: &mut LoadGen, window: Duration) -> io::Result<Option<f64>> {
    let mut counter = SyscallCounter::attach(pid)?;
    counter.enable()?;
    let win = lg.run(window)?;
    counter.disable()?;
    let calls = counter.finish()?;
    Ok((win.messages > 0).then(|| calls as f64 / win.messages as f64))
}

/// What one idle round measured.
#[derive(Clone, Copy, Debug)]
struct IdleSample {
    /// Resident bytes each further connection adds: the median slope of the steps after the
    /// first (see `measure_idle`).
    per_conn: f64,
    /// Resident bytes the whole growth holds beyond `per_conn` each: costs paid once, on the
    /// first connections or the largest burst (buffers touched, tables sized), not per
    /// connection.
    fixed: f64,
    /// The whole growth divided by all connections (the figure before the split).
    overall: f64,
}

/// How many steps `measure_idle` opens its connections in.
const IDLE_STEPS: usize = 5;

/// Resident memory per connection: VmRSS before any connection and after each of
/// [`IDLE_STEPS`] equal steps of `conns` connections that each made one round trip and then
/// stay idle. One more connection costs the median slope of the steps after the first (see
/// [`per_connection_growth`]); what the whole growth holds beyond that is reported as fixed.
fn measure_idle(c: Contender, conns: usize) -> io::Result<IdleSample> {
    let (request, response_len) = traffic(Workload::Echo { conns, size: 64 });
    let server = ServerProcess::spawn(
        c,
        crate::contenders::Mode::Echo,
        &[],
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(50));
    let mut rss = vec![process_rss(server.pid())?];
    let mut per_step = Vec::with_capacity(IDLE_STEPS);
    let mut open = Vec::with_capacity(IDLE_STEPS);
    for step in 0..IDLE_STEPS {
        let n = conns * (step + 1) / IDLE_STEPS - conns * step / IDLE_STEPS;
        open.push(LoadGen::connect(
            server.addr,
            n,
            request.clone(),
            response_len,
            connect_timeout(n),
        )?);
        std::thread::sleep(Duration::from_millis(200));
        rss.push(process_rss(server.pid())?);
        per_step.push(n);
    }
    drop(open);
    let growth = rss[IDLE_STEPS].saturating_sub(rss[0]) as f64;
    let overall = growth / conns.max(1) as f64;
    let per_conn = per_connection_growth(&rss, &per_step).unwrap_or(overall);
    Ok(IdleSample {
        per_conn,
        fixed: growth - per_conn * conns as f64,
        overall,
    })
}

/// What the rounds of a workload run: its name in the progress lines (padded to
/// `NAME_WIDTH`), and whether it cannot run here.
trait RoundRunner: Copy {
    const NAME_WIDTH: usize;
    fn name(self) -> &'static str;
    fn unavailable(self) -> Option<&'static str>;
}

/// Network and idle workloads: the contenders were filtered for availability up front.
impl RoundRunner for Contender {
    const NAME_WIDTH: usize = 18;
    fn name(self) -> &'static str {
        Contender::name(self)
    }
    fn unavailable(self) -> Option<&'static str> {
        None
    }
}

impl RoundRunner for MicroRunner {
    const NAME_WIDTH: usize = 21;
    fn name(self) -> &'static str {
        MicroRunner::name(self)
    }
    fn unavailable(self) -> Option<&'static str> {
        match self {
            MicroRunner::Contender(c) => c.unavailable_reason(),
            MicroRunner::Floor(_) => None,
        }
    }
}

/// Who runs a micro-workload: a runtime, or (timer lateness) the kernel alone.
#[derive(Clone, Copy, Debug)]
enum MicroRunner {
    Contender(Contender),
    Floor(Floor),
}

impl MicroRunner {
    fn name(self) -> &'static str {
        match self {
            MicroRunner::Contender(c) => c.name(),
            MicroRunner::Floor(f) => f.name(),
        }
    }
}

/// Runs one micro-workload in a child pinned to the server core.
fn run_micro_child(runner: MicroRunner, kind: MicroKind, n: u64) -> io::Result<MicroResult> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["micro", "--kind", kind.name(), "--n", &n.to_string()]);
    match runner {
        MicroRunner::Contender(c) => {
            cmd.args(["--contender", c.name()]);
            if let Some((key, value)) = c.env() {
                cmd.env(key, value);
            }
        }
        MicroRunner::Floor(f) => {
            cmd.args(["--floor", f.name()]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_pinned(&mut cmd, pin::SERVER_CPU)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout pipe"))?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "micro-workload took over 120 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader
        .join()
        .map_err(|_| io::Error::other("reader thread panicked"))?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "micro-workload exited with {status}"
        )));
    }
    out.lines().find_map(MicroResult::parse).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no RESULT line in {out:?}"),
        )
    })
}
