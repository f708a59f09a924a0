//! Running blocking functions off the loop thread: the [`Executor`] trait, the default
//! [`ThreadPool`], and `run_in_executor` (asyncio section G, semantics 62–65).
//!
//! A job's result travels back through the loop's thread-safe queue (asyncio delivers it
//! with `call_soon_threadsafe`); the loop-side [`Future`] never leaves the loop thread:
//! it waits in a slab, and the job carries only the slab key. Cancelling the future before
//! the job starts marks the job cancelled, and a worker skips cancelled jobs (semantics 64).

use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::LoopError;
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::handle::TimerHandle;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// A unit of work for an [`Executor`]. Running it does nothing if it was cancelled before
/// it started.
pub struct Job {
    work: Box<dyn FnOnce() + Send>,
    state: Arc<AtomicU8>,
}

impl Job {
    /// A job running `work`.
    pub fn new(work: impl FnOnce() + Send + 'static) -> Job {
        Job {
            work: Box::new(work),
            state: Arc::new(AtomicU8::new(PENDING)),
        }
    }

    /// Runs the job unless it was cancelled; returns whether it ran.
    pub fn run(self) -> bool {
        if self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        (self.work)();
        true
    }

    /// Whether the job was cancelled before it started.
    pub fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    fn canceller(&self) -> Arc<AtomicU8> {
        self.state.clone()
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// Runs [`Job`]s on other threads (asyncio's `concurrent.futures.Executor`).
pub trait Executor: Send + Sync {
    /// Queues `job`.
    ///
    /// # Errors
    /// [`LoopError::ExecutorShutdown`] after [`shutdown`](Executor::shutdown).
    fn submit(&self, job: Job) -> Result<(), LoopError>;

    /// Refuses new jobs and lets the workers exit once the queued jobs are done, without
    /// waiting for them (asyncio's `shutdown(wait=False)`).
    fn shutdown(&self);

    /// [`shutdown`](Executor::shutdown), then blocks until the queued jobs are done and
    /// the executor's threads have exited (asyncio's `shutdown(wait=True)`).
    /// [`EventLoop::shutdown_default_executor`] calls it on a thread of its own.
    ///
    /// The default implementation only calls `shutdown`, which suits executors that own
    /// no threads; an executor with threads should override it. Calling it from one of the
    /// executor's own jobs would wait for itself.
    fn shutdown_and_join(&self) {
        self.shutdown();
    }
}

struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    workers: usize,
    shutdown: bool,
}

struct PoolShared {
    state: Mutex<PoolState>,
    available: Condvar,
    /// Notified when `workers` drops to zero.
    exited: Condvar,
    spawned: AtomicUsize,
    /// The workers' join handles, for [`Executor::shutdown_and_join`] (at most
    /// `max_workers`: workers only exit at shutdown).
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PoolShared {
    /// One worker fewer (it exited, or never started); called with the state locked.
    fn worker_gone(&self, state: &mut PoolState) {
        state.workers -= 1;
        if state.workers == 0 {
            self.exited.notify_all();
        }
    }
}

/// A thread pool that starts threads lazily, up to `max_workers`, named
/// `ringloop-executor-N` (asyncio's default `ThreadPoolExecutor`, semantics 63).
///
/// Cloning gives another handle to the same pool. When the last handle is dropped, the
/// pool shuts down (as [`Executor::shutdown`]): queued jobs still run, then the threads
/// exit.
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<PoolShared>,
    /// Held by handles only (workers hold `shared`), so its drop means "no handle left".
    _handles: Arc<ShutdownOnDrop>,
    max_workers: usize,
}

/// Shuts the pool down when the last [`ThreadPool`] handle goes.
struct ShutdownOnDrop(Arc<PoolShared>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.state.lock().shutdown = true;
        self.0.available.notify_all();
    }
}

impl ThreadPool {
    /// A pool of at most `max_workers` threads (at least 1).
    pub fn new(max_workers: usize) -> ThreadPool {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                jobs: VecDeque::new(),
                idle: 0,
                workers: 0,
                shutdown: false,
            }),
            available: Condvar::new(),
            exited: Condvar::new(),
            spawned: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        ThreadPool {
            _handles: Arc::new(ShutdownOnDrop(shared.clone())),
            shared,
            max_workers: max_workers.max(1),
        }
    }

    /// asyncio's default size: `min(32, cpus + 4)`.
    pub fn default_size() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus + 4).min(32)
    }

    /// How many worker threads are alive.
    pub fn workers(&self) -> usize {
        self.shared.state.lock().workers
    }

    fn spawn_worker(&self) -> std::io::Result<()> {
        let n = self.shared.spawned.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(format!("ringloop-executor-{n}"))
            .spawn(move || worker(&shared))
            .map(|thread| self.shared.threads.lock().push(thread))
    }
}

impl Default for ThreadPool {
    fn default() -> Self {
        ThreadPool::new(ThreadPool::default_size())
    }
}

fn worker(shared: &PoolShared) {
    loop {
        let job = {
            let mut state = shared.state.lock();
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break Some(job);
                }
                if state.shutdown {
                    shared.worker_gone(&mut state);
                    break None;
                }
                state.idle += 1;
                shared.available.wait(&mut state);
                state.idle -= 1;
            }
        };
        match job {
            // A panic is the job's own business (run_in_executor catches it); a worker
            // survives anything.
            Some(job) => {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| job.run()));
            }
            None => return,
        }
    }
}

impl Executor for ThreadPool {
    fn submit(&self, job: Job) -> Result<(), LoopError> {
        let spawn = {
            let mut state = self.shared.state.lock();
            if state.shutdown {
                return Err(LoopError::ExecutorShutdown);
            }
            state.jobs.push_back(job);
            let spawn = state.idle == 0 && state.workers < self.max_workers;
            if spawn {
                state.workers += 1;
            }
            spawn
        };
        if spawn {
            if let Err(err) = self.spawn_worker() {
                let mut state = self.shared.state.lock();
                self.shared.worker_gone(&mut state);
                if state.workers == 0 {
                    state.jobs.clear();
                    return Err(err.into());
                }
            }
        } else {
            self.shared.available.notify_one();
        }
        Ok(())
    }

    fn shutdown(&self) {
        self.shared.state.lock().shutdown = true;
        self.shared.available.notify_all();
    }

    fn shutdown_and_join(&self) {
        self.shutdown();
        {
            let mut state = self.shared.state.lock();
            while state.workers > 0 {
                self.shared.exited.wait(&mut state);
            }
        }
        // Every worker has left its loop; joining waits for the threads' own exit.
        let threads = std::mem::take(&mut *self.shared.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("ThreadPool")
            .field("max_workers", &self.max_workers)
            .field("workers", &state.workers)
            .field("queued", &state.jobs.len())
            .field("shutdown", &state.shutdown)
            .finish()
    }
}

/// The loop's default executor slot.
#[derive(Default)]
pub(crate) struct ExecutorSlot {
    executor: Option<Arc<dyn Executor>>,
    shut_down: bool,
}

impl ExecutorSlot {
    /// Shuts the default executor down (loop close); later uses fail.
    pub(crate) fn shutdown(&mut self) {
        self.shut_down = true;
        if let Some(executor) = self.executor.take() {
            executor.shutdown();
        }
    }

    /// Marks the slot shut down and hands the executor over, for the caller to shut down.
    fn take_for_shutdown(&mut self) -> Option<Arc<dyn Executor>> {
        self.shut_down = true;
        self.executor.take()
    }
}

/// What `shutdown_default_executor` leaves in the executor waiters' slab: the future to
/// complete once the threads are joined, and the timeout's timer to cancel then.
struct ShutdownWaiter {
    fut: Future<()>,
    timer: Option<TimerHandle>,
}

impl EventLoop {
    /// Runs `work` on `executor` (the default thread pool when `None`, created on first use)
    /// and returns a loop future of its result (semantics 62). A panic in `work` becomes
    /// the future's [`LoopError::Panicked`] error. Cancelling the future before the job
    /// starts keeps it from ever running (semantics 64).
    ///
    /// # Examples
    /// ```
    /// use ringloop_runtime::EventLoop;
    ///
    /// let lp = EventLoop::new()?;
    /// let fut = lp.run_in_executor(None, || std::thread::current().name().map(str::to_owned))?;
    /// let name = lp.run_until_complete(fut)?;
    /// assert!(name.unwrap().starts_with("ringloop-executor-"));
    /// # Ok::<(), ringloop_runtime::LoopError>(())
    /// ```
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] on a closed loop; [`LoopError::ExecutorShutdown`] after
    /// [`shutdown_default_executor`](EventLoop::shutdown_default_executor) (semantics 65).
    pub fn run_in_executor<T, W>(
        &self,
        executor: Option<&dyn Executor>,
        work: W,
    ) -> Result<Future<T>, LoopError>
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
    {
        self.check_closed()?;
        let default;
        let executor: &dyn Executor = match executor {
            Some(executor) => executor,
            None => {
                default = self.default_executor()?;
                &*default
            }
        };
        let fut = self.create_future::<T>();
        let key = self
            .inner
            .executor_waiters
            .borrow_mut()
            .insert(Box::new(fut.clone()));
        let handle = self.handle();
        let job = Job::new(move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(work))
                .map_err(|payload| LoopError::from_panic(&*payload));
            // A closed loop drops the result here, on this thread (it is `Send`).
            let _ = handle.with_loop(move |lp| lp.finish_job::<T>(key, outcome));
        });
        let canceller = job.canceller();
        if let Err(err) = executor.submit(job) {
            let waiter = self.inner.executor_waiters.borrow_mut().try_remove(key);
            drop(waiter);
            return Err(err);
        }
        let lp = std::rc::Rc::downgrade(&self.inner);
        fut.add_done_callback(move |fut| {
            if fut.cancelled()
                && canceller
                    .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // The job will never run, so nothing will come back for this key.
                if let Some(inner) = lp.upgrade() {
                    let waiter = inner.executor_waiters.borrow_mut().try_remove(key);
                    drop(waiter);
                }
            }
        });
        Ok(fut)
    }

    fn finish_job<T: 'static>(&self, key: usize, outcome: Result<T, LoopError>) {
        let waiter = self.inner.executor_waiters.borrow_mut().try_remove(key);
        let Some(waiter) = waiter else { return };
        let Ok(fut) = waiter.downcast::<Future<T>>() else {
            unreachable!("executor waiter {key} holds a future of another type");
        };
        if fut.done() {
            return; // cancelled meanwhile
        }
        let _ = match outcome {
            Ok(value) => fut.set_result(value),
            Err(err) => fut.set_exception(err),
        };
    }

    fn default_executor(&self) -> Result<Arc<dyn Executor>, LoopError> {
        let mut slot = self.inner.executor.borrow_mut();
        if slot.shut_down {
            return Err(LoopError::ExecutorShutdown);
        }
        Ok(slot
            .executor
            .get_or_insert_with(|| Arc::new(ThreadPool::default()))
            .clone())
    }

    /// Replaces the default executor used by `run_in_executor(None, …)`. The previous one
    /// is not shut down (asyncio leaves that to its owner).
    pub fn set_default_executor(&self, executor: Arc<dyn Executor>) {
        let old = self.inner.executor.borrow_mut().executor.replace(executor);
        drop(old);
    }

    /// Shuts the default executor down and returns a future that completes once its
    /// threads have been joined (asyncio's `shutdown_default_executor(timeout)`,
    /// semantics 64–65). Await it from a task, or `run_until_complete` it.
    ///
    /// From this call on, `run_in_executor(None, …)` fails with
    /// [`LoopError::ExecutorShutdown`]. Jobs already queued still run; a thread of its own
    /// waits for them ([`Executor::shutdown_and_join`]), so the loop keeps running
    /// meanwhile. With `timeout`, the future completes after at most `timeout` even if the
    /// threads are still busy, and a warning is logged through `tracing`:
    /// `The executor did not finishing joining its threads within N seconds.` (asyncio's
    /// wording). With `None` it waits as long as it takes. Without a default executor
    /// (none was ever used) the future is complete at once.
    ///
    /// # Differences from asyncio
    /// The shutdown happens at the call, not when the returned future is first awaited;
    /// dropping the future does not undo it. asyncio emits a `RuntimeWarning`; ringloop
    /// logs at WARN level.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use ringloop_runtime::{EventLoop, LoopError};
    ///
    /// let lp = EventLoop::new()?;
    /// let job = lp.run_in_executor(None, || 6 * 7)?;
    /// assert_eq!(lp.run_until_complete(job)?, 42);
    /// lp.run_until_complete(lp.shutdown_default_executor(Some(Duration::from_secs(300))))?;
    /// assert!(matches!(lp.run_in_executor(None, || ()), Err(LoopError::ExecutorShutdown)));
    /// # Ok::<(), LoopError>(())
    /// ```
    ///
    /// The future fails with [`LoopError::Io`] if the joining thread cannot be started
    /// (the executor is then shut down without waiting).
    pub fn shutdown_default_executor(&self, timeout: Option<Duration>) -> Future<()> {
        let fut = self.create_future::<()>();
        let executor = self.inner.executor.borrow_mut().take_for_shutdown();
        let Some(executor) = executor else {
            let _ = fut.set_result(());
            return fut;
        };
        let timer = match timeout {
            Some(timeout) => {
                let expired = fut.clone();
                let secs = timeout.as_secs_f64();
                self.call_later(timeout, move || {
                    if !expired.done() {
                        tracing::warn!(
                            "The executor did not finishing joining its threads within {secs} seconds."
                        );
                        let _ = expired.set_result(());
                    }
                })
                .ok()
            }
            None => None,
        };
        let key = self
            .inner
            .executor_waiters
            .borrow_mut()
            .insert(Box::new(ShutdownWaiter {
                fut: fut.clone(),
                timer,
            }));
        let handle = self.handle();
        let joined = executor.clone();
        let spawned = std::thread::Builder::new()
            .name("ringloop-executor-shutdown".into())
            .spawn(move || {
                joined.shutdown_and_join();
                // A closed loop has dropped the waiter; nobody is left to tell.
                let _ = handle.with_loop(move |lp| lp.finish_shutdown(key));
            });
        if let Err(err) = spawned {
            executor.shutdown();
            let waiter = self.inner.executor_waiters.borrow_mut().try_remove(key);
            if let Some(timer) = waiter
                .and_then(|w| w.downcast::<ShutdownWaiter>().ok())
                .and_then(|w| w.timer)
            {
                timer.cancel();
            }
            let _ = fut.set_exception(err.into());
        }
        fut
    }

    /// The joining thread of `shutdown_default_executor` is done.
    fn finish_shutdown(&self, key: usize) {
        let waiter = self.inner.executor_waiters.borrow_mut().try_remove(key);
        let Some(waiter) = waiter else { return };
        let Ok(waiter) = waiter.downcast::<ShutdownWaiter>() else {
            unreachable!("executor waiter {key} is not a shutdown waiter");
        };
        if let Some(timer) = &waiter.timer {
            timer.cancel();
        }
        if !waiter.fut.done() {
            let _ = waiter.fut.set_result(());
        }
    }
}
