//! Waiting for readiness without ever returning early.
//!
//! `epoll_pwait2` (Linux 5.11) takes a `timespec`, so a wait ends no sooner than asked, to the
//! nanosecond. Older kernels (or seccomp profiles that do not know the syscall) get
//! `epoll_wait`, whose timeout is in milliseconds: it is rounded **up**, so a 1.2 ms wait
//! becomes 2 ms rather than 1 ms. Which one is used is probed once, when the backend starts.
//!
//! Both let the kernel end the wait late by a slack of its own choosing: at least the
//! thread's timer slack (which the loop lowers to 1 ns while it runs), and for a task that is
//! not real-time 0.1 % of the timeout (0.5 % when niced), up to 100 ms — a 1 s wait ends up
//! to 1 ms late. So a long wait asks for its timeout minus that much, and waits again for
//! what is left when it wakes early: the last, short wait's slack is microseconds.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How the backend waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiter {
    /// `epoll_pwait2`: nanosecond timeouts.
    Pwait2,
    /// `epoll_wait`: millisecond timeouts, rounded up.
    Wait,
}

impl Waiter {
    /// Probes whether the kernel accepts `epoll_pwait2` on `epoll` (a zero-timeout call).
    pub(super) fn probe(epoll: RawFd) -> Waiter {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        match pwait2(
            epoll,
            std::slice::from_mut(&mut event),
            Some(Duration::ZERO),
        ) {
            Ok(_) => Waiter::Pwait2,
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => Waiter::Pwait2,
            Err(err) => {
                tracing::debug!(
                    "epoll_pwait2 unavailable ({err}); waiting with epoll_wait, timeouts rounded up to whole milliseconds"
                );
                Waiter::Wait
            }
        }
    }

    /// Waits for events on `epoll` into `events`, for at most `timeout` (`None`: no limit).
    /// Returns how many events were written.
    ///
    /// # Errors
    /// What the syscall reports, `EINTR` included (the caller treats it as a normal return).
    pub(super) fn wait(
        self,
        epoll: RawFd,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let Some(timeout) = timeout else {
            return self.wait_once(epoll, events, None);
        };
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.wait_once(epoll, events, Some(timeout));
        };
        let mut left = timeout;
        loop {
            let ask = left - slack_allowance(left);
            let n = self.wait_once(epoll, events, Some(ask))?;
            if n > 0 || ask == left {
                return Ok(n);
            }
            left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
        }
    }

    /// One `epoll_pwait2`/`epoll_wait` call.
    fn wait_once(
        self,
        epoll: RawFd,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        match self {
            Waiter::Pwait2 => pwait2(epoll, events, timeout),
            Waiter::Wait => {
                let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
                // SAFETY: `events` is a live, writable buffer of at least `max` entries for
                // the duration of the call.
                let n = unsafe {
                    libc::epoll_wait(epoll, events.as_mut_ptr(), max, timeout_ms(timeout))
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            }
        }
    }
}

/// Waits shorter than this are asked for whole: the kernel's proportional slack on them
/// (0.1 %, 1 µs here) is not worth a second wake-up.
const SPLIT_MIN: Duration = Duration::from_millis(1);

/// The kernel's slack cap (`MAX_SLACK` in fs/select.c).
const MAX_KERNEL_SLACK: Duration = Duration::from_millis(100);

/// How much sooner than `left` a wait asks to end, so that the kernel's proportional slack
/// (`select_estimate_accuracy`: timeout/1000, timeout/200 for a niced task, capped at
/// 100 ms) cannot carry it past `left`: `left/200`, capped at 100 ms; nothing for short
/// waits. A wait asked for `left - a` ends by `(left - a) * 1.005 < left`.
fn slack_allowance(left: Duration) -> Duration {
    if left < SPLIT_MIN {
        return Duration::ZERO;
    }
    (left / 200).min(MAX_KERNEL_SLACK)
}

/// `epoll_pwait2` through `syscall(2)`, so that linking does not need a glibc that has the
/// wrapper (2.35+).
fn pwait2(
    epoll: RawFd,
    events: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` is a live, writable buffer of at least `max` entries and `ts_ptr` is
    // null or points to a live local `timespec`; both outlive the call. A null sigmask means
    // the signal mask is left alone (the size argument is then ignored).
    let n = unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait2,
            epoll,
            events.as_mut_ptr(),
            max,
            ts_ptr,
            std::ptr::null::<libc::sigset_t>(),
            std::mem::size_of::<libc::sigset_t>(),
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// A millisecond timeout for `epoll_wait` that is never shorter than `timeout`: rounded up,
/// `-1` (no limit) for `None`, capped at `i32::MAX` ms (about 24.8 days; the caller waits
/// again if that passes first).
pub(super) fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1200))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_millis(5))), 5);
        assert_eq!(timeout_ms(Some(Duration::from_secs(1 << 40))), i32::MAX);
    }

    #[test]
    fn long_waits_ask_to_end_before_the_kernel_slack_could_make_them_late() {
        assert_eq!(slack_allowance(Duration::from_micros(999)), Duration::ZERO);
        assert_eq!(
            slack_allowance(Duration::from_millis(10)),
            Duration::from_micros(50)
        );
        assert_eq!(slack_allowance(Duration::from_secs(3600)), MAX_KERNEL_SLACK);
        for left in [
            Duration::from_millis(1),
            Duration::from_millis(250),
            Duration::from_secs(20),
            Duration::from_secs(86_400),
        ] {
            let ask = left - slack_allowance(left);
            // The latest end the kernel may choose for `ask`, even for a niced task.
            let latest = ask + (ask / 200).min(MAX_KERNEL_SLACK);
            assert!(
                latest <= left || slack_allowance(left).is_zero(),
                "{left:?}"
            );
        }
    }

    fn wait_never_early(waiter: Waiter) {
        // SAFETY: plain syscall; checked below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        for micros in [300, 1_500, 2_700, 40_000] {
            let want = Duration::from_micros(micros);
            let start = std::time::Instant::now();
            loop {
                match waiter.wait(
                    epoll,
                    &mut events,
                    Some(want.saturating_sub(start.elapsed())),
                ) {
                    Ok(0) if start.elapsed() >= want => break,
                    Ok(0) => panic!("{waiter:?} returned after {:?} < {want:?}", start.elapsed()),
                    Ok(n) => panic!("{n} events on an empty epoll set"),
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // SAFETY: closes the epoll fd created above, owned here.
        unsafe { libc::close(epoll) };
    }

    #[test]
    fn epoll_wait_is_never_early() {
        wait_never_early(Waiter::Wait);
    }

    #[test]
    fn epoll_pwait2_is_never_early_when_the_kernel_has_it() {
        // SAFETY: plain syscall; checked below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let waiter = Waiter::probe(epoll);
        // SAFETY: closes the epoll fd created above.
        unsafe { libc::close(epoll) };
        if waiter != Waiter::Pwait2 {
            eprintln!("SKIPPED: this kernel has no epoll_pwait2");
            return;
        }
        wait_never_early(waiter);
    }
}
