//! Scheduled callbacks: what `call_soon` and `call_later` return ([`Handle`],
//! [`TimerHandle`]) and the type-erased cells the ready queue and the timer heap hold.
//!
//! A callback is boxed exactly once, inside the reference-counted cell that is both the
//! queue entry and the user's handle (one allocation per `call_soon`). Running or
//! cancelling takes the closure out of its cell, so everything it captured is dropped at
//! once (semantics 28) even while handles to the cell live on.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use crate::error::LoopError;
use crate::event_loop::EventLoop;

/// What a callback may return: nothing, or a `Result` whose error is reported to the
/// loop's exception handler (asyncio: an exception raised by the callback).
pub trait CallbackOutput {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<(), LoopError>;
}

impl CallbackOutput for () {
    #[inline]
    fn into_result(self) -> Result<(), LoopError> {
        Ok(())
    }
}

impl<E: Into<LoopError>> CallbackOutput for Result<(), E> {
    #[inline]
    fn into_result(self) -> Result<(), LoopError> {
        self.map_err(Into::into)
    }
}

/// An entry of the ready queue: a callback, a timer whose deadline passed, or a task step.
pub(crate) trait Runnable {
    /// Runs the entry once. An error is reported to the exception handler by the caller.
    fn run(&self, lp: &EventLoop) -> Result<(), LoopError>;
    /// Whether the entry was cancelled (the loop skips it).
    fn is_cancelled(&self) -> bool;
    /// Cancels the entry, dropping its closure.
    fn cancel(&self);
    /// How the entry shows in logs and exception contexts, e.g. `<Handle my_callback>`.
    fn describe(&self) -> String;
}

/// A `call_soon` callback.
pub(crate) struct CallbackCell<F> {
    callback: Cell<Option<F>>,
    cancelled: Cell<bool>,
}

impl<F> CallbackCell<F> {
    pub(crate) fn new(callback: F) -> Self {
        CallbackCell {
            callback: Cell::new(Some(callback)),
            cancelled: Cell::new(false),
        }
    }
}

impl<F, R> Runnable for CallbackCell<F>
where
    F: FnOnce() -> R,
    R: CallbackOutput,
{
    #[inline]
    fn run(&self, _lp: &EventLoop) -> Result<(), LoopError> {
        match self.callback.take() {
            Some(callback) => callback().into_result(),
            None => Ok(()),
        }
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    fn cancel(&self) {
        self.cancelled.set(true);
        drop(self.callback.take());
    }

    fn describe(&self) -> String {
        format!("<Handle {}>", std::any::type_name::<F>())
    }
}

/// A handle to a callback scheduled with `call_soon`, used to cancel it.
///
/// Cloning the handle is cheap (a reference count).
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Rc<dyn Runnable>,
}

impl Handle {
    /// Cancels the callback: if it has not run yet, it never will. Idempotent; the other
    /// callbacks keep their order (semantics 27). The closure and everything it captured
    /// are dropped at once (semantics 28).
    pub fn cancel(&self) {
        if !self.inner.is_cancelled() {
            self.inner.cancel();
        }
    }

    /// Whether [`cancel`](Handle::cancel) was called. Stays `false` after the callback ran.
    pub fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(f, &self.inner.describe(), self.cancelled())
    }
}

/// How both handles print: what they run, and whether they were cancelled.
fn describe(f: &mut fmt::Formatter<'_>, what: &str, cancelled: bool) -> fmt::Result {
    f.write_str(what)?;
    if cancelled {
        f.write_str(" (cancelled)")?;
    }
    Ok(())
}

/// A timer's view for the timer heap.
pub(crate) trait TimerEntry: Runnable {
    /// The deadline, in loop time.
    fn when(&self) -> f64;
    /// Marks the timer as no longer in the heap (it fired or was dropped as cancelled).
    fn unschedule(&self);
    /// The same cell as a ready-queue entry.
    fn into_runnable(self: Rc<Self>) -> Rc<dyn Runnable>;
}

/// A `call_later`/`call_at` callback.
pub(crate) struct TimerCell<F> {
    callback: Cell<Option<F>>,
    cancelled: Cell<bool>,
    /// Still in the heap: a cancel then counts toward the heap's cancelled total.
    scheduled: Cell<bool>,
    when: f64,
    /// How many cancelled entries the heap holds (shared with the heap).
    heap_cancelled: Rc<Cell<usize>>,
}

impl<F> TimerCell<F> {
    pub(crate) fn new(callback: F, when: f64, heap_cancelled: Rc<Cell<usize>>) -> Self {
        TimerCell {
            callback: Cell::new(Some(callback)),
            cancelled: Cell::new(false),
            scheduled: Cell::new(true),
            when,
            heap_cancelled,
        }
    }
}

impl<F, R> Runnable for TimerCell<F>
where
    F: FnOnce() -> R + 'static,
    R: CallbackOutput,
{
    #[inline]
    fn run(&self, _lp: &EventLoop) -> Result<(), LoopError> {
        match self.callback.take() {
            Some(callback) => callback().into_result(),
            None => Ok(()),
        }
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    fn cancel(&self) {
        if self.cancelled.replace(true) {
            return;
        }
        if self.scheduled.get() {
            self.heap_cancelled.set(self.heap_cancelled.get() + 1);
        }
        drop(self.callback.take());
    }

    fn describe(&self) -> String {
        format!(
            "<TimerHandle when={} {}>",
            self.when,
            std::any::type_name::<F>()
        )
    }
}

impl<F, R> TimerEntry for TimerCell<F>
where
    F: FnOnce() -> R + 'static,
    R: CallbackOutput,
{
    #[inline]
    fn when(&self) -> f64 {
        self.when
    }

    #[inline]
    fn unschedule(&self) {
        self.scheduled.set(false);
    }

    fn into_runnable(self: Rc<Self>) -> Rc<dyn Runnable> {
        self
    }
}

/// A handle to a callback scheduled with `call_later`/`call_at`.
#[derive(Clone)]
pub struct TimerHandle {
    pub(crate) inner: Rc<dyn TimerEntry>,
}

impl TimerHandle {
    /// The deadline in loop time ([`EventLoop::time`]). Unchanged by `cancel()` or by the
    /// timer firing (semantics 35).
    pub fn when(&self) -> f64 {
        self.inner.when()
    }

    /// Cancels the timer: if it has not fired yet, it never will (semantics 39). Idempotent.
    /// The closure is dropped at once; the heap entry is dropped lazily (semantics 40).
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Whether [`cancel`](TimerHandle::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(f, &self.inner.describe(), self.cancelled())
    }
}
