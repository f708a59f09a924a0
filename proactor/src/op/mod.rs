//! The operations a [`Proactor`](crate::Proactor) performs, one type each.
//!
//! Every op owns what the kernel touches until its final completion: data buffers
//! (`Vec<u8>`, whose heap memory stays put when the op value moves), address storage and
//! scratch headers (boxed for the same reason). The op comes back inside its
//! [`Completion`](crate::Completion), so a caller recovers its buffers on success and failure
//! alike and can reuse their allocations for the next op.
//!
//! **Invariant for backends:** an op value may move (the op table is a growable slab), so
//! nothing the kernel reads or writes may live inline in the op struct: only behind a
//! `Vec` or a `Box`.
//!
//! Reads append to a buffer's *spare capacity* (`buf.len()..buf.capacity()`) and the
//! completion extends `buf.len()` by the bytes read; writes send `buf[start..]`.

pub(crate) mod fs;
mod misc;
mod net;

pub(crate) use fs::CURRENT_POSITION;
pub use fs::{Read, Readv, Write, Writev};
pub use misc::{ChildExit, Close, Nop, PollAdd, Timeout, WaitId};
pub use net::{Accept, AcceptMulti, Connect, Recv, RecvMsg, RecvMulti, Send, SendMsg, Shutdown};

use std::os::fd::RawFd;

/// One operation, as pushed to and handed back by the proactor.
#[derive(Debug)]
#[non_exhaustive]
pub enum Op {
    /// Does nothing; completes with 0.
    Nop(Nop),
    /// `read(2)` / `pread(2)` into spare capacity.
    Read(Read),
    /// `write(2)` / `pwrite(2)` of `buf[start..]`.
    Write(Write),
    /// `readv(2)` into several buffers' spare capacity.
    Readv(Readv),
    /// `writev(2)` of several buffers.
    Writev(Writev),
    /// `recv(2)` into spare capacity.
    Recv(Recv),
    /// Multishot `recv(2)` into proactor-provided buffers; one completion per chunk.
    RecvMulti(RecvMulti),
    /// `send(2)` with `MSG_NOSIGNAL`.
    Send(Send),
    /// `sendmsg(2)`: vectored, optionally to an address, with `MSG_NOSIGNAL`.
    SendMsg(SendMsg),
    /// `recvmsg(2)`: one datagram and its sender's address.
    RecvMsg(RecvMsg),
    /// `accept4(2)`, with the peer's address.
    Accept(Accept),
    /// Multishot `accept4(2)`; one completion per accepted connection.
    AcceptMulti(AcceptMulti),
    /// `connect(2)`.
    Connect(Connect),
    /// `shutdown(2)`.
    Shutdown(Shutdown),
    /// `close(2)`.
    Close(Close),
    /// A relative timeout.
    Timeout(Timeout),
    /// Readiness of an fd (`poll(2)` events), one-shot or multishot.
    PollAdd(PollAdd),
    /// Waits for a child process to exit (`waitid(2)`).
    WaitId(WaitId),
}

impl Op {
    /// The fd the op works on, if any.
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Op::Nop(_) | Op::Timeout(_) | Op::WaitId(_) => None,
            Op::Read(op) => Some(op.fd),
            Op::Write(op) => Some(op.fd),
            Op::Readv(op) => Some(op.fd),
            Op::Writev(op) => Some(op.fd),
            Op::Recv(op) => Some(op.fd),
            Op::RecvMulti(op) => Some(op.fd),
            Op::Send(op) => Some(op.fd),
            Op::SendMsg(op) => Some(op.fd),
            Op::RecvMsg(op) => Some(op.fd),
            Op::Accept(op) => Some(op.fd),
            Op::AcceptMulti(op) => Some(op.fd),
            Op::Connect(op) => Some(op.fd),
            Op::Shutdown(op) => Some(op.fd),
            Op::Close(op) => Some(op.fd),
            Op::PollAdd(op) => Some(op.fd),
        }
    }

    /// Whether one push of this op may complete several times (`Completion::more`).
    pub fn is_multishot(&self) -> bool {
        match self {
            Op::RecvMulti(_) | Op::AcceptMulti(_) => true,
            Op::PollAdd(op) => op.multishot,
            _ => false,
        }
    }

    /// Whether a successful result of this op is a new fd that its receiver must close.
    pub fn yields_fd(&self) -> bool {
        matches!(self, Op::Accept(_) | Op::AcceptMulti(_))
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Nop(_) => "nop",
            Op::Read(_) => "read",
            Op::Write(_) => "write",
            Op::Readv(_) => "readv",
            Op::Writev(_) => "writev",
            Op::Recv(_) => "recv",
            Op::RecvMulti(_) => "recv_multishot",
            Op::Send(_) => "send",
            Op::SendMsg(_) => "sendmsg",
            Op::RecvMsg(_) => "recvmsg",
            Op::Accept(_) => "accept",
            Op::AcceptMulti(_) => "accept_multishot",
            Op::Connect(_) => "connect",
            Op::Shutdown(_) => "shutdown",
            Op::Close(_) => "close",
            Op::Timeout(_) => "timeout",
            Op::PollAdd(_) => "poll",
            Op::WaitId(_) => "waitid",
        }
    }

    /// Calls `f` with every heap allocation the kernel may read or write while the op is in
    /// flight (base address and size in bytes), for the buffer audit. Empty vectors and
    /// zero-sized boxes own no allocation and are skipped.
    pub(crate) fn for_each_lent(&self, mut f: impl FnMut(*const u8, usize)) {
        fn vec<T>(v: &Vec<T>, f: &mut impl FnMut(*const u8, usize)) {
            let bytes = v.capacity() * std::mem::size_of::<T>();
            if bytes > 0 {
                f(v.as_ptr().cast(), bytes);
            }
        }
        fn boxed<T>(b: &T, f: &mut impl FnMut(*const u8, usize)) {
            let bytes = std::mem::size_of::<T>();
            if bytes > 0 {
                f((b as *const T).cast(), bytes);
            }
        }
        match self {
            Op::Read(op) => vec(&op.buf, &mut f),
            Op::Write(op) => vec(&op.buf, &mut f),
            Op::Recv(op) => vec(&op.buf, &mut f),
            Op::Send(op) => vec(&op.buf, &mut f),
            Op::Readv(op) => {
                op.bufs.iter().for_each(|b| vec(b, &mut f));
                vec(&op.iovecs.0, &mut f);
            }
            Op::Writev(op) => {
                op.bufs.iter().for_each(|b| vec(b, &mut f));
                vec(&op.iovecs.0, &mut f);
            }
            Op::SendMsg(op) => {
                op.bufs.iter().for_each(|b| vec(b, &mut f));
                boxed(&*op.scratch, &mut f);
                vec(&op.scratch.iovecs, &mut f);
            }
            Op::RecvMsg(op) => {
                vec(&op.buf, &mut f);
                boxed(&*op.scratch, &mut f);
                vec(&op.scratch.iovecs, &mut f);
            }
            Op::Accept(op) => boxed(&*op.addr, &mut f),
            Op::Connect(op) => boxed(&*op.addr, &mut f),
            Op::Timeout(op) => boxed(&*op.ts, &mut f),
            Op::WaitId(op) => boxed(&*op.info, &mut f),
            Op::Nop(_)
            | Op::RecvMulti(_)
            | Op::AcceptMulti(_)
            | Op::Shutdown(_)
            | Op::Close(_)
            | Op::PollAdd(_) => {}
        }
    }

    /// Gives the op's scratch `iovec` arrays the capacity the kernel view needs, so that
    /// building that view later (possibly after the op was lent to the kernel and recorded
    /// by the audit) never reallocates them.
    pub(crate) fn reserve_scratch(&mut self) {
        fn reserve(v: &mut Vec<libc::iovec>, n: usize) {
            v.clear();
            v.reserve(n.min(libc::UIO_MAXIOV as usize));
        }
        match self {
            Op::Readv(op) => reserve(&mut op.iovecs.0, op.bufs.len()),
            Op::Writev(op) => reserve(&mut op.iovecs.0, op.bufs.len()),
            Op::SendMsg(op) => reserve(&mut op.scratch.iovecs, op.bufs.len()),
            Op::RecvMsg(op) => reserve(&mut op.scratch.iovecs, 1),
            _ => {}
        }
    }

    /// Whether a send or write that returned `result` transferred everything it had left
    /// (the condition for a quiet op to finish unreported). `false` for other ops.
    #[inline]
    pub(crate) fn done_by(&self, result: i32) -> bool {
        fn covers(result: i32, left: &[u8]) -> bool {
            usize::try_from(result).is_ok_and(|n| n >= left.len())
        }
        // Out of line, so that the compiler does not merge it with the send's case into
        // code that picks fields by variant: a send, the per-message case, is then one
        // comparison of the tag.
        #[inline(never)]
        fn write_done_by(op: &Op, result: i32) -> bool {
            matches!(op, Op::Write(op) if covers(result, op.remaining()))
        }
        match self {
            // `covers(result, op.remaining())` without slicing: `start + n` reaches the end
            // exactly when `n` covers what is left. It cannot wrap: the kernel sends at most
            // what is left, which is nothing when `start` is past the end.
            Op::Send(op) => {
                usize::try_from(result).is_ok_and(|n| op.start.wrapping_add(n) >= op.buf.len())
            }
            op => write_done_by(op, result),
        }
    }

    /// Records a successful read of `n` bytes into the op's buffers (extends their
    /// lengths). Called by backends on completion; a no-op for ops that do not read.
    pub(crate) fn complete_read(&mut self, n: usize) {
        match self {
            Op::Read(op) => fs::extend_by(&mut op.buf, n),
            Op::Recv(op) => fs::extend_by(&mut op.buf, n),
            Op::RecvMsg(op) => op.complete(n),
            Op::Readv(op) => op.complete(n),
            _ => {}
        }
    }
}

macro_rules! into_op {
    ($($ty:ident),* $(,)?) => {$(
        impl From<$ty> for Op {
            fn from(op: $ty) -> Op {
                Op::$ty(op)
            }
        }
    )*};
}

into_op!(
    Nop,
    Read,
    Write,
    Readv,
    Writev,
    Recv,
    RecvMulti,
    Send,
    SendMsg,
    RecvMsg,
    Accept,
    AcceptMulti,
    Connect,
    Shutdown,
    Close,
    Timeout,
    PollAdd,
    WaitId,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Ops move into the table and back out in every completion: keep them small.
    #[test]
    fn ops_stay_small_to_move() {
        assert!(
            std::mem::size_of::<Op>() <= 80,
            "Op is {} bytes",
            std::mem::size_of::<Op>()
        );
    }
}
