//! Server processes: the harness re-executes itself as `serve --contender NAME --mode MODE`,
//! pinned to the server core, and owns the child until it is killed.
//!
//! A child never outlives the harness: [`ServerProcess`] kills it on drop (also while
//! unwinding from a panic), and the child asks the kernel for `SIGKILL` should the harness die
//! first (`PR_SET_PDEATHSIG`).

use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::contenders::{Contender, Mode};
use crate::pin;

/// A running server under test.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    /// Where it listens, on loopback.
    pub(crate) addr: SocketAddr,
    /// What the server said it runs on (backend, io_uring setup flags).
    pub(crate) info: String,
}

impl ServerProcess {
    /// Starts `contender` serving `mode`, optionally wrapped (`valgrind …`), and waits up to
    /// `ready_timeout` for it to announce its port.
    pub(crate) fn spawn(
        contender: Contender,
        mode: Mode,
        wrapper: &[String],
        ready_timeout: Duration,
    ) -> io::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args([
            "serve",
            "--contender",
            contender.name(),
            "--mode",
            mode.name(),
        ]);
        if let Some((key, value)) = contender.env() {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = spawn_pinned(&mut cmd, pin::SERVER_CPU)?;
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            info: String::new(),
        };
        let stdout = server
            .child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let (port, info) = read_ready_line(stdout, ready_timeout).map_err(|e| {
            let status = server.child.try_wait().ok().flatten();
            let why = status.map_or(String::new(), |s| format!(" (server exited: {s})"));
            io::Error::new(
                e.kind(),
                format!("{} did not start: {e}{why}", contender.name()),
            )
        })?;
        server.addr.set_port(port);
        server.info = info;
        Ok(server)
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL: valgrind ignores SIGTERM while its guest blocks in io_uring_enter.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` pinned to `cpu` (when the machine has it) and bound to die with the harness.
pub(crate) fn spawn_pinned(cmd: &mut Command, cpu: usize) -> io::Result<Child> {
    spawn_bound(cmd, Some(cpu))
}

/// Spawns `cmd`, pinned to `cpu` if given and present, and bound to die with the harness.
pub(crate) fn spawn_bound(cmd: &mut Command, cpu: Option<usize>) -> io::Result<Child> {
    let pin_to = cpu.filter(|&c| pin::cpus_available() > c);
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // syscalls (prctl, sched_setaffinity); it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(cpu) = pin_to {
                pin::pin_current_thread(cpu)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Splits `READY <port> <info>` into the port and the info.
fn parse_ready(line: &str) -> Option<(u16, String)> {
    let rest = line.strip_prefix("READY ")?;
    let (port, info) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((port.trim().parse().ok()?, info.trim().to_string()))
}

/// Waits for `READY <port> <info>` on the child's stdout; a thread keeps draining stdout afterwards
/// so the child never blocks on a full pipe.
fn read_ready_line(
    stdout: std::process::ChildStdout,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first);
        for _ in lines {}
    });
    let line = match rx.recv_timeout(timeout) {
        Ok(Some(Ok(line))) => line,
        Ok(Some(Err(e))) => return Err(e),
        Ok(None) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "exited before READY",
            ))
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no READY within {timeout:?}"),
            ))
        }
    };
    parse_ready(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected first line {line:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::parse_ready;

    #[test]
    fn ready_line() {
        assert_eq!(
            parse_ready("READY 4242 io_uring, setup X"),
            Some((4242, "io_uring, setup X".into()))
        );
        assert_eq!(parse_ready("READY 80"), Some((80, String::new())));
        assert_eq!(parse_ready("hello"), None);
    }
}
