//! The thread-safe side of a loop: [`LoopHandle`], the `Send + Sync` handle other threads
//! use to schedule callbacks (`call_soon_threadsafe`) and stop the loop, the
//! [`ThreadsafeHandle`] that cancels such a callback from any thread, and the queue they
//! feed.
//!
//! Other threads never touch the loop's `!Send` state: they push to a mutex-protected
//! queue and wake the proactor (one atomic operation when the loop is awake, an eventfd
//! write when it sleeps; only the push that finds the queue empty wakes). The loop drains
//! the whole queue, in order, into its ready queue after each poll (semantics 29), so
//! thread-safe callbacks share the FIFO of `call_soon`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use ringloop_proactor::Waker;

use crate::error::LoopError;
use crate::event_loop::EventLoop;

/// Work sent to the loop from any thread.
pub(crate) enum Remote {
    /// A `call_soon_threadsafe` callback (shared with its [`ThreadsafeHandle`]).
    Call(Arc<dyn RemoteCall>),
    /// Internal work that needs the loop (executor results, stop).
    WithLoop(Box<dyn FnOnce(&EventLoop) + Send>),
    /// A task's waker fired on another thread.
    WakeTask { key: usize, generation: u64 },
}

struct Queue {
    items: Vec<Remote>,
    closed: bool,
}

/// The state a loop shares with other threads.
pub(crate) struct Shared {
    pub(crate) loop_id: u64,
    queue: Mutex<Queue>,
    /// Whether `queue` may hold items (set under the lock by pushes, cleared by drains).
    pending: AtomicBool,
    waker: Arc<Waker>,
}

impl Shared {
    pub(crate) fn new(loop_id: u64, waker: Arc<Waker>) -> Self {
        Shared {
            loop_id,
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
            }),
            pending: AtomicBool::new(false),
            waker,
        }
    }

    /// Queues `item` and wakes the loop.
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] once the loop is closed (the item is dropped).
    pub(crate) fn push(&self, item: Remote) -> Result<(), LoopError> {
        let was_empty = {
            let mut queue = self.queue.lock();
            if queue.closed {
                return Err(LoopError::LoopClosed);
            }
            let was_empty = queue.items.is_empty();
            queue.items.push(item);
            self.pending.store(true, Ordering::Release);
            was_empty
        };
        // A non-empty queue has already woken the loop, which drains all of it at once.
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// Whether an item may be queued: `false` means [`drain_into`](Shared::drain_into)
    /// would find nothing. Most iterations find nothing, and the loop then skips the lock
    /// (and its buffer swaps): a push that this load misses woke the proactor (it found the
    /// queue empty), so the next iteration drains it.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Moves everything queued into `out` (which the caller keeps empty between uses, so
    /// the two vectors' allocations are recycled). The caller asks
    /// [`has_pending`](Shared::has_pending) first.
    pub(crate) fn drain_into(&self, out: &mut Vec<Remote>) {
        let mut queue = self.queue.lock();
        std::mem::swap(&mut queue.items, out);
        self.pending.store(false, Ordering::Release);
    }

    /// Refuses all further items; returns those still queued so the caller can drop them
    /// outside the lock.
    pub(crate) fn close(&self) -> Vec<Remote> {
        let mut queue = self.queue.lock();
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }
}

/// A `call_soon_threadsafe` callback as its queue entry and its handle see it.
pub(crate) trait RemoteCall: Send + Sync {
    /// Runs the callback unless it was cancelled (or already ran).
    fn run(&self);
    /// Cancels the callback, dropping it.
    fn cancel(&self);
    /// Whether `cancel` was called.
    fn is_cancelled(&self) -> bool;
    /// How the callback shows in `Debug`.
    fn describe(&self) -> String;
}

/// The one allocation of a `call_soon_threadsafe`: the callback, taken out exactly once by
/// whichever comes first, the loop running it or a `cancel` on any thread.
struct RemoteCallCell<F> {
    callback: Mutex<Option<F>>,
    cancelled: AtomicBool,
}

impl<F: FnOnce() + Send> RemoteCall for RemoteCallCell<F> {
    fn run(&self) {
        // Taken out before the call: the lock is never held across user code.
        let callback = self.callback.lock().take();
        if let Some(callback) = callback {
            callback();
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        // Dropped outside the lock: dropping the closure may run user code.
        let callback = self.callback.lock().take();
        drop(callback);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn describe(&self) -> String {
        format!("<Handle {}>", std::any::type_name::<F>())
    }
}

/// A handle to a callback scheduled with [`LoopHandle::call_soon_threadsafe`]: like
/// [`Handle`](crate::Handle), but `Send + Sync`, so any thread may cancel it.
///
/// Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct ThreadsafeHandle {
    call: Arc<dyn RemoteCall>,
}

impl ThreadsafeHandle {
    /// Cancels the callback, from any thread: if the loop has not started running it, it
    /// never will, and the other callbacks keep their order (semantics 27). Idempotent.
    /// The closure and everything it captured are dropped at once, on the calling thread
    /// (semantics 28). A cancel that races with the loop starting the callback does not
    /// stop it.
    pub fn cancel(&self) {
        if !self.call.is_cancelled() {
            self.call.cancel();
        }
    }

    /// Whether [`cancel`](ThreadsafeHandle::cancel) was called. Stays `false` after the
    /// callback ran (semantics 27).
    pub fn cancelled(&self) -> bool {
        self.call.is_cancelled()
    }
}

impl fmt::Debug for ThreadsafeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.call.describe())?;
        if self.cancelled() {
            f.write_str(" (cancelled)")?;
        }
        Ok(())
    }
}

/// A `Send + Sync` handle to an [`EventLoop`], for other threads.
///
/// Obtained with [`EventLoop::handle`]. Cheap to clone.
///
/// # Examples
/// ```
/// use ringloop_runtime::EventLoop;
///
/// let lp = EventLoop::new()?;
/// let handle = lp.handle();
/// std::thread::spawn(move || {
///     handle.call_soon_threadsafe(|| println!("hello from the loop thread")).ok();
///     handle.stop().ok();
/// });
/// lp.run_forever()?;
/// # Ok::<(), ringloop_runtime::LoopError>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl LoopHandle {
    /// Schedules `callback` to run on the loop thread, in the same FIFO as
    /// [`EventLoop::call_soon`], and wakes the loop if it is blocked in the kernel
    /// (semantics 29). The returned [`ThreadsafeHandle`] cancels it from any thread
    /// (semantics 27).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed (semantics 23).
    pub fn call_soon_threadsafe<F>(&self, callback: F) -> Result<ThreadsafeHandle, LoopError>
    where
        F: FnOnce() + Send + 'static,
    {
        let call: Arc<dyn RemoteCall> = Arc::new(RemoteCallCell {
            callback: Mutex::new(Some(callback)),
            cancelled: AtomicBool::new(false),
        });
        self.shared.push(Remote::Call(call.clone()))?;
        Ok(ThreadsafeHandle { call })
    }

    /// Asks the loop to stop, from any thread: the same as
    /// `call_soon_threadsafe(loop.stop)` in asyncio (semantics 11).
    ///
    /// # Errors
    /// [`LoopError::LoopClosed`] if the loop is closed.
    pub fn stop(&self) -> Result<(), LoopError> {
        self.shared
            .push(Remote::WithLoop(Box::new(|lp: &EventLoop| lp.stop())))
    }

    /// Whether the loop was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Sends internal work that needs the loop.
    pub(crate) fn with_loop(
        &self,
        work: impl FnOnce(&EventLoop) + Send + 'static,
    ) -> Result<(), LoopError> {
        self.shared.push(Remote::WithLoop(Box::new(work)))
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("loop_id", &self.shared.loop_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}
