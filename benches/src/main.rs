//! ringloop-bench: ringloop on io_uring and on epoll against tokio, bare io_uring and epoll
//! loops and (feature `peers`) monoio and compio, in one command.
//!
//! Each server runs in its own process pinned to CPU 0 (the harness re-executes itself with
//! the hidden `serve` subcommand); the harness's closed-loop load generator runs pinned to
//! CPU 1. Contenders are interleaved round by round, and the table reports medians with their
//! min–max spread, server CPU time per message (the figure to compare when the load
//! generator saturates first), syscalls per message (perf), memory per idle connection and,
//! with `--instructions`, user-space instructions per message (callgrind).
//! See `docs/BENCHMARKS.md`.

mod callgrind;
mod cli;
mod contenders;
mod floor;
mod loadgen;
mod metrics;
mod micro;
mod pin;
mod report;
mod runner;
mod server;
mod syscalls;
mod targets;
mod workload;

use std::process::ExitCode;

use cli::Command;
use contenders::Contender;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringloop-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = pin::raise_fd_limit() {
        eprintln!("ringloop-bench: cannot raise the open-file limit: {e}");
    }
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Serve {
            contender,
            mode,
            port,
        } => match contender.serve(mode, port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringloop-bench serve {}: {e}", contender.name());
                ExitCode::FAILURE
            }
        },
        Command::Micro { contender, kind, n } => {
            let result = match contender {
                Contender::Tokio => micro::run_tokio(kind, n),
                Contender::RingloopIoUring => {
                    contenders::ringloop::micro(contenders::ringloop::Backend::IoUring, kind, n)
                }
                Contender::RingloopEpoll => {
                    contenders::ringloop::micro(contenders::ringloop::Backend::Epoll, kind, n)
                }
                other => Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!("no micro-workloads for {}", other.name()),
                )),
            };
            match result {
                Ok(r) => {
                    println!("{r}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "ringloop-bench micro {} {}: {e}",
                        contender.name(),
                        kind.name()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Floor { floor, n } => match floor.run(n) {
            Ok(r) => {
                println!("{r}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringloop-bench micro --floor {}: {e}", floor.name());
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => bench(&args),
    }
}

fn bench(args: &cli::BenchArgs) -> ExitCode {
    if let Some(why) = args
        .contenders
        .iter()
        .filter(|_| args.contenders_given)
        .find_map(|c| c.unavailable_reason())
    {
        eprintln!("ringloop-bench: a contender you named is unavailable: {why}");
    }
    if pin::cpus_available() > pin::LOADGEN_CPU {
        if let Err(e) = pin::pin_current_thread(pin::LOADGEN_CPU) {
            eprintln!(
                "note: cannot pin the load generator to CPU {}: {e}",
                pin::LOADGEN_CPU
            );
        }
    } else {
        eprintln!(
            "note: one CPU only: server and load generator share it (figures not comparable)"
        );
    }
    let started = std::time::Instant::now();
    let (records, servers) = runner::run(args);
    println!();
    println!("{}", machine_line());
    for (c, info) in servers {
        println!("  {:<18} {info}", c.name());
    }
    print!("{}", report::table(&records));
    println!();
    print!("{}", targets::evaluate(&records));
    println!("(total {:.0} s)", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        if let Err(e) = report::write_json(path, &records) {
            eprintln!("ringloop-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {} records to {}", records.len(), path.display());
    }
    ExitCode::SUCCESS
}

/// `machine: 2 CPUs, Linux 6.x, <cpu model>`.
fn machine_line() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "machine: {} CPUs ({model}), Linux {}; server on CPU {}, load generator on CPU {}",
        pin::cpus_available(),
        kernel.trim(),
        pin::SERVER_CPU,
        pin::LOADGEN_CPU
    )
}
