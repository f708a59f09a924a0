//! [`Task`]: a Rust future driven by the loop, asyncio-style (semantics 55–59).
//!
//! Ground rules:
//! - A task's first step is scheduled with `call_soon`: nothing runs inside
//!   `create_task` (semantics 55). Each wake-up schedules one step at the tail of the ready
//!   queue, as asyncio's `call_soon(task.__wakeup)`; a task already scheduled is not
//!   queued twice.
//! - While a step polls the task's future, a thread-local *step context* names the task's
//!   loop. A loop [`Future`] (or another task) that returns `Pending` records itself there
//!   as the thing the task waits on (asyncio's `_fut_waiter`), and refuses to be awaited
//!   from another loop's task ([`LoopError::WrongLoop`], semantics 59).
//! - `cancel()` cancels what the task waits on, so the awaiting code receives
//!   [`LoopError::Cancelled`] at its `.await` and may handle it and carry on (semantics 57).
//!   When the task waits on nothing cancellable, the cancellation is delivered at the next
//!   step by dropping the future: the task ends cancelled. A cancel requested during the
//!   step that completes the future still ends the task cancelled (semantics 58).
//! - The future's output is `Result<T, LoopError>` (a coroutine's return or raise): `Ok`
//!   is the task's result, `Err(Cancelled)` cancels the task, any other error is its
//!   exception. A panic is caught and becomes the task's exception.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::error::LoopError;
use crate::event_loop::{EventLoop, Inner};
use crate::exception::ExceptionContext;
use crate::future::{CallbackId, Cancel, Future, FutureCell, FutureCore};
use crate::handle::Runnable;
use crate::step::{current_task, StepGuard};
use crate::waker::TaskWaker;

// ----- the registry -------------------------------------------------------------------------

/// A task as the loop sees it: a schedulable step.
pub(crate) trait TaskStep: Runnable {
    /// Marks the task scheduled; `false` if it already was, or is done.
    fn try_schedule(&self) -> bool;
    /// The task as a ready-queue entry.
    fn into_runnable(self: Rc<Self>) -> Rc<dyn Runnable>;
}

struct TaskSlot {
    generation: u64,
    task: Rc<dyn TaskStep>,
}

/// The loop's live tasks, by slot; finished tasks leave it.
#[derive(Default)]
pub(crate) struct TaskRegistry {
    slots: Slab<TaskSlot>,
    next_generation: u64,
}

impl TaskRegistry {
    fn reserve(&mut self) -> (usize, u64) {
        self.next_generation += 1;
        (self.slots.vacant_key(), self.next_generation)
    }

    fn insert(&mut self, key: usize, generation: u64, task: Rc<dyn TaskStep>) {
        let got = self.slots.insert(TaskSlot { generation, task });
        debug_assert_eq!(got, key, "the slot reserved for a task was taken");
    }

    fn get(&self, key: usize, generation: u64) -> Option<Rc<dyn TaskStep>> {
        self.slots
            .get(key)
            .filter(|slot| slot.generation == generation)
            .map(|s| s.task.clone())
    }

    fn remove(&mut self, key: usize, generation: u64) -> Option<Rc<dyn TaskStep>> {
        let live = self
            .slots
            .get(key)
            .is_some_and(|slot| slot.generation == generation);
        live.then(|| self.slots.remove(key).task)
    }

    /// Empties the registry (loop close), for dropping outside the borrow.
    pub(crate) fn take_all(&mut self) -> Vec<Rc<dyn TaskStep>> {
        self.slots.drain().map(|slot| slot.task).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every live task (for `run()`'s final cancellation).
    pub(crate) fn all(&self) -> Vec<Rc<dyn TaskStep>> {
        self.slots
            .iter()
            .map(|(_, slot)| slot.task.clone())
            .collect()
    }
}

// ----- the task cell ------------------------------------------------------------------------

static NEXT_TASK_NUMBER: AtomicU64 = AtomicU64::new(1);

/// The task's control surface, independent of its future's type.
trait TaskControl: Cancel {
    fn cancel_task(&self) -> bool;
    fn identity(&self) -> usize;
    fn number(&self) -> u64;
    fn as_cancel(self: Rc<Self>) -> Rc<dyn Cancel>;
}

struct TaskCell<F, T> {
    lp: Weak<Inner>,
    key: usize,
    generation: u64,
    number: u64,
    /// The task's result, inline (a [`Future`] of the task points at this cell).
    result: FutureCore<T>,
    /// This cell, to hand out [`Future`] handles of the result.
    this: Weak<TaskCell<F, T>>,
    /// The future; pinned in place (the cell never moves inside its `Rc`) and dropped in
    /// place when the task finishes.
    future: RefCell<Option<F>>,
    waker: Waker,
    scheduled: Cell<bool>,
    must_cancel: Cell<bool>,
    fut_waiter: RefCell<Option<Rc<dyn Cancel>>>,
}

impl<F, T> TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    fn identity_addr(&self) -> usize {
        self as *const Self as usize
    }

    /// A [`Future`] handle of the task's result.
    fn result_future(&self) -> Option<Future<T>> {
        let cell: Rc<dyn FutureCell<T>> = self.this.upgrade()?;
        Some(Future { cell })
    }

    /// Completes the task with `outcome` and leaves the registry.
    fn finish(&self, lp: &EventLoop, outcome: Result<T, LoopError>) {
        // Dropping the future runs user code; it is pinned, so it is dropped in place.
        let dropped = panic::catch_unwind(AssertUnwindSafe(|| {
            *self.future.borrow_mut() = None;
        }));
        // The cell is alive (the caller holds it), so `this` upgrades.
        if let Some(result) = self.result_future() {
            let _ = match outcome {
                Ok(value) => result.set_result(value),
                Err(LoopError::Cancelled) => {
                    result.cancel();
                    Ok(())
                }
                Err(err) => result.set_exception(err),
            };
        }
        let removed = lp
            .inner
            .tasks
            .borrow_mut()
            .remove(self.key, self.generation);
        drop(removed);
        if let Err(payload) = dropped {
            lp.call_exception_handler(
                ExceptionContext::new("Exception while dropping a finished task's future")
                    .with_error(LoopError::from_panic(&*payload))
                    .with_task(self.describe()),
            );
        }
    }
}

impl<F, T> Runnable for TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    fn run(&self, lp: &EventLoop) -> Result<(), LoopError> {
        self.scheduled.set(false);
        if self.result.is_done() {
            return Ok(());
        }
        let old_waiter = self.fut_waiter.borrow_mut().take();
        drop(old_waiter);
        if self.must_cancel.replace(false) {
            self.finish(lp, Err(LoopError::Cancelled));
            return Ok(());
        }
        let guard = StepGuard::enter(lp.id(), self.identity_addr());
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut slot = self.future.borrow_mut();
            match slot.as_mut() {
                Some(future) => {
                    // SAFETY: the future lives inside this cell, which lives inside an `Rc`
                    // and so never moves; it is only ever dropped in place (`finish`
                    // assigns `None`), never moved out. That is the `Pin` contract.
                    let future = unsafe { Pin::new_unchecked(future) };
                    future.poll(&mut Context::from_waker(&self.waker))
                }
                None => Poll::Pending,
            }
        }));
        let waiter = guard.exit();
        match polled {
            Ok(Poll::Pending) => {
                if let Some(waiter) = waiter {
                    // A cancel() that arrived during the step goes to what we now wait on.
                    if self.must_cancel.get() {
                        if waiter.clone().cancel_waiter() {
                            self.must_cancel.set(false);
                        } else {
                            self.waker.wake_by_ref();
                        }
                    }
                    let old = self.fut_waiter.replace(Some(waiter));
                    drop(old);
                } else if self.must_cancel.get() {
                    self.waker.wake_by_ref();
                }
            }
            Ok(Poll::Ready(outcome)) => {
                let outcome = if self.must_cancel.replace(false) {
                    Err(LoopError::Cancelled)
                } else {
                    outcome
                };
                self.finish(lp, outcome);
            }
            Err(payload) => self.finish(lp, Err(LoopError::from_panic(&*payload))),
        }
        Ok(())
    }

    fn is_cancelled(&self) -> bool {
        false
    }

    fn cancel(&self) {
        self.cancel_task();
    }

    fn describe(&self) -> String {
        format!("<Task-{} {}>", self.number, std::any::type_name::<F>())
    }
}

impl<F, T> TaskStep for TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    fn try_schedule(&self) -> bool {
        if self.scheduled.get() || self.result.is_done() {
            return false;
        }
        self.scheduled.set(true);
        true
    }

    fn into_runnable(self: Rc<Self>) -> Rc<dyn Runnable> {
        self
    }
}

impl<F, T> Cancel for TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    fn cancel_waiter(self: Rc<Self>) -> bool {
        self.cancel_task()
    }
}

impl<F, T> FutureCell<T> for TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    #[inline]
    fn core(&self) -> &FutureCore<T> {
        &self.result
    }

    fn as_cancel(self: Rc<Self>) -> Rc<dyn Cancel> {
        self
    }
}

impl<F, T> TaskControl for TaskCell<F, T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    fn cancel_task(&self) -> bool {
        if self.result.is_done() {
            return false;
        }
        let waiter = self.fut_waiter.borrow().clone();
        if let Some(waiter) = waiter {
            if waiter.cancel_waiter() {
                return true;
            }
        }
        self.must_cancel.set(true);
        self.waker.wake_by_ref();
        true
    }

    fn identity(&self) -> usize {
        self.identity_addr()
    }

    fn number(&self) -> u64 {
        self.number
    }

    fn as_cancel(self: Rc<Self>) -> Rc<dyn Cancel> {
        self
    }
}

impl<F, T> Drop for TaskCell<F, T> {
    fn drop(&mut self) {
        if self.result.is_done() {
            return;
        }
        let context = ExceptionContext::new("Task was destroyed but it is pending!").with_task(
            format!("<Task-{} {}>", self.number, std::any::type_name::<F>()),
        );
        match self.lp.upgrade() {
            Some(inner) => EventLoop { inner }.call_exception_handler(context),
            None => crate::exception::log_context(&context),
        }
    }
}

// ----- the public handle --------------------------------------------------------------------

/// A task: a future driven by its loop (asyncio's `Task`).
///
/// Created with [`EventLoop::create_task`]. Awaiting a task (from another task of the same
/// loop) yields its result, and cancelling the awaiting task cancels the awaited one.
/// Dropping the handle does not cancel the task: the loop keeps running it.
///
/// # Examples
/// ```
/// use ringloop_runtime::EventLoop;
///
/// let lp = EventLoop::new()?;
/// let task = lp.create_task(async { Ok::<_, ringloop_runtime::LoopError>(6 * 7) })?;
/// assert_eq!(lp.run_until_complete(task)?, 42);
/// # Ok::<(), ringloop_runtime::LoopError>(())
/// ```
pub struct Task<T> {
    result: Future<T>,
    control: Rc<dyn TaskControl>,
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task {
            result: self.result.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T: 'static> Task<T> {
    /// Requests cancellation (semantics 57–58): the future the task waits on is cancelled,
    /// so its `.await` yields [`LoopError::Cancelled`]; if it waits on nothing cancellable,
    /// the task ends cancelled at its next step. Returns `false` if the task is done.
    pub fn cancel(&self) -> bool {
        self.control.cancel_task()
    }

    /// Whether the task ended cancelled.
    pub fn cancelled(&self) -> bool {
        self.result.cancelled()
    }

    /// Whether the task is done.
    pub fn done(&self) -> bool {
        self.result.done()
    }

    /// Moves the result out.
    ///
    /// # Errors
    /// As [`Future::take_result`].
    pub fn take_result(&self) -> Result<T, LoopError> {
        self.result.take_result()
    }

    /// The task's error: `Ok(None)` if it has a result.
    ///
    /// # Errors
    /// As [`Future::exception`].
    pub fn exception(&self) -> Result<Option<LoopError>, LoopError> {
        self.result.exception()
    }

    /// Adds a callback scheduled once the task is done; it receives the task's result
    /// future (asyncio passes the task itself).
    pub fn add_done_callback<C>(&self, callback: C) -> CallbackId
    where
        C: FnOnce(&Future<T>) + 'static,
    {
        self.result.add_done_callback(callback)
    }

    /// Removes a done callback; returns how many were removed.
    pub fn remove_done_callback(&self, id: CallbackId) -> usize {
        self.result.remove_done_callback(id)
    }

    /// The task's name, `Task-N` (N counts the tasks of the process).
    pub fn get_name(&self) -> String {
        format!("Task-{}", self.control.number())
    }

    /// The loop the task belongs to, unless that loop was dropped.
    pub fn get_loop(&self) -> Option<EventLoop> {
        self.result.get_loop()
    }

    /// Asyncio's `Task.set_result`, which tasks refuse.
    ///
    /// # Errors
    /// Always [`LoopError::InvalidState`] (`Task does not support set_result operation`).
    pub fn set_result(&self, _value: T) -> Result<(), LoopError> {
        Err(LoopError::InvalidState(
            "Task does not support set_result operation".into(),
        ))
    }
}

impl<T: Clone + 'static> Task<T> {
    /// A copy of the result.
    ///
    /// # Errors
    /// As [`Future::result`].
    pub fn result(&self) -> Result<T, LoopError> {
        self.result.result()
    }
}

impl<T: 'static> std::future::Future for Task<T> {
    type Output = Result<T, LoopError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if current_task() == self.control.identity() {
            return Poll::Ready(Err(LoopError::InvalidState(format!(
                "Task cannot await on itself: {:?}",
                &*self
            ))));
        }
        let control = self.control.clone();
        self.result.poll_outcome(cx, move || control.as_cancel())
    }
}

impl<T: 'static> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if !self.done() {
            "pending"
        } else if self.cancelled() {
            "cancelled"
        } else {
            "finished"
        };
        write!(f, "<Task-{} {state}>", self.control.number())
    }
}

// ----- the loop's side ----------------------------------------------------------------------

impl EventLoop {
    /// Wraps `future` in a [`Task`] and schedules its first step with `call_soon`
    /// (semantics 55): nothing of `future` runs before the loop does.
    ///
    /// The future's output is `Result<T, LoopError>`, like a coroutine that returns or
    /// raises: `Ok` is the result, `Err(LoopError::Cancelled)` cancels the task, another
    /// error is the task's exception. A panic is caught and becomes the exception.
    ///
    /// With a task factory set ([`set_task_factory`](EventLoop::set_task_factory)), the
    /// factory is called here, synchronously, and the task runs the future it returns
    /// (semantics 61).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed (semantics 23), also when the task
    /// factory closed it.
    pub fn create_task<F, T>(&self, future: F) -> Result<Task<T>, LoopError>
    where
        F: std::future::Future<Output = Result<T, LoopError>> + 'static,
        T: 'static,
    {
        self.check_closed()?;
        let number = NEXT_TASK_NUMBER.fetch_add(1, Ordering::Relaxed);
        // Cloned out of the cell: the factory may call back into the loop (even
        // `create_task` or `set_task_factory`).
        let factory = self.inner.task_factory.borrow().clone();
        match factory {
            None => Ok(self.spawn_task(number, future)),
            Some(factory) => {
                let name = format!("Task-{number}");
                let future = crate::task_factory::apply(&factory, self, &name, future);
                drop(factory);
                // The factory is user code: it may have closed the loop.
                self.check_closed()?;
                Ok(self.spawn_task(number, future))
            }
        }
    }

    /// Builds task number `number` around `future` and schedules its first step.
    fn spawn_task<F, T>(&self, number: u64, future: F) -> Task<T>
    where
        F: std::future::Future<Output = Result<T, LoopError>> + 'static,
        T: 'static,
    {
        let (key, generation) = self.inner.tasks.borrow_mut().reserve();
        let waker = Waker::from(Arc::new(TaskWaker {
            shared: self.inner.shared.clone(),
            key,
            generation,
        }));
        let cell = Rc::new_cyclic(|this| TaskCell {
            lp: Rc::downgrade(&self.inner),
            key,
            generation,
            number,
            result: FutureCore::new(self, true),
            this: this.clone(),
            future: RefCell::new(Some(future)),
            waker,
            scheduled: Cell::new(true),
            must_cancel: Cell::new(false),
            fut_waiter: RefCell::new(None),
        });
        let result = Future {
            cell: cell.clone() as Rc<dyn FutureCell<T>>,
        };
        self.inner
            .tasks
            .borrow_mut()
            .insert(key, generation, cell.clone());
        self.push_ready(cell.clone());
        Task {
            result,
            control: cell,
        }
    }

    /// How many tasks of this loop are not done yet.
    pub fn pending_tasks(&self) -> usize {
        self.inner.tasks.borrow().len()
    }

    /// Schedules a step of the task in slot `key`, if it is still that task.
    pub(crate) fn schedule_task(&self, key: usize, generation: u64) {
        let task = self.inner.tasks.borrow().get(key, generation);
        if let Some(task) = task {
            if task.try_schedule() {
                self.push_ready(task.into_runnable());
            }
        }
    }
}
