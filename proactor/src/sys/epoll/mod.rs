//! The epoll backend: completions emulated over edge-triggered readiness.
//!
//! It implements the [backend contract](crate::sys) so that every op behaves as on io_uring:
//! the same results (`-errno` or the value the syscall returned), exactly one final
//! completion per op, `more` for multishot ops.
//!
//! # How an op runs
//! - **Try first.** At push, the op's syscall is tried at once ([`perform`]); a recv, send,
//!   accept or connect that can finish now completes now and its completion is queued.
//!   Regular files (which epoll cannot watch) always finish here.
//! - **Park on `EAGAIN`.** Otherwise the op waits in its fd's read-side or write-side FIFO
//!   ([`registry`]); the fd is added to the epoll set once, edge-triggered, on its first
//!   wait, and never again modified: no `epoll_ctl` per op. An op pushed while an older op
//!   of the same side is parked queues behind it untried, so order per fd is kept.
//! - **Run on readiness.** Each event runs the fd's parked ops in order until one says
//!   `EAGAIN` (edge-triggered: the next edge comes after that).
//! - **No syscall known to fail.** Once a side of an fd said `EAGAIN`, or a read or write on
//!   a byte stream moved less than asked (its buffer is now empty or full, as tokio also
//!   infers), new ops of that side park untried until the next edge; the edge is certain
//!   to come, because the state changed after the syscall that observed it. A request /
//!   response exchange then costs one recv, one send and a share of one `epoll_wait`.
//! - **Multishot.** `RecvMulti` reads until `EAGAIN` into pool buffers, and on a byte stream
//!   until a chunk shorter than its buffer (the same rule as above: the next receive would
//!   say `EAGAIN`, and the next arrival, end of stream included, raises an edge). When the
//!   pool is dry it waits a turn if this turn's queued chunks hold the buffers, else it reads
//!   into buffers of its own; `AcceptMulti` accepts until
//!   `EAGAIN`; a multishot `PollAdd` reports each readiness edge. All stay parked until end
//!   of stream, an error, or a cancel. A multishot op takes at most 32 chunks or
//!   connections per turn, then yields to the other fds and resumes at the next poll.
//! - **Timeouts** sit in a heap ([`timers`]); the wait ends no later than the next one and
//!   never before it is due ([`wait`]). **Child exits** wait on a pidfd ([`child`]).
//! - **Cancel** unparks the op and queues its `-ECANCELED` completion; an op that already
//!   finished is unaffected. **Close** forgets the fd's registration, then closes it.
//!
//! Ops are found from their slot index in a `Vec`, fds from their number in a `Vec`; parked
//! queues keep their capacity, so the steady state neither allocates nor hashes. The two ops
//! a request / response exchange makes take direct paths: a parked multishot receive runs
//! from the readiness event without an op-table lookup, and a send at push skips the
//! generic dispatch.
//!
//! # Caveats
//! Fds must be closed through the proactor (`op::Close`, `Proactor::close_fd`): an fd closed
//! behind the backend's back leaves a registration that its number's next owner inherits.
//! The backend recovers where it can do so for free or nearly: fds it receives from the
//! kernel (accepts, pidfds) drop any state their number had, and ops that begin an fd's life
//! (connect, multishot receive, accept and poll) check a registration they believe in with
//! one `epoll_ctl`. A plain read or recv on a reused number cannot be checked without a
//! syscall per op, and may wait forever.
//! Fds used with reads, writes, accepts and connects are switched to `O_NONBLOCK` when first
//! seen (sockets' sends and receives use `MSG_DONTWAIT` instead and are left alone), because
//! no syscall may sleep on the loop's thread. One consequence differs from io_uring: a
//! `Write` to a pipe that was blocking can complete short (as on any non-blocking pipe),
//! where io_uring would have waited in a worker thread until all of it was written. Callers
//! resubmit the rest (`Write::start`), as they must for sockets anyway.

mod child;
mod perform;
mod ready;
mod registry;
mod timers;
mod wait;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::buf::BufPool;
use crate::completion::{Completion, RawCompletion};
use crate::op::Op;
use crate::sys::{free_list_pool, Backend, Config, Popped};
use crate::table::{OpId, OpTable};
use crate::{BackendKind, Features};

use perform::{Progress, Sink};
use ready::ReadyQueue;
use registry::{Registry, Side};
use timers::Timers;
use wait::Waiter;

/// The most readiness events one wait takes (the rest wait for the next turn, which does
/// not block while they are pending).
///
/// Small on purpose. A turn runs every ready fd's receive, then the loop's callbacks, then
/// the sends they queued. With hundreds of fds per turn, the receives come in one long
/// burst; each frees socket buffers that the peer's CPU allocated, which the kernel hands
/// back to that CPU in batches (`skb_attempt_defer_free`), kicking it with an
/// inter-processor interrupt whenever its list reaches half of `net.core.skb_defer_max`
/// (64 by default, so 32). Bursts longer than that kick it on every turn: measured at echo
/// 1,000 × 1 KiB with 1,024 events per wait, 4 % of the server's CPU went to sending those
/// interrupts and its CPU per message was 1.17× tokio's (whose task per connection
/// interleaves each receive with its send); with 32, 0.01 % and 1.05×. The extra waits cost
/// about one syscall per 32 messages.
const EVENT_BATCH: usize = 32;

/// Where an op is while it has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Place {
    /// Not waiting: finished (completion queued) or being started.
    #[default]
    Running,
    /// In a queue of an fd.
    Parked(RawFd, Side),
    /// In the timer heap.
    Timer,
}

/// The backend's view of one op-table slot. Only ops that wait (parked, in the timer heap)
/// are tracked: an op that finishes at push never touches its slot.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The op occupying the slot, while the backend tracks it.
    id: Option<OpId>,
    place: Place,
    /// A connect was started (see `perform::connect`).
    begun: bool,
    /// The op is a multishot receive, which needs nothing from the op table but its fd
    /// (the fd it is parked on): the readiness path runs it without looking the op up.
    recv_multi: bool,
}

/// The epoll driver.
pub(crate) struct Driver {
    features: Features,
    registry: Registry,
    waiter: Waiter,
    /// Per op, indexed by the op's slot index.
    slots: Vec<Slot>,
    timers: Timers,
    /// Completions not yet popped, in the order they happened.
    ready: ReadyQueue,
    pool: BufPool,
    /// Buffer for multishot receives when the pool is dry.
    spare: Vec<u8>,
    events: Vec<libc::epoll_event>,
    /// Scratch for ops orphaned by `forget_fd`.
    orphans: Vec<OpId>,
    /// Queues whose front op yielded its turn (`Progress::Yield`) and runs again at the
    /// next poll, without waiting for an edge.
    yielded: Vec<(RawFd, Side)>,
    /// The list being run, kept to reuse its allocation.
    yielded_now: Vec<(RawFd, Side)>,
    /// `WaitId` ops holding a pidfd: while there are none, finishing an op needs no look at
    /// the op table.
    pidfds: usize,
}

impl Driver {
    /// Creates the epoll instance per `config`.
    ///
    /// # Errors
    /// What `epoll_create1` reports (`EMFILE`, `ENOMEM`).
    pub(crate) fn new(config: &Config) -> io::Result<Driver> {
        // SAFETY: plain syscall with no pointer arguments; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let waiter = Waiter::probe(epoll.as_raw_fd());
        let batch = config.entries.clamp(64, 4096) as usize;
        Ok(Driver {
            features: Features::default(),
            registry: Registry::new(epoll),
            waiter,
            slots: Vec::new(),
            timers: Timers::default(),
            ready: ReadyQueue::with_capacity(batch),
            pool: free_list_pool(config),
            spare: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENT_BATCH],
            orphans: Vec::new(),
            yielded: Vec::new(),
            yielded_now: Vec::new(),
            pidfds: 0,
        })
    }

    /// Tracks op `id`, which waits at `place`; `begun` as its attempts left it.
    fn track(&mut self, id: OpId, place: Place, begun: bool) {
        let index = id.index();
        if index >= self.slots.len() {
            self.slots.resize(index + 1, Slot::default());
        }
        self.slots[index] = Slot {
            id: Some(id),
            place,
            begun,
            recv_multi: false,
        };
    }

    /// The backend's record of `id`, if it still tracks that op.
    fn slot(&mut self, id: OpId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index())
            .filter(|slot| slot.id == Some(id))
    }

    /// Queues op `id`'s final completion and stops tracking it. A `WaitId`'s pidfd is
    /// closed here (after forgetting its registration) so its number can be reused safely.
    fn finish(&mut self, table: &mut OpTable, id: OpId, result: i32) {
        if let Some(slot) = self.slot(id) {
            *slot = Slot::default();
        }
        self.finish_untracked(table, id, result);
    }

    /// [`finish`](Self::finish) for an op the backend does not track (it never waited).
    #[inline]
    fn finish_untracked(&mut self, table: &mut OpTable, id: OpId, result: i32) {
        if self.pidfds > 0 {
            self.close_pidfd(table, id);
        }
        self.ready
            .push_back(RawCompletion::new(id, result, false, None));
    }

    /// Closes the pidfd of op `id` if it is a `WaitId` holding one.
    #[cold]
    fn close_pidfd(&mut self, table: &mut OpTable, id: OpId) {
        if let Some(Op::WaitId(wait)) = table.get_mut(id).map(|e| &mut e.op) {
            if let Some(pidfd) = wait.pidfd.take() {
                self.pidfds -= 1;
                self.drop_fd_state(pidfd.as_raw_fd(), false);
            }
        }
    }

    /// Forgets everything known about `fd` (deregistering it when asked); ops still parked
    /// on it complete with `-ECANCELED`.
    fn drop_fd_state(&mut self, fd: RawFd, deregister: bool) {
        let mut orphans = std::mem::take(&mut self.orphans);
        self.registry.forget(fd, deregister, &mut orphans);
        for id in orphans.drain(..) {
            tracing::warn!(
                fd,
                "fd closed with an op still parked on it; the op completes with ECANCELED"
            );
            if let Some(slot) = self.slot(id) {
                *slot = Slot::default();
            }
            self.ready
                .push_back(RawCompletion::new(id, -libc::ECANCELED, false, None));
        }
        self.orphans = orphans;
    }

    /// The kernel just handed out `fd` (an accept, a pidfd): whatever the backend remembers
    /// about that number belongs to a file closed without telling it, so drop it.
    fn fresh_fd(&mut self, fd: RawFd) {
        if self
            .registry
            .get(fd)
            .is_some_and(|s| s.registered || s.nonblocking || s.has_parked())
        {
            tracing::debug!(
                fd,
                "new fd reuses a number closed behind the backend's back"
            );
            self.drop_fd_state(fd, false);
        }
    }

    /// Tries op `id` once; `None` if it is gone from the table. `begun` is the op's
    /// connect-in-progress flag (see `Slot::begun`). `short_drains`: a short read proves the
    /// fd drained (see `FdState::short_means_drained`), so a multishot receive stops there
    /// instead of paying for a receive that says `EAGAIN`.
    fn attempt(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        begun: &mut bool,
        short_drains: bool,
    ) -> Option<Progress> {
        let entry = table.get_mut(id)?;
        Some(self.attempt_op(&mut entry.op, id, begun, short_drains))
    }

    /// [`attempt`](Self::attempt) on the op itself.
    fn attempt_op(
        &mut self,
        op: &mut Op,
        id: OpId,
        begun: &mut bool,
        short_drains: bool,
    ) -> Progress {
        let before = self.ready.len();
        let mut yields_fd = false;
        let sink = Sink {
            id,
            pool: &self.pool,
            spare: &mut self.spare,
            ready: &mut self.ready,
            short_drains,
            yields_fd: &mut yields_fd,
        };
        let progress = perform::attempt(op, begun, sink);
        if yields_fd {
            for at in before..self.ready.len() {
                if let Some(fd) = self.ready.get(at).map(|done| done.result) {
                    self.fresh_fd(fd);
                }
            }
            if let Progress::Done(fd) | Progress::Drained(fd) = progress {
                if fd >= 0 {
                    self.fresh_fd(fd);
                }
            }
        }
        progress
    }

    /// Parks op `id` at the back of `fd`'s `side` queue, registering the fd on its first
    /// wait. An fd epoll cannot watch fails the op with the registration's error.
    fn park(&mut self, table: &mut OpTable, id: OpId, fd: RawFd, side: Side, begun: bool) {
        let registered = self.registry.get(fd).is_some_and(|s| s.registered);
        if !registered {
            if let Err(err) = self.registry.register(fd) {
                tracing::warn!(
                    fd,
                    "cannot wait for fd readiness (epoll_ctl: {err}); failing the op"
                );
                let errno = err.raw_os_error().unwrap_or(libc::EIO);
                self.finish(table, id, -errno);
                return;
            }
        }
        self.registry.state(fd).queue(side).push_back(id);
        self.track(id, Place::Parked(fd, side), begun);
        if let Some(Op::RecvMulti(_)) = table.get(id).map(|e| &e.op) {
            if let Some(slot) = self.slot(id) {
                slot.recv_multi = true;
            }
        }
    }

    /// Starts `op` (`id`), which waits on `fd`'s `side`: tried now unless an older op of that
    /// side is parked (then it queues behind untried), parked on `EAGAIN`.
    ///
    /// An fd whose side said `EAGAIN` with no edge since cannot have become ready without
    /// an edge being queued, so the op parks untried and that edge runs it: one failing
    /// syscall saved per op in request/response traffic.
    ///
    /// This half needs only the op (which the caller has already looked up); `None` means
    /// "park untried", else what the attempt did and its connect flag. [`Self::settle`] does
    /// the rest.
    fn try_start(
        &mut self,
        op: &mut Op,
        id: OpId,
        fd: RawFd,
        side: Side,
        nonblock: bool,
    ) -> Option<(Progress, bool)> {
        let short_drains = self.may_try(fd, side, nonblock)?;
        let mut begun = false;
        let progress = self.attempt_op(op, id, &mut begun, short_drains);
        Some((progress, begun))
    }

    /// Whether a new op on `fd`'s `side` may be tried now (`None`: it must queue untried),
    /// and if so whether a short transfer would prove the side drained. Makes the fd
    /// non-blocking first when the op's syscall needs it (`nonblock`).
    #[inline]
    fn may_try(&mut self, fd: RawFd, side: Side, nonblock: bool) -> Option<bool> {
        let (wait, short_drains, nonblocking) = match self.registry.get(fd) {
            Some(state) => (
                state.blocked(side) || !state.queue(side).is_empty(),
                state.short_means_drained(side),
                state.nonblocking,
            ),
            None => (false, false, false),
        };
        if wait {
            return None;
        }
        if nonblock && !nonblocking {
            self.registry.ensure_nonblocking(fd);
        }
        Some(short_drains)
    }

    /// Completes, parks or requeues an op [`Self::try_start`] started.
    fn settle(
        &mut self,
        table: &mut OpTable,
        id: OpId,
        fd: RawFd,
        side: Side,
        started: Option<(Progress, bool)>,
    ) {
        match started {
            None => self.park(table, id, fd, side, false),
            Some((Progress::Done(result), _)) => self.finish_untracked(table, id, result),
            Some((Progress::Drained(result), _)) => {
                if let Some(state) = self.registry.get(fd) {
                    state.short_transfer(side);
                }
                self.finish_untracked(table, id, result);
            }
            Some((Progress::Again, begun)) => {
                self.park(table, id, fd, side, begun);
                if let Some(state) = self.registry.get(fd).filter(|s| s.registered) {
                    state.set_blocked(side, true);
                }
            }
            Some((Progress::Yield, begun)) => {
                self.park(table, id, fd, side, begun);
                self.yielded.push((fd, side));
            }
        }
    }

    /// Starts a readiness poll: reported at once when the fd is ready (a multishot poll then
    /// stays parked), else parked until an event matches.
    fn start_poll(&mut self, table: &mut OpTable, id: OpId, fd: RawFd, events: u32, multi: bool) {
        if fd < 0 {
            self.finish(table, id, -libc::EBADF);
            return;
        }
        let registered = self.registry.get(fd).is_some_and(|s| s.registered);
        let now = if registered {
            // Edges already consumed do not come again: look at the current state.
            poll_now(fd, events)
        } else {
            match self.registry.register(fd) {
                // Adding reports the current readiness as an event: no need to look.
                Ok(()) => Ok(0),
                // Not pollable (a regular file): always ready.
                Err(err) if err.raw_os_error() == Some(libc::EPERM) => poll_now(fd, events),
                Err(err) => Err(-err.raw_os_error().unwrap_or(libc::EIO)),
            }
        };
        match now {
            Err(errno) => self.finish(table, id, errno),
            Ok(revents) if revents != 0 && !multi => self.finish(table, id, revents as i32),
            Ok(revents) => {
                if revents != 0 {
                    self.ready
                        .push_back(RawCompletion::new(id, revents as i32, true, None));
                }
                self.registry.state(fd).polls.push_back(id);
                self.track(id, Place::Parked(fd, Side::Poll), false);
            }
        }
    }

    /// Runs `fd`'s parked `side` ops in order until one must wait again.
    fn run_queue(&mut self, table: &mut OpTable, fd: RawFd, side: Side) {
        loop {
            let Some(state) = self.registry.get(fd) else {
                return;
            };
            let Some(&id) = state.queue(side).front() else {
                return;
            };
            let short_drains = state.short_means_drained(side);
            // A parked op is tracked, so its slot is its own (no need to compare ids).
            let slot = self.slots.get(id.index()).copied().unwrap_or_default();
            let mut begun = slot.begun;
            let progress = if slot.recv_multi {
                // Parked ops stay in the table until their final completion, which only
                // the backend produces: no lookup needed to know the op is there.
                let sink = Sink {
                    id,
                    pool: &self.pool,
                    spare: &mut self.spare,
                    ready: &mut self.ready,
                    short_drains,
                    yields_fd: &mut false,
                };
                Some(perform::recv_multi(fd, sink))
            } else {
                self.attempt(table, id, &mut begun, short_drains)
            };
            let Some(state) = self.registry.get(fd) else {
                return;
            };
            match progress {
                Some(Progress::Again) => {
                    state.set_blocked(side, true);
                    if begun {
                        if let Some(slot) = self.slot(id) {
                            slot.begun = true;
                        }
                    }
                    return;
                }
                Some(Progress::Yield) => {
                    self.yielded.push((fd, side));
                    return;
                }
                Some(Progress::Done(result)) => {
                    state.queue(side).pop_front();
                    self.finish(table, id, result);
                }
                Some(Progress::Drained(result)) => {
                    state.queue(side).pop_front();
                    state.short_transfer(side);
                    self.finish(table, id, result);
                }
                None => {
                    state.queue(side).pop_front();
                }
            }
        }
    }

    /// Completes `fd`'s parked polls that `revents` satisfies.
    fn run_polls(&mut self, table: &mut OpTable, fd: RawFd, revents: u32) {
        let mut revents = revents;
        if revents & libc::EPOLLIN as u32 != 0 {
            revents |= libc::POLLRDNORM as u32;
        }
        if revents & libc::EPOLLOUT as u32 != 0 {
            revents |= libc::POLLWRNORM as u32;
        }
        let always = (libc::POLLERR | libc::POLLHUP) as u32;
        let count = self.registry.get(fd).map_or(0, |s| s.polls.len());
        for _ in 0..count {
            let Some(id) = self.registry.state(fd).polls.pop_front() else {
                return;
            };
            let Some(Op::PollAdd(poll)) = table.get(id).map(|e| &e.op) else {
                continue;
            };
            let hit = revents & (poll.events | always);
            if hit == 0 {
                self.registry.state(fd).polls.push_back(id);
            } else if poll.multishot {
                self.ready
                    .push_back(RawCompletion::new(id, hit as i32, true, None));
                self.registry.state(fd).polls.push_back(id);
            } else {
                self.finish(table, id, hit as i32);
            }
        }
    }

    /// Handles one readiness event.
    fn dispatch(&mut self, table: &mut OpTable, fd: RawFd, revents: u32) {
        const READ: u32 =
            (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const WRITE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const READ_CLOSED: u32 =
            (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
        const WRITE_CLOSED: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let Some(state) = self.registry.get(fd) else {
            return;
        };
        // Readiness the edge announces; sticky conditions stop short transfers from being
        // taken as "drained" (no further edge would come for what is left).
        state.read_blocked &= revents & READ == 0;
        state.write_blocked &= revents & WRITE == 0;
        state.read_closed |= revents & READ_CLOSED != 0;
        state.write_closed |= revents & WRITE_CLOSED != 0;
        // Every event of a connected socket says "writable" too: look at the queues before
        // running them. (Running the readers parks no writer: ops are pushed by the
        // proactor's caller, never during a poll.)
        let readers = revents & READ != 0 && !state.readers.is_empty();
        let writers = revents & WRITE != 0 && !state.writers.is_empty();
        if readers {
            self.run_queue(table, fd, Side::Read);
        }
        if writers {
            self.run_queue(table, fd, Side::Write);
        }
        if self.registry.get(fd).is_some_and(|s| !s.polls.is_empty()) {
            self.run_polls(table, fd, revents);
        }
    }

    /// Gives the multishot ops that yielded their turn another one.
    fn run_yielded(&mut self, table: &mut OpTable) {
        if self.yielded.is_empty() {
            return;
        }
        let mut now = std::mem::take(&mut self.yielded_now);
        std::mem::swap(&mut now, &mut self.yielded);
        for &(fd, side) in &now {
            self.run_queue(table, fd, side);
        }
        now.clear();
        self.yielded_now = now;
    }

    /// Completes every timer that is due.
    fn expire_timers(&mut self, table: &mut OpTable) {
        let now = Instant::now();
        while let Some(id) = self.timers.pop_due(now) {
            if self.slot(id).is_some_and(|s| s.place == Place::Timer) {
                self.finish(table, id, -libc::ETIME);
            } else {
                self.timers.stale_seen();
            }
        }
    }
}

/// The fd's ready `events` now (`poll(2)` without waiting): `Ok(revents)` or `Err(-errno)`.
fn poll_now(fd: RawFd, events: u32) -> Result<u32, i32> {
    let mut pfd = libc::pollfd {
        fd,
        events: events as libc::c_short,
        revents: 0,
    };
    // SAFETY: `pfd` is one live `pollfd` for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc < 0 {
        return Err(-io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    let revents = u32::from(pfd.revents as u16);
    if revents & libc::POLLNVAL as u32 != 0 {
        return Err(-libc::EBADF);
    }
    Ok(revents)
}

impl Backend for Driver {
    fn push(&mut self, table: &mut OpTable, id: OpId) {
        let Some(entry) = table.get_mut(id) else {
            return;
        };
        let op = &mut entry.op;
        match op {
            Op::Timeout(timeout) => {
                // A deadline past `Instant`'s range never comes; the op waits for a cancel.
                if let Some(deadline) = Instant::now().checked_add(timeout.duration) {
                    self.timers.insert(deadline, id);
                }
                self.track(id, Place::Timer, false);
            }
            Op::PollAdd(poll) => {
                let (fd, events, multi) = (poll.fd, poll.events, poll.multishot);
                if multi && self.registry.registration_is_stale(fd) {
                    self.drop_fd_state(fd, false);
                }
                self.start_poll(table, id, fd, events, multi);
            }
            Op::WaitId(wait) => match child::open(wait.pid) {
                Ok(pidfd) => {
                    let fd = pidfd.as_raw_fd();
                    self.fresh_fd(fd);
                    wait.pidfd = Some(pidfd);
                    self.pidfds += 1;
                    let started = self.try_start(op, id, fd, Side::Read, false);
                    self.settle(table, id, fd, Side::Read, started);
                }
                Err(errno) => self.finish(table, id, errno),
            },
            // Every transport write: tried straight away, without the generic dispatch.
            Op::Send(send) if send.fd >= 0 => {
                let fd = send.fd;
                let started = self
                    .may_try(fd, Side::Write, false)
                    .map(|_| (perform::send(send), false));
                match started {
                    Some((Progress::Done(result), _)) => self.finish_untracked(table, id, result),
                    other => self.settle(table, id, fd, Side::Write, other),
                }
            }
            _ => match perform::fd_wait(op) {
                Some(wait) => {
                    if wait.begins_life && self.registry.registration_is_stale(wait.fd) {
                        tracing::debug!(
                            fd = wait.fd,
                            "fd was closed behind the backend's back; re-registering"
                        );
                        self.drop_fd_state(wait.fd, false);
                    }
                    let started = self.try_start(op, id, wait.fd, wait.side, wait.nonblock);
                    self.settle(table, id, wait.fd, wait.side, started);
                }
                // Synchronous ops (nop, close, shutdown) and ops on invalid fds: the
                // syscall's own answer is the result.
                None => {
                    let result = match self.attempt_op(op, id, &mut false, false) {
                        Progress::Done(result) | Progress::Drained(result) => result,
                        Progress::Again | Progress::Yield => -libc::EAGAIN,
                    };
                    self.finish_untracked(table, id, result);
                }
            },
        }
    }

    fn cancel(&mut self, table: &mut OpTable, id: OpId) {
        let Some(place) = self.slot(id).map(|slot| slot.place) else {
            return;
        };
        match place {
            Place::Running => return,
            Place::Timer => {
                if let Some(slot) = self.slot(id) {
                    slot.place = Place::Running;
                }
                let slots = &self.slots;
                self.timers.cancelled(|live| {
                    slots
                        .get(live.index())
                        .is_some_and(|s| s.id == Some(live) && s.place == Place::Timer)
                });
            }
            Place::Parked(fd, side) => {
                let queue = self.registry.state(fd).queue(side);
                if let Some(at) = queue.iter().position(|&parked| parked == id) {
                    queue.remove(at);
                }
            }
        }
        self.finish(table, id, -libc::ECANCELED);
    }

    fn poll(&mut self, table: &mut OpTable, timeout: Option<Duration>) -> io::Result<()> {
        self.run_yielded(table);
        // Completions already queued: only collect what is ready, never block.
        let immediate = !self.ready.is_empty() || timeout == Some(Duration::ZERO);
        let deadline = match timeout {
            _ if immediate => None,
            // Beyond `Instant`'s range is no limit at all.
            Some(timeout) => Instant::now().checked_add(timeout),
            None => None,
        };
        loop {
            let wait = if immediate {
                Some(Duration::ZERO)
            } else {
                let wake_at = match (deadline, self.timers.next_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                wake_at.map(|at| at.saturating_duration_since(Instant::now()))
            };
            let epoll = self.registry.epoll_fd();
            // A signal interrupting the wait (EINTR) is a normal return.
            let (n, interrupted) = match self.waiter.wait(epoll, &mut self.events, wait) {
                Ok(n) => (n, false),
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => (0, true),
                Err(err) => return Err(err),
            };
            for i in 0..n {
                let event = self.events[i];
                let (fd, revents) = (event.u64 as RawFd, event.events);
                self.dispatch(table, fd, revents);
            }
            if self.timers.next_deadline().is_some() {
                self.expire_timers(table);
            }
            if immediate
                || interrupted
                || !self.ready.is_empty()
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Ok(());
            }
            // Woken by events that completed nothing, or by a timer that is stale or (with
            // millisecond rounding) not quite due: wait out the rest.
        }
    }

    #[inline]
    fn pop(&mut self, _table: &mut OpTable, _out: &mut Completion) -> Popped {
        // Whether one is queued is `take_raw`'s to tell (it tests anyway): not tested
        // twice per completion.
        Popped::Raw
    }

    #[inline]
    fn take_raw(&mut self) -> Option<RawCompletion> {
        self.ready.pop_front()
    }

    fn forget_fd(&mut self, fd: RawFd) {
        self.drop_fd_state(fd, true);
    }

    fn features(&self) -> &Features {
        &self.features
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Epoll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op;
    use std::os::unix::net::UnixStream;

    fn driver() -> Driver {
        let config = Config {
            entries: 64,
            recv_buffers: 4,
            recv_buffer_size: 64,
            wake_fd: -1,
        };
        Driver::new(&config).expect("epoll driver")
    }

    fn drain(driver: &mut Driver, table: &mut OpTable) -> Vec<(OpId, i32, bool)> {
        let mut out = Vec::new();
        while let Some(c) = crate::sys::pop_raw(driver, table) {
            if !c.more {
                table.remove(c.id);
            }
            out.push((c.id, c.result, c.more));
        }
        out
    }

    #[test]
    fn a_cancel_after_completion_adds_no_second_completion() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let id = table.insert(op::Nop.into(), 0);
        d.push(&mut table, id);
        d.cancel(&mut table, id);
        assert_eq!(drain(&mut d, &mut table), [(id, 0, false)]);
    }

    #[test]
    fn forgetting_an_fd_cancels_what_is_parked_on_it() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let recv = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 0);
        let poll = table.insert(op::PollAdd::new(fd, libc::POLLIN as u32).into(), 1);
        d.push(&mut table, recv);
        d.push(&mut table, poll);
        assert!(drain(&mut d, &mut table).is_empty(), "both parked");
        d.forget_fd(fd);
        let done = drain(&mut d, &mut table);
        assert_eq!(
            done,
            [
                (recv, -libc::ECANCELED, false),
                (poll, -libc::ECANCELED, false)
            ]
        );
        // The slots are free: a cancel now is a no-op.
        d.cancel(&mut table, recv);
        assert!(drain(&mut d, &mut table).is_empty());
        assert!(d
            .registry
            .get(fd)
            .is_some_and(|s| !s.registered && !s.has_parked()));
    }

    #[test]
    fn a_read_behind_a_parked_read_is_not_tried_until_its_turn() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let first = table.insert(op::Recv::new(fd, Vec::with_capacity(2)).into(), 0);
        d.push(&mut table, first);
        // Data arrives before the second recv is pushed, but no event was processed yet:
        // the second must queue behind the first rather than take the data.
        std::io::Write::write_all(&mut b, b"12").unwrap();
        let second = table.insert(op::Recv::new(fd, Vec::with_capacity(2)).into(), 1);
        d.push(&mut table, second);
        assert!(drain(&mut d, &mut table).is_empty());
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table)[0], (first, 2, false));
    }

    #[test]
    fn after_eagain_a_new_op_waits_for_the_edge_instead_of_trying() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let first = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 0);
        d.push(&mut table, first);
        d.cancel(&mut table, first);
        assert_eq!(
            drain(&mut d, &mut table),
            [(first, -libc::ECANCELED, false)]
        );
        std::io::Write::write_all(&mut b, b"late").unwrap();
        // The data is there, but the fd said EAGAIN and its edge is still queued in epoll:
        // the recv parks untried, and the edge completes it.
        let second = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 1);
        d.push(&mut table, second);
        assert!(drain(&mut d, &mut table).is_empty());
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(second, 4, false)]);
        // That read was short on a stream socket: drained, so the next recv waits for the
        // edge of new data too.
        assert!(d
            .registry
            .get(fd)
            .is_some_and(|s| s.stream && s.read_blocked));
        std::io::Write::write_all(&mut b, b"now").unwrap();
        let third = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 2);
        d.push(&mut table, third);
        assert!(drain(&mut d, &mut table).is_empty());
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(third, 3, false)]);
        // A full read says nothing about what is left: the next recv tries at once.
        std::io::Write::write_all(&mut b, b"12345678rest").unwrap();
        // Consume the data's edge (nothing is parked to complete).
        d.poll(&mut table, Some(Duration::from_millis(20))).unwrap();
        let fourth = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 3);
        d.push(&mut table, fourth);
        assert_eq!(drain(&mut d, &mut table), [(fourth, 8, false)]);
        let fifth = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 4);
        d.push(&mut table, fifth);
        assert_eq!(drain(&mut d, &mut table), [(fifth, 4, false)]);
    }

    /// Pushes a recv on `fd` and completes it, polling if it parks.
    fn recv_now_or_after_poll(d: &mut Driver, table: &mut OpTable, fd: RawFd) -> i32 {
        let id = table.insert(op::Recv::new(fd, Vec::with_capacity(64)).into(), 0);
        d.push(table, id);
        let mut done = drain(d, table);
        if done.is_empty() {
            d.poll(table, Some(Duration::from_secs(5))).unwrap();
            done = drain(d, table);
        }
        assert_eq!(done.len(), 1, "the recv completed");
        done[0].1
    }

    #[test]
    fn short_reads_on_datagram_sockets_do_not_hide_queued_datagrams() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = b.as_raw_fd();
        // Register the socket (first recv parks), then queue three datagrams.
        let first = table.insert(op::Recv::new(fd, Vec::with_capacity(64)).into(), 0);
        d.push(&mut table, first);
        for msg in [&b"one"[..], b"two", b"three"] {
            a.send_to(msg, b.local_addr().unwrap()).unwrap();
        }
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(first, 3, false)]);
        assert!(d
            .registry
            .get(fd)
            .is_some_and(|s| !s.stream && !s.read_blocked));
        // No new edge will come for the two queued datagrams: they must be read at once.
        assert_eq!(recv_now_or_after_poll(&mut d, &mut table, fd), 3);
        let id = table.insert(op::Recv::new(fd, Vec::with_capacity(64)).into(), 0);
        d.push(&mut table, id);
        assert_eq!(drain(&mut d, &mut table), [(id, 5, false)], "read at push");
    }

    #[test]
    fn end_of_stream_after_a_short_read_is_still_reported() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let first = table.insert(op::Recv::new(fd, Vec::with_capacity(64)).into(), 0);
        d.push(&mut table, first);
        // Data and end of stream arrive together; one edge announces both.
        std::io::Write::write_all(&mut b, b"bye").unwrap();
        drop(b);
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(first, 3, false)]);
        assert_eq!(recv_now_or_after_poll(&mut d, &mut table, fd), 0);
    }

    #[test]
    fn a_short_peek_leaves_the_data_to_be_read_at_once() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let first = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 0);
        d.push(&mut table, first);
        std::io::Write::write_all(&mut b, b"peek").unwrap();
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(first, 4, false)]);
        std::io::Write::write_all(&mut b, b"data").unwrap();
        // Consume the data's edge (nothing is parked to complete).
        d.poll(&mut table, Some(Duration::from_millis(20))).unwrap();
        let mut peek = op::Recv::new(fd, Vec::with_capacity(64));
        peek.flags = libc::MSG_PEEK;
        let peek = table.insert(peek.into(), 1);
        d.push(&mut table, peek);
        assert_eq!(drain(&mut d, &mut table), [(peek, 4, false)]);
        let read = table.insert(op::Recv::new(fd, Vec::with_capacity(64)).into(), 2);
        d.push(&mut table, read);
        assert_eq!(
            drain(&mut d, &mut table),
            [(read, 4, false)],
            "read at push"
        );
    }

    #[test]
    fn a_short_multishot_chunk_waits_for_the_next_edge_without_reading_again() {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let id = table.insert(op::RecvMulti::new(fd).into(), 0);
        d.push(&mut table, id);
        assert!(drain(&mut d, &mut table).is_empty(), "parked on EAGAIN");
        std::io::Write::write_all(&mut b, b"short").unwrap();
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(id, 5, true)]);
        // The short chunk proved the socket drained: the op waits for the next edge (a
        // receive now would only say EAGAIN), still first in the fd's queue.
        let state = d.registry.get(fd).unwrap();
        assert!(state.read_blocked && state.readers.front() == Some(&id));
        assert!(d.yielded.is_empty());
        // A full chunk proves nothing: with exactly one buffer (64 bytes) queued, the op
        // reads again, finds nothing, and only then waits.
        std::io::Write::write_all(&mut b, &[1; 64]).unwrap();
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(id, 64, true)]);
        assert!(d.registry.get(fd).unwrap().read_blocked);
        // End of stream after a short chunk raises its own edge.
        std::io::Write::write_all(&mut b, b"bye").unwrap();
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(id, 3, true)]);
        drop(b);
        d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(drain(&mut d, &mut table), [(id, 0, false)]);
    }

    #[test]
    fn a_short_sendmsg_on_a_stream_waits_for_writability() {
        short_send_waits_for_writability(|fd| {
            op::SendMsg::new(fd, vec![vec![1; 4 << 20], vec![2; 16]], None).into()
        });
    }

    #[test]
    fn a_short_send_on_a_stream_waits_for_writability() {
        // `Send` takes the push's direct path, not the generic dispatch.
        short_send_waits_for_writability(|fd| op::Send::new(fd, vec![1; (4 << 20) + 16]).into());
    }

    /// Pushes `big` (more than a socket buffer holds) on a registered stream socket: it
    /// completes short, and the next send waits for writability instead of trying.
    fn short_send_waits_for_writability(big: impl FnOnce(RawFd) -> Op) {
        let (mut d, mut table) = (driver(), OpTable::default());
        let (a, b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        // Register the fd, then send more than the socket buffer holds: a short count.
        let probe = table.insert(op::Recv::new(fd, Vec::with_capacity(8)).into(), 0);
        d.push(&mut table, probe);
        d.cancel(&mut table, probe);
        let big = table.insert(big(fd), 1);
        d.push(&mut table, big);
        let done = drain(&mut d, &mut table);
        let sent = done.iter().find(|c| c.0 == big).map(|c| c.1).unwrap();
        assert!(sent > 0 && sent < (4 << 20) + 16, "short: {sent}");
        assert!(d
            .registry
            .get(fd)
            .is_some_and(|s| s.stream && s.write_blocked));
        // The next send parks untried, and runs once the peer drains the buffer.
        let next = table.insert(op::Send::new(fd, b"tail".to_vec()).into(), 2);
        d.push(&mut table, next);
        assert!(drain(&mut d, &mut table).is_empty());
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut sink = vec![0; 1 << 16];
            let mut total = 0;
            while total < sent as usize + 4 {
                total += std::io::Read::read(&mut b, &mut sink).unwrap();
            }
        });
        let mut done = Vec::new();
        while done.is_empty() {
            d.poll(&mut table, Some(Duration::from_secs(5))).unwrap();
            done = drain(&mut d, &mut table);
        }
        assert_eq!(done, [(next, 4, false)]);
        reader.join().unwrap();
    }
}
