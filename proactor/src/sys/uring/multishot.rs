//! Completions of ops that complete many times: multishot receive, accept and poll, their
//! emulations, and the pidfd poll behind the waitid fallback.
//!
//! The caller sees one uninterrupted op whichever way it runs. Whenever the kernel request
//! behind it ends while the op should go on — a multishot receive whose buffer ring ran dry
//! (`ENOBUFS`), a multishot the kernel stopped after a last event (CQ overflow), or one
//! shot of an emulation — the event (if any) is reported with `more == true` and the op is
//! re-armed: as a single receive into a buffer of its own while the pool is dry (after a dry
//! ring was topped up with spare buffers, as a multishot again), else as what it was. Only
//! one kernel request per op is ever in flight, so a cancel by `user_data` always finds the
//! current one, and received data stays in order.
//!
//! An op that was cancelled or detached is not re-armed: it ends with `ECANCELED` after its
//! last event.

use io_uring::cqueue;

use super::waitid::{self, Reaped};
use super::Driver;
use crate::completion::RawCompletion;
use crate::op::Op;
use crate::table::{OpId, OpState, OpTable};

/// A final completion of op `id`.
pub(super) fn last(id: OpId, result: i32) -> RawCompletion {
    RawCompletion::new(id, result, false, None)
}

/// An intermediate completion of op `id`.
fn event(id: OpId, result: i32) -> RawCompletion {
    RawCompletion::new(id, result, true, None)
}

impl Driver {
    /// A CQE of a multishot receive (native, or a single receive standing in for it).
    #[inline(never)]
    pub(super) fn on_recv_multi(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        res: i32,
        flags: u32,
    ) -> Option<RawCompletion> {
        let more = cqueue::more(flags);
        let slot = self.slots.get(id);
        if let Some(single) = slot.buf.take() {
            // A single receive finished; go back to the multishot once the pool has room.
            slot.single = self.pool.in_use() >= self.pool.count();
            let chunk = (*single).finish(&self.pool, res);
            return match chunk {
                Some(buf) => {
                    let data = RawCompletion::new(id, res, true, Some(buf));
                    self.rearm(table, id, Some(data))
                }
                None => Some(last(id, res)),
            };
        }
        let buf =
            cqueue::buffer_select(flags).map(|bid| self.pool.filled(bid, res.max(0) as usize));
        let data = (res > 0).then(|| RawCompletion::new(id, res, true, buf));
        if more {
            return data;
        }
        match res {
            n if n > 0 => self.rearm(table, id, data),
            e if e == -libc::ENOBUFS => {
                // The pool may deepen the ring and publish spare buffers; only if it has
                // none does the op go on with a receive into an owned buffer.
                let single = !self.pool.ran_dry();
                if single {
                    tracing::debug!(
                        ?id,
                        "provided buffers ran dry; receiving into an owned buffer"
                    );
                }
                self.slots.get(id).single = single;
                self.rearm(table, id, None)
            }
            r => Some(last(id, r)),
        }
    }

    /// A CQE of a multishot accept or poll (native or emulated): a result `>= 0` is an
    /// event (new fd, or `revents`); an error ends the op.
    #[inline(never)]
    pub(super) fn on_multi(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        res: i32,
        more: bool,
    ) -> Option<RawCompletion> {
        match (res, more) {
            (_, true) => Some(event(id, res)),
            (r, false) if r >= 0 => self.rearm(table, id, Some(event(id, r))),
            (r, false) => Some(last(id, r)),
        }
    }

    /// The pidfd poll of the waitid fallback fired (or failed, or was cancelled).
    #[inline(never)]
    pub(super) fn on_pidfd_poll(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        res: i32,
    ) -> Option<RawCompletion> {
        let Some(Op::WaitId(op)) = table.get_mut(id).map(|e| &mut e.op) else {
            unreachable!("on_pidfd_poll is only called for waitid ops")
        };
        if res < 0 {
            op.pidfd = None;
            return Some(last(id, res));
        }
        match waitid::reap(op) {
            Reaped::Yes => Some(last(id, 0)),
            Reaped::Failed(errno) => Some(last(id, -errno)),
            Reaped::NotYet => self.rearm(table, id, None),
        }
    }

    /// The kernel request behind op `id` ended after reporting `data` (if any) while the op
    /// goes on: re-arm it, or end it with `ECANCELED` if it was cancelled or detached.
    fn rearm(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        data: Option<RawCompletion>,
    ) -> Option<RawCompletion> {
        let active = table.get(id).is_some_and(|e| e.state == OpState::Active);
        if active {
            self.start(table, id);
            return data;
        }
        if let Some(Op::WaitId(op)) = table.get_mut(id).map(|e| &mut e.op) {
            op.pidfd = None;
        }
        let end = last(id, -libc::ECANCELED);
        match data {
            Some(data) => {
                self.queue_back(end);
                Some(data)
            }
            None => Some(end),
        }
    }
}
