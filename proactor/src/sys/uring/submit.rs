//! Getting requests to the kernel: the submission queue, the user-space backlog behind it,
//! and the one `io_uring_enter` per loop turn that submits and waits.
//!
//! An op goes straight into the SQ when there is room and nothing is queued before it;
//! otherwise it waits, in push order, in the backlog (a `VecDeque` of ids, with cancel
//! requests in the same queue so they never overtake the op they cancel). The backlog is
//! moved into the SQ whenever there is room: on push, and around every enter. `poll`
//! submits backlogged requests in SQ-sized batches before it waits, so an op stuck behind
//! a full SQ can never be what the wait is waiting for.
//!
//! Kernels with `IORING_ENTER_ABS_TIMER` (6.12) are handed the wait's end as an absolute
//! `CLOCK_MONOTONIC` deadline, so nothing between the caller's clock reading and the kernel's
//! can make a timer late. When there is a backlog, the deadline is fixed before its batches
//! (older kernels then get a timeout recomputed from it just before the waiting enter).

use std::io;
use std::ptr;
use std::time::Duration;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{EnterFlags, IoUring};

use super::prep::{self, Ctx, Prepared};
use super::{multishot, Driver, WAIT_USER_DATA};
use crate::op::{self, Op};
use crate::table::{OpId, OpTable, Stage};

/// An entry of the backlog.
///
/// While the backlog holds any, the SQ's current run of free slots is used up (its `next`
/// is its `end`): a request is backlogged only when the SQ has no room (`issue` or
/// `push_sqe` failed), after `fill_sq` stopped for the same reason, and a new run is
/// started only by `has_room`'s, whose callers move the backlog first (`fill_sq`) or test
/// that it is empty. So a free slot in the current run means an empty backlog, which
/// `restart_send_now`, per message, relies on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Queued {
    /// Start (or re-arm) this op.
    Op(OpId),
    /// Cancel this op (an `AsyncCancel` SQE).
    Cancel(OpId),
}

/// `IORING_ENTER_GETEVENTS`: without it, a `DEFER_TASKRUN` ring posts no completions.
const GETEVENTS: u32 = EnterFlags::GETEVENTS.bits();
const EXT_ARG: u32 = EnterFlags::EXT_ARG.bits();
/// `IORING_ENTER_ABS_TIMER` (Linux 6.12; not in the io-uring crate's `EnterFlags`): the
/// `EXT_ARG` timespec is an absolute time on the ring's clock, `CLOCK_MONOTONIC` unless
/// `IORING_REGISTER_CLOCK` changed it (ringloop never does).
const ABS_TIMER: u32 = 1 << 5;

impl Driver {
    /// Starts op `id` (new or re-armed): into the SQ if it fits behind the backlog, else at
    /// the back of the backlog.
    #[inline]
    pub(super) fn start(&mut self, table: &mut OpTable, id: OpId) {
        if self.backlog.is_empty() && self.issue(table, id) {
            return;
        }
        self.start_behind_backlog(table, id);
    }

    /// `start` when requests wait for room in the SQ (or it is full): this one queues up
    /// behind them.
    #[cold]
    #[inline(never)]
    fn start_behind_backlog(&mut self, table: &mut OpTable, id: OpId) {
        self.fill_sq(table);
        if self.backlog.is_empty() && self.issue(table, id) {
            return;
        }
        if let Some(entry) = table.get_mut(id) {
            entry.stage = Stage::Backlog;
        }
        self.backlog.push_back(Queued::Op(id));
    }

    /// Starts again send `id`, whose table entry the caller holds (so it is not looked up
    /// again: `send` is its op, `stage` its stage) and just reset to send its whole buffer,
    /// when the SQ's current run has room (then nothing is backlogged: see [`Queued`]).
    /// `false` (nothing changed) otherwise, at the end of a run too: then `start` it.
    #[inline]
    pub(super) fn restart_send_now(
        &mut self,
        id: OpId,
        send: &mut op::Send,
        stage: &mut Stage,
    ) -> bool {
        if !self.rings.sq.room_in_run() {
            return false;
        }
        debug_assert!(
            self.backlog.is_empty(),
            "room in the SQ's run behind a backlog"
        );
        // Built once the SQ is known to have room, so that the compiler writes it straight
        // into the ring rather than staging it on the stack; and before the bookkeeping
        // below, whose stores it cannot tell apart from the op's: the fields the caller
        // just reset are still at hand.
        debug_assert_eq!(send.start, 0, "restarted sends send their whole buffer");
        let sqe = prep::send_whole(send).user_data(id.user_data());
        // SAFETY: as in `issue`: the SQE points into the op's heap buffer, which stays valid
        // and in place until the front end removes the op after its final CQE. There is
        // room (checked above).
        unsafe { self.rings.sq.push_unchecked(sqe) };
        *stage = Stage::Kernel;
        self.in_kernel += 1;
        true
    }

    /// Prepares op `id` and puts its SQE in the SQ. `false` (nothing changed) when the SQ is
    /// full.
    #[inline]
    fn issue(&mut self, table: &mut OpTable, id: OpId) -> bool {
        if !self.sq_has_room() {
            return false;
        }
        let Some(entry) = table.get_mut(id) else {
            return true;
        };
        if let Op::Send(send) = &mut entry.op {
            // The per-message case, without the generic dispatch's `Prepared` detour.
            entry.stage = Stage::Kernel;
            self.in_kernel += 1;
            // SAFETY: as below: the SQE points into the op's heap buffer, which stays valid
            // and in place until the front end removes the op after its final CQE.
            unsafe {
                self.rings
                    .sq
                    .push_unchecked(prep::send(send).user_data(id.user_data()))
            };
            return true;
        }
        let cx = Ctx {
            caps: &self.caps,
            pool: &self.pool,
        };
        match prep::prepare(&mut entry.op, self.slots.get(id), &cx) {
            Prepared::Sqe(sqe) => {
                entry.stage = Stage::Kernel;
                self.in_kernel += 1;
                // SAFETY: the SQE points into the op's heap memory (see `prep`), which stays
                // valid and in place until the front end removes the op after its final CQE.
                // There is room (checked above; nothing was pushed since).
                unsafe { self.rings.sq.push_unchecked(sqe.user_data(id.user_data())) };
            }
            Prepared::Done(result) => {
                entry.stage = Stage::Done;
                self.queue_back(multishot::last(id, result));
            }
        }
        true
    }

    /// Puts `sqe` in the SQ; `false` when it is full.
    pub(super) fn push_sqe(&mut self, sqe: &Entry) -> bool {
        // SAFETY: every pointer in our SQEs points into memory owned by an op in the table
        // (or by the driver, for internal entries), which stays valid and in place until
        // the op's final CQE is reaped (see `prep`).
        unsafe { self.rings.sq.push(sqe.clone()) }
    }

    /// Moves backlogged requests into the SQ while it has room.
    #[inline]
    pub(super) fn fill_sq(&mut self, table: &mut OpTable) {
        // Twice a poll, and the backlog is almost always empty: only the test inline.
        if !self.backlog.is_empty() {
            self.fill_sq_slow(table);
        }
    }

    /// [`fill_sq`](Self::fill_sq) of a non-empty backlog.
    #[inline(never)]
    fn fill_sq_slow(&mut self, table: &mut OpTable) {
        while let Some(&next) = self.backlog.front() {
            let done = match next {
                Queued::Op(id) if stage(table, id) == Some(Stage::Backlog) => self.issue(table, id),
                Queued::Cancel(id) if stage(table, id) == Some(Stage::Kernel) => {
                    self.push_sqe(&cancel_sqe(id))
                }
                // Cancelled while queued, finished meanwhile, or gone.
                Queued::Op(_) | Queued::Cancel(_) => true,
            };
            if !done {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// `io_uring_enter`: submits everything in the SQ and waits for `min_complete` CQEs,
    /// through the registered ring fd when there is one.
    pub(super) fn enter(
        &mut self,
        min_complete: u32,
        flags: u32,
        args: Option<&SubmitArgs<'_, '_>>,
    ) -> io::Result<usize> {
        // The kernel sees the SQEs written and the CQEs reaped so far (`rings`).
        let to_submit = self.rings.sq.publish();
        self.rings.cq.publish();
        let (arg, size) = match args {
            Some(args) => (
                (args as *const SubmitArgs<'_, '_>).cast::<libc::c_void>(),
                std::mem::size_of::<SubmitArgs<'_, '_>>(),
            ),
            None => (ptr::null(), 0),
        };
        // The SQEs submitted point to memory that stays valid until their CQEs (`push_sqe`).
        // SAFETY: `enter.fd` names this ring (fd, or index registered by this thread); `arg` is
        // null or a live `io_uring_getevents_arg` (`SubmitArgs` is transparent) for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.enter.fd,
                to_submit,
                min_complete,
                flags | self.enter.flags,
                arg,
                size,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret as usize)
    }

    /// The backend's `poll`: one enter that submits and waits, in steady state.
    pub(super) fn poll_ring(
        &mut self,
        table: &mut OpTable,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // Batches of a backlog can take a while: fix the deadline before them, so they
        // never make a timer late.
        let fixed = match timeout {
            Some(timeout) if !timeout.is_zero() && !self.backlog.is_empty() => {
                Some(Deadline::after(timeout))
            }
            _ => None,
        };
        // Submit the backlog in SQ-sized batches first; if the CQ fills up meanwhile, return
        // without waiting so the caller reaps before more is submitted.
        loop {
            self.fill_sq(table);
            if self.backlog.is_empty() {
                break;
            }
            match self.enter(0, GETEVENTS, None) {
                Err(err) => return self.wait_error(err),
                // The kernel took nothing (out of resources): let the caller reap first.
                Ok(0) => return Ok(()),
                Ok(_) => {}
            }
            if self.cq_len() >= self.features.cq_entries as usize / 2 {
                return Ok(());
            }
        }
        let now = timeout == Some(Duration::ZERO) || !self.ready.is_empty() || self.cq_len() > 0;
        let result = if now {
            self.enter(0, GETEVENTS, None)
        } else {
            self.wait(timeout, fixed)
        };
        let result = match result {
            Ok(_) => Ok(()),
            Err(err) => self.wait_error(err),
        };
        self.fill_sq(table);
        result
    }

    /// The waiting enter: until a completion, or until the deadline (`fixed`, else `timeout`
    /// from now) — an absolute one with `ABS_TIMER`, a relative one with `EXT_ARG`, a timeout
    /// SQE before that.
    fn wait(&mut self, timeout: Option<Duration>, fixed: Option<Deadline>) -> io::Result<usize> {
        let args = SubmitArgs::new();
        match timeout {
            None if self.caps.ext_arg => self.enter(1, GETEVENTS | EXT_ARG, Some(&args)),
            Some(timeout) if self.caps.abs_timer => {
                let ts = fixed.unwrap_or_else(|| Deadline::after(timeout)).timespec();
                let flags = GETEVENTS | EXT_ARG | ABS_TIMER;
                self.enter(1, flags, Some(&args.timespec(&ts)))
            }
            Some(timeout) if self.caps.ext_arg => {
                let ts = Timespec::from(fixed.map_or(timeout, Deadline::remaining));
                self.enter(1, GETEVENTS | EXT_ARG, Some(&args.timespec(&ts)))
            }
            _ => self.wait_with_timeout_sqe(timeout.map(|t| fixed.map_or(t, Deadline::remaining))),
        }
    }

    /// Waiting on kernels without `EXT_ARG` (before 5.11): a timeout SQE with internal
    /// `user_data` that also fires on the first other completion (`count` 1), so timeouts
    /// never pile up in the kernel.
    fn wait_with_timeout_sqe(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let Some(timeout) = timeout else {
            return self.enter(1, GETEVENTS, None);
        };
        *self.wait_ts = Timespec::from(timeout);
        let sqe = opcode::Timeout::new(&*self.wait_ts as *const Timespec)
            .count(1)
            .build()
            .user_data(WAIT_USER_DATA);
        if !self.push_sqe(&sqe) {
            self.enter(0, GETEVENTS, None)?;
            if !self.push_sqe(&sqe) {
                // Still full (a kernel without SUBMIT_ALL kept some): don't block.
                return Ok(0);
            }
        }
        self.enter(1, GETEVENTS, None)
    }

    /// Sorts a failed wait: timeouts, signals and transient kernel backpressure are normal
    /// returns (the caller reaps and polls again); anything else is an error.
    fn wait_error(&self, err: io::Error) -> io::Result<()> {
        match err.raw_os_error() {
            Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
            Some(libc::EBADR) => {
                tracing::error!(
                    "the kernel dropped completions (CQ overflow without memory to keep them)"
                );
                Ok(())
            }
            _ => Err(err),
        }
    }

    /// CQEs waiting in the CQ ring.
    pub(super) fn cq_len(&mut self) -> usize {
        self.rings.cq.len()
    }
}

/// Where op `id` is, if it is still in the table.
fn stage(table: &OpTable, id: OpId) -> Option<Stage> {
    table.get(id).map(|entry| entry.stage)
}

/// Whether the kernel takes `IORING_ENTER_ABS_TIMER`: an enter that waits for nothing
/// (`min_complete` 0) with the flag and a deadline in the past. Kernels before 6.12 reject
/// the unknown flag with `EINVAL`. Run once, on the thread that created `ring`.
pub(super) fn probe_abs_timer(ring: &IoUring) -> bool {
    let ts = Timespec::new();
    let args = SubmitArgs::new().timespec(&ts);
    // SAFETY: nothing is submitted (`to_submit` 0); `args` is a live `io_uring_getevents_arg`
    // pointing to a live timespec for the duration of the call.
    let probed = unsafe {
        ring.submitter()
            .enter(0, 0, GETEVENTS | EXT_ARG | ABS_TIMER, Some(&args))
    };
    match probed {
        Ok(_) => true,
        Err(err) if err.raw_os_error() == Some(libc::ETIME) => true,
        Err(err) => {
            tracing::debug!(
                "IORING_ENTER_ABS_TIMER unavailable ({err}); waits use a relative timeout"
            );
            false
        }
    }
}

/// A wait's end on `CLOCK_MONOTONIC` (the clock of the ring's timeouts and of `Instant`).
#[derive(Debug, Clone, Copy)]
struct Deadline {
    /// Nanoseconds since the clock's origin (saturating: ~584 years away means "never").
    ns: u64,
}

impl Deadline {
    /// `timeout` from now.
    fn after(timeout: Duration) -> Deadline {
        let timeout = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline {
            ns: monotonic_ns().saturating_add(timeout),
        }
    }

    /// The time left, never less than what is really left (the clock is read after the
    /// deadline was set, and the kernel starts its timer later still).
    fn remaining(self) -> Duration {
        Duration::from_nanos(self.ns.saturating_sub(monotonic_ns()))
    }

    /// The deadline as an absolute timespec.
    fn timespec(self) -> Timespec {
        Timespec::new()
            .sec(self.ns / 1_000_000_000)
            .nsec((self.ns % 1_000_000_000) as u32)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (vDSO: no syscall).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec. CLOCK_MONOTONIC always exists, so the call
    // cannot fail; if it somehow did, `ts` stays zero and waits just end sooner in the
    // relative form (the caller loops) or at once in the absolute one.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// An `AsyncCancel` of op `id`, with internal `user_data` (its own CQE is ignored).
pub(super) fn cancel_sqe(id: OpId) -> Entry {
    opcode::AsyncCancel::new(id.user_data())
        .build()
        .user_data(super::CANCEL_USER_DATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_never_sooner_than_their_timeout() {
        let timeout = Duration::from_micros(700);
        let before = monotonic_ns();
        let deadline = Deadline::after(timeout);
        assert!(deadline.ns >= before + 700_000);
        assert!(deadline.remaining() <= timeout);
        // "Never" saturates instead of wrapping into the past.
        assert_eq!(Deadline::after(Duration::MAX).ns, u64::MAX);
        assert!(Deadline::after(Duration::MAX).remaining() > Duration::from_secs(1 << 32));
        // A deadline that passed has nothing left.
        let past = Deadline { ns: before };
        assert_eq!(past.remaining(), Duration::ZERO);
    }

    /// `(major, minor)` of the running kernel.
    fn kernel_version() -> Option<(u32, u32)> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        let mut parts = release.trim().split(['.', '-']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    #[test]
    fn the_abs_timer_probe_matches_the_kernel_version() {
        let Ok(ring) = IoUring::new(4) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        let Some(version) = kernel_version() else {
            eprintln!("SKIPPED: unknown kernel version");
            return;
        };
        assert_eq!(
            probe_abs_timer(&ring),
            version >= (6, 12),
            "kernel {version:?}"
        );
    }
}
