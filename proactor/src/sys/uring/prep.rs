//! One SQE per op: a small builder function for each op type, and a dispatch that maps op
//! variants to them.
//!
//! Every pointer put into an SQE points into the op's heap allocations (`Vec` buffers,
//! boxed headers and addresses; see [`crate::op`]), which stay put while the op moves and
//! live until the front end removes the op after its final completion. Builders that run
//! a syscall in user space instead (an opcode the kernel lacks) return
//! [`Prepared::Done`] with the result.

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::{Fd, Timespec};

use super::setup::{Caps, BUF_GROUP};
use super::slots::{SingleBuf, Slot};
use super::waitid;
use crate::buf::BufPool;
use crate::op::fs::CURRENT_POSITION;
use crate::op::{
    Accept, AcceptMulti, Close, Connect, Op, PollAdd, Read, Readv, Recv, RecvMsg, RecvMulti, Send,
    SendMsg, Shutdown, Timeout, Write, Writev,
};

/// What preparing an op produced.
#[derive(Debug)]
pub(super) enum Prepared {
    /// An SQE to submit (its `user_data` is set by the caller).
    Sqe(Entry),
    /// The op already finished in user space with this result (`-errno` or a value).
    Done(i32),
}

/// What builders may consult besides the op.
pub(super) struct Ctx<'a> {
    pub(super) caps: &'a Caps,
    pub(super) pool: &'a BufPool,
}

/// Builds the request for `op`.
pub(super) fn prepare(op: &mut Op, slot: &mut Slot, cx: &Ctx<'_>) -> Prepared {
    use Prepared::Sqe;
    match op {
        Op::Nop(_) => Sqe(opcode::Nop::new().build()),
        Op::Read(op) => Sqe(read(op)),
        Op::Write(op) => Sqe(write(op)),
        Op::Readv(op) => Sqe(readv(op)),
        Op::Writev(op) => Sqe(writev(op)),
        Op::Recv(op) => Sqe(recv(op)),
        Op::RecvMulti(op) => Sqe(recv_multi(op, slot, cx)),
        Op::Send(op) => Sqe(send(op)),
        Op::SendMsg(op) => Sqe(sendmsg(op)),
        Op::RecvMsg(op) => Sqe(recvmsg(op)),
        Op::Accept(op) => Sqe(accept(op)),
        Op::AcceptMulti(op) => Sqe(accept_multi(op, cx.caps)),
        Op::Connect(op) => Sqe(connect(op)),
        Op::Shutdown(op) => shutdown(op, cx.caps),
        Op::Close(op) => Sqe(close(op)),
        Op::Timeout(op) => Sqe(timeout(op)),
        Op::PollAdd(op) => Sqe(poll_add(op, cx.caps)),
        Op::WaitId(op) => waitid::prepare(op, cx.caps),
    }
}

/// A length for an SQE (`u32`); larger buffers are filled or sent in part, as a short
/// read or write, which callers handle anyway.
fn len32(len: usize) -> u32 {
    len.min(u32::MAX as usize) as u32
}

/// The SQE offset: a file position, or -1 for "the fd's current position".
fn offset(offset: Option<u64>) -> u64 {
    offset.unwrap_or(CURRENT_POSITION)
}

/// Where the kernel may write in `buf`: its spare capacity.
fn spare(buf: &mut Vec<u8>) -> (*mut u8, u32) {
    let spare = buf.spare_capacity_mut();
    (spare.as_mut_ptr().cast(), len32(spare.len()))
}

fn read(op: &mut Read) -> Entry {
    let (ptr, len) = spare(&mut op.buf);
    opcode::Read::new(Fd(op.fd), ptr, len)
        .offset(offset(op.offset))
        .build()
}

fn write(op: &mut Write) -> Entry {
    let data = op.remaining();
    opcode::Write::new(Fd(op.fd), data.as_ptr(), len32(data.len()))
        .offset(offset(op.offset))
        .build()
}

fn readv(op: &mut Readv) -> Entry {
    let (fd, off) = (op.fd, offset(op.offset));
    let iovecs = op.prepare();
    opcode::Readv::new(Fd(fd), iovecs.as_ptr(), iovecs.len() as u32)
        .offset(off)
        .build()
}

fn writev(op: &mut Writev) -> Entry {
    let (fd, off) = (op.fd, offset(op.offset));
    let iovecs = op.prepare();
    opcode::Writev::new(Fd(fd), iovecs.as_ptr(), iovecs.len() as u32)
        .offset(off)
        .build()
}

fn recv(op: &mut Recv) -> Entry {
    let (ptr, len) = spare(&mut op.buf);
    opcode::Recv::new(Fd(op.fd), ptr, len)
        .flags(op.flags)
        .build()
}

/// A multishot receive from the provided-buffer ring, or (ring dry, or no kernel support)
/// one receive into a buffer the slot keeps until the CQE.
fn recv_multi(op: &mut RecvMulti, slot: &mut Slot, cx: &Ctx<'_>) -> Entry {
    if cx.caps.multishot_recv && cx.pool.is_ring() && !slot.single {
        return opcode::RecvMulti::new(Fd(op.fd), BUF_GROUP).build();
    }
    let (buf, ptr, len) = SingleBuf::take(cx.pool);
    slot.buf = Some(Box::new(buf));
    opcode::Recv::new(Fd(op.fd), ptr, len32(len)).build()
}

/// The SQE of `op`, which from now on has `MSG_NOSIGNAL` in its flags: its restarts
/// ([`send_whole`]) then take them as they are.
#[inline]
pub(super) fn send(op: &mut Send) -> Entry {
    op.flags |= libc::MSG_NOSIGNAL;
    let data = op.remaining();
    opcode::Send::new(Fd(op.fd), data.as_ptr(), len32(data.len()))
        .flags(op.flags)
        .build()
}

/// [`send`] of the whole buffer, for a send whose `start` is known to be 0 (a restart):
/// spares re-reading the position and slicing at it, and adding `MSG_NOSIGNAL` to the
/// flags (`send` did, when the op was first issued).
#[inline]
pub(super) fn send_whole(op: &mut Send) -> Entry {
    debug_assert!(
        op.flags & libc::MSG_NOSIGNAL != 0,
        "a restart of a send never issued"
    );
    opcode::Send::new(Fd(op.fd), op.buf.as_ptr(), len32(op.buf.len()))
        .flags(op.flags)
        .build()
}

fn sendmsg(op: &mut SendMsg) -> Entry {
    let (fd, flags) = (op.fd, op.flags | libc::MSG_NOSIGNAL);
    opcode::SendMsg::new(Fd(fd), op.prepare())
        .flags(flags as u32)
        .build()
}

fn recvmsg(op: &mut RecvMsg) -> Entry {
    let (fd, flags) = (op.fd, op.flags);
    opcode::RecvMsg::new(Fd(fd), op.prepare())
        .flags(flags as u32)
        .build()
}

fn accept(op: &mut Accept) -> Entry {
    let (fd, flags) = (op.fd, op.flags);
    let (addr, len) = op.prepare();
    opcode::Accept::new(Fd(fd), addr, len).flags(flags).build()
}

/// A multishot accept, or one single accept that the driver re-arms after each connection.
fn accept_multi(op: &mut AcceptMulti, caps: &Caps) -> Entry {
    if caps.multishot_accept {
        return opcode::AcceptMulti::new(Fd(op.fd)).flags(op.flags).build();
    }
    opcode::Accept::new(Fd(op.fd), std::ptr::null_mut(), std::ptr::null_mut())
        .flags(op.flags)
        .build()
}

fn connect(op: &mut Connect) -> Entry {
    opcode::Connect::new(Fd(op.fd), op.addr.as_ptr(), op.addr.len()).build()
}

/// `IORING_OP_SHUTDOWN`, or `shutdown(2)` at once (it never blocks) on kernels before 5.11.
fn shutdown(op: &mut Shutdown, caps: &Caps) -> Prepared {
    if caps.shutdown {
        return Prepared::Sqe(opcode::Shutdown::new(Fd(op.fd), op.how_raw()).build());
    }
    // SAFETY: plain syscall on an fd the caller keeps open while the op is in flight.
    let ret = unsafe { libc::shutdown(op.fd, op.how_raw()) };
    Prepared::Done(if ret < 0 { -errno() } else { 0 })
}

fn close(op: &mut Close) -> Entry {
    opcode::Close::new(Fd(op.fd)).build()
}

fn timeout(op: &mut Timeout) -> Entry {
    opcode::Timeout::new(&*op.ts as *const Timespec).build()
}

/// A poll; a multishot one is emulated by re-armed single polls before 5.13.
fn poll_add(op: &mut PollAdd, caps: &Caps) -> Entry {
    opcode::PollAdd::new(Fd(op.fd), op.events)
        .multi(op.multishot && caps.multishot_poll)
        .build()
}

/// The calling thread's `errno`.
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
