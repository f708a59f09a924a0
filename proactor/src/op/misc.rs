//! Operations on no data buffer: nop, close, timeouts, readiness and child exits.

use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

/// Completes at once with 0; useful to test the machinery.
#[derive(Debug, Default)]
pub struct Nop;

/// `close(2)`; the proactor also forgets the fd's registration (epoll backend).
#[derive(Debug)]
pub struct Close {
    /// The fd to close; it must have no op in flight.
    pub fd: RawFd,
}

impl Close {
    /// Closes `fd`.
    pub fn new(fd: RawFd) -> Self {
        Close { fd }
    }
}

/// Completes with `Ok(0)` after `duration`, or `ECANCELED` when cancelled first.
///
/// The event loop does not need these for its own timers (it waits with a deadline in the
/// same call that submits); they exist for callers that want a timeout as an op.
pub struct Timeout {
    /// How long after submission the op completes.
    pub duration: Duration,
    pub(crate) ts: Box<io_uring::types::Timespec>,
}

impl Timeout {
    /// A timeout of `duration`.
    pub fn new(duration: Duration) -> Self {
        Timeout {
            duration,
            ts: Box::new(io_uring::types::Timespec::from(duration)),
        }
    }
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("duration", &self.duration)
            .finish()
    }
}

/// Readiness of an fd: completes with the `revents` mask once any of `events`
/// (`libc::POLLIN`, `POLLOUT`, …) holds. Multishot polls complete once per readiness edge.
#[derive(Debug)]
pub struct PollAdd {
    /// The fd watched.
    pub fd: RawFd,
    /// The `poll(2)` events of interest.
    pub events: u32,
    /// Whether to keep watching after the first readiness.
    pub multishot: bool,
}

impl PollAdd {
    /// Completes once `fd` is ready for `events`.
    pub fn new(fd: RawFd, events: u32) -> Self {
        PollAdd {
            fd,
            events,
            multishot: false,
        }
    }

    /// Keeps reporting readiness of `fd` for `events` until cancelled.
    pub fn multishot(fd: RawFd, events: u32) -> Self {
        PollAdd {
            fd,
            events,
            multishot: true,
        }
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildExit {
    /// It called `exit` with this status.
    Exited(i32),
    /// A signal of this number killed it.
    Signaled(i32),
}

impl ChildExit {
    /// asyncio's `returncode`: the exit status, or `-signum` for a signal.
    pub fn returncode(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled(sig) => -sig,
        }
    }
}

/// Waits for child `pid` to exit and reaps it (`waitid(P_PID, pid, WEXITED)`). Uses
/// `IORING_OP_WAITID` where the kernel has it, else a pidfd's readiness.
pub struct WaitId {
    /// The child's process id.
    pub pid: libc::pid_t,
    pub(crate) info: Box<libc::siginfo_t>,
    pub(crate) pidfd: Option<std::os::fd::OwnedFd>,
}

impl WaitId {
    /// Waits for child `pid`.
    pub fn new(pid: libc::pid_t) -> Self {
        // SAFETY: `siginfo_t` is a plain C struct for which all-zero bytes is a valid value.
        let info = Box::new(unsafe { std::mem::zeroed::<libc::siginfo_t>() });
        WaitId {
            pid,
            info,
            pidfd: None,
        }
    }

    /// How the child ended, after a successful completion.
    pub fn exit(&self) -> Option<ChildExit> {
        // SAFETY: reading the status fields of a `siginfo_t` the kernel filled for a
        // `SIGCHLD`-class event (or left zeroed, which reads as pid 0 and is rejected).
        let (pid, status) = unsafe { (self.info.si_pid(), self.info.si_status()) };
        if pid == 0 {
            return None;
        }
        match self.info.si_code {
            libc::CLD_EXITED => Some(ChildExit::Exited(status)),
            libc::CLD_KILLED | libc::CLD_DUMPED => Some(ChildExit::Signaled(status)),
            _ => None,
        }
    }
}

impl fmt::Debug for WaitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitId")
            .field("pid", &self.pid)
            .field("exit", &self.exit())
            .finish()
    }
}
