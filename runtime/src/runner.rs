//! [`run`]: the one-call entry point (asyncio's `asyncio.run`): a fresh loop that runs one
//! future, then cancels what is left, shuts the executor down and closes.

use std::time::Duration;

use crate::error::LoopError;
use crate::event_loop::EventLoop;
use crate::policy;

/// How long [`run`] waits for the default executor's threads (asyncio's
/// `constants.THREAD_JOIN_TIMEOUT`).
const THREAD_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `main` on a new event loop and returns its output, like `asyncio.run(main())`.
///
/// The loop is made current for the duration (`get_event_loop()` works inside), and once
/// `main` is done every task still pending is cancelled and run until it finishes, the
/// default executor is shut down and its threads joined (waiting at most 300 s, asyncio's
/// `THREAD_JOIN_TIMEOUT`, see [`EventLoop::shutdown_default_executor`]), the current loop
/// is reset to none and the loop is closed.
///
/// # Examples
/// ```
/// use ringloop_runtime::{run, sleep, LoopError};
///
/// let answer = run(async {
///     sleep(0.001).await?;
///     Ok::<_, LoopError>(42)
/// })?;
/// assert_eq!(answer, 42);
/// # Ok::<(), LoopError>(())
/// ```
///
/// # Errors
/// `main`'s error; [`LoopError::AnotherLoopRunning`] when called from a running loop
/// (asyncio: `asyncio.run() cannot be called from a running event loop`); the errors of
/// [`EventLoop::new`].
pub fn run<F, T>(main: F) -> Result<T, LoopError>
where
    F: std::future::Future<Output = Result<T, LoopError>> + 'static,
    T: 'static,
{
    if policy::running_loop().is_some() {
        return Err(LoopError::AnotherLoopRunning);
    }
    let lp = policy::new_event_loop()?;
    policy::set_event_loop(Some(lp.clone()));
    let outcome = lp.run_until_complete(main);
    let finished = lp.cancel_all_tasks();
    let shut_down = lp.run_until_complete(lp.shutdown_default_executor(Some(THREAD_JOIN_TIMEOUT)));
    policy::set_event_loop(None);
    let closed = lp.close();
    let value = outcome?;
    finished?;
    shut_down?;
    closed?;
    Ok(value)
}

impl EventLoop {
    /// Cancels every pending task and runs the loop until they have all finished
    /// (asyncio's `_cancel_all_tasks`, used by [`run`]).
    fn cancel_all_tasks(&self) -> Result<(), LoopError> {
        let tasks = self.inner.tasks.borrow().all();
        if tasks.is_empty() {
            return Ok(());
        }
        for task in &tasks {
            task.cancel();
        }
        drop(tasks);
        while self.pending_tasks() > 0 {
            self.stop();
            self.run_forever()?;
        }
        Ok(())
    }
}
