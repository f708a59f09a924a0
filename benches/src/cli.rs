//! Command-line parsing (hand-written: a few flags do not justify a parser dependency).

use std::path::PathBuf;
use std::time::Duration;

use crate::contenders::{Contender, Mode};
use crate::floor::Floor;
use crate::micro::MicroKind;
use crate::workload::Workload;

/// Usage text for `--help`.
pub(crate) const USAGE: &str = "\
ringloop-bench: ringloop (io_uring, epoll) vs tokio, bare loops and peers, side by side

USAGE:
    cargo run --release -p ringloop-bench [--features peers] -- [OPTIONS]

OPTIONS:
    --quick               a short run (under a minute): shorter windows, fewer workloads
    --workload LIST       comma-separated: default, quick, grid, all, echo[:CONNSxSIZE],
                          http[:CONNS], idle[:CONNS], micro, call_soon, create_task,
                          timers, timers-delayqueue, timer_lateness (with the kernel's
                          own waits as floors: floor-nanosleep, floor-io-uring, …)
    --contenders LIST     comma-separated: ringloop-io-uring, ringloop-epoll, tokio,
                          monoio, compio, bare-io-uring, bare-epoll (default: all built)
    --duration TIME       measured window per round, e.g. 2s or 500ms (default 0.8s; quick 0.3s)
    --rounds N            rounds per contender, interleaved (default 3)
    --json FILE           also write the records as a JSON array
    --instructions        user-space instructions per message under callgrind (echo, http)
    --callgrind-out DIR   keep the callgrind dumps there (implies --instructions)
    --no-syscalls         do not count syscalls with perf
    -h, --help            this text

SERVING FOR OTHER LOAD GENERATORS (e.g. wrk):
    ringloop-bench serve --contender NAME --mode echo|http [--port P]
";

/// What to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Run the benchmarks.
    Bench(BenchArgs),
    /// Be a server under test (the hidden child mode, also usable by hand with `wrk`).
    Serve {
        /// Which server.
        contender: Contender,
        /// Echo or HTTP.
        mode: Mode,
        /// Port (0 = any).
        port: u16,
    },
    /// Run one micro-workload and print its `RESULT` line (hidden child mode).
    Micro {
        /// Which runtime.
        contender: Contender,
        /// Which workload.
        kind: MicroKind,
        /// Operation count.
        n: u64,
    },
    /// Run one kernel floor of the timer-lateness workload and print its `RESULT` line
    /// (hidden child mode: `micro --floor NAME [--n N]`).
    Floor {
        /// Which way of waiting.
        floor: Floor,
        /// How many waits.
        n: u64,
    },
    /// Print usage.
    Help,
}

/// Options of a benchmark run.
#[derive(Debug, PartialEq)]
pub(crate) struct BenchArgs {
    /// Short windows and the quick workload set.
    pub(crate) quick: bool,
    /// What to measure, in order.
    pub(crate) workloads: Vec<Workload>,
    /// Who to measure, in report order.
    pub(crate) contenders: Vec<Contender>,
    /// Whether `--contenders` named them (then an unavailable one is an error to report).
    pub(crate) contenders_given: bool,
    /// Measured window per round.
    pub(crate) duration: Duration,
    /// Rounds (contenders interleaved within each).
    pub(crate) rounds: usize,
    /// Where to write JSON records.
    pub(crate) json: Option<PathBuf>,
    /// Measure instructions per message under callgrind.
    pub(crate) instructions: bool,
    /// Count syscalls with perf.
    pub(crate) syscalls: bool,
    /// Where to keep the callgrind dumps of `--instructions` (for `callgrind_annotate`).
    pub(crate) callgrind_out: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        Some("serve") => return parse_serve(&args[1..]),
        Some("micro") => return parse_micro(&args[1..]),
        _ => {}
    }
    let mut quick = false;
    let mut workloads = None;
    let mut contenders = None;
    let mut duration = None;
    let mut rounds = 3;
    let mut json = None;
    let mut instructions = false;
    let mut syscalls = true;
    let mut callgrind_out = None;
    let mut it = Flags::new(args);
    while let Some((flag, ())) = it.next_flag()? {
        match flag.as_str() {
            "--quick" => quick = true,
            "--instructions" => instructions = true,
            "--no-syscalls" => syscalls = false,
            "-h" | "--help" => return Ok(Command::Help),
            "--workload" | "--workloads" => {
                workloads = Some(Workload::parse_list(&value(&mut it)?)?)
            }
            "--contenders" | "--contender" => {
                contenders = Some(parse_contenders(&value(&mut it)?)?)
            }
            "--duration" => duration = Some(parse_duration(&value(&mut it)?)?),
            "--rounds" => {
                rounds = value(&mut it)?
                    .parse()
                    .map_err(|_| "--rounds needs a positive integer".to_string())?;
                if rounds == 0 {
                    return Err("--rounds needs a positive integer".into());
                }
            }
            "--json" => json = Some(PathBuf::from(value(&mut it)?)),
            "--callgrind-out" => {
                callgrind_out = Some(PathBuf::from(value(&mut it)?));
                instructions = true;
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    let contenders_given = contenders.is_some();
    Ok(Command::Bench(BenchArgs {
        quick,
        workloads: workloads.unwrap_or_else(|| {
            if quick {
                Workload::quick_set()
            } else {
                Workload::default_set()
            }
        }),
        contenders: contenders.unwrap_or_else(|| Contender::ALL.to_vec()),
        contenders_given,
        duration: duration.unwrap_or(if quick {
            Duration::from_millis(300)
        } else {
            Duration::from_millis(800)
        }),
        rounds,
        json,
        instructions,
        syscalls,
        callgrind_out,
    }))
}

fn value(it: &mut Flags<'_>) -> Result<String, String> {
    it.value()
}

fn parse_serve(args: &[String]) -> Result<Command, String> {
    let (mut contender, mut mode, mut port) = (None, Mode::Echo, 0u16);
    let mut it = Flags::new(args);
    while let Some((flag, _)) = it.next_flag()? {
        match flag.as_str() {
            "--contender" => contender = Some(parse_contender(&it.value()?)?),
            "--mode" => {
                let v = it.value()?;
                mode =
                    Mode::parse(&v).ok_or_else(|| format!("unknown mode {v:?} (echo or http)"))?;
            }
            "--port" => {
                port = it
                    .value()?
                    .parse()
                    .map_err(|_| "--port needs a port number".to_string())?
            }
            other => return Err(format!("serve: unknown option {other:?}")),
        }
    }
    let contender = contender.ok_or("serve needs --contender")?;
    Ok(Command::Serve {
        contender,
        mode,
        port,
    })
}

fn parse_micro(args: &[String]) -> Result<Command, String> {
    let (mut contender, mut kind, mut n, mut floor) = (None, None, None, None);
    let mut it = Flags::new(args);
    while let Some((flag, _)) = it.next_flag()? {
        match flag.as_str() {
            "--contender" => contender = Some(parse_contender(&it.value()?)?),
            "--floor" => {
                let v = it.value()?;
                floor = Some(Floor::parse(&v).ok_or_else(|| format!("unknown floor {v:?}"))?);
            }
            "--kind" => {
                let v = it.value()?;
                kind = Some(
                    MicroKind::parse(&v).ok_or_else(|| format!("unknown micro-workload {v:?}"))?,
                );
            }
            "--n" => {
                n = Some(
                    it.value()?
                        .parse()
                        .map_err(|_| "--n needs a count".to_string())?,
                )
            }
            other => return Err(format!("micro: unknown option {other:?}")),
        }
    }
    if let Some(floor) = floor {
        return Ok(Command::Floor {
            floor,
            n: n.unwrap_or_else(|| MicroKind::TimerLateness.count(false)),
        });
    }
    let kind = kind.ok_or("micro needs --kind")?;
    Ok(Command::Micro {
        contender: contender.ok_or("micro needs --contender")?,
        kind,
        n: n.unwrap_or_else(|| kind.count(false)),
    })
}

fn parse_contender(s: &str) -> Result<Contender, String> {
    Contender::parse(s).ok_or_else(|| {
        let names: Vec<_> = Contender::ALL.iter().map(|c| c.name()).collect();
        format!("unknown contender {s:?} (one of {})", names.join(", "))
    })
}

fn parse_contenders(s: &str) -> Result<Vec<Contender>, String> {
    let mut v = Vec::new();
    for name in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let c = parse_contender(name)?;
        if !v.contains(&c) {
            v.push(c);
        }
    }
    if v.is_empty() {
        return Err("--contenders needs at least one name".into());
    }
    Ok(v)
}

/// `2`, `1.5`, `2s`, `500ms`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("bad duration {s:?} (e.g. 2s, 500ms)"))?
        * scale;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range (10ms to 1h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Iterates `--flag value` and `--flag=value` pairs.
struct Flags<'a> {
    args: &'a [String],
    pos: usize,
    inline: Option<String>,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        Flags {
            args,
            pos: 0,
            inline: None,
        }
    }

    /// The next flag; `()` is a placeholder so callers can destructure uniformly.
    fn next_flag(&mut self) -> Result<Option<(String, ())>, String> {
        if let Some(v) = self.inline.take() {
            return Err(format!("unexpected value {v:?}"));
        }
        let Some(arg) = self.args.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        if !arg.starts_with('-') {
            return Err(format!("unexpected argument {arg:?} (see --help)"));
        }
        match arg.split_once('=') {
            Some((f, v)) => {
                self.inline = Some(v.to_string());
                Ok(Some((f.to_string(), ())))
            }
            None => Ok(Some((arg.clone(), ()))),
        }
    }

    /// The value of the flag just returned.
    fn value(&mut self) -> Result<String, String> {
        if let Some(v) = self.inline.take() {
            return Ok(v);
        }
        let v = self.args.get(self.pos).ok_or("option needs a value")?;
        self.pos += 1;
        Ok(v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_quick() {
        let Command::Bench(b) = parse(&[]).unwrap() else {
            panic!("not a bench")
        };
        assert_eq!(b.rounds, 3);
        assert_eq!(b.duration, Duration::from_millis(800));
        assert_eq!(b.workloads, Workload::default_set());
        let Command::Bench(q) = parse(&args("--quick")).unwrap() else {
            panic!("not a bench")
        };
        assert!(q.quick);
        assert_eq!(q.workloads, Workload::quick_set());
        assert_eq!(q.duration, Duration::from_millis(300));
    }

    #[test]
    fn all_options() {
        let a = args("--workload=echo:10x1k --contenders tokio,bare-epoll --duration 500ms --rounds 5 --json out.json --instructions");
        let Command::Bench(b) = parse(&a).unwrap() else {
            panic!("not a bench")
        };
        assert_eq!(
            b.workloads,
            vec![Workload::Echo {
                conns: 10,
                size: 1024
            }]
        );
        assert_eq!(b.contenders, vec![Contender::Tokio, Contender::BareEpoll]);
        assert!(b.contenders_given);
        assert_eq!(b.duration, Duration::from_millis(500));
        assert_eq!(b.rounds, 5);
        assert_eq!(b.json, Some(PathBuf::from("out.json")));
        assert!(b.instructions);
    }

    #[test]
    fn hidden_subcommands() {
        assert_eq!(
            parse(&args(
                "serve --contender bare-io-uring --mode http --port 8080"
            ))
            .unwrap(),
            Command::Serve {
                contender: Contender::BareIoUring,
                mode: Mode::Http,
                port: 8080
            }
        );
        assert_eq!(
            parse(&args("micro --contender tokio --kind call_soon --n 10")).unwrap(),
            Command::Micro {
                contender: Contender::Tokio,
                kind: MicroKind::CallSoon,
                n: 10
            }
        );
        assert_eq!(
            parse(&args("micro --floor floor-io-uring-abs --n 7")).unwrap(),
            Command::Floor {
                floor: Floor::IoUringAbs,
                n: 7
            }
        );
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse(&args("--contenders nope")).is_err());
        assert!(parse(&args("--duration fast")).is_err());
        assert!(parse(&args("--rounds 0")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(parse(&args("--quick=yes")).is_err());
        assert!(parse(&args("serve")).is_err());
    }
}
