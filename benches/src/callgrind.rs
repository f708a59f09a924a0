//! `--instructions`: user-space instructions per message, counted by callgrind.
//!
//! The server runs under `valgrind --tool=callgrind`; after connections are up and warm,
//! the load is paused, the counters are zeroed (`callgrind_control -z`), a fixed window of
//! load runs and is drained, and the counters are dumped (`callgrind_control -d`). The dump's
//! total `Ir` divided by the messages of that window is the figure. Pausing the load around
//! zero and dump makes the window exact even though callgrind acts on commands with delay.
//! The server is then killed with SIGKILL: valgrind ignores SIGTERM while its guest is
//! blocked in `io_uring_enter`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::contenders::{Contender, Mode};
use crate::loadgen::LoadGen;
use crate::server::ServerProcess;

/// Whether valgrind and callgrind_control are installed.
pub(crate) fn usable() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One measurement's shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// Server mode.
    pub(crate) mode: Mode,
    /// Connections.
    pub(crate) conns: usize,
    /// Response bytes.
    pub(crate) response_len: usize,
    /// Length of the counted window.
    pub(crate) window: Duration,
}

/// User-space instructions per message for `contender` under `load`.
///
/// # Errors
/// The server failing under valgrind (e.g. a valgrind that rejects `io_uring_setup`), a
/// control command timing out, or no dump appearing; the message says which.
pub(crate) fn instructions_per_msg(
    contender: Contender,
    load: Load,
    request: Vec<u8>,
    keep: Option<&Path>,
) -> io::Result<f64> {
    let dir = std::env::temp_dir().join(format!(
        "ringloop-bench-cg-{}-{}",
        std::process::id(),
        contender.name()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let result = measure(contender, load, request, &dir, keep);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn measure(
    contender: Contender,
    load: Load,
    request: Vec<u8>,
    dir: &Path,
    keep: Option<&Path>,
) -> io::Result<f64> {
    let out = dir.join("callgrind.out");
    let log = dir.join("valgrind.log");
    let mut wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}", log.display()),
    ];
    // Extra valgrind options, e.g. `--dump-instr=yes` to attribute costs per instruction.
    if let Ok(extra) = std::env::var("RINGLOOP_BENCH_VALGRIND_ARGS") {
        wrapper.extend(extra.split_whitespace().map(str::to_string));
    }
    let explain = |e: io::Error| {
        let tail = fs::read_to_string(&log).unwrap_or_default();
        let hint = tail
            .lines()
            .rev()
            .find(|l| l.contains("unhandled") || l.contains("io_uring"));
        io::Error::new(
            e.kind(),
            format!(
                "{e}{}",
                hint.map(|h| format!(" [valgrind: {h}]"))
                    .unwrap_or_default()
            ),
        )
    };
    let mut server = ServerProcess::spawn(contender, load.mode, &wrapper, Duration::from_secs(60))
        .map_err(explain)?;
    let mut lg = LoadGen::connect(
        server.addr,
        load.conns,
        request,
        load.response_len,
        Duration::from_secs(60),
    )
    .map_err(explain)?;
    lg.run(load.window / 4)?;
    lg.drain(Duration::from_secs(30))?;
    control(&["-z"], server.pid())?;
    let mut messages = lg.run(load.window)?.messages;
    messages += lg.drain(Duration::from_secs(30))?.messages;
    control(&["-d"], server.pid())?;
    let (total, dump) = wait_for_dump(dir, &out, Duration::from_secs(30))?;
    if !server.is_alive() {
        return Err(io::Error::other("server died under valgrind"));
    }
    drop(lg);
    drop(server);
    if messages == 0 {
        return Err(io::Error::other("no message completed under valgrind"));
    }
    if let Some(keep) = keep {
        // For `callgrind_annotate`: where the instructions go, function by function.
        fs::copy(&dump, keep)?;
    }
    Ok(total as f64 / messages as f64)
}

/// Runs `callgrind_control ARGS PID`, bounded in time.
fn control(args: &[&str], pid: u32) -> io::Result<()> {
    let mut child = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "callgrind_control {} failed: {status}",
                    args.join(" ")
                )))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "callgrind_control timed out",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a dump file beside `out` (callgrind names them `out.N`) and returns its `Ir`
/// and its path.
fn wait_for_dump(dir: &Path, out: &Path, timeout: Duration) -> io::Result<(u64, PathBuf)> {
    let deadline = Instant::now() + timeout;
    let prefix = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("callgrind.out")
        .to_string();
    loop {
        let dumps: Vec<PathBuf> = fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        for d in &dumps {
            if let Some(ir) = fs::read_to_string(d)
                .ok()
                .as_deref()
                .and_then(parse_total_ir)
            {
                return Ok((ir, d.clone()));
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no callgrind dump appeared",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `Ir` total of a callgrind dump (`totals:` line, or `summary:` in older formats).
fn parse_total_ir(dump: &str) -> Option<u64> {
    dump.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_total_ir;

    #[test]
    fn parses_totals_line() {
        assert_eq!(
            parse_total_ir("events: Ir\nfn=main\n1 5\ntotals: 123456\n"),
            Some(123456)
        );
        assert_eq!(parse_total_ir("summary: 42\n"), Some(42));
        assert_eq!(parse_total_ir("events: Ir\n"), None);
    }
}
