//! ringloop's event loop: asyncio's loop contract — ready queue, timers, run/stop/close,
//! futures and tasks, the thread-safe handle, signals, the executor and the current-loop
//! policy — driven by the [`ringloop-proactor`](ringloop_proactor) completion driver.
//!
//! Names and rules follow Python's asyncio event loop; where Rust differs (typed errors
//! instead of exceptions, closures instead of `*args`, `Result` outputs instead of raised
//! exceptions), the item's docs say so. Numbers like "semantics 25" refer to the project's
//! list of asyncio behaviours, each pinned by a test.
//!
//! # Example
//! ```
//! use ringloop_runtime::{EventLoop, LoopError};
//!
//! let lp = EventLoop::new()?;
//! let lp2 = lp.clone();
//! lp.call_later(0.01, move || {
//!     println!("Hello World");
//!     lp2.stop();
//! })?;
//! lp.run_forever()?;
//! let answer = lp.run_until_complete(async {
//!     ringloop_runtime::sleep(0.001).await?;
//!     Ok::<_, LoopError>(42)
//! })?;
//! assert_eq!(answer, 42);
//! lp.close()?;
//! # Ok::<(), LoopError>(())
//! ```
//!
//! # Modules, one concept each
//! - `event_loop`: the [`EventLoop`] type, calls, delayed calls, futures, exception handler.
//! - `run`: the iteration, `run_forever`/`run_until_complete`/`stop`/`close`.
//! - `runner`: [`run()`](fn@run), asyncio's `asyncio.run`.
//! - `handle`, `timer`, `clock`: scheduled callbacks, the timer heap, the loop clock.
//! - `future`, `task`, `step`, `waker`, `sleep`: futures, tasks, the step context that
//!   routes cancellation, task wakers, `sleep`.
//! - `task_factory`: the hook every `create_task` passes its future through.
//! - `io`: I/O handler registration and one-shot ops, for transports.
//! - `accept`: multishot accept handing over owned connections, for servers.
//! - `loop_local`: per-loop values and before-poll hooks, for layers above the loop.
//! - `threadsafe`: [`LoopHandle`] for other threads, [`ThreadsafeHandle`] to cancel their
//!   callbacks.
//! - `executor`: `run_in_executor` and the default thread pool.
//! - `signal`: `add_signal_handler` over a self-pipe.
//! - `policy`: current and running loop, the event loop policy.
//! - `exception`: the exception handler's context.
#![deny(unsafe_op_in_unsafe_fn)]

mod accept;
mod clock;
mod error;
mod event_loop;
mod exception;
mod executor;
mod future;
mod handle;
mod io;
mod loop_local;
mod policy;
mod proactor_cell;
mod run;
mod runner;
mod signal;
mod sleep;
mod step;
mod task;
mod task_factory;
mod threadsafe;
mod timer;
mod waker;

pub use ringloop_proactor as proactor;

pub use accept::{AcceptHandler, Acceptor};
pub use clock::Delay;
pub use error::{LoopError, Result};
pub use event_loop::{EventLoop, DEFAULT_SLOW_CALLBACK_DURATION};
pub use exception::{ExceptionContext, ExceptionHandler};
pub use executor::{Executor, Job, ThreadPool};
pub use future::{CallbackId, Future};
pub use handle::{CallbackOutput, Handle, TimerHandle};
pub use io::{IoHandler, IoToken, OpFuture, Resends};
pub use loop_local::{BeforePollHook, BeforePollHookId};
pub use policy::{
    get_event_loop, get_event_loop_policy, get_running_loop, new_event_loop, set_event_loop,
    set_event_loop_policy, DefaultEventLoopPolicy, EventLoopPolicy,
};
pub use runner::run;
pub use signal::NSIG;
pub use sleep::{sleep, Sleep};
pub use task::Task;
pub use task_factory::{TaskFactory, TaskFuture};
pub use threadsafe::{LoopHandle, ThreadsafeHandle};

/// The user guide's chapters (`docs/runtime/`), compiled and run as doctests so that every
/// example in them works.
#[cfg(doctest)]
mod guide {
    macro_rules! chapter {
        ($name:ident, $file:literal) => {
            #[doc = include_str!(concat!("../../docs/runtime/", $file))]
            struct $name;
        };
    }
    chapter!(EventLoopFunctions, "event-loop-functions.md");
    chapter!(Policy, "policy.md");
    chapter!(RunningAndStopping, "running-and-stopping.md");
    chapter!(Calls, "calls.md");
    chapter!(DelayedCalls, "delayed-calls.md");
    chapter!(FuturesAndTasks, "futures-and-tasks.md");
    chapter!(ExceptionHandling, "exception-handling.md");
    chapter!(Executor, "executor.md");
    chapter!(Signals, "signals.md");
    chapter!(Io, "io.md");
}
