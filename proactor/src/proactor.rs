//! The proactor: pushes ops to a backend, pops their completions, drains on drop.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{BackendChoice, BackendKind};
use crate::completion::{Completion, RawCompletion};
use crate::error::{SetupError, SetupErrorKind};
use crate::op::{self, Op};
use crate::sys::{self, Backend, Config, Driver, Popped};
use crate::table::{OpId, OpState, OpTable};
use crate::waker::Waker;
use crate::{audit, Features};

/// Token of the proactor's own read on its wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;

/// How long dropping a proactor waits for cancelled ops before it leaks their memory rather
/// than free what the kernel may still write.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Configures and builds a [`Proactor`].
#[derive(Debug, Clone)]
pub struct Builder {
    choice: Option<BackendChoice>,
    entries: u32,
    recv_buffers: u16,
    recv_buffer_size: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            choice: None,
            entries: 1024,
            recv_buffers: 512,
            recv_buffer_size: 16 * 1024,
        }
    }
}

impl Builder {
    /// Chooses the backend; without this, `RINGLOOP_BACKEND` decides, else `Auto`.
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.choice = Some(choice);
        self
    }

    /// Submission queue entries (rounded up to a power of two; the completion queue gets at
    /// least twice as many). Default 1024.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries.clamp(1, 1 << 15).next_power_of_two();
        self
    }

    /// The pool of provided receive buffers shared by multishot receives: `count` buffers
    /// (rounded up to a power of two) of `size` bytes. Default 512 × 16 KiB.
    pub fn recv_buffers(mut self, count: u16, size: usize) -> Self {
        self.recv_buffers = count.clamp(1, 1 << 15).next_power_of_two();
        self.recv_buffer_size = size.clamp(64, u32::MAX as usize);
        self
    }

    /// Builds the proactor.
    ///
    /// # Errors
    /// With `BackendChoice::IoUring`, a [`SetupError`] naming why io_uring is unavailable
    /// (`ENOSYS`, `EPERM` from seccomp or `kernel.io_uring_disabled`, …). With `Auto`, that
    /// case falls back to epoll and is logged instead. Also an invalid `RINGLOOP_BACKEND`
    /// value, or a failure to create the eventfd or epoll instance.
    pub fn build(self) -> Result<Proactor, SetupError> {
        let choice = match self.choice {
            Some(choice) => choice,
            None => BackendChoice::from_env()
                .map_err(|msg| SetupError::new(SetupErrorKind::InvalidChoice, msg, None))?
                .unwrap_or_default(),
        };
        let waker = Waker::new()
            .map_err(|e| SetupError::new(SetupErrorKind::Resources, "eventfd", Some(e)))?;
        let config = Config {
            entries: self.entries,
            recv_buffers: self.recv_buffers,
            recv_buffer_size: self.recv_buffer_size,
            wake_fd: waker.fd(),
        };
        let epoll = |config: &Config| {
            sys::epoll::Driver::new(config)
                .map(Driver::Epoll)
                .map_err(|e| SetupError::new(SetupErrorKind::Resources, "epoll_create1", Some(e)))
        };
        let driver = match choice {
            BackendChoice::Epoll => epoll(&config)?,
            BackendChoice::IoUring => Driver::Uring(sys::uring::Driver::new(&config)?),
            BackendChoice::Auto => match sys::uring::Driver::new(&config) {
                Ok(driver) => Driver::Uring(driver),
                Err(err) => {
                    tracing::warn!("{}", err.fallback_line());
                    epoll(&config)?
                }
            },
        };
        tracing::info!(backend = %driver.kind(), features = %driver.features().describe(driver.kind()), "ringloop proactor started");
        let mut proactor = Proactor {
            driver,
            table: OpTable::default(),
            waker: Arc::new(waker),
            wake_op: OpId::NONE,
            _not_send: PhantomData,
        };
        proactor.arm_wake_read();
        Ok(proactor)
    }
}

/// A single-threaded completion driver owning one io_uring (or epoll) instance.
///
/// # Implementation notes
/// - Ops live in a slab; `user_data` is slot index plus generation (see [`OpId`]).
/// - [`poll`](Proactor::poll) is one `io_uring_enter` that submits everything queued and
///   waits with a timeout (`EXT_ARG`), so a loop turn costs one syscall in steady state.
/// - A full submission queue queues ops in user space; completion-queue overflow is reaped
///   (`IORING_FEAT_NODROP`), so nothing is dropped.
/// - A cancelled or detached op keeps its memory until its final completion; dropping the
///   proactor cancels everything in flight and waits for every completion.
///
/// The proactor is `!Send`: it belongs to the thread that created it. Use a
/// [`Waker`] (from [`Proactor::waker`]) to interrupt it from another thread.
pub struct Proactor {
    driver: Driver,
    table: OpTable,
    waker: Arc<Waker>,
    /// The wake-up read's id, or [`OpId::NONE`] (not an `Option`: the front end compares
    /// every completion's id with it, which is then one comparison; `NONE` is the id of
    /// no op, which no completion has).
    wake_op: OpId,
    _not_send: PhantomData<*const ()>,
}

impl Proactor {
    /// A proactor on the backend `RINGLOOP_BACKEND` names, else io_uring when the kernel
    /// allows it, else epoll.
    ///
    /// # Errors
    /// See [`Builder::build`].
    pub fn new() -> Result<Proactor, SetupError> {
        Builder::default().build()
    }

    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.driver.kind()
    }

    /// The kernel features in use.
    pub fn features(&self) -> &Features {
        self.driver.features()
    }

    /// A handle that wakes this proactor from any thread.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Starts `op`; its completions will carry `token`. Never fails and never blocks: a full
    /// submission queue holds the op in user space until there is room.
    pub fn push(&mut self, op: impl Into<Op>, token: u64) -> OpId {
        self.push_op(op.into(), token, false)
    }

    /// Starts a send or write whose full success is not reported: when the kernel has sent
    /// every byte, the op waits in the table, finished, until [`reclaim`](Proactor::reclaim)
    /// hands it back. A failure or a short transfer is reported as usual, as is the
    /// completion of an op its owner reclaimed while it was still in flight (reclaiming
    /// makes it loud). This spares the per-message dispatch of send completions their owner
    /// has no use for until it writes again.
    ///
    /// Other ops are pushed as with [`push`](Proactor::push). A finished quiet op cannot be
    /// cancelled (nothing is in flight): reclaim it; [`detach`](Proactor::detach) frees it.
    pub fn push_quiet(&mut self, op: impl Into<Op>, token: u64) -> OpId {
        let op = op.into();
        let quiet = matches!(op, Op::Send(_) | Op::Write(_));
        self.push_op(op, token, quiet)
    }

    /// Takes back quiet op `id`: its final completion if it finished (what
    /// [`pop`](Proactor::pop) would have returned), else `None` — and then, if it is still
    /// in flight, it is no longer quiet, so its completion will be popped as usual.
    pub fn reclaim(&mut self, id: OpId) -> Option<Completion> {
        let entry = self.table.get_mut(id)?;
        if entry.state != OpState::Finished {
            entry.quiet = false;
            return None;
        }
        let (token, result) = (entry.token, entry.result);
        let op = self.finish(id)?;
        Some(Completion {
            token,
            id,
            result: Completion::result_from_raw(result),
            more: false,
            op: Some(op),
            buf: None,
            yields_fd: false,
        })
    }

    /// [`reclaim`](Proactor::reclaim) for a quiet send or write, when all its owner wants
    /// back is the buffer: `Some(buf)` if it finished (it sent all of `buf`), `None` if it
    /// is still in flight (it is loud from now on) or not a quiet op that finished.
    #[inline]
    pub fn reclaim_buf(&mut self, id: OpId) -> Option<Vec<u8>> {
        let entry = self.table.get_mut(id)?;
        if entry.state != OpState::Finished {
            entry.quiet = false;
            return None;
        }
        match self.finish(id) {
            Some(Op::Send(send)) => Some(send.buf),
            Some(Op::Write(write)) => Some(write.buf),
            _ => None,
        }
    }

    /// Sends again with finished quiet op `id`: the op and `buf` trade buffers, and the same
    /// op, with the same id, starts again, quiet, sending from the start what `buf` held.
    /// `true` then, with the op's old buffer, whose bytes were all sent, in `buf`. This is
    /// [`reclaim_buf`](Proactor::reclaim_buf) plus [`push_quiet`](Proactor::push_quiet)
    /// without giving up the table entry (or moving a `Vec` in and out).
    ///
    /// `false`, with `buf` untouched, if `id` is not a finished quiet send or write to the
    /// current position; an op still in flight becomes loud then, as with `reclaim`.
    #[inline(always)]
    pub fn resend(&mut self, id: OpId, buf: &mut Vec<u8>) -> bool {
        let Some(entry) = self.table.get_mut(id) else {
            return false;
        };
        if entry.state != OpState::Finished {
            entry.quiet = false;
            return false;
        }
        // A send, the per-message case, on its own: anything else is out of line, so that
        // the compiler does not merge the cases into code that picks fields by variant.
        let Op::Send(send) = &mut entry.op else {
            return self.resend_other(id, buf);
        };
        swap_buf(&mut send.buf, &mut send.start, buf);
        // `result` is left as it is: it is read only once the op is `Finished` again, which
        // sets it.
        entry.state = OpState::Active;
        if !self.driver.restart_send(id, send, &mut entry.stage) {
            self.driver.restart(&mut self.table, id);
        }
        true
    }

    /// [`resend`](Proactor::resend) of a finished quiet op that is not a send.
    #[inline(never)]
    fn resend_other(&mut self, id: OpId, buf: &mut Vec<u8>) -> bool {
        let Some(entry) = self.table.get_mut(id) else {
            return false;
        };
        let Op::Write(write) = &mut entry.op else {
            return false;
        };
        if write.offset.is_some() {
            return false;
        }
        swap_buf(&mut write.buf, &mut write.start, buf);
        entry.state = OpState::Active;
        self.driver.restart(&mut self.table, id);
        true
    }

    #[inline]
    fn push_op(&mut self, mut op: Op, token: u64, quiet: bool) -> OpId {
        if let Op::Close(close) = &op {
            self.driver.forget_fd(close.fd);
        }
        op.reserve_scratch();
        audit::lend(&op);
        let id = self.table.insert_with(op, token, quiet);
        self.driver.push(&mut self.table, id);
        id
    }

    /// Asks for op `id` to finish early. Its final completion is still delivered: with
    /// `ECANCELED`, or with its real result if it finished first. Returns `false` when the op
    /// already completed or was already cancelled or detached.
    pub fn cancel(&mut self, id: OpId) -> bool {
        match self.table.get_mut(id) {
            Some(entry) if entry.state == OpState::Active => {
                entry.state = OpState::Cancelling;
                self.driver.cancel(&mut self.table, id);
                true
            }
            _ => false,
        }
    }

    /// Gives op `id` up: it is cancelled and none of its completions will be delivered. Its
    /// buffers are freed, and an fd it produced (a late accept) is closed, once the kernel
    /// has finished with it.
    pub fn detach(&mut self, id: OpId) {
        if let Some(entry) = self.table.get_mut(id) {
            let was = std::mem::replace(&mut entry.state, OpState::Detached);
            match was {
                OpState::Active => self.driver.cancel(&mut self.table, id),
                // Done in the kernel already: nothing more will come for it.
                OpState::Finished => drop(self.finish(id)),
                OpState::Cancelling | OpState::Detached => {}
            }
        }
    }

    /// Closes `fd` now, after dropping the backend's registration of it. The caller must have
    /// no op in flight on `fd`.
    ///
    /// # Errors
    /// What `close(2)` reports (the fd is released either way).
    pub fn close_fd(&mut self, fd: RawFd) -> io::Result<()> {
        self.driver.forget_fd(fd);
        // SAFETY: the caller hands over ownership of `fd` and has no op in flight on it.
        if unsafe { libc::close(fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Submits everything pushed and waits until a completion is ready, `timeout` passes, or
    /// a [`Waker`] fires. `Some(Duration::ZERO)` never blocks; `None` waits without limit.
    ///
    /// A wake-up is consumed by the next `poll`: after it returns, handle whatever the waking
    /// threads queued.
    ///
    /// # Errors
    /// Only failures of the wait itself (not of ops, which complete with their error).
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = match timeout {
            Some(Duration::ZERO) => Some(Duration::ZERO),
            other if self.waker.prepare_sleep() => other,
            _ => Some(Duration::ZERO),
        };
        let result = self.driver.poll(&mut self.table, timeout);
        self.waker.after_wait();
        result
    }

    /// The next completion, if one is ready.
    pub fn pop(&mut self) -> Option<Completion> {
        let mut completion = Completion::default();
        self.pop_into(&mut completion).then_some(completion)
    }

    /// [`pop`](Proactor::pop) into `completion`: what it held is dropped first (as by
    /// [`Completion::clear`]); then the next completion, if one is ready, is written into
    /// it (`true`), else it is left empty (`false`).
    ///
    /// For a loop that pops many: one completion is filled in place each time, where `pop`
    /// builds each and moves it out (it is large, and this is the per-message path).
    #[inline]
    pub fn pop_into(&mut self, completion: &mut Completion) -> bool {
        // Emptied here, not by the caller, so that filling it (`Completion::set_chunk`,
        // `Completion::set`) is stores alone, without drop checks.
        completion.clear();
        loop {
            match self.driver.pop(&mut self.table, completion) {
                Popped::Routed => {
                    debug_assert!(
                        completion.more && completion.result.is_ok(),
                        "only successful `more` completions are routed"
                    );
                    return true;
                }
                Popped::Raw => {
                    let Some(raw) = self.driver.take_raw() else {
                        return false;
                    };
                    if self.deliver(raw, completion) {
                        return true;
                    }
                }
                Popped::Empty => return false,
            }
        }
    }

    /// How many ops are in flight, counting cancelled and detached ones not yet finished
    /// and quiet ones not yet reclaimed (but not the proactor's own wake-up read).
    pub fn in_flight(&self) -> usize {
        self.table.len() - usize::from(self.wake_op != OpId::NONE)
    }

    /// Routes one raw completion that the backend did not route: into `out` for the caller
    /// (`true`), or consumed here (quiet ops, wake-up reads and detached ops).
    #[inline]
    fn deliver(&mut self, raw: RawCompletion, out: &mut Completion) -> bool {
        let RawCompletion {
            id,
            result,
            more,
            buf,
        } = raw;
        let Some(entry) = self.table.get_mut(id) else {
            return false;
        };
        if !more && entry.quiet_and_active() && entry.op.done_by(result) {
            // A quiet op that fully succeeded: kept, unreported, for `reclaim`.
            entry.state = OpState::Finished;
            entry.result = result;
            return false;
        }
        let (token, state, yields_fd) = (entry.token, entry.state, entry.op.yields_fd());
        if id == self.wake_op {
            if !more {
                self.finish(id);
                self.wake_op = OpId::NONE;
                self.arm_wake_read();
            }
            return false;
        }
        if state == OpState::Detached {
            drop(buf);
            if !more {
                self.finish(id);
            }
            if result >= 0 && yields_fd {
                // SAFETY: a detached accept's new fd belongs to nobody else; closing it
                // keeps it from leaking.
                unsafe { libc::close(result) };
            }
            return false;
        }
        if more {
            match buf {
                // A received chunk (only receives carry one; they yield no fd), the
                // per-message case: written as the io_uring driver writes its own.
                Some(buf) if result >= 0 => {
                    debug_assert!(!yields_fd);
                    out.set_chunk(token, id, result as u32, buf);
                }
                buf => out.set(token, id, result, more, None, buf, yields_fd),
            }
            return true;
        }
        let Some(mut op) = self.finish(id) else {
            return false;
        };
        let result = match (&op, result) {
            (Op::Timeout(_), r) if r == -libc::ETIME => 0,
            (_, r) => r,
        };
        if result >= 0 {
            op.complete_read(result as usize);
        }
        out.set(token, id, result, more, Some(op), buf, yields_fd);
        true
    }

    /// Removes a finished op from the table, returning its memory to the caller.
    fn finish(&mut self, id: OpId) -> Option<Op> {
        let entry = self.table.remove(id)?;
        audit::reclaim(&entry.op);
        Some(entry.op)
    }

    /// Keeps one read outstanding on the wake-up eventfd.
    fn arm_wake_read(&mut self) {
        let read = op::Read::new(self.waker.fd(), Vec::with_capacity(8));
        self.wake_op = self.push(read, WAKE_TOKEN);
    }
}

/// Swaps `place`, the buffer of a finished send or write, with `buf`, to be sent from the
/// start (`start` is reset); `buf` gets the old buffer.
#[inline]
fn swap_buf(place: &mut Vec<u8>, start: &mut usize, buf: &mut Vec<u8>) {
    audit::reclaim_vec(place);
    *start = 0;
    std::mem::swap(place, buf);
    audit::lend_vec(place);
}

impl Drop for Proactor {
    fn drop(&mut self) {
        self.wake_op = OpId::NONE;
        for id in self.table.ids() {
            self.detach(id);
        }
        let started = Instant::now();
        while !self.table.is_empty() {
            if started.elapsed() > DRAIN_LIMIT {
                tracing::error!(
                    ops = self.table.len(),
                    "ops still in the kernel after cancel; leaking their memory rather than freeing it early"
                );
                std::mem::forget(std::mem::take(&mut self.table));
                return;
            }
            if let Err(err) = self
                .driver
                .poll(&mut self.table, Some(Duration::from_millis(100)))
            {
                tracing::error!("waiting for cancelled ops failed: {err}");
            }
            while self.pop().is_some() {}
        }
    }
}

impl std::fmt::Debug for Proactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proactor")
            .field("backend", &self.driver.kind())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}
