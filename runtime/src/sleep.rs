//! `sleep`: suspend a task for a delay (asyncio's `asyncio.sleep`, semantics 56).
//!
//! `sleep(d)` with `d <= 0` yields exactly one loop iteration: it wakes its own task (which
//! queues the task's next step at the tail of the ready queue, like asyncio's bare `yield`)
//! and returns `Pending` once, so every callback scheduled before it has run when it
//! resumes. A positive delay is a loop future completed by a `call_later` timer, which is
//! cancelled if the sleep is dropped early.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::{self, Delay};
use crate::error::LoopError;
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::handle::TimerHandle;
use crate::policy;

/// The future returned by [`sleep`] and [`EventLoop::sleep`].
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    state: State,
}

enum State {
    /// Yield one iteration; `true` once yielded.
    Yield(bool),
    Timer {
        done: Future<()>,
        timer: TimerHandle,
    },
    Failed(Option<LoopError>),
}

impl EventLoop {
    /// A future that completes `delay` after now (a [`Duration`](std::time::Duration) or
    /// seconds). A zero or negative delay yields exactly one iteration (semantics 56).
    /// Awaited by a cancelled task, it yields [`LoopError::Cancelled`].
    ///
    /// A NaN delay makes the future fail with [`LoopError::InvalidArgument`]
    /// (`Invalid delay: NaN (not a number)`); a closed loop with [`LoopError::LoopClosed`].
    pub fn sleep<D: Delay>(&self, delay: D) -> Sleep {
        let secs = match clock::checked_secs(&delay) {
            Ok(secs) => secs,
            Err(err) => {
                return Sleep {
                    state: State::Failed(Some(err)),
                }
            }
        };
        if secs <= 0.0 {
            return Sleep {
                state: State::Yield(false),
            };
        }
        let done = self.create_future::<()>();
        let setter = done.clone();
        match self.call_later(secs, move || {
            // Cancelled meanwhile: nothing to do (asyncio's `_set_result_unless_cancelled`).
            let _ = setter.set_result(());
        }) {
            Ok(timer) => Sleep {
                state: State::Timer { done, timer },
            },
            Err(err) => Sleep {
                state: State::Failed(Some(err)),
            },
        }
    }
}

/// Sleeps on the running loop (asyncio's `asyncio.sleep(delay)`).
///
/// Outside a running loop the returned future fails with [`LoopError::NoRunningLoop`].
///
/// # Examples
/// ```
/// use ringloop_runtime::{sleep, EventLoop, LoopError};
///
/// let lp = EventLoop::new()?;
/// lp.run_until_complete(async {
///     sleep(0.01).await?;
///     Ok::<_, LoopError>(())
/// })?;
/// # Ok::<(), LoopError>(())
/// ```
pub fn sleep<D: Delay>(delay: D) -> Sleep {
    match policy::get_running_loop() {
        Ok(lp) => lp.sleep(delay),
        Err(err) => Sleep {
            state: State::Failed(Some(err)),
        },
    }
}

impl std::future::Future for Sleep {
    type Output = Result<(), LoopError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Yield(yielded) => {
                if *yielded {
                    return Poll::Ready(Ok(()));
                }
                *yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            State::Timer { done, .. } => Pin::new(done).poll(cx),
            State::Failed(err) => Poll::Ready(Err(err.take().unwrap_or(LoopError::InvalidState(
                "sleep polled after completion".into(),
            )))),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let State::Timer { done, timer } = &self.state {
            if !done.done() {
                timer.cancel();
            }
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Yield(yielded) => f.debug_struct("Sleep").field("yielded", yielded).finish(),
            State::Timer { timer, .. } => f
                .debug_struct("Sleep")
                .field("when", &timer.when())
                .finish(),
            State::Failed(err) => f.debug_struct("Sleep").field("error", err).finish(),
        }
    }
}
