//! One non-blocking attempt at each op's syscall.
//!
//! Every function here makes the op's syscall once (multishot ops: until `EAGAIN` or their
//! per-turn budget) and says whether the op is [`Progress::Done`], with exactly the result
//! the kernel returned (`-errno` or the value, as io_uring would report it), or must wait for
//! readiness ([`Progress::Again`]); [`Progress::Drained`] and [`Progress::Yield`] refine
//! those two for the driver's readiness bookkeeping. Sockets get `MSG_DONTWAIT`; other fds
//! were made non-blocking when first seen (see
//! [`Registry::ensure_nonblocking`](super::registry::Registry)), so no call here can sleep.
//! `EINTR` is retried.
//!
//! Buffers are the op's own (reads fill spare capacity, writes send `buf[start..]`);
//! pointers are taken from the op for the duration of one syscall only.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::child;
use super::ready::ReadyQueue;
use super::registry::Side;
use crate::buf::{BufPool, RecvBuf};
use crate::completion::RawCompletion;
use crate::op::{self, Op, CURRENT_POSITION};
use crate::table::OpId;

/// What one attempt achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// The op is finished; its final result (`-errno` or the value).
    Done(i32),
    /// Not ready (`EAGAIN`, a connect in progress, a child still running): park the op.
    Again,
    /// A multishot op used up its budget of completions for this turn while the fd may
    /// still be ready: it keeps its place and is run again on the next poll, so one busy
    /// connection cannot starve the others (io_uring similarly requeues a multishot op
    /// after a bounded number of retries).
    Yield,
    /// Finished with a short count (`0 < n < asked`) on a plain read or write: on a byte
    /// stream this means the fd's buffer is now empty (or full), so the next op of that side
    /// can wait for the edge instead of trying (the caller checks the fd is a byte stream).
    Drained(i32),
}

/// How many chunks or connections a multishot op takes per readiness turn.
pub(super) const MULTISHOT_BUDGET: usize = 32;

/// Where a multishot op's intermediate completions and buffers come from and go.
pub(super) struct Sink<'a> {
    /// The op being attempted.
    pub(super) id: OpId,
    /// The provided-buffer pool multishot receives fill.
    pub(super) pool: &'a BufPool,
    /// A buffer of the pool's size for when the pool is dry; handed out as an owned chunk
    /// when data arrives, kept for next time when none does.
    pub(super) spare: &'a mut Vec<u8>,
    /// The backend's completion queue.
    pub(super) ready: &'a mut ReadyQueue,
    /// A chunk shorter than its buffer proves the fd drained: the fd is a byte stream that
    /// no event has reported closed, so the next arrival is certain to raise an edge.
    pub(super) short_drains: bool,
    /// Set when the attempt handed out new fds (accepts): the driver then drops whatever
    /// it remembers about their numbers.
    pub(super) yields_fd: &'a mut bool,
}

/// How an op that works on an fd waits for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct FdWait {
    /// The fd (never negative: ops on negative fds just fail at once).
    pub(super) fd: RawFd,
    /// The queue the op waits in while the fd is not ready.
    pub(super) side: Side,
    /// The syscall has no per-call non-blocking flag, so the fd must be `O_NONBLOCK`.
    pub(super) nonblock: bool,
    /// The op usually starts an fd's life (connect, multishot receive and accept), where a
    /// registration the backend believes in is worth checking once.
    pub(super) begins_life: bool,
}

/// How `op` waits for its fd; `None` for ops that never wait on an fd's readiness (they
/// complete at push, or are timers, polls or child exits) and for ops on negative fds.
pub(super) fn fd_wait(op: &Op) -> Option<FdWait> {
    let (fd, side, nonblock, begins_life) = match op {
        Op::Read(op) => (op.fd, Side::Read, true, false),
        Op::Readv(op) => (op.fd, Side::Read, true, false),
        Op::Recv(op) => (op.fd, Side::Read, false, false),
        Op::RecvMsg(op) => (op.fd, Side::Read, false, false),
        Op::RecvMulti(op) => (op.fd, Side::Read, false, true),
        Op::Accept(op) => (op.fd, Side::Read, true, false),
        Op::AcceptMulti(op) => (op.fd, Side::Read, true, true),
        Op::Write(op) => (op.fd, Side::Write, true, false),
        Op::Writev(op) => (op.fd, Side::Write, true, false),
        Op::Send(op) => (op.fd, Side::Write, false, false),
        Op::SendMsg(op) => (op.fd, Side::Write, false, false),
        Op::Connect(op) => (op.fd, Side::Write, true, true),
        _ => return None,
    };
    (fd >= 0).then_some(FdWait {
        fd,
        side,
        nonblock,
        begins_life,
    })
}

/// Attempts `op` once. `begun` is per-op scratch that survives between attempts (a connect
/// already started).
pub(super) fn attempt(op: &mut Op, begun: &mut bool, sink: Sink<'_>) -> Progress {
    match op {
        Op::Read(op) => read(op),
        Op::Write(op) => write(op),
        Op::Readv(op) => readv(op),
        Op::Writev(op) => writev(op),
        Op::Recv(op) => recv(op),
        Op::Send(op) => send(op),
        Op::RecvMsg(op) => recvmsg(op),
        Op::SendMsg(op) => sendmsg(op),
        Op::Accept(op) => {
            *sink.yields_fd = true;
            accept(op)
        }
        Op::Connect(op) => connect(op, begun),
        Op::RecvMulti(op) => recv_multi(op.fd, sink),
        Op::AcceptMulti(op) => {
            *sink.yields_fd = true;
            accept_multi(op, sink)
        }
        Op::WaitId(op) => child::try_reap(op),
        Op::Nop(_) => Progress::Done(0),
        Op::Shutdown(op) => shutdown(op),
        Op::Close(op) => close(op),
        // Timers and polls are driven by the timer heap and the event mask, not attempted.
        Op::Timeout(_) | Op::PollAdd(_) => Progress::Again,
    }
}

/// The calling thread's errno.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs a syscall wrapper until it is not interrupted: `Ok(value)` or `Err(errno)`.
fn retry(mut call: impl FnMut() -> isize) -> Result<usize, i32> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(rc as usize);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// The progress a plain syscall result means.
fn progress(result: Result<usize, i32>) -> Progress {
    match result {
        // Counts are capped by the kernel at 0x7ffff000, fds by the fd limit: both fit.
        Ok(n) => Progress::Done(i32::try_from(n).unwrap_or(i32::MAX)),
        Err(libc::EAGAIN) => Progress::Again,
        Err(e) => Progress::Done(-e),
    }
}

/// An explicit file offset, or `None` for the current position (`CURRENT_POSITION`, -1 on
/// io_uring, means the same as no offset).
fn position(offset: Option<u64>) -> Option<u64> {
    offset.filter(|&off| off != CURRENT_POSITION)
}

/// A transfer's progress, `Drained` when fewer than `asked` (but some) bytes moved.
fn transfer(result: Result<usize, i32>, asked: usize) -> Progress {
    match progress(result) {
        Progress::Done(n) if n > 0 && (n as usize) < asked => Progress::Drained(n),
        other => other,
    }
}

/// `buf`'s spare capacity as a raw region for the kernel to fill.
fn spare(buf: &mut Vec<u8>) -> (*mut libc::c_void, usize) {
    let spare = buf.spare_capacity_mut();
    (spare.as_mut_ptr().cast(), spare.len())
}

fn read(op: &mut op::Read) -> Progress {
    let (fd, offset) = (op.fd, position(op.offset));
    let (ptr, len) = spare(&mut op.buf);
    let result = retry(|| match offset {
        // SAFETY: `ptr..ptr+len` is the spare capacity of the op's buffer, which lives (and
        // is not otherwise accessed) for the whole call.
        Some(off) => unsafe { libc::pread64(fd, ptr, len, off as libc::off64_t) },
        // SAFETY: as above.
        None => unsafe { raw::read(fd, ptr, len) },
    });
    transfer(result, len)
}

fn write(op: &mut op::Write) -> Progress {
    let (fd, offset) = (op.fd, position(op.offset));
    let data = op.remaining();
    let (ptr, len) = (data.as_ptr().cast::<libc::c_void>(), data.len());
    let result = retry(|| match offset {
        // SAFETY: `ptr..ptr+len` are initialised bytes of the op's buffer, alive and
        // unmodified for the call.
        Some(off) => unsafe { libc::pwrite64(fd, ptr, len, off as libc::off64_t) },
        // SAFETY: as above.
        None => unsafe { raw::write(fd, ptr, len) },
    });
    transfer(result, len)
}

fn readv(op: &mut op::Readv) -> Progress {
    let (fd, offset) = (op.fd, position(op.offset));
    let iov = op.prepare();
    let asked = iov.iter().map(|v| v.iov_len).sum();
    let (ptr, count) = (iov.as_ptr(), iov.len() as libc::c_int);
    let result = retry(|| match offset {
        // SAFETY: the iovecs point at the spare capacity of the op's buffers, which live and
        // are not otherwise accessed during the call; `count` is the array's length.
        Some(off) => unsafe { libc::preadv64(fd, ptr, count, off as libc::off64_t) },
        // SAFETY: as above.
        None => unsafe { libc::readv(fd, ptr, count) },
    });
    transfer(result, asked)
}

fn writev(op: &mut op::Writev) -> Progress {
    let (fd, offset) = (op.fd, position(op.offset));
    let iov = op.prepare();
    let asked = iov.iter().map(|v| v.iov_len).sum();
    let (ptr, count) = (iov.as_ptr(), iov.len() as libc::c_int);
    let result = retry(|| match offset {
        // SAFETY: the iovecs point at initialised bytes of the op's buffers, alive and
        // unmodified during the call; `count` is the array's length (at most IOV_MAX).
        Some(off) => unsafe { libc::pwritev64(fd, ptr, count, off as libc::off64_t) },
        // SAFETY: as above.
        None => unsafe { libc::writev(fd, ptr, count) },
    });
    transfer(result, asked)
}

fn recv(op: &mut op::Recv) -> Progress {
    let (fd, flags) = (op.fd, op.flags | libc::MSG_DONTWAIT);
    let (ptr, len) = spare(&mut op.buf);
    // SAFETY: `ptr..ptr+len` is the spare capacity of the op's buffer, alive and not
    // otherwise accessed during the call.
    let result = retry(|| unsafe { raw::recv(fd, ptr, len, flags) });
    // A short peek (or any special receive) says nothing about what is left.
    if op.flags == 0 {
        transfer(result, len)
    } else {
        progress(result)
    }
}

#[inline]
pub(super) fn send(op: &mut op::Send) -> Progress {
    let (fd, flags) = (op.fd, op.flags | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
    let data = op.remaining();
    let (ptr, len) = (data.as_ptr().cast::<libc::c_void>(), data.len());
    // SAFETY: `ptr..ptr+len` are initialised bytes of the op's buffer, alive and unmodified
    // during the call.
    transfer(retry(|| unsafe { raw::send(fd, ptr, len, flags) }), len)
}

fn recvmsg(op: &mut op::RecvMsg) -> Progress {
    let (fd, flags) = (op.fd, op.flags | libc::MSG_DONTWAIT);
    let hdr = op.prepare();
    let asked = op.buf.capacity() - op.buf.len();
    // SAFETY: `prepare` pointed the boxed header at the op's boxed iovec (the buffer's
    // spare capacity) and address storage; none of it moves or is touched during the call.
    let result = retry(|| unsafe { raw::recvmsg(fd, hdr, flags) });
    // As for `recv`: only a plain receive's short count says the buffer is empty (and only
    // on a byte stream, which the driver checks).
    if op.flags == 0 {
        transfer(result, asked)
    } else {
        progress(result)
    }
}

fn sendmsg(op: &mut op::SendMsg) -> Progress {
    let (fd, flags) = (op.fd, op.flags | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
    let hdr = op.prepare();
    let asked = op.scratch.iovecs.iter().map(|v| v.iov_len).sum();
    // SAFETY: `prepare` pointed the boxed header at the op's iovecs (its buffers' unsent
    // bytes) and destination; all of it stays put and unmodified during the call.
    transfer(retry(|| unsafe { raw::sendmsg(fd, hdr, flags) }), asked)
}

fn accept(op: &mut op::Accept) -> Progress {
    let (fd, flags) = (op.fd, op.flags);
    let (addr, len) = op.prepare();
    // SAFETY: `addr` and `len` point into the op's boxed address buffer, sized for any
    // address (`len` says how big), which outlives the call.
    progress(retry(
        || unsafe { libc::accept4(fd, addr, len, flags) } as isize
    ))
}

/// Starts a connect, or finishes one that was in progress: `SO_ERROR` gives a failure, and a
/// second `connect` confirms success (`EISCONN`) or says it is still pending (`EALREADY`).
fn connect(op: &mut op::Connect, begun: &mut bool) -> Progress {
    let fd = op.fd;
    if *begun {
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are live locals of the sizes the kernel is told.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Progress::Done(-errno());
        }
        if err != 0 {
            return Progress::Done(-err);
        }
    }
    let (addr, len) = (op.addr.as_ptr(), op.addr.len());
    // SAFETY: `addr` points to the op's boxed socket address of `len` bytes, alive for the
    // call.
    match retry(|| unsafe { libc::connect(fd, addr.cast(), len) } as isize) {
        Ok(_) => Progress::Done(0),
        Err(libc::EISCONN) if *begun => Progress::Done(0),
        Err(libc::EINPROGRESS | libc::EALREADY) => {
            *begun = true;
            Progress::Again
        }
        // A Unix socket whose peer's backlog is full: try the whole connect again later.
        Err(libc::EAGAIN) => Progress::Again,
        Err(e) => Progress::Done(-e),
    }
}

fn shutdown(op: &mut op::Shutdown) -> Progress {
    let (fd, how) = (op.fd, op.how_raw());
    // SAFETY: no pointers are involved.
    progress(retry(|| unsafe { libc::shutdown(fd, how) } as isize))
}

fn close(op: &mut op::Close) -> Progress {
    // SAFETY: the caller hands the fd over to be closed and has no op in flight on it. Not
    // retried on EINTR: Linux releases the fd even then, and a retry could close a reused
    // number.
    if unsafe { libc::close(op.fd) } < 0 {
        return Progress::Done(-errno());
    }
    Progress::Done(0)
}

/// Receives chunks until `EAGAIN` (or the turn's budget), one `more` completion each, into
/// pool buffers. When the pool is dry it yields its turn if completions are queued (their
/// buffers come back once the loop has popped them), else reads into buffers of its own:
/// data never waits for a buffer a consumer holds.
///
/// When a short chunk proves the fd drained (`sink.short_drains`), the op waits for the next
/// edge right after it ([`Progress::Again`], as if the next receive had said `EAGAIN`): that
/// receive would fail, and it is one syscall per message in request/response traffic. End of
/// stream is not lost: it raises its own edge, whose event marks the fd's read side closed,
/// and from then on the op reads until the `0`.
#[inline(always)]
pub(super) fn recv_multi(fd: RawFd, sink: Sink<'_>) -> Progress {
    let size = sink.pool.buf_size();
    for _ in 0..MULTISHOT_BUDGET {
        let pooled = sink.pool.take();
        let (ptr, len) = match pooled {
            Some((_, ptr)) => (ptr.cast::<libc::c_void>(), size),
            // Dry while this turn's chunks still wait to be popped: they hold the buffers and
            // hand them back as the loop consumes them, so the op waits one turn rather than
            // allocating a buffer per chunk (with many connections ready at once, one wait
            // can return more readable fds than the pool has buffers). Dry with nothing
            // queued means the consumer holds the buffers: then read into one of our own.
            None if !sink.ready.is_empty() => return Progress::Yield,
            None => {
                if sink.spare.len() != size {
                    *sink.spare = vec![0; size];
                }
                (sink.spare.as_mut_ptr().cast(), size)
            }
        };
        // SAFETY: `ptr..ptr+len` is either a pool buffer taken off the free list (nobody
        // else reads or writes it until we wrap it or give it back) or the spare vector's
        // initialised bytes; both outlive the call.
        let result = retry(|| unsafe { raw::recv(fd, ptr, len, libc::MSG_DONTWAIT) });
        let n = match result {
            Ok(n) if n > 0 => n,
            other => {
                if let Some((id, _)) = pooled {
                    sink.pool.give_back(id);
                }
                return progress(other);
            }
        };
        let chunk = match pooled {
            Some((id, data)) => sink.pool.filled_at(id, data, n),
            // A small chunk is copied out so the full-size spare stays for the next one; a
            // large one takes the spare itself.
            None if n * 2 < size => RecvBuf::owned(sink.spare[..n].to_vec()),
            None => {
                let mut data = mem::take(sink.spare);
                data.truncate(n);
                RecvBuf::owned(data)
            }
        };
        sink.ready
            .push_back(RawCompletion::new(sink.id, n as i32, true, Some(chunk)));
        if n < len && sink.short_drains {
            return Progress::Again;
        }
    }
    Progress::Yield
}

/// Accepts until `EAGAIN` (or the turn's budget), one `more` completion per new fd; an
/// error ends the op.
fn accept_multi(op: &mut op::AcceptMulti, sink: Sink<'_>) -> Progress {
    let (fd, flags) = (op.fd, op.flags);
    for _ in 0..MULTISHOT_BUDGET {
        // SAFETY: null address pointers ask the kernel not to report the peer.
        let result =
            retry(
                || unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), flags) }
                    as isize,
            );
        match result {
            Ok(new_fd) => {
                sink.ready
                    .push_back(RawCompletion::new(sink.id, new_fd as i32, true, None))
            }
            other => return progress(other),
        }
    }
    Progress::Yield
}

/// The hot-path syscalls straight through `syscall(2)`. glibc's `read`/`write`/`recv`/`send`
/// (and `*msg`) wrappers are thread-cancellation points, which costs about a hundred instructions per
/// call (measured with callgrind) for a feature Rust programs never use (`pthread_cancel`).
/// Same arguments, same return value and `errno` as the wrappers.
mod raw {
    use std::ptr::null_mut;

    /// `read(2)`.
    ///
    /// # Safety
    /// As `libc::read`: `buf..buf+len` is writable for the duration of the call.
    #[inline]
    pub(super) unsafe fn read(fd: i32, buf: *mut libc::c_void, len: usize) -> isize {
        // SAFETY: the caller upholds read(2)'s contract; the argument list matches the
        // kernel's.
        unsafe { libc::syscall(libc::SYS_read, fd, buf, len) as isize }
    }

    /// `write(2)`.
    ///
    /// # Safety
    /// As `libc::write`: `buf..buf+len` is readable for the duration of the call.
    #[inline]
    pub(super) unsafe fn write(fd: i32, buf: *const libc::c_void, len: usize) -> isize {
        // SAFETY: as in `read`.
        unsafe { libc::syscall(libc::SYS_write, fd, buf, len) as isize }
    }

    /// `recv(2)`, which the kernel implements as `recvfrom` without an address.
    ///
    /// # Safety
    /// As `libc::recv`: `buf..buf+len` is writable for the duration of the call.
    #[inline]
    pub(super) unsafe fn recv(fd: i32, buf: *mut libc::c_void, len: usize, flags: i32) -> isize {
        // SAFETY: as in `read`; null address pointers ask for no sender address.
        unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd,
                buf,
                len,
                flags,
                null_mut::<libc::sockaddr>(),
                null_mut::<libc::socklen_t>(),
            ) as isize
        }
    }

    /// `recvmsg(2)`.
    ///
    /// # Safety
    /// As `libc::recvmsg`: `msg` and everything it points to are valid for the call.
    #[inline]
    pub(super) unsafe fn recvmsg(fd: i32, msg: *mut libc::msghdr, flags: i32) -> isize {
        // SAFETY: as in `read`.
        unsafe { libc::syscall(libc::SYS_recvmsg, fd, msg, flags) as isize }
    }

    /// `sendmsg(2)`.
    ///
    /// # Safety
    /// As `libc::sendmsg`: `msg` and everything it points to are valid for the call.
    #[inline]
    pub(super) unsafe fn sendmsg(fd: i32, msg: *const libc::msghdr, flags: i32) -> isize {
        // SAFETY: as in `read`.
        unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) as isize }
    }

    /// `send(2)`, which the kernel implements as `sendto` without an address.
    ///
    /// # Safety
    /// As `libc::send`: `buf..buf+len` is readable for the duration of the call.
    #[inline]
    pub(super) unsafe fn send(fd: i32, buf: *const libc::c_void, len: usize, flags: i32) -> isize {
        // SAFETY: as in `read`; a null address with length 0 means "the connected peer".
        unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                buf,
                len,
                flags,
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::socklen_t,
            ) as isize
        }
    }
}
