//! [`EventLoop`]: the loop's state and its scheduling surface (`call_soon`, `call_later`,
//! `call_at`, `time`, futures, debug settings).
//!
//! Running and stopping live in `run.rs`, I/O registration in `io.rs`, tasks in `task.rs`,
//! signals in `signal.rs`, the executor in `executor.rs`, the exception handler in
//! `exception.rs`: each is an `impl EventLoop` block next to the machinery it drives.
//!
//! # Implementation notes
//! - The loop is one `Rc<Inner>`; every piece of mutable state is its own `RefCell` or
//!   `Cell`, borrowed only for the few instructions that touch it and **never across user
//!   code** (a callback may call back into the loop at any point). Containers are emptied
//!   into locals before their contents are dropped, because dropping a closure or a future
//!   may run user code.
//! - `call_soon` allocates once: the callback lives inside the `Rc` cell that is both the
//!   ready-queue entry and the returned [`Handle`].

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringloop_proactor::{BackendKind, Proactor};
use slab::Slab;

use crate::clock::{self, Delay};
use crate::error::LoopError;
use crate::exception::ExceptionHandler;
use crate::executor::ExecutorSlot;
use crate::future::Future;
use crate::handle::{CallbackCell, CallbackOutput, Handle, Runnable, TimerCell, TimerHandle};
use crate::io::IoRegistry;
use crate::loop_local::{BeforePollHook, BeforePollHookId};
use crate::proactor_cell::ProactorCell;
use crate::signal::SignalState;
use crate::task::TaskRegistry;
use crate::task_factory::TaskFactory;
use crate::threadsafe::{LoopHandle, Remote, Shared};
use crate::timer::TimerHeap;
use crate::waker;

/// The default of [`EventLoop::slow_callback_duration`] (asyncio: 0.1 s).
pub const DEFAULT_SLOW_CALLBACK_DURATION: Duration = Duration::from_millis(100);

/// The loop's state. Fields are crate-visible so each concern's module can drive its part.
pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) backend: BackendKind,
    pub(crate) ready: RefCell<VecDeque<Rc<dyn Runnable>>>,
    pub(crate) timers: RefCell<TimerHeap>,
    /// Refused to public operations once closed, gone once `close()` drops it; also the
    /// loop's record of being closed (`ProactorCell::is_closed`).
    pub(crate) proactor: ProactorCell,
    pub(crate) io: RefCell<IoRegistry>,
    pub(crate) tasks: RefCell<TaskRegistry>,
    pub(crate) shared: Arc<Shared>,
    /// Reused buffer for draining `shared`.
    pub(crate) remote_buf: RefCell<Vec<Remote>>,
    pub(crate) running: Cell<bool>,
    pub(crate) stopping: Cell<bool>,
    pub(crate) debug: Cell<bool>,
    pub(crate) slow_callback: Cell<Duration>,
    pub(crate) precise_timers: Cell<bool>,
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(crate) executor: RefCell<ExecutorSlot>,
    /// Futures waiting for executor jobs or for the default executor's shutdown, by key
    /// (see `executor.rs`).
    pub(crate) executor_waiters: RefCell<Slab<Box<dyn Any>>>,
    pub(crate) signals: RefCell<SignalState>,
    pub(crate) task_factory: RefCell<Option<TaskFactory>>,
    /// Run at the start of every iteration, in registration order (see `loop_local.rs`).
    pub(crate) before_poll_hooks: RefCell<Vec<(BeforePollHookId, BeforePollHook)>>,
}

/// An asyncio-style event loop on a ringloop proactor.
///
/// A cheap-to-clone, `!Send` handle: callbacks capture clones of it, as asyncio's callbacks
/// capture `loop`. Other threads use a [`LoopHandle`] ([`EventLoop::handle`]).
///
/// # Examples
/// ```
/// use ringloop_runtime::EventLoop;
///
/// let lp = EventLoop::new()?;
/// let lp2 = lp.clone();
/// lp.call_soon(move || {
///     println!("Hello World");
///     lp2.stop();
/// })?;
/// lp.run_forever()?;
/// lp.close()?;
/// # Ok::<(), ringloop_runtime::LoopError>(())
/// ```
///
/// # Implementation notes
/// One iteration ([`run_forever`](EventLoop::run_forever) repeats it): compute the wait
/// (zero when callbacks are ready or a stop is pending, else until the earliest live
/// timer, at most 24 h, else unbounded); one `poll` of the proactor, which submits the
/// queued ops and waits in the same system call; dispatch every completion to its I/O
/// handler; move callbacks sent from other threads and due timers to the ready queue; run
/// exactly the callbacks ready at that point (semantics 25).
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) inner: Rc<Inner>,
}

static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

impl EventLoop {
    /// A new loop on the proactor backend the process is configured for
    /// (`RINGLOOP_BACKEND`, else io_uring when the kernel allows it, else epoll).
    ///
    /// The loop is not running, not closed, and not made current (semantics 1).
    ///
    /// # Errors
    /// [`LoopError::Io`] when no proactor can be built (see `Proactor::new`).
    pub fn new() -> Result<EventLoop, LoopError> {
        Ok(EventLoop::with_proactor(Proactor::new()?))
    }

    /// A new loop driving `proactor` (built with custom settings).
    pub fn with_proactor(proactor: Proactor) -> EventLoop {
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(id, proactor.waker()));
        let timers = TimerHeap::new();
        let inner = Rc::new(Inner {
            id,
            backend: proactor.backend(),
            ready: RefCell::new(VecDeque::with_capacity(64)),
            timers: RefCell::new(timers),
            proactor: ProactorCell::new(proactor),
            io: RefCell::new(IoRegistry::default()),
            tasks: RefCell::new(TaskRegistry::default()),
            shared,
            remote_buf: RefCell::new(Vec::new()),
            running: Cell::new(false),
            stopping: Cell::new(false),
            debug: Cell::new(false),
            slow_callback: Cell::new(DEFAULT_SLOW_CALLBACK_DURATION),
            precise_timers: Cell::new(true),
            exception_handler: RefCell::new(None),
            executor: RefCell::new(ExecutorSlot::default()),
            executor_waiters: RefCell::new(Slab::new()),
            signals: RefCell::new(SignalState::default()),
            task_factory: RefCell::new(None),
            before_poll_hooks: RefCell::new(Vec::new()),
        });
        waker::register_local_loop(id, Rc::downgrade(&inner));
        EventLoop { inner }
    }

    /// The proactor backend this loop runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend
    }

    /// The kernel features the loop's proactor uses (all off on epoll; defaults after
    /// `close()`), for logs and benchmark reports.
    pub fn features(&self) -> ringloop_proactor::Features {
        self.inner
            .proactor
            .borrow_mut()
            .map(|p| p.features().clone())
            .unwrap_or_default()
    }

    /// A `Send + Sync` handle for other threads (`call_soon_threadsafe`, `stop`).
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// Whether `self` and `other` are the same loop.
    pub fn same_loop(&self, other: &EventLoop) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn check_closed(&self) -> Result<(), LoopError> {
        if self.inner.proactor.is_closed() {
            Err(LoopError::LoopClosed)
        } else {
            Ok(())
        }
    }

    // ----- calls ---------------------------------------------------------------------------

    /// Schedules `callback` to run on the next iteration, after the callbacks already
    /// scheduled (FIFO). A callback scheduled by a running callback runs in the next
    /// iteration, never the current one (semantics 25).
    ///
    /// The callback may return `()` or `Result<(), E>`; an error, like a panic, goes to the
    /// exception handler and the loop keeps running (semantics 46).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed (semantics 23).
    #[inline]
    pub fn call_soon<F, R>(&self, callback: F) -> Result<Handle, LoopError>
    where
        F: FnOnce() -> R + 'static,
        R: CallbackOutput + 'static,
    {
        self.check_closed()?;
        let cell: Rc<dyn Runnable> = Rc::new(CallbackCell::new(callback));
        self.inner.ready.borrow_mut().push_back(cell.clone());
        Ok(Handle { inner: cell })
    }

    /// [`call_soon`](EventLoop::call_soon) for code that may run on any thread in asyncio.
    /// An `EventLoop` never leaves its thread, so this is `call_soon`; other threads use
    /// [`LoopHandle::call_soon_threadsafe`], which shares the same FIFO (semantics 29).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed.
    pub fn call_soon_threadsafe<F, R>(&self, callback: F) -> Result<Handle, LoopError>
    where
        F: FnOnce() -> R + 'static,
        R: CallbackOutput + 'static,
    {
        self.call_soon(callback)
    }

    /// Queues an already-built entry (timers that fell due, task steps).
    #[inline]
    pub(crate) fn push_ready(&self, entry: Rc<dyn Runnable>) {
        self.inner.ready.borrow_mut().push_back(entry);
    }

    // ----- delayed calls -------------------------------------------------------------------

    /// The loop's clock: monotonic seconds as `f64`, read fresh on every call
    /// (semantics 34, 44). [`call_at`](EventLoop::call_at) deadlines use this clock.
    pub fn time(&self) -> f64 {
        clock::monotonic()
    }

    /// Schedules `callback` to run `delay` after now (a [`Duration`] or seconds as a
    /// number). The returned handle's `when()` is `time() + delay` (semantics 35).
    ///
    /// Negative delays are legal: the timer is due at once, but runs ordered by deadline
    /// among due timers, after the callbacks already ready (semantics 37). Infinite and huge
    /// delays are accepted and never overflow (semantics 41). Timers never fire early
    /// (semantics 43).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed; [`LoopError::InvalidArgument`] for a
    /// NaN delay.
    pub fn call_later<D, F, R>(&self, delay: D, callback: F) -> Result<TimerHandle, LoopError>
    where
        D: Delay,
        F: FnOnce() -> R + 'static,
        R: CallbackOutput + 'static,
    {
        let secs = clock::checked_secs(&delay)?;
        self.call_at(self.time() + secs, callback)
    }

    /// Schedules `callback` to run at loop time `when` (see [`time`](EventLoop::time)).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed; [`LoopError::InvalidArgument`] when
    /// `when` is NaN.
    pub fn call_at<F, R>(&self, when: f64, callback: F) -> Result<TimerHandle, LoopError>
    where
        F: FnOnce() -> R + 'static,
        R: CallbackOutput + 'static,
    {
        self.check_closed()?;
        if when.is_nan() {
            return Err(LoopError::invalid_argument(
                "when must be a number, not NaN",
            ));
        }
        let mut timers = self.inner.timers.borrow_mut();
        let cell = Rc::new(TimerCell::new(callback, when, timers.cancel_counter()));
        timers.push(cell.clone());
        Ok(TimerHandle { inner: cell })
    }

    /// Whether the loop asks the kernel for precise wake-ups while it runs (default: on).
    ///
    /// Linux lets a sleeping thread wake up to its *timer slack* (50 µs by default) after
    /// the requested time, to batch wake-ups. While `run_forever` runs with precise timers
    /// on, the loop thread's slack is 1 ns, so a timer's callback runs right after its
    /// deadline; the previous slack is restored when `run_forever` returns.
    pub fn precise_timers(&self) -> bool {
        self.inner.precise_timers.get()
    }

    /// Turns precise wake-ups on or off (see [`precise_timers`](EventLoop::precise_timers));
    /// takes effect at the next `run_forever`. Off saves a little power on idle loops whose
    /// timers tolerate 50 µs of lateness.
    pub fn set_precise_timers(&self, enabled: bool) {
        self.inner.precise_timers.set(enabled);
    }

    /// How many timers the heap holds, cancelled ones not yet dropped included
    /// (observability; bounded by the compaction rule of semantics 40).
    pub fn scheduled_timers(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// How many of the heap's timers are cancelled but not yet dropped.
    pub fn cancelled_timers(&self) -> usize {
        self.inner.timers.borrow().cancelled_len()
    }

    /// How many callbacks are ready to run in the next iteration.
    pub fn ready_len(&self) -> usize {
        self.inner.ready.borrow().len()
    }

    // ----- futures -------------------------------------------------------------------------

    /// A new pending [`Future`] bound to this loop. Works on a closed loop too
    /// (semantics 23).
    pub fn create_future<T: 'static>(&self) -> Future<T> {
        Future::new(self)
    }

    // ----- debug ---------------------------------------------------------------------------

    /// Whether debug mode is on (slow callbacks are reported).
    pub fn get_debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turns debug mode on or off. In debug mode a callback, timer or task step that runs
    /// longer than [`slow_callback_duration`](EventLoop::slow_callback_duration) is logged
    /// as a warning: `Executing <Handle …> took 0.300 seconds` (semantics 33).
    pub fn set_debug(&self, enabled: bool) {
        self.inner.debug.set(enabled);
    }

    /// The threshold for slow-callback warnings in debug mode (default 100 ms).
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback.get()
    }

    /// Sets the threshold for slow-callback warnings.
    pub fn set_slow_callback_duration(&self, duration: Duration) {
        self.inner.slow_callback.set(duration);
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("id", &self.inner.id)
            .field("backend", &self.inner.backend)
            .field("running", &self.inner.running.get())
            .field("closed", &self.inner.proactor.is_closed())
            .field("debug", &self.inner.debug.get())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        waker::unregister_local_loop(self.id);
        // An unclosed loop releases what `close()` would: restores signal dispositions,
        // refuses thread-safe calls, stops the executor, waits for in-flight ops.
        self.release_resources();
    }
}
