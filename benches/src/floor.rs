//! What the kernel alone gives for the timer-lateness workload: the floor ringloop's
//! lateness is read against, measured in the same run.
//!
//! Each floor waits for a 0.5 ms deadline the way an event loop's wait could, with nothing
//! else around it, and reports how late it woke up, measured exactly as the event loops'
//! lateness is (from before the deadline is set to after the wait returns). All but one run
//! with the thread's timer slack at 1 ns, as ringloop's loop thread does while it runs
//! (precise timers); `floor-nanosleep-slack` keeps the default slack (50 µs) to show what the
//! slack alone costs.

use std::io;
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{EnterFlags, IoUring};

use crate::metrics::Histogram;
use crate::micro::{MicroResult, LATENESS_DELAY};

/// `IORING_ENTER_ABS_TIMER` (Linux 6.12): the `EXT_ARG` timespec is an absolute time on the
/// ring's clock (`CLOCK_MONOTONIC` unless `IORING_REGISTER_CLOCK` changed it).
const ENTER_ABS_TIMER: u32 = 1 << 5;

/// A kernel-only way of waiting for a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Floor {
    /// `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`, timer slack 1 ns.
    Nanosleep,
    /// The same with the thread's default timer slack.
    NanosleepSlack,
    /// `io_uring_enter(GETEVENTS | EXT_ARG)` with a relative timespec on an idle ring, as
    /// ringloop waits on kernels before 6.12.
    IoUring,
    /// The same with `IORING_ENTER_ABS_TIMER` and an absolute `CLOCK_MONOTONIC` deadline.
    IoUringAbs,
    /// `epoll_pwait2` with a relative timespec on an empty epoll set.
    EpollPwait2,
}

impl Floor {
    /// Every floor, in report order.
    pub(crate) const ALL: [Floor; 5] = [
        Floor::Nanosleep,
        Floor::NanosleepSlack,
        Floor::IoUring,
        Floor::IoUringAbs,
        Floor::EpollPwait2,
    ];

    /// The floor's name in records and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Floor::Nanosleep => "floor-nanosleep",
            Floor::NanosleepSlack => "floor-nanosleep-slack",
            Floor::IoUring => "floor-io-uring",
            Floor::IoUringAbs => "floor-io-uring-abs",
            Floor::EpollPwait2 => "floor-epoll_pwait2",
        }
    }

    /// Parses a name.
    pub(crate) fn parse(s: &str) -> Option<Floor> {
        Floor::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Waits `n` times for [`LATENESS_DELAY`] and reports the lateness.
    pub(crate) fn run(self, n: u64) -> io::Result<MicroResult> {
        if self != Floor::NanosleepSlack {
            set_timer_slack(1)?;
        }
        let mut waiter = Waiter::new(self)?;
        let mut hist = Histogram::new();
        let mut early = 0;
        let start = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            waiter.wait(monotonic_ns()? + LATENESS_DELAY.as_nanos() as u64)?;
            match t0.elapsed().checked_sub(LATENESS_DELAY) {
                Some(late) => hist.record(late.as_nanos() as u64),
                None => early += 1,
            }
        }
        Ok(MicroResult::lateness(&hist, early, start.elapsed()))
    }
}

/// The state one floor waits with.
enum Waiter {
    Nanosleep,
    IoUring { ring: Box<IoUring>, absolute: bool },
    Epoll(i32),
}

impl Waiter {
    fn new(floor: Floor) -> io::Result<Waiter> {
        Ok(match floor {
            Floor::Nanosleep | Floor::NanosleepSlack => Waiter::Nanosleep,
            Floor::IoUring | Floor::IoUringAbs => Waiter::IoUring {
                ring: Box::new(
                    IoUring::builder()
                        .setup_single_issuer()
                        .setup_defer_taskrun()
                        .build(8)?,
                ),
                absolute: floor == Floor::IoUringAbs,
            },
            Floor::EpollPwait2 => {
                // SAFETY: plain syscall; the fd is checked and owned by the waiter.
                let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Waiter::Epoll(fd)
            }
        })
    }

    /// Waits until `deadline` (`CLOCK_MONOTONIC` ns), however the floor waits.
    fn wait(&mut self, deadline: u64) -> io::Result<()> {
        loop {
            let now = monotonic_ns()?;
            if now >= deadline {
                return Ok(());
            }
            let result = match self {
                Waiter::Nanosleep => {
                    let ts = timespec(deadline);
                    // SAFETY: `ts` is a live timespec; no remainder is asked for.
                    let rc = unsafe {
                        libc::clock_nanosleep(
                            libc::CLOCK_MONOTONIC,
                            libc::TIMER_ABSTIME,
                            &ts,
                            std::ptr::null_mut(),
                        )
                    };
                    match rc {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    }
                }
                Waiter::IoUring { ring, absolute } => {
                    let (ns, flags) = if *absolute {
                        (deadline, ENTER_ABS_TIMER)
                    } else {
                        (deadline - now, 0)
                    };
                    let ts = Timespec::from(Duration::from_nanos(ns));
                    let args = SubmitArgs::new().timespec(&ts);
                    let flags = flags | EnterFlags::GETEVENTS.bits() | EnterFlags::EXT_ARG.bits();
                    // SAFETY: `args` is a live `io_uring_getevents_arg` pointing to a live
                    // timespec for the call; nothing is submitted.
                    unsafe { ring.submitter().enter(0, 1, flags, Some(&args)) }.map(drop)
                }
                Waiter::Epoll(fd) => {
                    let ts = timespec(deadline - now);
                    let mut event = libc::epoll_event { events: 0, u64: 0 };
                    // SAFETY: `event` and `ts` are live for the call; no sigmask.
                    let rc = unsafe {
                        libc::syscall(
                            libc::SYS_epoll_pwait2,
                            *fd,
                            &mut event,
                            1,
                            &ts,
                            std::ptr::null::<libc::sigset_t>(),
                            0,
                        )
                    };
                    if rc < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                }
            };
            match result {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Waiter::Epoll(fd) = self {
            // SAFETY: the waiter owns `fd`.
            unsafe { libc::close(*fd) };
        }
    }
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// `CLOCK_MONOTONIC` in ns (the clock `Instant` reads).
fn monotonic_ns() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Sets the calling thread's timer slack in ns.
fn set_timer_slack(ns: libc::c_ulong) -> io::Result<()> {
    let unused: libc::c_ulong = 0;
    // SAFETY: PR_SET_TIMERSLACK takes integers and changes only this thread's slack.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, unused, unused, unused) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_names_round_trip() {
        for f in Floor::ALL {
            assert_eq!(Floor::parse(f.name()), Some(f));
        }
    }

    #[test]
    fn floors_never_wake_early() {
        for f in Floor::ALL {
            let r = match f.run(5) {
                Ok(r) => r,
                // A kernel without ABS_TIMER (before 6.12) or epoll_pwait2 (before 5.11).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => continue,
                Err(e) => panic!("{}: {e}", f.name()),
            };
            assert_eq!(r.early, 0, "{}", f.name());
        }
    }
}
