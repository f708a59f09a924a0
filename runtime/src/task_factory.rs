//! The task factory (asyncio's `loop.set_task_factory`, semantics 61): a hook that every
//! [`create_task`](EventLoop::create_task) passes the new task's future through.
//!
//! asyncio's factory builds the task object itself (`factory(loop, coro) -> Future`), so
//! it can return a `Task` subclass. A Rust task is generic over its output type and a
//! boxed closure cannot be generic, so ringloop's factory works one level down: it
//! receives the task's future **type-erased** as a [`TaskFuture`] (`Output = ()`; the
//! task's real output is stored aside) and returns the future the task will poll, usually
//! a wrapper around the one it was given. That covers what factories are used for in
//! practice — instrumenting polls (timing, tracing spans), setting per-task context around
//! each poll, counting or naming tasks — while the loop keeps owning the [`Task`] itself,
//! so cancellation, done callbacks and results work exactly as without a factory.
//!
//! Cost: nothing when no factory is set (one `RefCell` read per `create_task`); with a
//! factory, one extra allocation per task for the boxed future.
//!
//! [`Task`]: crate::Task

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::error::LoopError;
use crate::event_loop::EventLoop;

/// A task's future as a [`TaskFactory`] sees it: type-erased, with its output stored
/// aside by the loop.
pub type TaskFuture = Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A task factory: called by [`EventLoop::create_task`] with the loop, the new task's
/// name (`Task-N`) and the task's future; returns the future the task will run.
///
/// The returned future should poll the given one to completion. If it completes without
/// doing so (it dropped or abandoned the given future), the task ends **cancelled**, as a
/// dropped Rust future is.
pub type TaskFactory = Rc<dyn Fn(&EventLoop, &str, TaskFuture) -> TaskFuture>;

/// The future a task runs when a factory is set: polls the factory's future, then hands
/// over the output the task's own future left in `output`.
pub(crate) struct Factored<T> {
    wrapped: TaskFuture,
    output: Rc<Cell<Option<Result<T, LoopError>>>>,
}

impl<T> std::future::Future for Factored<T> {
    type Output = Result<T, LoopError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.wrapped.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            // The factory's future finished without the task's: the task's future was
            // dropped unfinished, which is what cancelling a Rust future means.
            Poll::Ready(()) => Poll::Ready(self.output.take().unwrap_or(Err(LoopError::Cancelled))),
        }
    }
}

/// Passes `future` (task `name`) through `factory`.
pub(crate) fn apply<F, T>(
    factory: &TaskFactory,
    lp: &EventLoop,
    name: &str,
    future: F,
) -> Factored<T>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    let output = Rc::new(Cell::new(None));
    let slot = output.clone();
    let erased: TaskFuture = Box::pin(async move {
        slot.set(Some(future.await));
    });
    Factored {
        wrapped: factory(lp, name, erased),
        output,
    }
}

impl EventLoop {
    /// Installs `factory` as the loop's task factory, or restores the default with `None`
    /// (asyncio's `set_task_factory`, semantics 61). Every later
    /// [`create_task`](EventLoop::create_task) — and so every `run_until_complete` of a
    /// plain future — calls `factory(loop, name, future)` synchronously and runs the
    /// future it returns; tasks created before keep their future.
    ///
    /// # Differences from asyncio
    /// asyncio's factory constructs the task (and may return a `Task` subclass). Here the
    /// loop always builds the [`Task`](crate::Task); the factory only wraps its future,
    /// which it receives type-erased as a [`TaskFuture`] because tasks are generic over
    /// their output. asyncio's `TypeError('task factory must be a callable or None')` is a
    /// compile-time error in Rust. A factory that drops the future it was given, or
    /// completes without finishing it, leaves the task cancelled.
    ///
    /// # Examples
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use ringloop_runtime::{EventLoop, LoopError, TaskFuture};
    ///
    /// let lp = EventLoop::new()?;
    /// let names = Rc::new(RefCell::new(Vec::new()));
    /// let seen = names.clone();
    /// lp.set_task_factory(Some(move |_: &EventLoop, name: &str, fut: TaskFuture| {
    ///     seen.borrow_mut().push(name.to_owned());
    ///     fut // run the task's future unchanged
    /// }));
    /// let task = lp.create_task(async { Ok::<_, LoopError>(7) })?;
    /// assert_eq!(lp.run_until_complete(task)?, 7);
    /// assert!(names.borrow()[0].starts_with("Task-"));
    /// # Ok::<(), LoopError>(())
    /// ```
    pub fn set_task_factory<G>(&self, factory: Option<G>)
    where
        G: Fn(&EventLoop, &str, TaskFuture) -> TaskFuture + 'static,
    {
        let factory = factory.map(|f| Rc::new(f) as TaskFactory);
        let old = self.inner.task_factory.replace(factory);
        drop(old);
    }

    /// The task factory, or `None` when the default is in use (semantics 61).
    pub fn get_task_factory(&self) -> Option<TaskFactory> {
        self.inner.task_factory.borrow().clone()
    }
}
