//! Waiting for a child process: `IORING_OP_WAITID` (6.7), or a pidfd poll plus a
//! non-blocking `waitid(P_PIDFD)` in user space on older kernels.
//!
//! The fallback opens the pidfd when the op is first prepared (kept in the op until its
//! final completion), reaps at once if the child already exited, and otherwise polls the
//! pidfd for `POLLIN` (readable when the child exits), then reaps with `WNOHANG`. Either
//! way the op's `info` ends up filled as the kernel's waitid would fill it, and a pid that
//! is not our child fails with `ECHILD`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::opcode;
use io_uring::types::Fd;

use super::prep::{errno, Prepared};
use super::setup::Caps;
use crate::op::WaitId;

/// Builds the request for a waitid op.
pub(super) fn prepare(op: &mut WaitId, caps: &Caps) -> Prepared {
    if caps.waitid {
        let info: *mut libc::siginfo_t = &mut *op.info;
        return Prepared::Sqe(
            opcode::WaitId::new(libc::P_PID, op.pid as libc::id_t, libc::WEXITED)
                .infop(info)
                .build(),
        );
    }
    let pidfd = match &op.pidfd {
        Some(fd) => fd.as_raw_fd(),
        None => match pidfd_open(op.pid) {
            Ok(fd) => op.pidfd.insert(fd).as_raw_fd(),
            Err(errno) => return Prepared::Done(-errno),
        },
    };
    match reap(op) {
        Reaped::Yes => Prepared::Done(0),
        Reaped::Failed(errno) => Prepared::Done(-errno),
        Reaped::NotYet => {
            Prepared::Sqe(opcode::PollAdd::new(Fd(pidfd), libc::POLLIN as u32).build())
        }
    }
}

/// The outcome of a non-blocking reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reaped {
    /// The child exited and was reaped; `info` is filled.
    Yes,
    /// The child is still running.
    NotYet,
    /// `waitid` failed with this errno (`ECHILD`: not our child, or reaped elsewhere).
    Failed(i32),
}

/// Reaps the op's child if it has exited (fallback path; the pidfd is open). Closes the
/// pidfd unless the child is still running.
pub(super) fn reap(op: &mut WaitId) -> Reaped {
    let Some(pidfd) = &op.pidfd else {
        return Reaped::Failed(libc::EBADF);
    };
    let info: *mut libc::siginfo_t = &mut *op.info;
    // SAFETY: `info` points to the op's boxed, writable `siginfo_t`; `pidfd` is an open
    // pidfd owned by the op.
    let ret = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    let outcome = if ret < 0 {
        Reaped::Failed(errno())
    } else if op.exit().is_some() {
        Reaped::Yes
    } else {
        Reaped::NotYet
    };
    if outcome != Reaped::NotYet {
        op.pidfd = None;
    }
    outcome
}

/// `pidfd_open(pid, 0)`, with `ESRCH` (no such process: already reaped) reported as
/// `ECHILD`, as `waitid` reports it.
fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, i32> {
    // SAFETY: plain syscall with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(match errno() {
            libc::ESRCH => libc::ECHILD,
            e => e,
        });
    }
    // SAFETY: `fd` is a fresh pidfd that nothing else owns; the pidfd is close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
