//! The io_uring backend.
//!
//! One ring per proactor, created on the thread that uses it (`SINGLE_ISSUER`), with
//! `DEFER_TASKRUN` (or `COOP_TASKRUN`), `SUBMIT_ALL`, a CQ twice the SQ and a registered
//! ring fd where the kernel has them ([`setup`]). Ops become SQEs in [`prep`]; what does
//! not fit the SQ waits in a user-space backlog ([`submit`]); cancels are `AsyncCancel`s
//! that travel the same path ([`cancel`]); multishot ops, their emulations and the waitid
//! fallback are in [`multishot`] and [`waitid`]; per-op state lives in a side table
//! ([`slots`]).
//!
//! # Completions
//! [`Backend::pop`] reads CQEs straight from the CQ ring ([`rings`]: the driver's own view,
//! indices cached per batch), one at a time, and turns each into
//! a [`RawCompletion`]: `IORING_CQE_F_MORE` becomes `more`, `IORING_CQE_F_BUFFER` names the
//! provided buffer holding the data. Completions the driver makes itself (an op cancelled
//! before it reached the kernel, a user-space syscall, the end of a cancelled multishot) wait
//! in a small ready queue that `pop` drains first. When the CQ is empty but the kernel kept
//! overflowed completions (`IORING_SQ_CQ_OVERFLOW`; `IORING_FEAT_NODROP`), an
//! `io_uring_enter(GETEVENTS)` flushes them, so nothing is lost.
//!
//! # `user_data`
//! Ops carry [`OpId::user_data`] (slot index plus a non-zero generation). The driver's own
//! requests carry generation 0 and a slot index the table never gives out: [`CANCEL_USER_DATA`]
//! and [`WAIT_USER_DATA`]; their CQEs, which no table lookup matches, are ignored.

mod cancel;
mod multishot;
mod prep;
mod rings;
mod setup;
mod slots;
mod submit;
mod waitid;

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::cqueue;
use io_uring::types::Timespec;
use io_uring::IoUring;

use crate::audit;
use crate::buf::BufPool;
use crate::completion::{Completion, RawCompletion};
use crate::error::{SetupError, SetupErrorKind};
use crate::op::{self, Op};
use crate::sys::{Backend, Config, Popped};
use crate::table::{OpId, OpState, OpTable, Stage, RESERVED_INDEX};
use crate::{BackendKind, Features};

use rings::Rings;
use setup::{Caps, EnterTarget};
use slots::Slots;
use submit::Queued;

/// `user_data` of the driver's `AsyncCancel` requests (generation 0: internal; a reserved
/// index, which no table lookup finds).
const CANCEL_USER_DATA: u64 = RESERVED_INDEX as u64;
/// `user_data` of the wait timeout used on kernels without `EXT_ARG` (as above).
const WAIT_USER_DATA: u64 = RESERVED_INDEX as u64 + 1;

/// The io_uring driver.
pub(crate) struct Driver {
    /// The SQ and CQ, read and written only through here (not through `ring`).
    rings: Rings,
    ring: IoUring,
    enter: EnterTarget,
    caps: Caps,
    features: Features,
    /// Requests waiting for room in the SQ, in order.
    backlog: VecDeque<Queued>,
    /// Completions made in user space, reported before the next CQE. Queued only by
    /// `queue_back` and `raw`, which halt the CQ's run: `pop` tests this only at a run's
    /// end.
    ready: VecDeque<RawCompletion>,
    /// Per-op driver state by slot index.
    slots: Slots,
    /// The shared receive pool; leaked instead of freed if the kernel may still write it.
    pool: ManuallyDrop<BufPool>,
    /// The wait timeout's timespec (kernels without `EXT_ARG`).
    wait_ts: Box<Timespec>,
    /// Op requests submitted (or in the SQ) whose final CQE has not been reaped.
    in_kernel: usize,
}

impl Driver {
    /// Sets up a ring per `config`, probing what the kernel offers.
    ///
    /// # Errors
    /// Why io_uring cannot be used: `io_uring_setup` failed (classified), or the kernel
    /// lacks an opcode every op needs.
    pub(crate) fn new(config: &Config) -> Result<Driver, SetupError> {
        let off = setup::Disabled::from_env();
        let (ring, mut features) = setup::create_ring(config, &off)?;
        let caps = setup::probe(&ring, &off, &mut features)?;
        let enter = setup::register_ring_fd(&ring, &off);
        features.registered_ring_fd = enter.registered();
        let pool = setup::buffer_pool(&ring, config, &off);
        features.buf_ring = pool.is_ring();
        features.multishot_recv = caps.multishot_recv && pool.is_ring();
        let (mem, len) = pool.memory();
        let rings = Rings::new(&ring).map_err(|e| {
            SetupError::new(
                SetupErrorKind::Resources,
                "the io_uring rings cannot be mapped",
                Some(e),
            )
        })?;
        audit::lend_range(mem, len);
        Ok(Driver {
            rings,
            ring,
            enter,
            caps,
            features,
            backlog: VecDeque::new(),
            ready: VecDeque::new(),
            slots: Slots::default(),
            pool: ManuallyDrop::new(pool),
            wait_ts: Box::new(Timespec::new()),
            in_kernel: 0,
        })
    }

    /// Queues a completion made in user space behind the others, for `take_raw`. It goes
    /// before the next CQE: the CQ's run is halted, so that `pop` finds it in its slow
    /// path without testing the queue per CQE.
    #[inline]
    pub(super) fn queue_back(&mut self, done: RawCompletion) {
        self.ready.push_back(done);
        self.rings.cq.halt();
    }

    /// `pop` at the end of a run of CQEs (once the completions made in user space are
    /// reported: see `queue_back`): starts the next run, flushing the completions
    /// kept on overflow if the CQ is empty; whether there are CQEs now.
    ///
    /// Out of line, and a method of the driver rather than of the CQ, so that the hot path
    /// needs no pointer to the CQ of its own (the compiler would keep one, spilled); and it
    /// returns no CQE, which would then come back through the stack.
    #[cold]
    #[inline(never)]
    fn next_cqe_run(&mut self) -> bool {
        if self.rings.cq.next_run() {
            return true;
        }
        if !self.rings.sq.cq_overflow() {
            return false;
        }
        tracing::debug!("CQ overflowed; flushing the completions the kernel kept");
        if let Err(err) = self.enter(0, io_uring::EnterFlags::GETEVENTS.bits(), None) {
            tracing::warn!("flushing overflowed completions failed: {err}");
        }
        self.rings.cq.next_run()
    }

    /// Whether the SQ has room for one more SQE.
    #[inline]
    fn sq_has_room(&mut self) -> bool {
        self.rings.sq.room_in_run() || self.sq_next_run()
    }

    /// `sq_has_room` at the end of a run of free slots (out of line, as `next_cqe_run`).
    #[cold]
    #[inline(never)]
    fn sq_next_run(&mut self) -> bool {
        self.rings.sq.next_run()
    }

    /// Turns one CQE into what the caller sees (`Empty` for internal requests and for
    /// steps of emulations that report no event).
    #[inline]
    fn on_cqe(&mut self, table: &mut OpTable, cqe: &cqueue::Entry, out: &mut Completion) -> Popped {
        let (user_data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        // Looked up before telling an internal request from an op: no entry has an internal
        // id (see `RESERVED_INDEX`), and the per-message CQEs are ops'.
        let id = OpId::from_user_data_any(user_data);
        let more = cqueue::more(flags);
        let Some(entry) = table.get_mut(id) else {
            self.on_unmatched_cqe(user_data, res, flags);
            return Popped::Empty;
        };
        // One test of `more` for both per-message cases (the chunk of a multishot receive,
        // the final CQE of a send), which the compiler would not merge were `in_kernel`
        // counted before the lookup.
        if more {
            // The per-message case, inline: data in a ring buffer, the multishot goes on.
            // Tested before the `match` below, which compiles to a jump table. The buffer
            // alone tells the op: only multishot receives select ring buffers (`prep`
            // builds no other op with `BUF_GROUP`), and `more` tells it from a single
            // receive standing in for the multishot (which never sets it, and is never in
            // flight beside one): no look at the op nor at the slot's buffer.
            if let Some(bid) = cqueue::buffer_select(flags) {
                debug_assert!(matches!(entry.op, Op::RecvMulti(_)));
                if res > 0 {
                    debug_assert!(self.slots.get(id).buf.is_none());
                    let buf = self.pool.filled(bid, res as usize);
                    if entry.state == OpState::Detached {
                        // The front end consumes it.
                        return self.raw(Some(RawCompletion::new(id, res, more, Some(buf))));
                    }
                    // Routed here, from the entry at hand.
                    out.set_chunk(entry.token, id, res as u32, buf);
                    return Popped::Routed;
                }
                // Not with the case below: the compiler would then merge the two tests
                // into one branch, computing both.
                let done = self.on_recv_multi(table, id, res, flags);
                return self.raw(done);
            }
            if let Op::RecvMulti(_) = &entry.op {
                let done = self.on_recv_multi(table, id, res, flags);
                return self.raw(done);
            }
        } else {
            self.reaped_final();
            entry.stage = Stage::Done;
            if entry.quiet_and_active() && entry.op.done_by(res) {
                // The per-message send, settled here rather than through a `RawCompletion`
                // and a second lookup in the front end (which would do the same: see
                // `Proactor::deliver`).
                entry.state = OpState::Finished;
                entry.result = res;
                return Popped::Empty;
            }
            if let Op::RecvMulti(_) = &entry.op {
                let done = self.on_recv_multi(table, id, res, flags);
                return self.raw(done);
            }
        }
        let done = match &entry.op {
            Op::AcceptMulti(_) => self.on_multi(table, id, res, more),
            Op::PollAdd(poll) if poll.multishot => self.on_multi(table, id, res, more),
            Op::WaitId(_) if !self.caps.waitid => self.on_pidfd_poll(table, id, res),
            _ => Some(RawCompletion::new(id, res, more, None)),
        };
        self.raw(done)
    }

    /// A CQE that names no entry: an internal request's, or else one for an op no longer in
    /// the table. Ops leave the table only after their final CQE, so the latter is a driver
    /// bug; a provided buffer the CQE may carry is recycled rather than lost.
    #[cold]
    #[inline(never)]
    fn on_unmatched_cqe(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(id) = OpId::from_user_data(user_data) else {
            trace_internal(user_data, res);
            return;
        };
        if !cqueue::more(flags) {
            self.reaped_final();
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            drop(self.pool.filled(bid, 0));
        }
        tracing::error!(?id, res, "completion for an op that is no longer in flight");
    }

    /// Counts the final CQE of a request as reaped.
    #[inline]
    fn reaped_final(&mut self) {
        // Wrapping, not saturating (one instruction, not four): a miscount, which would be a
        // driver bug, then reads as requests in flight, and `drop` leaks the pool rather
        // than free memory the kernel may still write.
        debug_assert!(self.in_kernel > 0, "more final CQEs than requests");
        self.in_kernel = self.in_kernel.wrapping_sub(1);
    }

    /// Queues `done`, a completion for the front end (which `take_raw` hands over next:
    /// it goes before anything queued meanwhile), if any.
    #[inline]
    fn raw(&mut self, done: Option<RawCompletion>) -> Popped {
        match done {
            Some(done) => {
                // As in `queue_back`.
                self.ready.push_front(done);
                self.rings.cq.halt();
                Popped::Raw
            }
            None if self.ready.is_empty() => Popped::Empty,
            None => Popped::Raw,
        }
    }
}

/// Traces the CQE of an internal request.
fn trace_internal(user_data: u64, res: i32) {
    tracing::trace!(user_data, res, "internal completion");
}

impl Backend for Driver {
    #[inline]
    fn push(&mut self, table: &mut OpTable, id: OpId) {
        self.slots.reset(id);
        self.start(table, id);
    }

    /// The slot still belongs to `id` (same op, same id) and holds no buffer (only receives
    /// lend one): no reset needed.
    #[inline]
    fn restart(&mut self, table: &mut OpTable, id: OpId) {
        self.start(table, id);
    }

    #[inline]
    fn restart_send(&mut self, id: OpId, send: &mut op::Send, stage: &mut Stage) -> bool {
        self.restart_send_now(id, send, stage)
    }

    fn cancel(&mut self, table: &mut OpTable, id: OpId) {
        self.cancel_op(table, id);
    }

    fn poll(&mut self, table: &mut OpTable, timeout: Option<Duration>) -> io::Result<()> {
        self.poll_ring(table, timeout)
    }

    #[inline]
    fn pop(&mut self, table: &mut OpTable, out: &mut Completion) -> Popped {
        // The queue of completions made in user space is tested only at the end of a run:
        // queueing one halts the run (see `queue_back`).
        debug_assert!(self.ready.is_empty() || self.rings.cq.at_end());
        loop {
            let Some(cqe) = self.rings.cq.pop_in_run() else {
                if !self.ready.is_empty() {
                    return Popped::Raw;
                }
                if self.next_cqe_run() {
                    continue;
                }
                return Popped::Empty;
            };
            let popped = self.on_cqe(table, &cqe, out);
            if popped != Popped::Empty {
                return popped;
            }
        }
    }

    #[inline]
    fn take_raw(&mut self) -> Option<RawCompletion> {
        self.ready.pop_front()
    }

    fn forget_fd(&mut self, _fd: RawFd) {}

    fn features(&self) -> &Features {
        &self.features
    }

    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_kernel > 0 || self.slots.lends_buffers() {
            tracing::error!(
                requests = self.in_kernel,
                "io_uring requests still in flight at teardown; leaking the receive pool and \
                 buffers rather than freeing memory the kernel may write"
            );
            std::mem::forget(std::mem::take(&mut self.slots));
        } else {
            if self.pool.is_ring() {
                if let Err(err) = self.ring.submitter().unregister_buf_ring(setup::BUF_GROUP) {
                    tracing::debug!("unregistering the buffer ring: {err}");
                }
            }
            let (mem, len) = self.pool.memory();
            audit::reclaim_range(mem, len);
            // SAFETY: `pool` is dropped exactly once, here, and never used afterwards; no
            // request that could write into it is in flight (checked above), and the ring
            // no longer refers to it.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
        }
        self.enter.unregister();
    }
}
