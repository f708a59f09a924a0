//! Running and stopping: `run_forever`, `run_until_complete`, `stop`, `close` and the loop
//! iteration itself (asyncio section B, semantics 8–23, 25–26).
//!
//! Ground rules:
//! - `stop()` only sets a flag; the current iteration finishes (every callback of its
//!   ready snapshot runs), then `run_forever` returns. Callbacks scheduled meanwhile stay
//!   queued for the next run (semantics 8–9). A pending stop makes the next wait
//!   non-blocking, so `stop()` before `run_forever()` runs exactly one iteration (10).
//! - Each iteration runs exactly the callbacks ready after its poll (semantics 25); while
//!   callbacks are ready the poll does not block (26).
//! - `close()` discards everything pending, refuses all further scheduling, restores signal
//!   dispositions, shuts the default executor down without waiting, and waits for the
//!   proactor's in-flight ops to finish (their buffers are the kernel's until then).

use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop_proactor::Completion;

use crate::clock::{self, wait_until};
use crate::error::LoopError;
use crate::event_loop::{EventLoop, Inner};
use crate::exception::ExceptionContext;
use crate::handle::Runnable;
use crate::policy::{self, RunningGuard};
use crate::threadsafe::Remote;

impl EventLoop {
    /// Runs the loop until [`stop`](EventLoop::stop) is called.
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] on a closed loop; [`LoopError::LoopRunning`] if this loop
    /// already runs (semantics 13); [`LoopError::AnotherLoopRunning`] if another loop runs
    /// in this thread; [`LoopError::Io`] if waiting in the kernel fails.
    pub fn run_forever(&self) -> Result<(), LoopError> {
        self.check_closed()?;
        if self.inner.running.get() {
            return Err(LoopError::LoopRunning);
        }
        if policy::any_running() {
            return Err(LoopError::AnotherLoopRunning);
        }
        let _running = RunGuard::enter(self);
        loop {
            self.run_once()?;
            if self.inner.stopping.get() {
                return Ok(());
            }
        }
    }

    /// Runs `future` as a task until it completes, and returns its output (semantics 14).
    /// A loop [`Future`](crate::Future) or [`Task`](crate::Task) can be passed directly;
    /// one of another loop fails with [`LoopError::WrongLoop`].
    ///
    /// # Errors
    /// The future's error; [`LoopError::StoppedBeforeComplete`] if the loop was stopped
    /// first (semantics 15); the errors of [`run_forever`](EventLoop::run_forever).
    pub fn run_until_complete<F, T>(&self, future: F) -> Result<T, LoopError>
    where
        F: std::future::Future<Output = Result<T, LoopError>> + 'static,
        T: 'static,
    {
        self.check_closed()?;
        if self.inner.running.get() {
            return Err(LoopError::LoopRunning);
        }
        if policy::any_running() {
            return Err(LoopError::AnotherLoopRunning);
        }
        let task = self.create_task(future)?;
        let lp = self.clone();
        let stop_on_done = task.add_done_callback(move |_| lp.stop());
        // Removed on every exit path, panics included (semantics 16), so a later run is not
        // stopped early by a leftover callback.
        struct RemoveOnExit<'a, T: 'static>(&'a crate::Task<T>, crate::future::CallbackId);
        impl<T: 'static> Drop for RemoveOnExit<'_, T> {
            fn drop(&mut self) {
                self.0.remove_done_callback(self.1);
            }
        }
        let _remove = RemoveOnExit(&task, stop_on_done);
        self.run_forever()?;
        if !task.done() {
            return Err(LoopError::StoppedBeforeComplete);
        }
        task.take_result()
    }

    /// Asks the loop to stop after the current iteration (semantics 8–10). From another
    /// thread use [`LoopHandle::stop`](crate::LoopHandle::stop), which also wakes the loop.
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// Whether the loop is running (semantics 19).
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// Whether the loop was closed (semantics 21).
    pub fn is_closed(&self) -> bool {
        self.inner.proactor.is_closed()
    }

    /// Closes the loop: pending callbacks and timers are discarded, further scheduling
    /// fails with [`LoopError::LoopClosed`], signal handlers are removed, the default
    /// executor is shut down without waiting (semantics 22), in-flight ops are cancelled
    /// and waited for. Idempotent (semantics 21).
    ///
    /// # Errors
    /// [`LoopError::CloseWhileRunning`] if called while the loop runs (semantics 20).
    pub fn close(&self) -> Result<(), LoopError> {
        if self.inner.running.get() {
            return Err(LoopError::CloseWhileRunning);
        }
        if self.inner.proactor.is_closed() {
            return Ok(());
        }
        tracing::debug!(loop_id = self.inner.id, "closing event loop");
        self.inner.release_resources();
        Ok(())
    }

    /// One iteration: wait, dispatch completions, collect due work, run the ready snapshot.
    fn run_once(&self) -> Result<(), LoopError> {
        // Transports flush the writes of the previous iteration here (see `loop_local.rs`).
        self.run_before_poll_hooks();
        let inner = &*self.inner;
        let timeout = {
            let mut timers = inner.timers.borrow_mut();
            timers.compact_if_mostly_cancelled();
            if inner.stopping.get() || !inner.ready.borrow().is_empty() {
                Some(Duration::ZERO)
            } else {
                timers
                    .next_deadline()
                    .map(|when| wait_until(when, clock::monotonic()))
            }
        };
        let polled = match inner.proactor.borrow_mut() {
            Some(mut proactor) => proactor.poll(timeout),
            None => return Err(LoopError::LoopClosed),
        };
        if let Err(err) = polled {
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
        // One completion, filled in place by each pop (which first drops, inline, what the
        // handler left of the previous one, usually a chunk it has read): building one per
        // message and moving it out costs a copy of its 152 bytes.
        let mut completion = Completion::default();
        let dispatching = self.dispatching();
        loop {
            let popped = match inner.proactor.borrow_mut() {
                Some(mut proactor) => proactor.pop_into(&mut completion),
                None => false,
            };
            if !popped {
                break;
            }
            self.dispatch(&mut completion);
        }
        drop(dispatching);
        // Inline, and then there is nothing for the drop glue to do.
        completion.clear();
        std::mem::forget(completion);
        self.drain_remote();
        {
            let mut timers = inner.timers.borrow_mut();
            if timers.len() > 0 {
                let now = clock::monotonic();
                let mut ready = inner.ready.borrow_mut();
                timers.pop_due(now, |timer| ready.push_back(timer));
            }
        }
        let snapshot = inner.ready.borrow().len();
        for _ in 0..snapshot {
            let entry = inner.ready.borrow_mut().pop_front();
            let Some(entry) = entry else { break };
            if entry.is_cancelled() {
                continue;
            }
            self.run_entry(entry);
        }
        Ok(())
    }

    /// Runs one ready entry, reporting its error or panic and, in debug mode, slowness.
    #[inline]
    fn run_entry(&self, entry: Rc<dyn Runnable>) {
        let started = self.inner.debug.get().then(Instant::now);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| entry.run(self)));
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err),
            Err(payload) => Some(LoopError::from_panic(&*payload)),
        };
        if let Some(error) = error {
            let description = entry.describe();
            self.call_exception_handler(
                ExceptionContext::new(format!("Exception in callback {description}"))
                    .with_error(error)
                    .with_handle(description),
            );
        }
        if let Some(started) = started {
            let took = started.elapsed();
            if took >= self.inner.slow_callback.get() {
                tracing::warn!(
                    target: "ringloop::runtime",
                    "Executing {} took {:.3} seconds",
                    entry.describe(),
                    took.as_secs_f64()
                );
            }
        }
    }

    /// Moves the work other threads sent into the ready queue, in order.
    fn drain_remote(&self) {
        // Most iterations find nothing queued: skip the swaps of the buffer then.
        if !self.inner.shared.has_pending() {
            return;
        }
        let mut batch = std::mem::take(&mut *self.inner.remote_buf.borrow_mut());
        self.inner.shared.drain_into(&mut batch);
        for item in batch.drain(..) {
            match item {
                // A callback cancelled on its way here is not queued at all.
                Remote::Call(call) if call.is_cancelled() => drop(call),
                Remote::Call(call) => {
                    let _ = self.call_soon(move || call.run());
                }
                Remote::WithLoop(work) => {
                    let lp = self.clone();
                    let _ = self.call_soon(move || work(&lp));
                }
                Remote::WakeTask { key, generation } => self.schedule_task(key, generation),
            }
        }
        *self.inner.remote_buf.borrow_mut() = batch;
    }
}

/// Marks the loop running (and this thread's running loop) for one `run_forever`, with
/// the thread's timer slack lowered when precise timers are on.
struct RunGuard<'a> {
    lp: &'a EventLoop,
    _running: RunningGuard,
    /// The thread's timer slack before the run, to restore.
    saved_slack: Option<libc::c_ulong>,
}

impl<'a> RunGuard<'a> {
    fn enter(lp: &'a EventLoop) -> RunGuard<'a> {
        lp.inner.running.set(true);
        let saved_slack = if lp.inner.precise_timers.get() {
            precise_slack()
        } else {
            None
        };
        RunGuard {
            lp,
            _running: RunningGuard::enter(lp),
            saved_slack,
        }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.lp.inner.stopping.set(false);
        self.lp.inner.running.set(false);
        if let Some(slack) = self.saved_slack {
            set_slack(slack);
        }
    }
}

/// The slack of precise timers: 1 ns (0 would mean "the default").
const PRECISE_SLACK: libc::c_ulong = 1;

/// Lowers this thread's timer slack to [`PRECISE_SLACK`]; returns the previous value when
/// it changed.
fn precise_slack() -> Option<libc::c_ulong> {
    // SAFETY: PR_GET_TIMERSLACK takes no pointer arguments and only reads thread state.
    let current = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    let current = libc::c_ulong::try_from(current).ok()?;
    if current == PRECISE_SLACK {
        return None;
    }
    set_slack(PRECISE_SLACK).then_some(current)
}

/// Sets this thread's timer slack; `false` if the kernel refused.
fn set_slack(slack: libc::c_ulong) -> bool {
    let unused: libc::c_ulong = 0;
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack, unused, unused, unused) == 0 }
}

impl Inner {
    /// Everything `close()` releases; also run when an unclosed loop is dropped.
    pub(crate) fn release_resources(&self) {
        let was_closed = self.proactor.is_closed();
        self.proactor.close();
        if was_closed && self.proactor.is_gone() {
            return;
        }
        let pipe = self.release_signals();
        // Refuse thread-safe calls; drop what was queued (outside the lock).
        drop(self.shared.close());
        drop(std::mem::take(&mut *self.remote_buf.borrow_mut()));
        // Discard pending callbacks and timers (semantics 22). Each container is emptied
        // before its contents drop, since dropping may run user code.
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        drop(ready);
        let timers = self.timers.borrow_mut().take_all();
        drop(timers);
        let tasks = self.tasks.borrow_mut().take_all();
        drop(tasks);
        self.executor.borrow_mut().shutdown();
        let waiters = std::mem::take(&mut *self.executor_waiters.borrow_mut());
        drop(waiters);
        let handlers = self.io.borrow_mut().take_all();
        drop(handlers);
        let hooks = std::mem::take(&mut *self.before_poll_hooks.borrow_mut());
        drop(hooks);
        crate::loop_local::release_loop_locals(self.id);
        // Dropping the proactor cancels every op in flight and waits for its completion,
        // so no buffer or fd is released while the kernel still uses it.
        let proactor = self.proactor.take();
        drop(proactor);
        drop(pipe);
        // What the drops above scheduled is discarded too.
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        drop(ready);
    }
}
