//! Waking a proactor blocked in the kernel from another thread.
//!
//! An eventfd is watched by one outstanding read on the ring. A wake-up writes to it only when
//! the proactor is (about to be) asleep and nobody has written since it last woke, so a busy
//! loop that is being fed from other threads pays one atomic operation per wake-up, not a
//! syscall.
//!
//! The protocol is two flags in one atomic: the proactor sets `SLEEPING` before it waits and
//! skips the wait if `NOTIFIED` was already set; a waker sets `NOTIFIED` and writes the
//! eventfd only if `SLEEPING` was set and `NOTIFIED` was not. Either side sees the other's
//! flag, so no wake-up is lost.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};

const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

/// A `Send + Sync` handle that makes its proactor's [`poll`](crate::Proactor::poll) return.
#[derive(Debug)]
pub struct Waker {
    eventfd: OwnedFd,
    state: AtomicU8,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall with no pointer arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            eventfd,
            state: AtomicU8::new(0),
        })
    }

    /// Wakes the proactor if it is blocked, or makes its next wait return at once.
    ///
    /// Cheap when the proactor is awake (one atomic operation); never blocks.
    pub fn wake(&self) {
        let prev = self.state.fetch_or(NOTIFIED, Ordering::SeqCst);
        if prev == SLEEPING {
            let one: u64 = 1;
            // An error (EAGAIN at a saturated counter) still leaves the counter non-zero, so
            // the wake-up is not lost and the error can be ignored.
            let fd = self.eventfd.as_raw_fd();
            // SAFETY: writes 8 bytes from a live local to an eventfd we own.
            let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }

    /// The eventfd the proactor reads.
    pub(crate) fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Called before a blocking wait: returns `false` when a wake-up is already pending and
    /// the wait must not block.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.state.fetch_or(SLEEPING, Ordering::SeqCst) & NOTIFIED == 0
    }

    /// Called after every wait (blocking or not): clears both flags. Returns whether a
    /// wake-up had been requested.
    pub(crate) fn after_wait(&self) -> bool {
        self.state.swap(0, Ordering::SeqCst) & NOTIFIED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awake_proactor_costs_no_write() {
        let waker = Waker::new().unwrap();
        waker.wake();
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into a live local from an eventfd we own.
        let n = unsafe { libc::read(waker.fd(), (&mut buf as *mut u64).cast(), 8) };
        assert_eq!(n, -1, "nothing was written while awake");
        assert!(
            !waker.prepare_sleep(),
            "the pending wake-up forbids sleeping"
        );
        assert!(waker.after_wait());
    }

    #[test]
    fn sleeping_proactor_gets_a_write() {
        let waker = Waker::new().unwrap();
        assert!(waker.prepare_sleep());
        waker.wake();
        waker.wake();
        let mut buf = 0u64;
        // SAFETY: as above.
        let n = unsafe { libc::read(waker.fd(), (&mut buf as *mut u64).cast(), 8) };
        assert_eq!((n, buf), (8, 1), "exactly one write for two wake-ups");
        assert!(waker.after_wait());
    }
}
