//! Unix signals as loop callbacks (asyncio's `add_signal_handler`, section Q).
//!
//! Design (a self-pipe, as asyncio's wakeup fd): the process-wide `sigaction` handler only
//! loads the owning loop's pipe write end for the signal from an atomic table and writes
//! the signal number there — an atomic load and `write(2)`, both async-signal-safe. The
//! loop keeps one readiness op on the pipe's read end; when it completes, the loop reads
//! the numbers and schedules each handler with `call_soon` (never in signal context,
//! semantics 188). A self-pipe works in multi-threaded processes, where `signalfd` would
//! need every thread to block the signal.
//!
//! A loop that never adds a handler never touches signal state (semantics 196): the pipe
//! is created and dispositions are changed only by [`EventLoop::add_signal_handler`].
//! Removing a handler restores `SIG_DFL` (semantics 193); closing or dropping the loop
//! removes every handler (194).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicI32, Ordering};

use ringloop_proactor::{op, Completion, OpId};

use crate::error::LoopError;
use crate::event_loop::{EventLoop, Inner};
use crate::io::{IoHandler, IoToken};

/// One more than the largest signal number on Linux (`_NSIG`).
pub const NSIG: i32 = 65;

/// Per signal, the write end of the pipe of the loop that handles it, or -1.
static WAKE_FDS: [AtomicI32; NSIG as usize] = [const { AtomicI32::new(-1) }; NSIG as usize];

extern "C" fn on_signal(sig: libc::c_int) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|i| WAKE_FDS.get(i)) else {
        return;
    };
    let fd = slot.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // A full pipe (EAGAIN on the non-blocking write end) only loses a wake-up byte for a loop
    // that is already thousands of signals behind.
    // SAFETY: `__errno_location` is this thread's errno slot, saved and restored so the
    // interrupted code never sees our errno; `write` is async-signal-safe and reads one
    // byte from a live local.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *errno = saved;
    }
}

/// A loop's signal machinery.
#[derive(Default)]
pub(crate) struct SignalState {
    handlers: BTreeMap<i32, Rc<dyn Fn()>>,
    pipe: Option<SelfPipe>,
}

struct SelfPipe {
    read: OwnedFd,
    write: OwnedFd,
    token: IoToken,
    op: Cell<Option<OpId>>,
}

/// Checks that `sig` names a signal (semantics 189–190).
fn check_signal(sig: i32) -> Result<(), LoopError> {
    if !(1..NSIG).contains(&sig) {
        return Err(LoopError::InvalidSignal(sig));
    }
    if sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return Err(LoopError::SignalNotCatchable(sig));
    }
    Ok(())
}

/// Sets the disposition of `sig` to `handler` (`on_signal` or `SIG_DFL`).
fn set_disposition(sig: i32, handler: libc::sighandler_t) -> Result<(), LoopError> {
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes is valid; the mask
    // is then initialised with `sigemptyset`. The handler is either SIG_DFL or
    // `on_signal`, which is async-signal-safe (see above), and the struct outlives the call.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) {
        Err(LoopError::SignalNotCatchable(sig))
    } else {
        Err(err.into())
    }
}

/// Stops routing `sig` to the pipe `write_fd`; `false` if another loop owns it now.
fn release_signal(sig: i32, write_fd: i32) -> bool {
    WAKE_FDS[sig as usize]
        .compare_exchange(write_fd, -1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `pipe2` writes two fds into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receives the self-pipe's readiness.
struct PipeReader {
    lp: Weak<Inner>,
}

impl IoHandler for PipeReader {
    fn complete(&self, lp: &EventLoop, _completion: &mut Completion) {
        debug_assert!(self
            .lp
            .upgrade()
            .is_some_and(|inner| std::ptr::eq(&*inner, &*lp.inner)));
        lp.drain_signal_pipe();
    }
}

impl EventLoop {
    /// Runs `callback` on the loop whenever signal `sig` arrives; replaces a previous
    /// handler for `sig` (semantics 188). The callback runs as an ordinary loop callback,
    /// and a signal arriving while the loop waits in the kernel wakes it.
    ///
    /// # Errors
    /// [`LoopError::InvalidSignal`] for 0, negative numbers and numbers ≥ [`NSIG`];
    /// [`LoopError::SignalNotCatchable`] for `SIGKILL`/`SIGSTOP` (semantics 189–190);
    /// then [`LoopError::LoopClosed`] on a closed loop (semantics 191); [`LoopError::Io`]
    /// if the self-pipe cannot be created.
    pub fn add_signal_handler<F>(&self, sig: i32, callback: F) -> Result<(), LoopError>
    where
        F: Fn() + 'static,
    {
        check_signal(sig)?;
        self.check_closed()?;
        let write_fd = self.ensure_signal_pipe()?;
        let previous = WAKE_FDS[sig as usize].swap(write_fd, Ordering::AcqRel);
        if let Err(err) = set_disposition(sig, on_signal as *const () as libc::sighandler_t) {
            WAKE_FDS[sig as usize].store(previous, Ordering::Release);
            return Err(err);
        }
        let old = self
            .inner
            .signals
            .borrow_mut()
            .handlers
            .insert(sig, Rc::new(callback));
        drop(old);
        Ok(())
    }

    /// Removes the handler of `sig` and restores the default disposition (`SIG_DFL`,
    /// semantics 193). Returns whether there was a handler; `SIGKILL`/`SIGSTOP` give
    /// `Ok(false)` (semantics 190).
    ///
    /// # Errors
    /// [`LoopError::InvalidSignal`] for a number that is not a signal; [`LoopError::Io`]
    /// if the disposition cannot be restored.
    pub fn remove_signal_handler(&self, sig: i32) -> Result<bool, LoopError> {
        match check_signal(sig) {
            Ok(()) => {}
            Err(LoopError::SignalNotCatchable(_)) => return Ok(false),
            Err(err) => return Err(err),
        }
        let removed = self.inner.signals.borrow_mut().handlers.remove(&sig);
        let Some(callback) = removed else {
            return Ok(false);
        };
        drop(callback);
        let write_fd = self
            .inner
            .signals
            .borrow()
            .pipe
            .as_ref()
            .map(|p| p.write.as_raw_fd());
        // Another loop (on another thread) may have taken the signal over since: then its
        // entry and its disposition stay as they are.
        if write_fd.is_some_and(|fd| release_signal(sig, fd)) {
            set_disposition(sig, libc::SIG_DFL)?;
        }
        Ok(true)
    }

    /// The self-pipe's write end, creating the pipe and arming its read on first use.
    fn ensure_signal_pipe(&self) -> Result<i32, LoopError> {
        if let Some(pipe) = &self.inner.signals.borrow().pipe {
            return Ok(pipe.write.as_raw_fd());
        }
        let (read, write) = new_pipe()?;
        let token = self.register_io(Rc::new(PipeReader {
            lp: Rc::downgrade(&self.inner),
        }))?;
        let write_fd = write.as_raw_fd();
        self.inner.signals.borrow_mut().pipe = Some(SelfPipe {
            read,
            write,
            token,
            op: Cell::new(None),
        });
        self.arm_signal_pipe();
        Ok(write_fd)
    }

    fn arm_signal_pipe(&self) {
        let armed = {
            let signals = self.inner.signals.borrow();
            signals
                .pipe
                .as_ref()
                .map(|pipe| (pipe.read.as_raw_fd(), pipe.token))
        };
        if let Some((fd, token)) = armed {
            let events = libc::POLLIN as u32;
            if let Ok(id) = self.submit(op::PollAdd::new(fd, events), token) {
                if let Some(pipe) = &self.inner.signals.borrow().pipe {
                    pipe.op.set(Some(id));
                }
            }
        }
    }

    /// Reads every signal number queued in the pipe, schedules their handlers, re-arms.
    fn drain_signal_pipe(&self) {
        let Some(fd) = self
            .inner
            .signals
            .borrow()
            .pipe
            .as_ref()
            .map(|p| p.read.as_raw_fd())
        else {
            return;
        };
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads at most `buf.len()` bytes into a live local buffer from the
            // pipe's read end, which this loop owns and keeps open.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN: drained. EINTR: a signal interrupted us; its byte is in the pipe
                // and readiness will report it again.
                break;
            }
            for &sig in &buf[..n as usize] {
                let callback = self
                    .inner
                    .signals
                    .borrow()
                    .handlers
                    .get(&i32::from(sig))
                    .cloned();
                if let Some(callback) = callback {
                    let _ = self.call_soon(move || callback());
                }
            }
        }
        if !self.inner.proactor.is_closed() {
            self.arm_signal_pipe();
        }
    }

    /// The signals this loop handles.
    pub fn signal_handlers(&self) -> Vec<i32> {
        self.inner
            .signals
            .borrow()
            .handlers
            .keys()
            .copied()
            .collect()
    }
}

impl Inner {
    /// Removes every handler, restoring `SIG_DFL`, and gives the pipe op up (close/drop).
    /// Returns the pipe so the caller can close it after the proactor is gone.
    pub(crate) fn release_signals(&self) -> Option<(OwnedFd, OwnedFd)> {
        let (handlers, pipe) = {
            let mut signals = self.signals.borrow_mut();
            (std::mem::take(&mut signals.handlers), signals.pipe.take())
        };
        let pipe = pipe?;
        let write_fd = pipe.write.as_raw_fd();
        for &sig in handlers.keys() {
            if !release_signal(sig, write_fd) {
                continue;
            }
            if let Err(err) = set_disposition(sig, libc::SIG_DFL) {
                tracing::warn!("could not restore the default disposition of signal {sig}: {err}");
            }
        }
        drop(handlers);
        if let Some(id) = pipe.op.get() {
            if let Some(mut proactor) = self.proactor.borrow_mut() {
                proactor.detach(id);
            }
        }
        Some((pipe.read, pipe.write))
    }
}

impl fmt::Debug for SignalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalState")
            .field("signals", &self.handlers.keys().collect::<Vec<_>>())
            .field("pipe", &self.pipe.as_ref().map(|p| p.read.as_raw_fd()))
            .finish()
    }
}
