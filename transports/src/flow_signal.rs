//! Telling a protocol to pause or resume writing, for stream and datagram transports alike
//! (semantics 137, 140): at once, or, if the protocol is busy (the write that crossed a mark
//! came from inside one of its methods), right after its current method returns.
//!
//! [`FlowControl`](crate::flow::FlowControl) decides *whether* to signal; this module
//! *delivers* the signal. Neither runs per message: a signal is raised only when the buffer
//! crosses a water mark.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use ringloop_runtime::{EventLoop, ExceptionContext, LoopError};

use crate::flow::FlowSignal;
use crate::protocol::{DatagramProtocol, Protocol};

/// A protocol with asyncio's write flow-control methods.
pub(crate) trait WriteFlow {
    /// `pause_writing()`.
    fn pause_writing(&mut self);
    /// `resume_writing()`.
    fn resume_writing(&mut self);
}

impl WriteFlow for dyn Protocol {
    fn pause_writing(&mut self) {
        Protocol::pause_writing(self);
    }
    fn resume_writing(&mut self) {
        Protocol::resume_writing(self);
    }
}

impl WriteFlow for dyn DatagramProtocol {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self);
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self);
    }
}

/// Flow signals raised while the protocol was busy, waiting, in order, for its current
/// method to return.
#[derive(Default)]
pub(crate) struct DeferredFlow {
    signals: RefCell<Vec<FlowSignal>>,
    /// Whether `signals` is non-empty: one byte to test after every protocol call (once
    /// per message) instead of a borrow and a length.
    any: Cell<bool>,
}

impl DeferredFlow {
    /// Whether no signal waits.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.get()
    }

    fn push(&self, signal: FlowSignal) {
        self.signals.borrow_mut().push(signal);
        self.any.set(true);
    }

    fn take(&self) -> Vec<FlowSignal> {
        self.any.set(false);
        std::mem::take(&mut *self.signals.borrow_mut())
    }

    /// Forgets the waiting signals.
    pub(crate) fn clear(&self) {
        self.any.set(false);
        self.signals.borrow_mut().clear();
    }
}

/// The protocol slot of a transport: `None` once `connection_lost` took it.
pub(crate) trait CurrentProtocol {
    /// The kind of protocol the slot holds.
    type Protocol: ?Sized;
    /// The protocol the slot holds now (a new `Rc` of it).
    fn current(&self) -> Option<Rc<RefCell<Self::Protocol>>>;
}

impl<P: ?Sized> CurrentProtocol for RefCell<Option<Rc<RefCell<P>>>> {
    type Protocol = P;

    fn current(&self) -> Option<Rc<RefCell<P>>> {
        self.borrow().clone()
    }
}

/// Tells the protocol in `slot` to pause or resume, now or (if it is busy) once its
/// current method returns: the signal then waits in `deferred`, which the transport hands to
/// [`deliver_deferred`] after every protocol call. A panic is reported to the loop's
/// exception handler and the transport carries on (semantics 140).
pub(crate) fn signal<S: CurrentProtocol + ?Sized>(
    lp: &EventLoop,
    slot: &S,
    deferred: &DeferredFlow,
    signal: FlowSignal,
) where
    S::Protocol: WriteFlow,
{
    let Some(protocol) = slot.current() else {
        return;
    };
    let Ok(mut guard) = protocol.try_borrow_mut() else {
        deferred.push(signal);
        return;
    };
    let method = match signal {
        FlowSignal::Pause => "pause_writing",
        _ => "resume_writing",
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| match signal {
        FlowSignal::Pause => guard.pause_writing(),
        _ => guard.resume_writing(),
    }));
    drop(guard);
    if let Err(payload) = outcome {
        let error = crate::stream::panic_error(method, &*payload);
        lp.call_exception_handler(
            ExceptionContext::new(format!("protocol.{method}() failed"))
                .with_error(LoopError::from(error)),
        );
    }
    // Writes made inside pause_writing/resume_writing may have raised a signal meanwhile.
    if !deferred.is_empty() {
        deliver_deferred(lp, slot, deferred);
    }
}

/// Delivers, in order, the signals that waited in `deferred` while the protocol was busy.
pub(crate) fn deliver_deferred<S: CurrentProtocol + ?Sized>(
    lp: &EventLoop,
    slot: &S,
    deferred: &DeferredFlow,
) where
    S::Protocol: WriteFlow,
{
    let signals = deferred.take();
    for flow in signals {
        signal(lp, slot, deferred, flow);
    }
}
