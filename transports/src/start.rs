//! How a new transport joins its loop, for stream and datagram transports alike: it is
//! registered for loop close (the [`Registry`]), its state becomes the I/O handler of its
//! ops, and `connection_made` is scheduled with `call_soon`, never called from inside the
//! constructor (semantics 110).

use std::rc::{Rc, Weak};

use ringloop_runtime::{EventLoop, Future, IoHandler, IoToken, LoopError};

use crate::registry::{Abandon, Registry};

/// The shared state behind a transport handle, as its loop holds it.
pub(crate) trait TransportState: IoHandler + Abandon + 'static {
    /// Remembers the token its ops are submitted with.
    fn set_token(&self, token: IoToken);

    /// The scheduled start: calls the protocol's `connection_made` with a handle to `self`.
    fn begin(self: Rc<Self>);

    /// The start failed: closes the fd and forgets the registration.
    fn release(&self);
}

/// Registers `state` with the loop and schedules `connection_made`; the returned future
/// resolves once it has run.
///
/// # Errors
/// [`LoopError::LoopClosed`] if the loop is closed; the fd is released then.
pub(crate) fn start<S: TransportState>(
    lp: &EventLoop,
    state: Rc<S>,
) -> Result<Future<()>, LoopError> {
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
    let starter = state.clone();
    let waiter = made.clone();
    let scheduled = lp.call_soon(move || {
        starter.begin();
        // The creator may have stopped waiting (cancelled): nothing to report then.
        let _ = waiter.set_result(());
    });
    if let Err(err) = scheduled {
        state.release();
        return Err(err);
    }
    Ok(made)
}
