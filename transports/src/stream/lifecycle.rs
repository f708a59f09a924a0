//! A stream transport's life: `connection_made`, calling the protocol safely, `close`,
//! `abort`, fatal errors and the teardown that ends in `connection_lost` (semantics 109–121,
//! 212).

use std::io;
use std::os::fd::IntoRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ringloop_runtime::{ExceptionContext, LoopError};

use super::{panic_error, Phase, ProtocolRef, StreamInner, StreamKind, Transport};
use crate::protocol::Protocol;

impl StreamInner {
    /// Runs `f` on the protocol, unless the protocol is busy (already borrowed: we are
    /// inside one of its methods) or gone, which gives `None`. A protocol that
    /// `set_protocol` left waiting is installed first.
    ///
    /// A panic inside `f` is asyncio's exception in a protocol method: it is reported as
    /// `Fatal error: protocol.<method>() call failed.` and the transport is aborted with the
    /// panic as the error (semantics 115, 116). Flow signals raised meanwhile are delivered
    /// after `f` returns.
    #[inline]
    pub(crate) fn with_protocol<R>(
        &self,
        method: &'static str,
        f: impl FnOnce(&mut dyn Protocol) -> R,
    ) -> Option<R> {
        self.install_next_protocol();
        self.call_protocol(method, f)
    }

    /// [`with_protocol`](StreamInner::with_protocol) without looking for a waiting protocol:
    /// for the per-chunk path, where the open read gate says there is none.
    ///
    /// Always inlined: once per chunk, its frame would cost more than its body.
    #[inline(always)]
    pub(crate) fn call_protocol<R>(
        &self,
        method: &'static str,
        f: impl FnOnce(&mut dyn Protocol) -> R,
    ) -> Option<R> {
        debug_assert!(
            self.protocol_next.borrow().is_none(),
            "a protocol waits to be installed"
        );
        let outcome = self.protocol.call(f)?;
        match outcome {
            Ok(value) => {
                if !self.deferred_flow.is_empty() {
                    self.deliver_deferred_flow();
                }
                Some(value)
            }
            Err(payload) => {
                self.protocol_panicked(method, payload);
                None
            }
        }
    }

    /// Installs the protocol a `set_protocol` from inside a protocol method left in
    /// `protocol_next`, unless a protocol method still runs. Every way to the protocol but
    /// the per-chunk one comes here first.
    #[inline]
    pub(crate) fn install_next_protocol(&self) {
        let Some(next) = self.protocol_next.borrow_mut().take() else {
            return;
        };
        let old = match self.protocol.replace(Some(next)) {
            Ok(old) => old,
            // A protocol method still runs: the slot keeps its protocol until it returns.
            Err(next) => {
                *self.protocol_next.borrow_mut() = next;
                return;
            }
        };
        self.protocol_is_buffered.set(None);
        self.refresh_read_gate();
        // Dropped last: a protocol's `Drop` may call back into the transport.
        drop(old);
    }

    /// A protocol method panicked: report it and abort (semantics 115, 116).
    #[cold]
    #[inline(never)]
    fn protocol_panicked(&self, method: &'static str, payload: Box<dyn std::any::Any + Send>) {
        let error = panic_error(method, &*payload);
        self.report_fatal(method, &error);
        self.force_close(Some(error));
    }

    /// Reports a failed protocol method to the loop's exception handler.
    pub(crate) fn report_fatal(&self, method: &str, error: &io::Error) {
        self.lp.call_exception_handler(
            ExceptionContext::new(format!("Fatal error: protocol.{method}() call failed."))
                .with_error(LoopError::other(io::Error::new(
                    error.kind(),
                    error.to_string(),
                )))
                .with_extra("transport", format!("fd={}", self.raw_fd.get())),
        );
    }

    /// The scheduled start: `connection_made`, then reading (semantics 110, 111).
    pub(crate) fn call_connection_made(&self, transport: &Transport) {
        if self.phase.get() != Phase::Starting {
            return;
        }
        self.phase.set(Phase::Open);
        self.install_next_protocol();
        let protocol = self.protocol.get();
        if let Some(protocol) = protocol {
            self.call_once(&protocol, "connection_made", |p| {
                p.connection_made(transport)
            });
            if !self.deferred_flow.is_empty() {
                self.deliver_deferred_flow();
            }
        }
        if self.closing.get() {
            self.maybe_finish();
            return;
        }
        if self.kind == StreamKind::WritePipe {
            self.arm_watch();
        }
        if !self.read_paused.get() {
            self.arm_read();
        }
        // Writes made inside connection_made are already listed for the flush.
    }

    /// `close()`: stop reading, flush, then lose the connection (semantics 119).
    pub(crate) fn close(&self) {
        if self.closing.get() || self.phase.get() == Phase::Lost {
            return;
        }
        self.closing.set(true);
        self.refresh_read_gate();
        self.write_blocked.set(true);
        // asyncio's close() counts as the first "lost" write (semantics 125).
        self.dropped_writes.set(self.dropped_writes.get().max(1));
        // A quiet send is reclaimed (or made loud): the close waits for its outcome.
        self.settle_write();
        self.stop_reading();
        self.maybe_finish();
    }

    /// `abort()` and fatal errors: discard the write buffer, cancel ops in flight, lose the
    /// connection with `error` once they completed (semantics 121, 122).
    pub(crate) fn force_close(&self, error: Option<io::Error>) {
        if self.phase.get() == Phase::Lost || self.aborted.get() {
            return;
        }
        if error.is_some() && self.lost_error.borrow().is_none() {
            *self.lost_error.borrow_mut() = error;
        }
        self.closing.set(true);
        self.refresh_read_gate();
        self.write_blocked.set(true);
        self.aborted.set(true);
        self.dropped_writes.set(self.dropped_writes.get().max(1));
        self.wbuf.borrow_mut().clear();
        let mut flow = self.flow.get();
        flow.forget_pause();
        self.flow.set(flow);
        self.deferred_flow.clear();
        // A quiet send that finished unreported cannot be cancelled: reclaim it.
        self.settle_write();
        if let Some(id) = self.write_op.get() {
            self.lp.cancel_op(id);
        }
        self.stop_reading();
        self.maybe_finish();
    }

    /// A fatal I/O error: OS errors end the connection without the exception handler
    /// (semantics 51, 117, 118).
    pub(crate) fn fatal_io(&self, error: io::Error, what: &str) {
        tracing::debug!(fd = self.raw_fd.get(), "{what} failed: {error}");
        self.force_close(Some(error));
    }

    /// Schedules `connection_lost` once closing and no op is in flight any more.
    #[inline]
    pub(crate) fn maybe_finish(&self) {
        if self.closing.get() {
            self.finish_if_idle();
        }
    }

    fn finish_if_idle(&self) {
        if self.phase.get() == Phase::Lost {
            return;
        }
        let writes_done =
            self.aborted.get() || (self.wbuf.borrow().is_empty() && !self.listed.get());
        if self.read_op.get().is_some()
            || self.write_op.get().is_some()
            || self.watch_op.get().is_some()
            || !writes_done
        {
            return;
        }
        if self.phase.get() == Phase::Starting {
            // Closed before connection_made ran: that call comes first, then this again.
            return;
        }
        self.phase.set(Phase::Lost);
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        let scheduled = self.lp.call_soon(move || me.call_connection_lost());
        if scheduled.is_err() {
            // The loop is closed: nothing more will run; release the fd now.
            self.release_fd();
        }
    }

    /// The scheduled end: `connection_lost`, then shutdown and close of the fd.
    fn call_connection_lost(&self) {
        let error = self.lost_error.borrow_mut().take();
        self.install_next_protocol();
        // A callback of its own: no protocol method runs, so the slot lets go.
        let taken = self.protocol.replace(None);
        debug_assert!(
            taken.is_ok(),
            "connection_lost while a protocol method runs"
        );
        let protocol = taken.ok().flatten();
        if let Some(protocol) = protocol {
            self.call_once(&protocol, "connection_lost", |p| p.connection_lost(error));
            drop(protocol);
        }
        self.release_fd();
        let on_lost = self.on_lost.borrow_mut().take();
        if let Some(on_lost) = on_lost {
            on_lost();
        }
    }

    /// Calls `connection_made` or `connection_lost`, the once-only methods. A busy protocol
    /// is skipped with a warning. A panic is reported as asyncio reports an exception in a
    /// callback, and the transport is kept (semantics 82): after a panicking
    /// `connection_made`, `connection_lost` still comes, on close.
    fn call_once(
        &self,
        protocol: &ProtocolRef,
        method: &'static str,
        f: impl FnOnce(&mut dyn Protocol),
    ) {
        let outcome = match protocol.try_borrow_mut() {
            Ok(mut guard) => catch_unwind(AssertUnwindSafe(|| f(&mut *guard))),
            Err(_) => {
                tracing::warn!("protocol busy during {method}; not called");
                Ok(())
            }
        };
        if let Err(payload) = outcome {
            let error = panic_error(method, &*payload);
            self.lp.call_exception_handler(
                ExceptionContext::new(format!("Exception in callback {method}"))
                    .with_error(LoopError::from(error)),
            );
        }
    }

    /// Shuts the socket down and closes the fd through the proactor; forgets the handler.
    pub(crate) fn release_fd(&self) {
        let fd = self.fd.borrow_mut().take();
        if let Some(fd) = fd {
            if self.kind == StreamKind::Socket {
                let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
            }
            let raw = fd.into_raw_fd();
            // A closed loop closes the fd directly; either way it is released.
            let _ = self.lp.close_fd(raw);
        }
        self.raw_fd.set(-1);
        if let Some(token) = self.token.take() {
            self.lp.deregister_io(token);
        }
        self.pending.borrow_mut().clear();
        *self.me.borrow_mut() = std::rc::Weak::new();
    }
}
