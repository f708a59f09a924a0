//! Which loop is current: the per-thread current loop, the running loop, and the
//! process-wide event loop policy (asyncio section A, semantics 1–5).
//!
//! ringloop follows current asyncio (3.14): `get_event_loop()` returns the running loop
//! if there is one, else the loop set for this thread, else an error — it never creates a
//! loop behind the caller's back (semantics 3).
//!
//! After `fork()`, the child inherits neither the current nor the running loop (semantics
//! 7): a `pthread_atfork` child hook, registered the first time a loop becomes current or
//! running, forgets both (without dropping them: the parent's loop owns a ring and threads
//! the child does not have).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Once, RwLock};

use crate::error::LoopError;
use crate::event_loop::EventLoop;

thread_local! {
    /// The loop `set_event_loop` made current in this thread (default policy).
    static CURRENT: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
    /// The loop running in this thread.
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
}

/// Creates loops and tracks the current one (asyncio's `AbstractEventLoopPolicy`).
pub trait EventLoopPolicy: Send + Sync {
    /// The current loop of the calling thread.
    ///
    /// # Errors
    /// [`LoopError::NoCurrentLoop`] when none was set.
    fn get_event_loop(&self) -> Result<EventLoop, LoopError>;

    /// Makes `lp` the current loop of the calling thread (`None` clears it).
    fn set_event_loop(&self, lp: Option<EventLoop>);

    /// A new loop of the kind this policy makes.
    ///
    /// # Errors
    /// When no loop can be built (see [`EventLoop::new`]).
    fn new_event_loop(&self) -> Result<EventLoop, LoopError>;
}

/// The default policy: a per-thread current loop, loops on the configured proactor
/// backend (`RINGLOOP_BACKEND`, else io_uring when available, else epoll).
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultEventLoopPolicy;

impl EventLoopPolicy for DefaultEventLoopPolicy {
    fn get_event_loop(&self) -> Result<EventLoop, LoopError> {
        CURRENT
            .try_with(|current| current.borrow().clone())
            .ok()
            .flatten()
            .ok_or_else(|| LoopError::NoCurrentLoop {
                thread: thread_name(),
            })
    }

    fn set_event_loop(&self, lp: Option<EventLoop>) {
        reset_on_fork();
        let old = CURRENT
            .try_with(|current| current.replace(lp))
            .ok()
            .flatten();
        drop(old);
    }

    fn new_event_loop(&self) -> Result<EventLoop, LoopError> {
        EventLoop::new()
    }
}

fn thread_name() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", thread.id()),
    }
}

static POLICY: RwLock<Option<Arc<dyn EventLoopPolicy>>> = RwLock::new(None);

/// The process's event loop policy ([`DefaultEventLoopPolicy`] unless one was set).
pub fn get_event_loop_policy() -> Arc<dyn EventLoopPolicy> {
    let policy = POLICY
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    policy.unwrap_or_else(|| Arc::new(DefaultEventLoopPolicy))
}

/// Sets the process's event loop policy; `None` restores the default.
pub fn set_event_loop_policy(policy: Option<Arc<dyn EventLoopPolicy>>) {
    *POLICY
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
}

/// The loop running in this thread.
///
/// # Errors
/// [`LoopError::NoRunningLoop`] outside a running loop (semantics 5).
pub fn get_running_loop() -> Result<EventLoop, LoopError> {
    running_loop().ok_or(LoopError::NoRunningLoop)
}

/// The running loop if any (semantics 4), else the policy's current loop.
///
/// # Errors
/// [`LoopError::NoCurrentLoop`] when there is neither (semantics 3): no loop is created
/// implicitly.
pub fn get_event_loop() -> Result<EventLoop, LoopError> {
    match running_loop() {
        Some(lp) => Ok(lp),
        None => get_event_loop_policy().get_event_loop(),
    }
}

/// Makes `lp` current in this thread through the policy (semantics 2).
pub fn set_event_loop(lp: Option<EventLoop>) {
    get_event_loop_policy().set_event_loop(lp);
}

/// A new loop from the policy; it is not made current (semantics 1).
///
/// # Errors
/// When no loop can be built.
pub fn new_event_loop() -> Result<EventLoop, LoopError> {
    get_event_loop_policy().new_event_loop()
}

pub(crate) fn running_loop() -> Option<EventLoop> {
    RUNNING
        .try_with(|running| running.borrow().clone())
        .ok()
        .flatten()
}

/// Whether any loop runs in this thread.
pub(crate) fn any_running() -> bool {
    RUNNING
        .try_with(|running| running.borrow().is_some())
        .unwrap_or(false)
}

/// Marks `lp` as this thread's running loop until dropped.
pub(crate) struct RunningGuard {
    previous: Option<EventLoop>,
}

impl RunningGuard {
    pub(crate) fn enter(lp: &EventLoop) -> RunningGuard {
        reset_on_fork();
        let previous = RUNNING
            .try_with(|running| running.replace(Some(lp.clone())))
            .ok()
            .flatten();
        RunningGuard { previous }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let old = RUNNING
            .try_with(|running| running.replace(previous))
            .ok()
            .flatten();
        drop(old);
    }
}

/// Registers (once per process) the fork hook that resets this module's thread-locals in
/// the child.
fn reset_on_fork() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no prepare or parent hook;
        // the child hook touches only the forking thread's own thread-locals.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_loops_after_fork)) };
        if rc != 0 {
            tracing::warn!(
                "pthread_atfork failed ({rc}): a forked child would inherit the current loop"
            );
        }
    });
}

/// Runs in the child right after `fork()`, on the thread that forked (the child's only
/// thread). The loops are forgotten, not dropped: dropping would wait on the parent's
/// ring and join executor threads that do not exist in the child.
extern "C" fn forget_loops_after_fork() {
    for slot in [&CURRENT, &RUNNING] {
        let _ = slot.try_with(|cell| {
            if let Ok(mut lp) = cell.try_borrow_mut() {
                std::mem::forget(lp.take());
            }
        });
    }
}

impl fmt::Debug for dyn EventLoopPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<EventLoopPolicy>")
    }
}
