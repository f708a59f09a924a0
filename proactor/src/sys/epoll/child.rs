//! Child exits on epoll: a pidfd becomes readable when its process exits.
//!
//! `WaitId` opens a pidfd for the child (`pidfd_open`, Linux 5.3), keeps it in the op, parks
//! on its readability and then reaps with `waitid(P_PIDFD, …, WEXITED | WNOHANG)` (5.4),
//! which fills the op's `siginfo_t` exactly as `IORING_OP_WAITID` would. The pidfd is closed
//! when the op completes or is cancelled.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::perform::Progress;
use crate::op::WaitId;

/// Opens a pidfd for `pid`.
///
/// # Errors
/// A negative errno, as the op's completion reports it: `ECHILD` when no such process
/// exists (what `waitid` says for a pid that is not a live child), `ENOSYS` (logged) on
/// kernels without pidfds.
pub(super) fn open(pid: libc::pid_t) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(match errno {
            libc::ESRCH => -libc::ECHILD,
            libc::ENOSYS => {
                tracing::warn!(
                    pid,
                    "pidfd_open: ENOSYS — this kernel (older than 5.3) cannot watch child exits on the epoll backend; the WaitId op fails with ENOSYS"
                );
                -libc::ENOSYS
            }
            other => -other,
        });
    }
    let fd = RawFd::try_from(fd).unwrap_or_else(|_| unreachable!("pidfd {fd} out of range"));
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps the child if it has exited, filling `op.info`. `Again` while it runs.
pub(super) fn try_reap(op: &mut WaitId) -> Progress {
    let Some(pidfd) = op.pidfd.as_ref().map(AsRawFd::as_raw_fd) else {
        return Progress::Done(-libc::EBADF);
    };
    // SAFETY: all-zero bytes is a valid `siginfo_t`; zeroing lets us tell "not exited yet"
    // (si_pid stays 0 under WNOHANG) from a reaped child.
    *op.info = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `op.info` is a live, boxed `siginfo_t` the kernel writes during the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd as libc::id_t,
                &mut *op.info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno == libc::EINTR {
                continue;
            }
            return Progress::Done(-errno);
        }
        // SAFETY: reading the pid field of a `siginfo_t` that is zeroed or filled by waitid.
        return if unsafe { op.info.si_pid() } == 0 {
            Progress::Again
        } else {
            Progress::Done(0)
        };
    }
}
