//! [`Future`]: asyncio's loop-bound future — a result slot that callbacks and tasks wait on.
//!
//! Ground rules (semantics 53): done callbacks never run inside `set_result`,
//! `set_exception` or `cancel`; they are scheduled with `call_soon`, in registration order,
//! and a callback added to a future that is already done is scheduled too. A task awaiting
//! the future is woken in the same order (its waker is kept in the same list), which is how
//! asyncio wakes tasks. A future whose error nobody retrieved is reported to the loop's
//! exception handler when it is dropped (semantics 50).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::error::LoopError;
use crate::event_loop::{EventLoop, Inner};
use crate::exception::ExceptionContext;
use crate::step;

/// Identifies a done callback, for [`Future::remove_done_callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

enum State<T> {
    Pending,
    Finished(T),
    Failed(LoopError),
    Cancelled,
    /// The result was moved out (by `await` or `take_result`).
    Taken,
}

impl<T> State<T> {
    fn name(&self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Cancelled => "CANCELLED",
            State::Finished(_) | State::Failed(_) | State::Taken => "FINISHED",
        }
    }
}

/// A user's done callback.
type UserCallback<T> = Box<dyn FnOnce(&Future<T>)>;

enum DoneCallback<T> {
    User(CallbackId, UserCallback<T>),
    Waker(Waker),
}

pub(crate) struct FutureCore<T> {
    lp: Weak<Inner>,
    loop_id: u64,
    state: RefCell<State<T>>,
    callbacks: RefCell<Vec<DoneCallback<T>>>,
    next_callback_id: Cell<u64>,
    /// Whether someone looked at the error (no "never retrieved" report then).
    retrieved: Cell<bool>,
    /// Reports say "Task" rather than "Future".
    is_task: Cell<bool>,
}

/// Something a task can be blocked on and that its cancellation must reach
/// (semantics 57): a loop future, or another task.
pub(crate) trait Cancel {
    /// Cancels it; `false` if it was already done.
    fn cancel_waiter(self: Rc<Self>) -> bool;
}

impl<T: 'static> Cancel for FutureCore<T> {
    fn cancel_waiter(self: Rc<Self>) -> bool {
        Future { cell: self }.cancel()
    }
}

/// The allocation a [`Future`] lives in: its own `FutureCore`, or a task cell that holds
/// the task's result core inline (one allocation per task instead of two).
pub(crate) trait FutureCell<T> {
    /// The future's state.
    fn core(&self) -> &FutureCore<T>;
    /// What a task awaiting this future must cancel when it is cancelled itself.
    fn as_cancel(self: Rc<Self>) -> Rc<dyn Cancel>;
}

impl<T: 'static> FutureCell<T> for FutureCore<T> {
    #[inline]
    fn core(&self) -> &FutureCore<T> {
        self
    }

    fn as_cancel(self: Rc<Self>) -> Rc<dyn Cancel> {
        self
    }
}

impl<T> FutureCore<T> {
    /// A pending core bound to `lp`; `is_task` makes reports say "Task".
    pub(crate) fn new(lp: &EventLoop, is_task: bool) -> Self {
        FutureCore {
            lp: Rc::downgrade(&lp.inner),
            loop_id: lp.id(),
            state: RefCell::new(State::Pending),
            callbacks: RefCell::new(Vec::new()),
            next_callback_id: Cell::new(0),
            retrieved: Cell::new(false),
            is_task: Cell::new(is_task),
        }
    }

    /// Whether the future is done.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        !matches!(*self.state.borrow(), State::Pending)
    }
}

/// A loop-bound future (asyncio's `Future`): pending until someone sets a result or an
/// error, or cancels it.
///
/// Cloning gives another handle to the same future. `.await`ing it (from a [`Task`] of the
/// same loop) yields `Ok(result)`, the error set with
/// [`set_exception`](Future::set_exception), or [`LoopError::Cancelled`]; awaiting moves
/// the result out, so a second consumer should use [`result`](Future::result) (for
/// `T: Clone`) from a done callback instead.
///
/// [`Task`]: crate::Task
///
/// # Examples
/// ```
/// use ringloop_runtime::EventLoop;
///
/// let lp = EventLoop::new()?;
/// let fut = lp.create_future::<u32>();
/// let setter = fut.clone();
/// lp.call_soon(move || setter.set_result(42))?;
/// assert_eq!(lp.run_until_complete(fut)?, 42);
/// # Ok::<(), ringloop_runtime::LoopError>(())
/// ```
pub struct Future<T> {
    pub(crate) cell: Rc<dyn FutureCell<T>>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future {
            cell: self.cell.clone(),
        }
    }
}

impl<T> Future<T> {
    #[inline]
    fn core(&self) -> &FutureCore<T> {
        self.cell.core()
    }

    /// Whether the future is done: it has a result or an error, or was cancelled.
    pub fn done(&self) -> bool {
        !matches!(*self.core().state.borrow(), State::Pending)
    }

    /// Whether the future was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(*self.core().state.borrow(), State::Cancelled)
    }
}

impl<T: 'static> Future<T> {
    pub(crate) fn new(lp: &EventLoop) -> Self {
        Future {
            cell: Rc::new(FutureCore::new(lp, false)),
        }
    }

    /// The loop this future belongs to, unless that loop was dropped.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.core().lp.upgrade().map(|inner| EventLoop { inner })
    }

    /// Moves the result out.
    ///
    /// # Errors
    /// The error the future was completed with; [`LoopError::Cancelled`] if cancelled;
    /// [`LoopError::InvalidState`] if it is still pending (`Result is not ready.`) or the
    /// result was already taken.
    pub fn take_result(&self) -> Result<T, LoopError> {
        let mut state = self.core().state.borrow_mut();
        match &*state {
            State::Pending => Err(LoopError::InvalidState("Result is not ready.".into())),
            State::Failed(err) => {
                self.core().retrieved.set(true);
                Err(err.clone())
            }
            State::Cancelled => Err(LoopError::Cancelled),
            State::Taken => Err(already_taken()),
            State::Finished(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Finished(value) => Ok(value),
                _ => unreachable!("the state was just matched as finished"),
            },
        }
    }

    /// The error the future completed with: `Ok(None)` if it has a result.
    ///
    /// # Errors
    /// [`LoopError::Cancelled`] if cancelled; [`LoopError::InvalidState`]
    /// (`Exception is not set.`) if still pending.
    pub fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        match &*self.core().state.borrow() {
            State::Pending => Err(LoopError::InvalidState("Exception is not set.".into())),
            State::Cancelled => Err(LoopError::Cancelled),
            State::Failed(err) => {
                self.core().retrieved.set(true);
                Ok(Some(err.clone()))
            }
            State::Finished(_) | State::Taken => Ok(None),
        }
    }

    /// Completes the future with `value` and schedules its done callbacks.
    ///
    /// # Errors
    /// [`LoopError::InvalidState`] if it is already done (`FINISHED: <Future …>`).
    pub fn set_result(&self, value: T) -> Result<(), LoopError> {
        self.complete(State::Finished(value))
    }

    /// Completes the future with `error` and schedules its done callbacks. Setting
    /// [`LoopError::Cancelled`] cancels the future.
    ///
    /// # Errors
    /// [`LoopError::InvalidState`] if it is already done.
    pub fn set_exception(&self, error: LoopError) -> Result<(), LoopError> {
        if error.is_cancelled() {
            return self.complete(State::Cancelled);
        }
        self.complete(State::Failed(error))
    }

    /// Cancels the future and schedules its done callbacks. Returns `false` if it was
    /// already done.
    pub fn cancel(&self) -> bool {
        self.complete(State::Cancelled).is_ok()
    }

    /// Adds a callback run (via `call_soon`, never synchronously) once the future is done,
    /// with the future as argument; if it is already done, the callback is scheduled now
    /// (semantics 53).
    pub fn add_done_callback<F>(&self, callback: F) -> CallbackId
    where
        F: FnOnce(&Future<T>) + 'static,
    {
        let id = CallbackId(self.core().next_callback_id.get());
        self.core().next_callback_id.set(id.0 + 1);
        if self.done() {
            if let Some(lp) = self.get_loop() {
                let me = self.clone();
                let _ = lp.call_soon(move || callback(&me));
            }
        } else {
            self.core()
                .callbacks
                .borrow_mut()
                .push(DoneCallback::User(id, Box::new(callback)));
        }
        id
    }

    /// Removes the callback `id` if it has not been scheduled yet; returns how many were
    /// removed (0 or 1: closures have no equality, so ids stand in for asyncio's
    /// "all callbacks equal to fn").
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        let removed = {
            let mut callbacks = self.core().callbacks.borrow_mut();
            let position = callbacks
                .iter()
                .position(|cb| matches!(cb, DoneCallback::User(other, _) if *other == id));
            position.map(|i| callbacks.remove(i))
        };
        usize::from(removed.is_some())
    }

    fn complete(&self, new_state: State<T>) -> Result<(), LoopError> {
        {
            let mut state = self.core().state.borrow_mut();
            if !matches!(*state, State::Pending) {
                let name = state.name();
                drop(state);
                return Err(LoopError::InvalidState(format!("{name}: {self:?}")));
            }
            *state = new_state;
        }
        self.schedule_callbacks();
        Ok(())
    }

    fn schedule_callbacks(&self) {
        let callbacks = std::mem::take(&mut *self.core().callbacks.borrow_mut());
        if callbacks.is_empty() {
            return;
        }
        let lp = self.get_loop();
        for callback in callbacks {
            match callback {
                DoneCallback::Waker(waker) => waker.wake(),
                DoneCallback::User(_, callback) => {
                    if let Some(lp) = &lp {
                        let me = self.clone();
                        // A closed loop runs nothing more; the callback is dropped.
                        let _ = lp.call_soon(move || callback(&me));
                    }
                }
            }
        }
    }

    /// Polls the outcome for `await`; `waiter` is what a task blocked here must cancel.
    pub(crate) fn poll_outcome(
        &self,
        cx: &mut Context<'_>,
        waiter: impl FnOnce() -> Rc<dyn Cancel>,
    ) -> Poll<Result<T, LoopError>> {
        if !self.done() {
            if let Err(err) = step::note_waiter(self.core().loop_id, waiter) {
                return Poll::Ready(Err(err));
            }
            let mut callbacks = self.core().callbacks.borrow_mut();
            let known = callbacks
                .iter()
                .any(|cb| matches!(cb, DoneCallback::Waker(w) if w.will_wake(cx.waker())));
            if !known {
                callbacks.push(DoneCallback::Waker(cx.waker().clone()));
            }
            return Poll::Pending;
        }
        Poll::Ready(self.take_result())
    }

    fn describe(&self) -> String {
        let kind = if self.core().is_task.get() {
            "Task"
        } else {
            "Future"
        };
        let state = match self.core().state.try_borrow() {
            Ok(state) => match &*state {
                State::Pending => "pending".to_owned(),
                State::Cancelled => "cancelled".to_owned(),
                State::Failed(err) => format!("finished exception={err}"),
                State::Finished(_) | State::Taken => "finished".to_owned(),
            },
            Err(_) => "busy".to_owned(),
        };
        format!("<{kind} {state} {}>", std::any::type_name::<T>())
    }
}

fn already_taken() -> LoopError {
    LoopError::InvalidState("Result has already been taken".into())
}

impl<T: Clone + 'static> Future<T> {
    /// A copy of the result.
    ///
    /// # Errors
    /// As [`take_result`](Future::take_result).
    pub fn result(&self) -> Result<T, LoopError> {
        match &*self.core().state.borrow() {
            State::Pending => Err(LoopError::InvalidState("Result is not ready.".into())),
            State::Failed(err) => {
                self.core().retrieved.set(true);
                Err(err.clone())
            }
            State::Cancelled => Err(LoopError::Cancelled),
            State::Taken => Err(already_taken()),
            State::Finished(value) => Ok(value.clone()),
        }
    }
}

impl<T: 'static> std::future::Future for Future<T> {
    type Output = Result<T, LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let cell = self.cell.clone();
        self.poll_outcome(cx, move || cell.as_cancel())
    }
}

impl<T: 'static> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<T> Drop for FutureCore<T> {
    fn drop(&mut self) {
        let State::Failed(err) = self.state.get_mut() else {
            return;
        };
        if self.retrieved.get() {
            return;
        }
        let (kind, what) = if self.is_task.get() {
            ("Task", "task")
        } else {
            ("Future", "future")
        };
        let context = ExceptionContext::new(format!("{kind} exception was never retrieved"))
            .with_error(err.clone());
        let context = if self.is_task.get() {
            context.with_task(format!("<{what} {}>", std::any::type_name::<T>()))
        } else {
            context.with_future(format!("<{what} {}>", std::any::type_name::<T>()))
        };
        match self.lp.upgrade() {
            Some(inner) => EventLoop { inner }.call_exception_handler(context),
            None => crate::exception::log_context(&context),
        }
    }
}
