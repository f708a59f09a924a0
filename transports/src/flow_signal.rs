//! Telling a protocol to pause or resume writing, for stream and datagram transports alike
//! (semantics 137, 140): at once, or, if the protocol is busy (the write that crossed a mark
//! came from inside one of its methods), right after its current method returns.
//!
//! [`FlowControl`](crate::flow::FlowControl) decides *whether* to signal; this module
//! *delivers* the signal. Neither runs per message: a signal is raised only when the buffer
//! crosses a water mark.

use std::cell::RefCell;
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

/// The protocol slot of a transport: `None` once `connection_lost` took it.
pub(crate) type ProtocolSlot<P> = RefCell<Option<Rc<RefCell<P>>>>;

/// Tells the protocol in `slot` to pause or resume, now or (if it is busy) once its
/// current method returns: the signal then waits in `deferred`, which the transport hands to
/// [`deliver_deferred`] after every protocol call. A panic is reported to the loop's
/// exception handler and the transport carries on (semantics 140).
pub(crate) fn signal<P: WriteFlow + ?Sized>(
    lp: &EventLoop,
    slot: &ProtocolSlot<P>,
    deferred: &RefCell<Vec<FlowSignal>>,
    signal: FlowSignal,
) {
    let Some(protocol) = slot.borrow().clone() else {
        return;
    };
    let Ok(mut guard) = protocol.try_borrow_mut() else {
        deferred.borrow_mut().push(signal);
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
    if !deferred.borrow().is_empty() {
        deliver_deferred(lp, slot, deferred);
    }
}

/// Delivers, in order, the signals that waited in `deferred` while the protocol was busy.
pub(crate) fn deliver_deferred<P: WriteFlow + ?Sized>(
    lp: &EventLoop,
    slot: &ProtocolSlot<P>,
    deferred: &RefCell<Vec<FlowSignal>>,
) {
    let signals = std::mem::take(&mut *deferred.borrow_mut());
    for flow in signals {
        signal(lp, slot, deferred, flow);
    }
}
