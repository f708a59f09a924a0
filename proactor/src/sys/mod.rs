//! The backends, behind one written contract.
//!
//! A backend turns ops stored in the [`OpTable`] into kernel work and reports what the
//! kernel finished as [`RawCompletion`]s. The front end ([`Proactor`](crate::Proactor))
//! owns the table, hands out ids, routes completions to callers, and consumes the completions
//! of detached ops. Every backend must provide:
//!
//! - **`push(table, id)`** — start the op at `id`. Never fails and never blocks: what cannot
//!   be handed to the kernel now (full submission queue, fd not ready) waits in the backend
//!   and goes out later, in push order per fd. Errors of the op itself are reported as its
//!   completion, never returned here.
//! - **`cancel(table, id)`** — ask for the op to finish early. The op's final completion is
//!   still reported exactly once: `-ECANCELED`, or its real result if it won the race. A
//!   cancel of an op that already finished is a no-op.
//! - **`poll(table, timeout)`** — submit everything queued, then wait until at least one
//!   completion is available, `timeout` passes (`Some(ZERO)`: never block; `None`: no limit)
//!   or the proactor's eventfd is written. A signal interrupting the wait (`EINTR`) is a
//!   normal return, not an error. On io_uring this is one `io_uring_enter`.
//! - **`pop(table, out)`** — the next completion, in the order the kernel produced them; per
//!   op, `more == false` exactly once and last. Multishot receives fall back to single
//!   receives into owned buffers when the buffer pool is dry, without ending the op. A
//!   backend may write a completion the caller gets as it is straight into `out`
//!   ([`Popped::Routed`]); others go to the front end as [`RawCompletion`]s
//!   (**`take_raw()`**).
//! - **`forget_fd(fd)`** — the fd is being closed: drop any per-fd registration.
//! - **`features()`**, **`kind()`** — what the backend is and what it uses.
//!
//! Ops keep everything the kernel touches behind heap pointers (see [`crate::op`]), so a
//! backend may build kernel requests from `&mut Op` in the table at any time before the
//! request is submitted, and the memory stays valid until the op is removed from the table,
//! which the front end does only after the final completion.

pub(crate) mod epoll;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::buf::BufPool;
use crate::completion::{Completion, RawCompletion};
use crate::op;
use crate::table::{OpId, OpTable, Stage};
use crate::{BackendKind, Features};

/// The contract every backend implements (see the module docs).
pub(crate) trait Backend {
    /// Starts the op at `id`.
    fn push(&mut self, table: &mut OpTable, id: OpId);
    /// Starts again the op at `id`, which finished (its final completion was reaped) and
    /// kept its table entry and id (`Proactor::resend`).
    fn restart(&mut self, table: &mut OpTable, id: OpId) {
        self.push(table, id);
    }
    /// [`restart`](Backend::restart) of a send for a caller that holds its table entry
    /// (`send` its op, `stage` its stage): starts it (the op at `id`) without looking it
    /// up, or returns `false`, having changed nothing, when it cannot (then `restart` it).
    /// The send was just reset to send its whole buffer (`start` is 0).
    fn restart_send(&mut self, _id: OpId, _send: &mut op::Send, _stage: &mut Stage) -> bool {
        false
    }
    /// Asks for the op at `id` to finish early.
    fn cancel(&mut self, table: &mut OpTable, id: OpId);
    /// Submits queued work and waits for a completion, the timeout or a wake-up.
    fn poll(&mut self, table: &mut OpTable, timeout: Option<Duration>) -> io::Result<()>;
    /// The next completion: written into `out`, or waiting for `take_raw` (see [`Popped`]).
    fn pop(&mut self, table: &mut OpTable, out: &mut Completion) -> Popped;
    /// The completion that `pop` reported as [`Popped::Raw`]; `None` if there is none
    /// (then there is no completion at all: `pop` would say `Empty` too).
    fn take_raw(&mut self) -> Option<RawCompletion>;
    /// Drops per-fd state of an fd about to be closed.
    fn forget_fd(&mut self, fd: RawFd);
    /// What the backend uses.
    fn features(&self) -> &Features;
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
}

/// What [`Backend::pop`] found. No payload: returned in a register, it costs no copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Popped {
    /// No completion is ready.
    Empty,
    /// A completion the caller gets as it is, which the backend wrote into the caller's
    /// [`Completion`] ([`Completion::set_chunk`]), having found its op in the table: a
    /// received chunk (`more` set, a success) of a live op (not detached, not the
    /// proactor's wake-up read) that yields no fd. The front end hands it on without
    /// looking the op up again, and nothing is moved on the way.
    Routed,
    /// A completion for the front end to route: [`Backend::take_raw`] hands it over, or
    /// says there is none (a backend that queues every completion may leave that test to
    /// it).
    Raw,
}

/// [`Backend::pop`] for the backends' own tests: every completion as a [`RawCompletion`],
/// routed ones included.
#[cfg(test)]
pub(crate) fn pop_raw(backend: &mut impl Backend, table: &mut OpTable) -> Option<RawCompletion> {
    let mut out = Completion::default();
    match backend.pop(table, &mut out) {
        Popped::Empty => None,
        Popped::Raw => backend.take_raw(),
        Popped::Routed => {
            let result = out.result.as_ref().map_or(-1, |&n| n as i32);
            Some(RawCompletion::new(out.id, result, out.more, out.buf.take()))
        }
    }
}

/// What a backend needs from the builder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Submission queue entries (a power of two).
    pub(crate) entries: u32,
    /// Provided receive buffers: how many (a power of two) and how large.
    pub(crate) recv_buffers: u16,
    /// Size of each provided receive buffer.
    pub(crate) recv_buffer_size: usize,
    /// The eventfd of the proactor's [`Waker`](crate::Waker); backends watch it so that a
    /// write ends the wait.
    #[allow(dead_code)] // The epoll backend reads it; io_uring watches it with a read op.
    pub(crate) wake_fd: RawFd,
}

/// The backend a proactor runs on; a static dispatch over the implementations.
// One `Driver` per proactor, built once and never moved after: boxing the larger variant
// would only add a pointer chase to every call.
#[allow(clippy::large_enum_variant)]
// A tag of its own rather than a niche in a field: telling the variants apart is then one
// comparison of a byte, on every call (several per message).
#[repr(u8)]
pub(crate) enum Driver {
    /// io_uring.
    Uring(uring::Driver),
    /// epoll.
    Epoll(epoll::Driver),
}

macro_rules! delegate {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Driver::Uring($d) => $e,
            Driver::Epoll($d) => $e,
        }
    };
}

impl Backend for Driver {
    #[inline]
    fn push(&mut self, table: &mut OpTable, id: OpId) {
        delegate!(self, d => d.push(table, id))
    }
    #[inline]
    fn restart(&mut self, table: &mut OpTable, id: OpId) {
        delegate!(self, d => d.restart(table, id))
    }
    #[inline]
    fn restart_send(&mut self, id: OpId, send: &mut op::Send, stage: &mut Stage) -> bool {
        delegate!(self, d => d.restart_send(id, send, stage))
    }
    #[inline]
    fn cancel(&mut self, table: &mut OpTable, id: OpId) {
        delegate!(self, d => d.cancel(table, id))
    }
    #[inline]
    fn poll(&mut self, table: &mut OpTable, timeout: Option<Duration>) -> io::Result<()> {
        delegate!(self, d => d.poll(table, timeout))
    }
    #[inline]
    fn pop(&mut self, table: &mut OpTable, out: &mut Completion) -> Popped {
        delegate!(self, d => d.pop(table, out))
    }
    #[inline]
    fn take_raw(&mut self) -> Option<RawCompletion> {
        delegate!(self, d => d.take_raw())
    }
    fn forget_fd(&mut self, fd: RawFd) {
        delegate!(self, d => d.forget_fd(fd))
    }
    fn features(&self) -> &Features {
        delegate!(self, d => d.features())
    }
    fn kind(&self) -> BackendKind {
        delegate!(self, d => d.kind())
    }
}

/// Builds the shared receive-buffer pool for a backend that recycles to a free list.
pub(crate) fn free_list_pool(config: &Config) -> BufPool {
    BufPool::with_free_list(config.recv_buffers, config.recv_buffer_size)
}
