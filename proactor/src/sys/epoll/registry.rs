//! Per-fd state of the epoll backend: the one edge-triggered registration, the FIFO queues
//! of parked ops, and whether the fd was made non-blocking.
//!
//! State lives in a `Vec` indexed by fd number (fds are small, dense integers), so finding
//! an fd's queues is one bounds check, never a hash. Slots are reset, not freed, when an fd
//! is forgotten: their queues keep their capacity for the next fd that gets the number, so
//! parking an op allocates nothing in steady state.
//!
//! # Registration
//! An fd is added to the epoll set once, on the first op that must wait, with
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET`, and stays there until
//! [`Registry::forget`]. `EPOLL_CTL_ADD` reports the fd's current readiness as an event, so
//! registering after an `EAGAIN` loses no wake-up; after that every new readiness is an edge.
//! The event's data is the fd number.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::table::OpId;

/// The readiness interest of every registration. `EPOLLPRI` (urgent data, cgroup and
/// sysfs notifications) only matters to `PollAdd` ops asking for `POLLPRI`; it costs nothing
/// otherwise.
const INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;

/// Which of an fd's queues an op waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// Waits for readability: reads, receives, accepts, child exits (on a pidfd).
    Read,
    /// Waits for writability: writes, sends, connects.
    Write,
    /// A readiness poll (`PollAdd`), completed from the event mask itself.
    Poll,
}

/// What the backend knows about one fd.
#[derive(Debug, Default)]
pub(super) struct FdState {
    /// Added to the epoll set.
    pub(super) registered: bool,
    /// `O_NONBLOCK` is known to be set on the file description.
    pub(super) nonblocking: bool,
    /// A read-side syscall said `EAGAIN` and no readability edge came since: a new read-side
    /// op parks without trying (the edge will run it), saving a syscall that would fail.
    pub(super) read_blocked: bool,
    /// The same for the write side.
    pub(super) write_blocked: bool,
    /// A byte stream (a stream socket or a plain pipe), where a short read means the
    /// receive buffer is empty and a short write that the send buffer is full. Known once
    /// registered.
    pub(super) stream: bool,
    /// An event reported end of stream, an error, a hang-up or urgent data: no further edge
    /// may come for what is left to read, so short reads no longer imply an empty buffer.
    pub(super) read_closed: bool,
    /// An event reported an error or a hang-up on the write side.
    pub(super) write_closed: bool,
    /// Parked read-side ops, oldest first.
    pub(super) readers: VecDeque<OpId>,
    /// Parked write-side ops, oldest first.
    pub(super) writers: VecDeque<OpId>,
    /// Parked readiness polls.
    pub(super) polls: VecDeque<OpId>,
}

impl FdState {
    /// The queue of `side`.
    pub(super) fn queue(&mut self, side: Side) -> &mut VecDeque<OpId> {
        match side {
            Side::Read => &mut self.readers,
            Side::Write => &mut self.writers,
            Side::Poll => &mut self.polls,
        }
    }

    /// Whether `side` is known not to be ready (see `read_blocked`).
    pub(super) fn blocked(&self, side: Side) -> bool {
        match side {
            Side::Read => self.read_blocked,
            Side::Write => self.write_blocked,
            Side::Poll => false,
        }
    }

    /// Records whether `side` is known not to be ready.
    pub(super) fn set_blocked(&mut self, side: Side, blocked: bool) {
        match side {
            Side::Read => self.read_blocked = blocked,
            Side::Write => self.write_blocked = blocked,
            Side::Poll => {}
        }
    }

    /// Whether a transfer on `side` that moves fewer bytes than asked proves the side drained
    /// (receive buffer empty, or send buffer full): true on a registered byte stream whose
    /// side no event has reported closed. Then the next arrival (or freed space) is certain
    /// to raise a new edge, because it changes the state after the syscall that observed it.
    pub(super) fn short_means_drained(&self, side: Side) -> bool {
        let open = match side {
            Side::Read => !self.read_closed,
            Side::Write => !self.write_closed,
            Side::Poll => false,
        };
        self.registered && self.stream && open
    }

    /// Records that a transfer on `side` moved fewer bytes than asked: on a byte stream
    /// that is still open, the side is drained (or full) and the next op waits for an edge.
    pub(super) fn short_transfer(&mut self, side: Side) {
        if self.short_means_drained(side) {
            self.set_blocked(side, true);
        }
    }

    /// Whether any op is parked here.
    pub(super) fn has_parked(&self) -> bool {
        !(self.readers.is_empty() && self.writers.is_empty() && self.polls.is_empty())
    }

    /// Back to the state of an fd never seen, keeping the queues' capacity.
    fn reset(&mut self) {
        self.registered = false;
        self.nonblocking = false;
        self.read_blocked = false;
        self.write_blocked = false;
        self.stream = false;
        self.read_closed = false;
        self.write_closed = false;
        self.readers.clear();
        self.writers.clear();
        self.polls.clear();
    }
}

/// The epoll instance and the state of every fd it knows.
#[derive(Debug)]
pub(super) struct Registry {
    epoll: OwnedFd,
    fds: Vec<FdState>,
}

impl Registry {
    /// Wraps a fresh epoll instance.
    pub(super) fn new(epoll: OwnedFd) -> Registry {
        Registry {
            epoll,
            fds: Vec::new(),
        }
    }

    /// The epoll fd.
    pub(super) fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The state of `fd`, created on first use. `fd` must be an open descriptor (one a
    /// syscall just accepted), which bounds the table by the process's fd limit.
    pub(super) fn state(&mut self, fd: RawFd) -> &mut FdState {
        let index = usize::try_from(fd).unwrap_or_else(|_| unreachable!("negative fd {fd}"));
        if index >= self.fds.len() {
            self.fds.resize_with(index + 1, FdState::default);
        }
        &mut self.fds[index]
    }

    /// The state of `fd` if the backend has any.
    pub(super) fn get(&mut self, fd: RawFd) -> Option<&mut FdState> {
        self.fds.get_mut(usize::try_from(fd).ok()?)
    }

    /// Adds `fd` to the epoll set unless it is there already.
    ///
    /// # Errors
    /// What `epoll_ctl` reports; `EPERM` means the fd cannot be polled (a regular file or
    /// some character devices), which are always ready.
    pub(super) fn register(&mut self, fd: RawFd) -> io::Result<()> {
        if self.get(fd).is_some_and(|s| s.registered) {
            return Ok(());
        }
        let mut event = libc::epoll_event {
            events: INTEREST,
            u64: fd as u64,
        };
        // SAFETY: `event` is a live local the kernel only reads during the call; the epoll
        // fd is owned by `self`.
        let rc = unsafe { libc::epoll_ctl(self.epoll_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // EEXIST: the same open file is in the set already (our state was lost, e.g.
            // the fd was dup2'ed over); it is registered as we need it.
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err);
            }
        }
        let stream = is_byte_stream(fd);
        let state = self.state(fd);
        state.registered = true;
        state.stream = stream;
        Ok(())
    }

    /// Whether the backend believes `fd` registered while epoll holds no registration for
    /// the file now behind that number: the fd was closed behind the backend's back and its
    /// number reused. Costs one `epoll_ctl`, and only when `fd` is believed registered; the
    /// driver asks at ops that begin an fd's life (connect, multishot receive and accept),
    /// where a registered fd is almost always exactly this case.
    pub(super) fn registration_is_stale(&mut self, fd: RawFd) -> bool {
        if !self.get(fd).is_some_and(|s| s.registered) {
            return false;
        }
        let mut event = libc::epoll_event {
            events: INTEREST,
            u64: fd as u64,
        };
        // SAFETY: `event` is a live local the kernel only reads during the call. MOD with the
        // same interest changes nothing for a live registration (it may report current
        // readiness again, which the driver tolerates).
        let rc = unsafe { libc::epoll_ctl(self.epoll_fd(), libc::EPOLL_CTL_MOD, fd, &mut event) };
        rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
    }

    /// Makes sure `fd`'s file description is non-blocking, once per fd: the backend tries
    /// syscalls at once and must never sleep in one. Failures are left for the op's own
    /// syscall to report (an invalid fd fails it with `EBADF`).
    pub(super) fn ensure_nonblocking(&mut self, fd: RawFd) {
        if self.get(fd).is_some_and(|s| s.nonblocking) {
            return;
        }
        // SAFETY: `fcntl(F_GETFL)` takes no pointer; an invalid fd just fails.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return;
        }
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above; only the O_NONBLOCK status flag changes.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
                tracing::debug!(
                    fd,
                    "cannot make fd non-blocking: {}",
                    io::Error::last_os_error()
                );
                return;
            }
            tracing::trace!(fd, "made fd non-blocking");
        }
        self.state(fd).nonblocking = true;
    }

    /// Drops everything known about `fd`, which is about to be closed, and returns the ops
    /// still parked on it (the caller completes them). With `deregister`, the fd is also
    /// removed from the epoll set (`close` alone would keep it there if the file is open
    /// elsewhere, e.g. through a `dup`).
    pub(super) fn forget(&mut self, fd: RawFd, deregister: bool, orphans: &mut Vec<OpId>) {
        let epoll = self.epoll_fd();
        let Some(state) = self.get(fd) else { return };
        if state.registered && deregister {
            // SAFETY: no pointer is read for EPOLL_CTL_DEL (a null event is allowed since
            // Linux 2.6.9); the fd is still open here.
            let rc =
                unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
            if rc < 0 {
                tracing::debug!(fd, "EPOLL_CTL_DEL: {}", io::Error::last_os_error());
            }
        }
        orphans.extend(state.readers.drain(..));
        orphans.extend(state.writers.drain(..));
        orphans.extend(state.polls.drain(..));
        state.reset();
    }
}

/// Whether `fd` is a byte stream: a `SOCK_STREAM` socket, or a pipe not in packet mode
/// (`O_DIRECT`). Datagram sockets, terminals and everything else are not: a short read there
/// can leave more to read.
fn is_byte_stream(fd: RawFd) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are live locals of the sizes the kernel is told.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        return kind == libc::SOCK_STREAM;
    }
    // SAFETY: all-zero bytes is a valid `stat`, which the kernel fills during the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable `stat`.
    if unsafe { libc::fstat(fd, &mut st) } < 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return false;
    }
    // SAFETY: F_GETFL takes no pointer.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn registry() -> Registry {
        // SAFETY: plain syscall; the result is checked before it is wrapped.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Registry::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[test]
    fn regular_files_cannot_be_registered() {
        let mut reg = registry();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let err = reg.register(file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(!reg.state(file.as_raw_fd()).registered);
    }

    #[test]
    fn forget_returns_parked_ops_and_keeps_capacity() {
        let mut reg = registry();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        reg.register(fd).unwrap();
        reg.register(fd).unwrap();
        let mut table = crate::table::OpTable::default();
        let id = table.insert(crate::op::Nop.into(), 0);
        reg.state(fd).writers.push_back(id);
        let mut orphans = Vec::new();
        reg.forget(fd, true, &mut orphans);
        assert_eq!(orphans, [id]);
        let state = reg.state(fd);
        assert!(!state.registered && !state.has_parked());
        assert!(state.writers.capacity() > 0, "queues keep their allocation");
        // Registering again works: the DEL really removed it (ADD would say EEXIST, which
        // `register` tolerates, so check with a MOD-free probe: a second DEL fails).
        reg.register(fd).unwrap();
        reg.forget(fd, true, &mut orphans);
        // SAFETY: DEL with a null event on an fd no longer in the set.
        let rc = unsafe {
            libc::epoll_ctl(
                reg.epoll_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, -1, "the fd left the epoll set");
    }

    #[test]
    fn blocking_fds_are_made_non_blocking_once() {
        let mut reg = registry();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors owned here.
        let (r, _w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        reg.ensure_nonblocking(r.as_raw_fd());
        // SAFETY: F_GETFL takes no pointer.
        let flags = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert!(reg.state(r.as_raw_fd()).nonblocking);
        reg.ensure_nonblocking(-1);
        assert!(reg.get(-1).is_none(), "invalid fds leave no state");
    }
}
