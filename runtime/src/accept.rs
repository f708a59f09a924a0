//! Multishot accept with owned results: [`EventLoop::accept_multishot`].
//!
//! The proactor reports an accepted connection as a raw fd number in a completion. Turning
//! that number into an [`OwnedFd`] is only sound for the party that submitted the accept,
//! so the loop does it here, for the op it submitted itself, and hands safe code (the
//! transports crate forbids `unsafe`) an `OwnedFd` it can own and close.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use ringloop_proactor::{op, Completion, OpId};

use crate::error::LoopError;
use crate::event_loop::EventLoop;
use crate::io::{IoHandler, IoToken};

/// Receives what a multishot accept produces.
pub trait AcceptHandler {
    /// One accepted connection (or a failed accept that does not end the op).
    fn accepted(&self, lp: &EventLoop, connection: io::Result<OwnedFd>);

    /// The accept ended: `Err(ECANCELED)` after [`Acceptor::cancel`], or the error that
    /// stopped it (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, …). Start a new one to go on.
    fn finished(&self, lp: &EventLoop, result: io::Result<()>);
}

/// A multishot accept in flight; see [`EventLoop::accept_multishot`].
#[derive(Clone)]
pub struct Acceptor {
    lp: EventLoop,
    relay: Rc<Relay>,
}

impl Acceptor {
    /// Asks the accept to stop; [`AcceptHandler::finished`] follows once the kernel is done
    /// (connections accepted meanwhile are still delivered). `false` if it already ended.
    pub fn cancel(&self) -> bool {
        match self.relay.op.get() {
            Some(id) => self.lp.cancel_op(id),
            None => false,
        }
    }

    /// Whether the accept is still in flight.
    pub fn is_active(&self) -> bool {
        self.relay.op.get().is_some()
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("op", &self.relay.op.get())
            .finish()
    }
}

struct Relay {
    handler: Rc<dyn AcceptHandler>,
    token: Cell<Option<IoToken>>,
    op: Cell<Option<OpId>>,
}

impl IoHandler for Relay {
    fn complete(&self, lp: &EventLoop, completion: &mut Completion) {
        if !completion.more {
            self.op.set(None);
            if let Some(token) = self.token.take() {
                lp.deregister_io(token);
            }
        }
        match std::mem::replace(&mut completion.result, Ok(0)) {
            Ok(fd) => {
                // This completion belongs to the `AcceptMulti` op this module submitted (only
                // that op carries our token).
                // SAFETY: a successful accept's result is a new fd that nobody else owns,
                // handed over exactly once, here.
                let owned = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                self.handler.accepted(lp, Ok(owned));
                if !completion.more {
                    // An accept that ends on a success (emulations do): report the end.
                    self.handler.finished(lp, Ok(()));
                }
            }
            Err(err) if completion.more => self.handler.accepted(lp, Err(err)),
            Err(err) => self.handler.finished(lp, Err(err)),
        }
    }
}

impl EventLoop {
    /// Accepts connections on the listening socket `listener` until cancelled or an error
    /// ends it, delivering each new connection to `handler` as an [`OwnedFd`]
    /// (close-on-exec, non-blocking). The caller keeps `listener` open until
    /// [`AcceptHandler::finished`] ran.
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed.
    pub fn accept_multishot(
        &self,
        listener: RawFd,
        handler: Rc<dyn AcceptHandler>,
    ) -> Result<Acceptor, LoopError> {
        let relay = Rc::new(Relay {
            handler,
            token: Cell::new(None),
            op: Cell::new(None),
        });
        let token = self.register_io(relay.clone())?;
        relay.token.set(Some(token));
        match self.submit(op::AcceptMulti::new(listener), token) {
            Ok(id) => relay.op.set(Some(id)),
            Err(err) => {
                self.deregister_io(token);
                return Err(err);
            }
        }
        Ok(Acceptor {
            lp: self.clone(),
            relay,
        })
    }
}
