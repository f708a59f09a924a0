//! The write side of a stream transport: the write buffer, the per-iteration flush, send
//! completions, half-close and flow control (semantics 123–129, 135–141, 170–172).

use std::rc::Rc;

use ringloop_proactor::{op, Completion, Op, OpId};
use ringloop_runtime::Resends;

use super::{StreamInner, StreamKind};
use crate::error::TransportError;
use crate::flow::FlowSignal;
use crate::flow_signal;
use crate::flush::Flush;

/// asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`.
const LOG_THRESHOLD_FOR_LOST_WRITES: u32 = 5;

/// A write buffer larger than this is not kept for reuse once sent.
const MAX_KEPT_BUFFER: usize = 256 * 1024;

/// Why `write()` refused its bytes with an error.
#[derive(Debug, Clone, Copy)]
enum WriteRefusal {
    /// After `write_eof()` (semantics 124).
    AfterEof,
    /// The transport is a read pipe.
    ReadPipe,
}

impl WriteRefusal {
    /// The error `method` (`write` or `writelines`) returns.
    fn error(self, method: &'static str) -> TransportError {
        match self {
            WriteRefusal::AfterEof => TransportError::WriteAfterEof(method),
            WriteRefusal::ReadPipe => TransportError::NotSupported("write() on a read pipe"),
        }
    }
}

impl StreamInner {
    /// Bytes queued plus bytes in flight.
    #[inline]
    pub(crate) fn buffered(&self) -> usize {
        self.wbuf.borrow().len() + self.in_flight.get()
    }

    /// `write()` and `writelines()`.
    ///
    /// Always inlined, also into the protocol's method that writes (through
    /// `Transport::write`): once per message, a call frame of its own (five registers saved
    /// and restored, the `Result` returned through memory) costs a quarter of its body. Its
    /// rare paths are out of line.
    #[inline(always)]
    pub(crate) fn write(
        self: &Rc<Self>,
        data: &[u8],
        method: &'static str,
    ) -> Result<(), TransportError> {
        if self.write_blocked.get() {
            return self
                .write_slowly(data)
                .map_err(|refusal| refusal.error(method));
        }
        if data.is_empty() {
            return Ok(());
        }
        let queued = {
            let mut wbuf = self.wbuf.borrow_mut();
            if wbuf.capacity() - wbuf.len() < data.len() {
                drop(wbuf);
                self.append_growing(data)
            } else {
                wbuf.extend_from_slice(data);
                wbuf.len()
            }
        };
        let size = queued + self.in_flight.get();
        self.list_for_flush();
        let mut flow = self.flow.get();
        let signal = flow.after_grow(size);
        if signal != FlowSignal::None {
            self.pause_after_settling();
        }
        Ok(())
    }

    /// `write()` while `write_blocked`: on a write-through transport (which keeps it set,
    /// so that the write-through path costs the others nothing) what is queued is sent now,
    /// or behind the send in flight, whose completion submits it; otherwise the write is
    /// refused.
    #[cold]
    #[inline(never)]
    fn write_slowly(self: &Rc<Self>, data: &[u8]) -> Result<(), WriteRefusal> {
        let open = !self.closing.get() && !self.eof_requested.get();
        if !(open && super::writes_through(&self.lp, self.kind)) {
            return self.write_refused(data);
        }
        if data.is_empty() {
            return Ok(());
        }
        // Sent now, without the loop's flush list (a write-through transport is never on
        // it): listing it, walking the list and the list's datagram check cost about 30
        // instructions per message.
        let keep = {
            let mut wbuf = self.wbuf.borrow_mut();
            wbuf.extend_from_slice(data);
            wbuf.capacity() <= MAX_KEPT_BUFFER
        };
        // A buffer too large to keep goes out loud, by the usual path (see
        // `append_growing`).
        let resent = keep && self.resend_quietly(|id, buf| self.lp.resend_op(id, buf));
        if !resent {
            self.finish_flush();
        } else {
            // No flow signal waits: no send is quiet while one does.
            debug_assert!(self.deferred_flow.is_empty());
        }
        let mut flow = self.flow.get();
        if flow.after_grow(self.buffered()) != FlowSignal::None {
            self.pause_after_settling();
        }
        Ok(())
    }

    /// `write()`'s append when the buffer must grow (the first writes on a connection, or
    /// one larger than any before): the number of bytes queued then. Out of line, so that
    /// the per-message append keeps no register for the call to the allocator.
    ///
    /// A buffer grown too large to keep is never sent quietly: a quiet send's buffer comes
    /// back, with no test of its size, as the next write buffer (see `resend_quietly`).
    /// So the quiet send is settled (made loud, or reclaimed), and `submit_write` sends
    /// this buffer loud: its completion lets it go.
    #[cold]
    #[inline(never)]
    fn append_growing(&self, data: &[u8]) -> usize {
        let (queued, too_large) = {
            let mut wbuf = self.wbuf.borrow_mut();
            wbuf.extend_from_slice(data);
            (wbuf.len(), wbuf.capacity() > MAX_KEPT_BUFFER)
        };
        if too_large {
            self.settle_write();
        }
        queued
    }

    /// The buffer grew past the high mark, counting a quiet send that may have finished
    /// unreported: reclaim it first, so the protocol is paused only for bytes really
    /// waiting.
    #[cold]
    fn pause_after_settling(&self) {
        self.settle_write();
        self.check_flow_grow();
    }

    /// The steady-state flush: the quiet send that finished is started again, in place,
    /// with the queued bytes, by `resend` (`EventLoop::resend_op` or `Resends::resend`).
    /// `false` when this does not apply (then the caller settles and submits as usual).
    #[inline(always)]
    fn resend_quietly(&self, resend: impl FnOnce(OpId, &mut Vec<u8>) -> bool) -> bool {
        // `OpId::NONE` when there is no quiet send: not tested for here, as the resend's
        // lookup finds no op for it (see below).
        let id = self.quiet_op.get();
        // A send is quiet only while nobody waits for its outcome: `close()`, `abort()`,
        // `write_eof()` and pausing the protocol all settle it first (which makes it loud),
        // so none of them needs checking here. (Abandoning at loop close does not settle,
        // but it empties the flush list first: no flush follows.)
        debug_assert!(
            id == OpId::NONE
                || !(self.aborted.get()
                    || self.closing.get()
                    || self.eof_requested.get()
                    || self.flow.get().is_paused()),
            "a quiet send outlived what settles it"
        );
        // An empty buffer is not tested for. It is reachable only once the write that
        // listed the transport was submitted, by a loud send's completion, as a new quiet
        // send: still in flight at the flush (its SQE goes in with the next poll), so
        // `resend` makes it loud, as settling it would; or, if a CQ overflow's enter
        // submitted it early and it finished, resent empty, which sends nothing.
        let resent = {
            let mut wbuf = self.wbuf.borrow_mut();
            let len = wbuf.len();
            // No protocol code runs inside `resend`: the borrow cannot be re-entered.
            resend(id, &mut wbuf).then(|| {
                // The sent buffer, now in `wbuf`, emptied, is the next write buffer (the two
                // alternate). Kept whatever its size: quiet sends never carry a buffer too
                // large to keep (see `append_growing`), which spares a test per message.
                debug_assert!(wbuf.capacity() <= MAX_KEPT_BUFFER, "a quiet send too large");
                wbuf.clear();
                len
            })
        };
        if let Some(len) = resent {
            self.in_flight.set(len);
            return true;
        }
        if id == OpId::NONE {
            return false;
        }
        // Still in flight (now loud): its completion submits these bytes.
        self.quiet_op.set(OpId::NONE);
        true
    }

    /// The per-message flush, under the loop's flush's borrow of the proactor: `true` if
    /// the quiet send was resent (or made loud). If not, [`finish_flush`] must follow,
    /// without the borrow.
    ///
    /// [`finish_flush`]: StreamInner::finish_flush
    #[inline(always)]
    pub(crate) fn flush_under(&self, resends: &mut Resends<'_>) -> bool {
        self.listed.set(false);
        self.resend_quietly(|id, buf| resends.resend(id, buf))
    }

    /// The flush when [`flush_under`](StreamInner::flush_under) did not resend: settle and
    /// submit as usual, then deliver waiting flow signals. Out of line, so that the
    /// per-message flush keeps its registers for the resend.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish_flush(&self) {
        self.settle_write();
        self.submit_write();
        if !self.deferred_flow.is_empty() {
            self.deliver_deferred_flow();
        }
    }

    /// Takes back a quiet send: processes it if it finished unreported; if it is still in
    /// flight, it is made loud, and its completion will be handled as usual.
    #[inline]
    pub(crate) fn settle_write(&self) {
        let id = self.quiet_op.replace(OpId::NONE);
        if id == OpId::NONE {
            return;
        }
        let Some(buf) = self.lp.reclaim_buf(id) else {
            return;
        };
        // It sent everything; quiet sends are only made while the protocol is not paused,
        // so there is no flow signal to give.
        self.write_op.set(None);
        self.in_flight.set(0);
        self.keep_spare(buf);
    }

    /// A write that cannot be queued: after `write_eof()` (an error), on a read pipe (an
    /// error), or after close (dropped, with a warning from the fifth on, semantics 125).
    ///
    /// Its error is a byte, returned in a register: `write()`, inlined into the protocol,
    /// then needs no stack slot for a `TransportError`.
    #[cold]
    fn write_refused(&self, data: &[u8]) -> Result<(), WriteRefusal> {
        if self.eof_requested.get() {
            return Err(WriteRefusal::AfterEof);
        }
        if self.kind == StreamKind::ReadPipe {
            return Err(WriteRefusal::ReadPipe);
        }
        if data.is_empty() {
            return Ok(());
        }
        let dropped = self.dropped_writes.get();
        if dropped >= LOG_THRESHOLD_FOR_LOST_WRITES {
            tracing::warn!("socket.send() raised exception.");
        }
        self.dropped_writes.set(dropped.saturating_add(1));
        Ok(())
    }

    /// Puts the transport on the loop's flush list (once per iteration).
    ///
    /// Only `write()` lists, and only while writing is allowed, so never after teardown:
    /// the handle's own `Rc` is cloned (cheaper than upgrading `me`).
    #[inline]
    fn list_for_flush(self: &Rc<Self>) {
        // Listed even while a loud send is in flight (its completion submits the rest, and
        // the flush finds nothing to do): one flag to test per message instead of three.
        if self.listed.replace(true) {
            return;
        }
        self.flush_list.push_stream(self);
    }

    /// Submits the queued bytes as one send, if none is in flight.
    pub(crate) fn submit_write(&self) {
        if self.write_op.get().is_some() || self.aborted.get() {
            return;
        }
        let Some(token) = self.token.get() else {
            return;
        };
        if self.wbuf.borrow().is_empty() {
            self.after_write_drained();
            return;
        }
        let data = {
            let mut spare = self.spare.borrow_mut();
            let mut wbuf = self.wbuf.borrow_mut();
            std::mem::swap(&mut *wbuf, &mut *spare);
            std::mem::take(&mut *spare)
        };
        self.in_flight.set(data.len());
        let fd = self.raw_fd.get();
        // Quiet unless someone waits for the outcome: a paused protocol (to resume it),
        // a close or write_eof (to finish). They reclaim or wait for a loud send.
        // Nor while flow signals wait: the per-message resend, only of quiet sends, then
        // need not check for them (see `signal_flow`).
        let quiet = !self.closing.get()
            && !self.eof_requested.get()
            && data.capacity() <= MAX_KEPT_BUFFER
            && !self.flow.get().is_paused()
            && self.deferred_flow.is_empty();
        let submitted = match (self.kind, quiet) {
            (StreamKind::Socket, true) => self.lp.submit_quiet(op::Send::new(fd, data), token),
            (StreamKind::Socket, false) => self.lp.submit(op::Send::new(fd, data), token),
            (_, true) => self.lp.submit_quiet(op::Write::new(fd, data), token),
            (_, false) => self.lp.submit(op::Write::new(fd, data), token),
        };
        match submitted {
            Ok(id) => {
                self.write_op.set(Some(id));
                self.quiet_op.set(if quiet { id } else { OpId::NONE });
            }
            Err(_) => self.in_flight.set(0),
        }
    }

    /// A completion of the send in flight.
    #[inline]
    pub(crate) fn write_completed(&self, completion: &mut Completion) {
        self.write_op.set(None);
        self.quiet_op.set(OpId::NONE);
        let (buf, start) = match completion.op.take() {
            Some(Op::Send(send)) => (send.buf, send.start),
            Some(Op::Write(write)) => (write.buf, write.start),
            _ => (Vec::new(), 0),
        };
        match std::mem::replace(&mut completion.result, Ok(0)) {
            Ok(n) => {
                let start = start + n as usize;
                if start < buf.len() && !self.aborted.get() {
                    // A short send: the rest goes first, before anything queued since.
                    self.in_flight.set(buf.len() - start);
                    self.resubmit(buf, start);
                } else {
                    self.in_flight.set(0);
                    self.keep_spare(buf);
                    self.submit_write();
                }
                self.check_flow_shrink();
            }
            Err(err) => {
                self.in_flight.set(0);
                self.keep_spare(buf);
                if err.raw_os_error() != Some(libc::ECANCELED) && !self.aborted.get() {
                    // EPIPE, ECONNRESET, …: the connection is gone (semantics 117, 118).
                    self.fatal_io(err, "send");
                }
            }
        }
    }

    fn resubmit(&self, buf: Vec<u8>, start: usize) {
        let Some(token) = self.token.get() else {
            return;
        };
        let fd = self.raw_fd.get();
        let submitted = match self.kind {
            StreamKind::Socket => {
                let mut send = op::Send::new(fd, buf);
                send.start = start;
                self.lp.submit(send, token)
            }
            _ => {
                let mut write = op::Write::new(fd, buf);
                write.start = start;
                self.lp.submit(write, token)
            }
        };
        match submitted {
            Ok(id) => self.write_op.set(Some(id)),
            Err(_) => self.in_flight.set(0),
        }
    }

    /// Keeps a sent buffer's allocation as the next spare.
    fn keep_spare(&self, mut buf: Vec<u8>) {
        if buf.capacity() > MAX_KEPT_BUFFER {
            return;
        }
        buf.clear();
        let mut spare = self.spare.borrow_mut();
        if spare.capacity() < buf.capacity() {
            *spare = buf;
        }
    }

    /// Everything written so far is sent: a requested half-close happens now.
    fn after_write_drained(&self) {
        if self.eof_requested.get() && !self.eof_sent.get() && self.in_flight.get() == 0 {
            self.send_eof();
        }
    }

    /// `write_eof()` (semantics 129, 170).
    pub(crate) fn write_eof(&self) -> Result<(), TransportError> {
        match self.kind {
            StreamKind::ReadPipe => {
                return Err(TransportError::NotSupported("write_eof() on a read pipe"))
            }
            StreamKind::WritePipe => {
                self.close();
                return Ok(());
            }
            StreamKind::Socket => {}
        }
        if self.closing.get() || self.eof_requested.replace(true) {
            return Ok(());
        }
        self.write_blocked.set(true);
        self.settle_write();
        if self.write_op.get().is_none() && self.wbuf.borrow().is_empty() {
            self.send_eof();
        }
        Ok(())
    }

    /// `shutdown(SHUT_WR)`, exactly once.
    fn send_eof(&self) {
        if self.eof_sent.replace(true) {
            return;
        }
        if let Some(fd) = self.fd.borrow().as_ref() {
            if let Err(err) = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write) {
                tracing::debug!("shutdown(SHUT_WR) failed: {err}");
            }
        }
    }

    /// Pauses the protocol if the buffer went above the high mark.
    #[inline]
    pub(crate) fn check_flow_grow(&self) {
        let mut flow = self.flow.get();
        let signal = flow.after_grow(self.buffered());
        self.flow.set(flow);
        if signal != FlowSignal::None {
            self.signal_flow(signal);
        }
    }

    /// Resumes the protocol if the buffer dropped to the low mark.
    #[inline]
    pub(crate) fn check_flow_shrink(&self) {
        let mut flow = self.flow.get();
        if !flow.is_paused() {
            return;
        }
        let signal = flow.after_shrink(self.buffered());
        self.flow.set(flow);
        if signal != FlowSignal::None {
            self.signal_flow(signal);
        }
    }

    /// Tells the protocol to pause or resume, now or (if it is busy) right after its current
    /// method returns. A panic is reported and the transport carries on (semantics 140).
    ///
    /// A signal left waiting settles the quiet send: no send is quiet while signals wait.
    fn signal_flow(&self, signal: FlowSignal) {
        self.install_next_protocol();
        flow_signal::signal(&self.lp, &self.protocol, &self.deferred_flow, signal);
        if !self.deferred_flow.is_empty() {
            self.settle_write();
        }
    }

    /// Delivers flow signals raised while the protocol was busy. Rare, and out of line so
    /// that the per-message callers that check for it stay small.
    #[cold]
    #[inline(never)]
    pub(crate) fn deliver_deferred_flow(&self) {
        self.install_next_protocol();
        flow_signal::deliver_deferred(&self.lp, &self.protocol, &self.deferred_flow);
        // As in `signal_flow`: no send is quiet while signals wait.
        if !self.deferred_flow.is_empty() {
            self.settle_write();
        }
    }

    /// The write pipe's watch for its reader going away (semantics 171).
    pub(crate) fn arm_watch(&self) {
        let Some(token) = self.token.get() else {
            return;
        };
        let events = (libc::POLLERR | libc::POLLHUP) as u32;
        if let Ok(id) = self
            .lp
            .submit(op::PollAdd::new(self.raw_fd.get(), events), token)
        {
            self.watch_op.set(Some(id));
        }
    }

    /// The reader of a write pipe closed: lose the connection, with `BrokenPipe` if data
    /// was still buffered.
    pub(crate) fn watch_completed(&self, completion: Completion) {
        self.watch_op.set(None);
        if completion.result.is_err() || self.closing.get() {
            return;
        }
        // A quiet write that finished unreported is not data still buffered.
        self.settle_write();
        if self.buffered() == 0 {
            self.close();
        } else {
            self.force_close(Some(std::io::Error::from_raw_os_error(libc::EPIPE)));
        }
    }
}

impl Flush for StreamInner {
    /// The flush of a closed loop's stream (see `FlushList::flush_all`).
    fn flush(&self) {
        self.listed.set(false);
        // Not `write_slowly`'s code: its send, with a second caller, would not be inlined
        // there.
        let resent = self.resend_quietly(|id, buf| self.lp.resend_op(id, buf));
        if !resent {
            self.finish_flush();
        } else if !self.deferred_flow.is_empty() {
            self.deliver_deferred_flow();
        }
    }
}
