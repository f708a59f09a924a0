//! I/O registration: how transports (and the loop itself) receive proactor completions.
//!
//! A long-lived I/O object registers one [`IoHandler`] (boxed once, an `Rc`) and gets an
//! [`IoToken`]; every op it submits carries the token, and the loop dispatches each
//! completion with one slab lookup and one dynamic call — no allocation, boxing or hashing
//! per completion. Tokens carry a generation, so a completion for a handler that was
//! deregistered (and whose slot was reused) is recognised and dropped: its op's buffers
//! are freed then, which is safe because the proactor reports an op's final completion
//! only once the kernel is done with it.
//!
//! [`EventLoop::run_op`] is the one-shot form for async code: submit one op, await its
//! completion. Dropping that future early detaches the op (the proactor frees its buffers
//! after the kernel is done; it never frees memory the kernel holds).

use std::fmt;
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{Context, Poll};

use ringloop_proactor::{Completion, Op, OpId, Proactor};

use crate::error::LoopError;
use crate::event_loop::EventLoop;
use crate::exception::ExceptionContext;
use crate::future::Future;
use crate::proactor_cell::ProactorMut;

/// The loop's proactor, lent by [`EventLoop::resends`] for a run of resends (a loop's
/// per-iteration flush of its transports' writes).
pub struct Resends<'a> {
    proactor: ProactorMut<'a>,
}

impl Resends<'_> {
    /// [`EventLoop::resend_op`] under this borrow.
    #[inline]
    pub fn resend(&mut self, id: OpId, buf: &mut Vec<u8>) -> bool {
        self.proactor.resend(id, buf)
    }
}

impl fmt::Debug for Resends<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resends").finish_non_exhaustive()
    }
}

/// Receives the completions of the ops submitted with its token.
pub trait IoHandler {
    /// Called on the loop thread, from the loop's dispatch step, once per completion.
    /// The completion owns the op's buffers (`completion.op`, `completion.buf`): take what
    /// you keep ([`Completion::take`] moves all of it out); what is left drops after the
    /// call. It is lent rather than moved because it is large and this is the per-message
    /// path.
    fn complete(&self, lp: &EventLoop, completion: &mut Completion);
}

/// Names a registered [`IoHandler`]: a slab key plus a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoToken(u64);

impl IoToken {
    fn new(key: usize, generation: u32) -> IoToken {
        IoToken((u64::from(generation) << 32) | key as u64)
    }

    fn key(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }

    /// The raw value carried in completions.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A slot of the registry. Not a `slab::Slab` entry: its slots are an enum, vacant or
/// occupied, so a lookup would test which before comparing generations, and lookups are
/// per message. Here a vacant slot has token 0, which no token matches (generation 0 is
/// never used), so one comparison tells both.
struct IoSlot {
    /// The token of the handler here (0: vacant).
    token: u64,
    /// The handler, from `Rc::into_raw` (the registry's count), or, in a vacant slot,
    /// [`VACANT`] (not an `Option`, whose `None` a lookup would test for as well). The
    /// value's address, not the `Rc`: dispatch calls it without working out where in the
    /// `Rc`'s allocation the value starts (which takes the vtable's alignment).
    handler: NonNull<dyn IoHandler>,
}

/// What a vacant slot points to; never called (no token matches a vacant slot).
struct Vacant;

impl IoHandler for Vacant {
    fn complete(&self, _lp: &EventLoop, _completion: &mut Completion) {}
}

/// The handler of vacant slots.
static VACANT: Vacant = Vacant;

impl IoSlot {
    fn vacant() -> IoSlot {
        IoSlot {
            token: 0,
            handler: NonNull::from(&VACANT as &dyn IoHandler),
        }
    }

    /// Empties the slot; its handler's count, if it held one, for the caller to drop.
    fn vacate(&mut self) -> Option<Rc<dyn IoHandler>> {
        if self.token == 0 {
            return None;
        }
        let handler = std::mem::replace(self, IoSlot::vacant()).handler;
        // SAFETY: the slot was occupied (its token is not 0), so `handler` came from
        // `Rc::into_raw` (see `IoRegistry::insert`) and holds one count, taken back
        // exactly once: the slot, vacant now, forgets it.
        Some(unsafe { Rc::from_raw(handler.as_ptr().cast_const()) })
    }
}

/// The registered handlers.
#[derive(Default)]
pub(crate) struct IoRegistry {
    slots: Vec<IoSlot>,
    /// Vacant slots, the most recently vacated last (reused first).
    free: Vec<u32>,
    /// Occupied slots.
    len: usize,
    next_generation: u32,
    /// Set while the loop dispatches completions (see [`EventLoop::dispatching`]): a
    /// handler deregistered meanwhile is kept in `retired` rather than dropped, so that
    /// dispatch can call a handler through the registry's own `Rc` without holding a count
    /// of its own (an increment and decrement per message) even if the handler deregisters
    /// itself during the call.
    dispatching: bool,
    /// Handlers deregistered while dispatching, dropped when dispatching ends.
    retired: Vec<Rc<dyn IoHandler>>,
}

impl IoRegistry {
    fn insert(&mut self, handler: Rc<dyn IoHandler>) -> IoToken {
        // Generation 0 is never used, so a zero token never matches.
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let key = match self.free.pop() {
            Some(key) => key as usize,
            None => {
                self.slots.push(IoSlot::vacant());
                self.slots.len() - 1
            }
        };
        let token = IoToken::new(key, self.next_generation);
        let slot = &mut self.slots[key];
        slot.token = token.0;
        // The registry's count, given back by `IoSlot::vacate`.
        let raw = Rc::into_raw(handler).cast_mut();
        // SAFETY: `Rc::into_raw` returns the address of the value in its allocation, never
        // null.
        slot.handler = unsafe { NonNull::new_unchecked(raw) };
        self.len += 1;
        token
    }

    /// Where the value of the handler of token `raw` is (see [`IoSlot::handler`]): valid
    /// while the handler is registered, and while dispatching also until dispatching ends
    /// (see [`IoRegistry::dispatching`]).
    #[inline]
    fn get(&self, raw: u64) -> Option<NonNull<dyn IoHandler>> {
        let slot = self.slots.get(IoToken(raw).key())?;
        // A vacant slot's token is 0, which `raw` (of generation 1 or more) never is.
        (slot.token == raw).then_some(slot.handler)
    }

    /// Removes the handler of `token`: `None` if it is not registered; while dispatching,
    /// the handler is kept in `retired` and `Some(None)` returned.
    fn remove(&mut self, token: IoToken) -> Option<Option<Rc<dyn IoHandler>>> {
        let slot = self
            .slots
            .get_mut(token.key())
            .filter(|slot| slot.token == token.0)?;
        let handler = slot.vacate()?;
        self.free.push(token.key() as u32);
        self.len -= 1;
        if self.dispatching {
            self.retired.push(handler);
            return Some(None);
        }
        Some(Some(handler))
    }

    /// Empties the registry (loop close), for dropping outside the borrow.
    pub(crate) fn take_all(&mut self) -> Vec<Rc<dyn IoHandler>> {
        debug_assert!(!self.dispatching, "the loop closes while dispatching");
        let mut all = std::mem::take(&mut self.retired);
        all.extend(self.slots.iter_mut().filter_map(IoSlot::vacate));
        self.slots.clear();
        self.free.clear();
        self.len = 0;
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for IoRegistry {
    fn drop(&mut self) {
        // The slots' counts (dropped here, as a `Slab<Rc<_>>` would).
        for slot in &mut self.slots {
            drop(slot.vacate());
        }
    }
}

impl EventLoop {
    /// Registers `handler` to receive the completions of ops submitted with the returned
    /// token.
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed.
    pub fn register_io(&self, handler: Rc<dyn IoHandler>) -> Result<IoToken, LoopError> {
        self.check_closed()?;
        Ok(self.inner.io.borrow_mut().insert(handler))
    }

    /// Forgets the handler of `token`; returns `false` if it was not registered. Later
    /// completions with this token are dropped (their buffers freed, an fd they yield
    /// closed). Detach or cancel the handler's ops first if they should stop.
    ///
    /// The loop drops its reference to the handler at once, or, when called while the
    /// loop dispatches completions (from a handler's `complete`, say its own), once the
    /// iteration's completions are all dispatched.
    pub fn deregister_io(&self, token: IoToken) -> bool {
        // Bound first: the handler (if not retired) drops after the borrow ends.
        let removed = self.inner.io.borrow_mut().remove(token);
        removed.is_some()
    }

    /// Opens the window in which the loop dispatches completions (see
    /// [`IoRegistry::dispatching`]); it closes when the guard drops, and the handlers
    /// deregistered meanwhile drop then. Once per loop iteration, not per completion.
    pub(crate) fn dispatching(&self) -> Dispatching<'_> {
        self.inner.io.borrow_mut().dispatching = true;
        Dispatching { lp: self }
    }

    /// How many ops are in flight in the proactor, counting cancelled and detached ones
    /// whose final completion has not arrived yet, and quiet ones not yet reclaimed.
    pub fn ops_in_flight(&self) -> usize {
        self.inner
            .proactor
            .borrow_mut()
            .map_or(0, |p| p.in_flight())
    }

    /// How many I/O handlers are registered.
    pub fn registered_io(&self) -> usize {
        self.inner.io.borrow().len()
    }

    /// Starts `op`; its completions go to the handler of `token`. Ops pushed during an
    /// iteration are submitted together by the next poll (one system call).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed (the op is dropped: it was never
    /// given to the kernel).
    #[inline]
    pub fn submit(&self, op: impl Into<Op>, token: IoToken) -> Result<OpId, LoopError> {
        self.with_open_proactor(|proactor| proactor.push(op, token.0))
    }

    /// Runs `f` on the proactor of an open loop.
    #[inline]
    fn with_open_proactor<R>(&self, f: impl FnOnce(&mut Proactor) -> R) -> Result<R, LoopError> {
        match self.inner.proactor.borrow_open() {
            Some(mut proactor) => Ok(f(&mut proactor)),
            None => Err(LoopError::LoopClosed),
        }
    }

    /// Starts a send or write whose full success is not reported (see
    /// [`Proactor::push_quiet`](ringloop_proactor::Proactor::push_quiet)): the owner takes
    /// it back with [`reclaim_op`](EventLoop::reclaim_op) when it next needs the buffer or
    /// the outcome. Failures and short transfers reach the handler as usual.
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed (the op is dropped).
    #[inline]
    pub fn submit_quiet(&self, op: impl Into<Op>, token: IoToken) -> Result<OpId, LoopError> {
        self.with_open_proactor(|proactor| proactor.push_quiet(op, token.0))
    }

    /// Takes back quiet op `id`: its completion if it finished unreported, else `None`, and
    /// then its completion, if one is still to come, reaches the handler as usual.
    #[inline]
    pub fn reclaim_op(&self, id: OpId) -> Option<Completion> {
        self.inner.proactor.borrow_mut()?.reclaim(id)
    }

    /// [`reclaim_op`](EventLoop::reclaim_op) for a quiet send or write when only its
    /// buffer is wanted back: `Some(buf)` if it finished, having sent all of it; `None` if
    /// it is still in flight (its completion will reach the handler).
    #[inline]
    pub fn reclaim_buf(&self, id: OpId) -> Option<Vec<u8>> {
        self.inner.proactor.borrow_mut()?.reclaim_buf(id)
    }

    /// Sends what `buf` holds with finished quiet op `id`, in place (see
    /// [`Proactor::resend`](ringloop_proactor::Proactor::resend)): `true`, with the op's old
    /// buffer, all of it sent, in `buf`. `false`, with `buf` untouched, if `id` is not a
    /// finished quiet send or write (one still in flight becomes loud), or the loop is
    /// closed.
    #[inline(always)]
    pub fn resend_op(&self, id: OpId, buf: &mut Vec<u8>) -> bool {
        match self.inner.proactor.borrow_open() {
            Some(mut proactor) => proactor.resend(id, buf),
            None => false,
        }
    }

    /// Lends the loop's proactor for a run of [`resend`](Resends::resend)s: one borrow
    /// for many, where [`resend_op`](EventLoop::resend_op) takes one per send. `None` if
    /// the loop is closed.
    ///
    /// While the returned value lives, the proactor is borrowed: any other loop operation
    /// that uses it (submitting, reclaiming or cancelling an op, polling) panics, as a
    /// second `RefCell` borrow does. Drop it before running code that may do so.
    #[inline]
    pub fn resends(&self) -> Option<Resends<'_>> {
        let proactor = self.inner.proactor.borrow_open()?;
        Some(Resends { proactor })
    }

    /// Asks op `id` to finish early; its final completion still arrives (`ECANCELED`, or
    /// its real result if it finished first). `false` if it already completed.
    pub fn cancel_op(&self, id: OpId) -> bool {
        match self.inner.proactor.borrow_mut() {
            Some(mut proactor) => proactor.cancel(id),
            None => false,
        }
    }

    /// Gives op `id` up: no completion of it will be delivered; its buffers are freed (and
    /// an fd it yields closed) once the kernel is done with them.
    pub fn detach_op(&self, id: OpId) {
        if let Some(mut proactor) = self.inner.proactor.borrow_mut() {
            proactor.detach(id);
        }
    }

    /// Closes `fd` through the proactor (which forgets any registration of it). No op may
    /// be in flight on `fd`.
    ///
    /// # Errors
    /// What `close(2)` reports; [`LoopError::LoopClosed`] if the loop is closed (then the
    /// fd is closed directly).
    pub fn close_fd(&self, fd: std::os::fd::RawFd) -> Result<(), LoopError> {
        match self.inner.proactor.borrow_mut() {
            Some(mut proactor) => proactor.close_fd(fd).map_err(LoopError::from),
            None => {
                // SAFETY: the caller hands over ownership of `fd`, with no op in flight.
                unsafe { libc::close(fd) };
                Err(LoopError::LoopClosed)
            }
        }
    }

    /// Runs one op and resolves to its (first) completion, which hands the op and its
    /// buffers back. Dropping the future before then detaches the op; cancelling the task
    /// that awaits it does too, and yields [`LoopError::Cancelled`].
    ///
    /// # Examples
    /// ```
    /// use ringloop_runtime::{EventLoop, LoopError};
    /// use ringloop_runtime::proactor::op;
    /// use std::time::Duration;
    ///
    /// let lp = EventLoop::new()?;
    /// let op_loop = lp.clone();
    /// let completion = lp.run_until_complete(async move {
    ///     op_loop.run_op(op::Timeout::new(Duration::from_millis(5))).await
    /// })?;
    /// assert!(completion.result.is_ok());
    /// # Ok::<(), LoopError>(())
    /// ```
    pub fn run_op(&self, op: impl Into<Op>) -> OpFuture {
        let done = self.create_future::<Completion>();
        let handler = Rc::new(OneShot {
            done: done.clone(),
            token: std::cell::Cell::new(None),
        });
        let token = match self.register_io(handler.clone()) {
            Ok(token) => token,
            Err(err) => {
                return OpFuture {
                    lp: self.clone(),
                    state: OpState::Failed(Some(err)),
                }
            }
        };
        handler.token.set(Some(token));
        match self.submit(op, token) {
            Ok(id) => OpFuture {
                lp: self.clone(),
                state: OpState::Pending { done, token, id },
            },
            Err(err) => {
                self.deregister_io(token);
                OpFuture {
                    lp: self.clone(),
                    state: OpState::Failed(Some(err)),
                }
            }
        }
    }

    /// Dispatches one completion to its handler (the loop's dispatch step).
    #[inline]
    pub(crate) fn dispatch(&self, completion: &mut Completion) {
        // Unguarded: the borrow flag is checked, not raised and lowered again (per message).
        debug_assert!(
            self.inner.io.borrow().dispatching,
            "dispatch outside `dispatching`"
        );
        // The loop's borrows of the registry (`register_io`, `deregister_io`, `dispatching`
        // and its guard's drop, `close`) all end before they return and run no code of
        // anyone else's meanwhile (a handler removed is dropped after the borrow), and this
        // runs from `run_once`, not from inside any of them. (Not `try_borrow_unguarded`:
        // its test of the borrow flag is per message.)
        // SAFETY: so no mutable borrow of the registry is active, and the shared reference,
        // which lives only for `get` (it copies a pointer), aliases no `&mut`.
        let handler = unsafe { &*self.inner.io.as_ptr() }.get(completion.token);
        match handler {
            Some(target) => {
                // `target` points to the value of an `Rc` the registry holds: in its slot, or,
                // once deregistered (by the handler itself, say) while the loop dispatches,
                // which it does now (the caller holds a `Dispatching`), in `retired` until
                // that window closes, after this call.
                // SAFETY: so it stays valid (and only shared) throughout the call.
                let handler = unsafe { target.as_ref() };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.complete(self, completion)
                }));
                if let Err(payload) = outcome {
                    self.call_exception_handler(
                        ExceptionContext::new("Exception in I/O completion handler")
                            .with_error(LoopError::from_panic(&*payload)),
                    );
                }
            }
            None => {
                if completion.more {
                    // A multishot op outlived its handler: give it up, so the proactor
                    // consumes (and cleans up after) the rest of its completions.
                    self.detach_op(completion.id);
                }
                drop_orphan(completion.take());
            }
        }
    }
}

/// The window in which the loop dispatches completions (see [`EventLoop::dispatching`]).
pub(crate) struct Dispatching<'a> {
    lp: &'a EventLoop,
}

impl Drop for Dispatching<'_> {
    fn drop(&mut self) {
        let retired = {
            let mut io = self.lp.inner.io.borrow_mut();
            io.dispatching = false;
            if io.retired.is_empty() {
                return;
            }
            std::mem::take(&mut io.retired)
        };
        // Outside the borrow: dropping a handler may run code that uses the loop.
        drop(retired);
    }
}

/// Drops a completion nobody wants: its buffers go with it; a new fd it carries is closed.
fn drop_orphan(completion: Completion) {
    if let Some(fd) = completion.new_fd() {
        // SAFETY: the fd was just produced by the kernel for an op whose handler is gone;
        // nobody else owns it, and closing it keeps it from leaking.
        unsafe { libc::close(fd) };
    }
    tracing::trace!(
        token = completion.token,
        "dropped a completion for a deregistered handler"
    );
}

/// The handler behind [`EventLoop::run_op`].
struct OneShot {
    done: Future<Completion>,
    token: std::cell::Cell<Option<IoToken>>,
}

impl IoHandler for OneShot {
    fn complete(&self, lp: &EventLoop, completion: &mut Completion) {
        let last = !completion.more;
        // A cancelled waiter makes this fail: the completion (and its buffers) drop here.
        let _ = self.done.set_result(completion.take());
        if last {
            if let Some(token) = self.token.get() {
                lp.deregister_io(token);
            }
        }
    }
}

enum OpState {
    Pending {
        done: Future<Completion>,
        token: IoToken,
        id: OpId,
    },
    Failed(Option<LoopError>),
    Finished,
}

/// The future returned by [`EventLoop::run_op`].
#[must_use = "dropping the future detaches the op"]
pub struct OpFuture {
    lp: EventLoop,
    state: OpState,
}

impl OpFuture {
    /// The op's id, while it is in flight.
    pub fn id(&self) -> Option<OpId> {
        match &self.state {
            OpState::Pending { id, .. } => Some(*id),
            _ => None,
        }
    }

    fn abandon(&mut self) {
        // Both are no-ops for an op that already completed (ids and tokens carry
        // generations, so a reused slot is never hit).
        if let OpState::Pending { token, id, .. } = &self.state {
            self.lp.detach_op(*id);
            self.lp.deregister_io(*token);
        }
        self.state = OpState::Finished;
    }
}

impl std::future::Future for OpFuture {
    type Output = Result<Completion, LoopError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = match &mut self.state {
            OpState::Pending { done, .. } => Pin::new(done).poll(cx),
            OpState::Failed(err) => {
                let err = err.take().unwrap_or(LoopError::InvalidState(
                    "run_op polled after completion".into(),
                ));
                self.state = OpState::Finished;
                return Poll::Ready(Err(err));
            }
            OpState::Finished => {
                return Poll::Ready(Err(LoopError::InvalidState(
                    "run_op polled after completion".into(),
                )))
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(completion)) => {
                if completion.more {
                    // A multishot op: only its first completion is wanted.
                    self.abandon();
                }
                self.state = OpState::Finished;
                Poll::Ready(Ok(completion))
            }
            Poll::Ready(Err(err)) => {
                // Cancelled (or awaited from the wrong loop): give the op up.
                self.abandon();
                Poll::Ready(Err(err))
            }
        }
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl fmt::Debug for OpFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpFuture").field("id", &self.id()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds a count of `alive` while it lives.
    struct Counted {
        _alive: Rc<()>,
    }

    impl IoHandler for Counted {
        fn complete(&self, _lp: &EventLoop, _completion: &mut Completion) {}
    }

    fn handler(alive: &Rc<()>) -> Rc<dyn IoHandler> {
        Rc::new(Counted {
            _alive: alive.clone(),
        })
    }

    #[test]
    fn stale_and_vacant_tokens_find_nothing_and_every_count_is_given_back() {
        let alive = Rc::new(());
        let mut io = IoRegistry::default();
        let a = io.insert(handler(&alive));
        let b = io.insert(handler(&alive));
        assert_eq!(io.len(), 2);
        assert!(io.get(a.0).is_some() && io.get(b.0).is_some());
        assert!(io.get(0).is_none(), "a zero token matches no slot");
        assert!(io.remove(a).is_some_and(|h| h.is_some()));
        assert!(io.remove(a).is_none(), "removed once");
        assert!(io.get(a.0).is_none());
        // The vacated slot is reused, under a new generation: the old token stays dead.
        let c = io.insert(handler(&alive));
        assert_eq!(c.key(), a.key());
        assert_ne!(c, a);
        assert!(io.get(a.0).is_none() && io.get(c.0).is_some());
        // While dispatching, a removed handler is retired, not handed back.
        io.dispatching = true;
        assert!(io.remove(b).is_some_and(|h| h.is_none()));
        assert_eq!(io.retired.len(), 1);
        io.dispatching = false;
        drop(std::mem::take(&mut io.retired));
        assert_eq!(Rc::strong_count(&alive), 2, "c's handler, and ours");
        let d = io.insert(handler(&alive));
        let all = io.take_all();
        assert_eq!((all.len(), io.len()), (2, 0));
        assert!(io.get(d.0).is_none());
        drop(all);
        assert_eq!(Rc::strong_count(&alive), 1);
        // What is registered when the registry drops goes with it.
        io.insert(handler(&alive));
        drop(io);
        assert_eq!(Rc::strong_count(&alive), 1);
    }
}
