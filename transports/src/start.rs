//! How a new transport joins its loop, for stream and datagram transports alike: it is
//! registered for loop close (the [`Registry`]), its state becomes the I/O handler of its
//! ops, and `connection_made` is scheduled with `call_soon`, never called from inside the
//! constructor (semantics 110).

use std::rc::{Rc, Weak};

use ringloop_runtime::{EventLoop, Future, IoHandler, IoToken, LoopError};

use crate::registry::{Abandon, Registry};

/// The shared state behind a transport handle, as its loop holds it.
pub(crate) trait TransportState: IoHandler + Abandon + 'static {
    /// The handle applications and protocols hold (`Transport`, `DatagramTransport`).
    type Handle: Clone + 'static;

    /// Wraps the state in its handle.
    fn handle(state: Rc<Self>) -> Self::Handle;

    /// The state behind `handle`.
    fn state(handle: &Self::Handle) -> &Rc<Self>;

    /// Remembers the token its ops are submitted with.
    fn set_token(&self, token: IoToken);

    /// The scheduled start: calls the protocol's `connection_made`.
    fn connection_made(&self, handle: &Self::Handle);

    /// The start failed: closes the fd and forgets the registration.
    fn release(&self);
}

/// Registers `state` with the loop and schedules `connection_made`; returns the transport's
/// handle and a future that resolves once `connection_made` has run.
///
/// # Errors
/// [`LoopError::LoopClosed`] if the loop is closed; the fd is released then.
pub(crate) fn start<S: TransportState>(
    lp: &EventLoop,
    state: Rc<S>,
) -> Result<(S::Handle, Future<()>), LoopError> {
    let weak: Weak<dyn Abandon> = Rc::downgrade(&state) as _;
    Registry::of(lp).add(weak);
    let token = match lp.register_io(state.clone()) {
        Ok(token) => token,
        Err(err) => {
            state.release();
            return Err(err);
        }
    };
    state.set_token(token);
    let made = lp.create_future::<()>();
    let handle = S::handle(state);
    let starter = handle.clone();
    let waiter = made.clone();
    let scheduled = lp.call_soon(move || {
        S::state(&starter).connection_made(&starter);
        // The creator may have stopped waiting (cancelled): nothing to report then.
        let _ = waiter.set_result(());
    });
    if let Err(err) = scheduled {
        S::state(&handle).release();
        return Err(err);
    }
    Ok((handle, made))
}
