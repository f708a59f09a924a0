//! The read side of a stream transport: the multishot receive (sockets) or single reads
//! (pipes), delivery to `data_received` or a buffered protocol, pausing without loss, and
//! end of stream (semantics 111–118, 131, 142–143, 167).

use std::io;

use ringloop_proactor::{op, Completion, Op};

use super::{Chunk, StreamInner, StreamKind};

/// Size of a pipe read (asyncio's proactor reads 32 KiB; selector pipes 256 KiB).
const PIPE_READ_SIZE: usize = 64 * 1024;

impl StreamInner {
    /// Starts receiving, unless a receive is in flight or reading cannot go on.
    pub(crate) fn arm_read(&self) {
        if self.read_op.get().is_some()
            || self.closing.get()
            || self.eof_seen.get()
            || !self.kind.reads()
        {
            return;
        }
        let Some(token) = self.token.get() else {
            return;
        };
        let fd = self.raw_fd.get();
        let submitted = match self.kind {
            StreamKind::Socket => self.lp.submit(op::RecvMulti::new(fd), token),
            _ => {
                let mut buf = std::mem::take(&mut *self.spare.borrow_mut());
                buf.clear();
                buf.reserve(PIPE_READ_SIZE);
                self.lp.submit(op::Read::new(fd, buf), token)
            }
        };
        if let Ok(id) = submitted {
            self.read_op.set(Some(id));
        }
    }

    /// Stops the multishot receive (what it already received still arrives and is kept).
    pub(crate) fn stop_reading(&self) {
        if let (true, Some(id)) = (self.closing.get(), self.watch_op.get()) {
            self.lp.cancel_op(id);
        }
        if let Some(id) = self.read_op.get() {
            if self.kind == StreamKind::Socket || self.closing.get() {
                self.lp.cancel_op(id);
            }
        }
    }

    /// Whether a chunk arriving now must wait in the pending queue.
    #[inline]
    fn must_queue(&self) -> bool {
        self.read_paused.get() || self.delivery_scheduled.get() || !self.pending.borrow().is_empty()
    }

    /// The per-message case: a chunk of the multishot receive that can go straight to the
    /// protocol. `false` (the completion untouched) when anything else must happen; after
    /// `true` the completion may still hold the chunk, which the loop drops.
    ///
    /// Nothing else is needed after it: the receive goes on (`more`), so the read op is
    /// still in flight and the transport cannot finish yet.
    #[inline]
    pub(crate) fn deliver_chunk_now(&self, completion: &mut Completion) -> bool {
        // `must_queue()` without its queue test (through the gate): chunks wait in
        // `pending` only while paused, closing or with a delivery scheduled (each push goes
        // with one of them).
        // Only the multishot receive (the read op) has completions with `more`: every
        // other op of a stream transport (send, write, pipe read, the single-shot poll
        // watch) completes once.
        debug_assert_eq!(Some(completion.id), self.read_op.get());
        debug_assert_eq!(self.read_gate_closed.get(), self.read_gate_should_close());
        if self.read_gate_closed.get() {
            return false;
        }
        let buf = match completion.buf.as_deref() {
            Some(buf) if !buf.is_empty() => buf,
            _ => return false,
        };
        debug_assert!(
            self.pending.borrow().is_empty(),
            "chunks pending with nothing to deliver them"
        );
        // Delivered straight from the pool buffer, left in the completion: the loop drops
        // it, recycling the buffer, as soon as this handler returns. The open gate says
        // the protocol is a plain one.
        if !self.deliver_plain(buf) {
            self.keep_undelivered(completion);
        }
        true
    }

    /// The protocol was busy: keeps the completion's chunk and tries again from a callback.
    /// Out of line, so that the per-chunk path keeps a small frame.
    #[cold]
    #[inline(never)]
    fn keep_undelivered(&self, completion: &mut Completion) {
        if let Some(buf) = completion.buf.take() {
            self.pending.borrow_mut().push_front(Chunk::Pooled(buf));
            self.schedule_delivery();
        }
    }

    /// A completion of the read op other than a chunk `deliver_chunk_now` took: end of
    /// stream, errors, cancels, pipe reads, chunks that must be queued.
    pub(crate) fn read_completed(&self, completion: &mut Completion) {
        if !completion.more {
            self.read_op.set(None);
        }
        match std::mem::replace(&mut completion.result, Ok(0)) {
            Ok(0) if completion.buf.is_none() && !self.is_pipe_data(completion) => {
                self.on_eof();
            }
            Ok(_) => {
                let chunk = match (completion.buf.take(), completion.op.take()) {
                    (Some(buf), _) => Some(Chunk::Pooled(buf)),
                    (None, Some(Op::Read(read))) => Some(Chunk::Owned(read.buf)),
                    _ => None,
                };
                if let Some(chunk) = chunk {
                    if chunk.is_empty() {
                        self.recycle(chunk);
                        self.on_eof();
                    } else {
                        self.on_chunk(chunk);
                    }
                }
                if self.read_op.get().is_none() && !self.read_paused.get() {
                    self.arm_read();
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ECANCELED) => {
                if let Some(Op::Read(read)) = completion.op.take() {
                    self.recycle(Chunk::Owned(read.buf));
                }
                if !self.read_paused.get() && !self.must_queue() {
                    self.arm_read();
                }
            }
            Err(err) => {
                if let Some(Op::Read(read)) = completion.op.take() {
                    self.recycle(Chunk::Owned(read.buf));
                }
                if !self.closing.get() {
                    self.fatal_io(err, "read");
                }
            }
        }
    }

    /// A pipe read's buffer with data (its result counts bytes in the op's buffer).
    fn is_pipe_data(&self, completion: &Completion) -> bool {
        matches!(&completion.op, Some(Op::Read(read)) if !read.buf.is_empty())
    }

    /// Keeps a pipe read buffer for the next read (in `spare`: a read pipe never writes).
    fn recycle(&self, chunk: Chunk) {
        if let Chunk::Owned(buf) = chunk {
            let mut mine = self.spare.borrow_mut();
            if mine.capacity() < buf.capacity() {
                *mine = buf;
            }
        }
    }

    /// Delivers a chunk now, or queues it while paused (nothing is lost, semantics 111).
    #[inline]
    fn on_chunk(&self, chunk: Chunk) {
        if self.closing.get() {
            // No more data arrives after close() (semantics 119).
            self.recycle(chunk);
            return;
        }
        if self.must_queue() {
            self.pending.borrow_mut().push_back(chunk);
            return;
        }
        if !self.deliver(&chunk) {
            // The protocol was busy: keep the chunk and try again from a callback.
            self.pending.borrow_mut().push_front(chunk);
            self.schedule_delivery();
            return;
        }
        self.recycle(chunk);
    }

    /// Hands `data` to the protocol; `false` if the protocol was busy (nothing delivered).
    #[inline]
    fn deliver(&self, data: &[u8]) -> bool {
        // Whether the protocol is a buffered one is asked once per protocol, not per chunk.
        if self.protocol_is_buffered.get() != Some(false) {
            return self.deliver_unknown_or_buffered(data);
        }
        self.deliver_plain(data)
    }

    /// `deliver` to a protocol known to be a plain (not buffered) one.
    ///
    /// Always inlined: it runs once per chunk, and it is a handful of instructions around
    /// the protocol call, fewer than a call frame of its own.
    #[inline(always)]
    fn deliver_plain(&self, data: &[u8]) -> bool {
        // The open gate (or a known plain protocol) says no protocol waits to be installed.
        match self.call_protocol("data_received", |protocol| protocol.data_received(data)) {
            Some(()) => true,
            None => self.closing.get(),
        }
    }

    /// `deliver` to a protocol not yet asked whether it is buffered, or a buffered one.
    #[inline(never)]
    fn deliver_unknown_or_buffered(&self, data: &[u8]) -> bool {
        let outcome = self.with_protocol("data_received", |protocol| {
            let buffered = protocol.as_buffered();
            self.protocol_is_buffered.set(Some(buffered.is_some()));
            self.refresh_read_gate();
            match buffered {
                None => {
                    protocol.data_received(data);
                    Ok(())
                }
                Some(buffered) => feed_buffered(buffered, data),
            }
        });
        match outcome {
            None => self.closing.get(),
            Some(Ok(())) => true,
            Some(Err(error)) => {
                self.buffer_failed(error);
                true
            }
        }
    }

    /// A buffered protocol gave an empty buffer: report it and abort (semantics 143).
    #[cold]
    #[inline(never)]
    fn buffer_failed(&self, error: io::Error) {
        self.report_fatal("get_buffer", &error);
        self.force_close(Some(error));
    }

    /// End of stream from the peer (semantics 113, 167).
    fn on_eof(&self) {
        if self.eof_seen.replace(true) || self.closing.get() {
            return;
        }
        if self.must_queue() {
            self.pending_eof.set(true);
            return;
        }
        self.deliver_eof();
    }

    fn deliver_eof(&self) {
        self.pending_eof.set(false);
        let keep_open = self.with_protocol("eof_received", |protocol| protocol.eof_received());
        match keep_open {
            // A panic already aborted the transport (semantics 115).
            None if self.closing.get() => {}
            Some(true) if self.kind == StreamKind::Socket => {}
            _ => self.close(),
        }
    }

    /// `pause_reading()`.
    pub(crate) fn pause_reading(&self) {
        if self.closing.get() || self.read_paused.replace(true) {
            return;
        }
        self.refresh_read_gate();
        if self.kind == StreamKind::Socket {
            self.stop_reading();
        }
    }

    /// `resume_reading()`: what arrived while paused is delivered from a callback.
    pub(crate) fn resume_reading(&self) {
        if self.closing.get() || !self.read_paused.replace(false) {
            return;
        }
        self.refresh_read_gate();
        if !self.pending.borrow().is_empty() || self.pending_eof.get() {
            self.schedule_delivery();
        } else {
            self.arm_read();
        }
    }

    fn schedule_delivery(&self) {
        if self.delivery_scheduled.replace(true) {
            return;
        }
        self.refresh_read_gate();
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        if self.lp.call_soon(move || me.deliver_pending()).is_err() {
            self.delivery_scheduled.set(false);
            self.refresh_read_gate();
        }
    }

    /// Delivers the queued chunks in order, stopping if the protocol pauses again.
    fn deliver_pending(&self) {
        self.delivery_scheduled.set(false);
        self.refresh_read_gate();
        loop {
            if self.read_paused.get() || self.closing.get() {
                return;
            }
            let chunk = self.pending.borrow_mut().pop_front();
            let Some(chunk) = chunk else { break };
            if !self.deliver(&chunk) {
                self.pending.borrow_mut().push_front(chunk);
                self.schedule_delivery();
                return;
            }
            self.recycle(chunk);
        }
        if self.pending_eof.get() {
            self.deliver_eof();
            return;
        }
        self.arm_read();
    }
}

/// Copies `data` into a buffered protocol's buffers (semantics 142, 143). Out of line: the
/// per-message path of a plain protocol stays small.
#[inline(never)]
fn feed_buffered(protocol: &mut dyn crate::BufferedProtocol, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let buf = protocol.get_buffer(data.len());
        if buf.is_empty() {
            return Err(io::Error::other("get_buffer() returned an empty buffer"));
        }
        let n = buf.len().min(data.len());
        buf[..n].copy_from_slice(&data[..n]);
        protocol.buffer_updated(n);
        data = &data[n..];
    }
    Ok(())
}
