//! Socket operations: stream I/O, datagrams with addresses, accept, connect, shutdown.

use std::fmt;
use std::mem;
use std::os::fd::RawFd;

use socket2::SockAddr;

use super::fs::{extend_by, fill_write_iovecs};

/// `recv(2)` into `buf`'s spare capacity; the completion extends `buf.len()`.
#[derive(Debug)]
pub struct Recv {
    /// The socket.
    pub fd: RawFd,
    /// Receives the data in `len()..capacity()`.
    pub buf: Vec<u8>,
    /// `MSG_*` flags.
    pub flags: i32,
}

impl Recv {
    /// Receives into `buf`'s spare capacity.
    pub fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        Recv { fd, buf, flags: 0 }
    }
}

/// Multishot `recv(2)` into buffers the proactor provides.
///
/// Each chunk arrives as a completion with `more == true` and its data in
/// [`Completion::buf`](crate::Completion::buf); the buffer returns to the proactor's pool as
/// soon as it is dropped. A result of 0 is end of stream. The final completion (`more ==
/// false`) comes at end of stream, on an error, or after a cancel. When the pool runs dry or
/// the kernel lacks provided-buffer rings, the proactor falls back to single receives into
/// its own buffers, transparently: data is never lost and always arrives in order.
#[derive(Debug)]
pub struct RecvMulti {
    /// The socket.
    pub fd: RawFd,
}

impl RecvMulti {
    /// Receives from `fd` until end of stream, error or cancel.
    pub fn new(fd: RawFd) -> Self {
        RecvMulti { fd }
    }
}

/// `send(2)` of `buf[start..]`, always with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never a
/// signal).
#[derive(Debug)]
pub struct Send {
    /// The socket.
    pub fd: RawFd,
    /// The data; bytes before `start` were already sent and are skipped.
    pub buf: Vec<u8>,
    /// Where in `buf` the bytes to send begin.
    pub start: usize,
    /// Extra `MSG_*` flags. The io_uring backend adds `MSG_NOSIGNAL` here when it starts
    /// the send (it is always sent with it).
    pub flags: i32,
}

impl Send {
    /// Sends all of `buf`.
    pub fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        Send {
            fd,
            buf,
            start: 0,
            flags: 0,
        }
    }

    /// The bytes still to send.
    pub fn remaining(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// Heap scratch for `sendmsg`/`recvmsg`: the header, its iovecs and the address storage,
/// kept together so the kernel's pointers stay valid when the op moves.
pub(crate) struct MsgScratch {
    pub(crate) hdr: libc::msghdr,
    pub(crate) iovecs: Vec<libc::iovec>,
    pub(crate) addr: libc::sockaddr_storage,
}

impl MsgScratch {
    fn boxed() -> Box<MsgScratch> {
        Box::new(MsgScratch {
            // SAFETY: `msghdr` and `sockaddr_storage` are plain C structs for which all-zero
            // bytes is a valid (empty) value.
            hdr: unsafe { mem::zeroed() },
            iovecs: Vec::new(),
            // SAFETY: as above.
            addr: unsafe { mem::zeroed() },
        })
    }

    /// Points the header at the iovecs and, when `with_addr`, at the address storage of
    /// `addr_len` bytes.
    pub(crate) fn link(&mut self, addr_len: Option<libc::socklen_t>) -> *mut libc::msghdr {
        self.hdr.msg_iov = self.iovecs.as_mut_ptr();
        self.hdr.msg_iovlen = self.iovecs.len() as _;
        self.hdr.msg_control = std::ptr::null_mut();
        self.hdr.msg_controllen = 0;
        self.hdr.msg_flags = 0;
        match addr_len {
            Some(len) => {
                self.hdr.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
                self.hdr.msg_namelen = len;
            }
            None => {
                self.hdr.msg_name = std::ptr::null_mut();
                self.hdr.msg_namelen = 0;
            }
        }
        &mut self.hdr
    }

    /// The address the kernel stored, if it stored one.
    pub(crate) fn received_addr(&self) -> Option<SockAddr> {
        sock_addr_from(&self.addr, self.hdr.msg_namelen)
    }
}

impl fmt::Debug for MsgScratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgScratch")
            .field("iovecs", &self.iovecs.len())
            .finish_non_exhaustive()
    }
}

/// Copies a kernel-written address into a `SockAddr`; `None` when the kernel wrote none
/// (length 0, as for unnamed AF_UNIX peers).
pub(crate) fn sock_addr_from(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SockAddr> {
    if len == 0 || len as usize > mem::size_of::<libc::sockaddr_storage>() {
        return None;
    }
    // SAFETY: the kernel initialised the first `len` bytes of `storage` with a socket
    // address and `len` fits the storage; `try_init` hands us storage of the same size.
    let ((), addr) = unsafe {
        SockAddr::try_init(|out, out_len| {
            std::ptr::copy_nonoverlapping(storage, out.cast::<libc::sockaddr_storage>(), 1);
            *out_len = len;
            Ok(())
        })
    }
    .ok()?;
    Some(addr)
}

/// `sendmsg(2)`: vectored data, optionally to an address (UDP `sendto`), with `MSG_NOSIGNAL`.
///
/// The destination is copied into the op's boxed scratch space, so the op stays small to
/// move. Reuse one `SendMsg` per transport ([`SendMsg::reset`]) so its scratch allocation
/// is paid once.
#[derive(Debug)]
pub struct SendMsg {
    /// The socket.
    pub fd: RawFd,
    /// The data, in order.
    pub bufs: Vec<Vec<u8>>,
    /// Bytes of the concatenation already sent.
    pub start: usize,
    /// Extra `MSG_*` flags.
    pub flags: i32,
    pub(crate) scratch: Box<MsgScratch>,
    /// Length of the destination in `scratch.addr`; 0 for a connected socket.
    addr_len: libc::socklen_t,
}

impl SendMsg {
    /// Sends `bufs` on a connected socket, or to `addr`.
    pub fn new(fd: RawFd, bufs: Vec<Vec<u8>>, addr: Option<&SockAddr>) -> Self {
        let mut op = SendMsg {
            fd,
            bufs: Vec::new(),
            start: 0,
            flags: 0,
            scratch: MsgScratch::boxed(),
            addr_len: 0,
        };
        op.reset(bufs, addr);
        op
    }

    /// Makes this op ready to send `bufs` to `addr`, keeping its scratch allocation.
    pub fn reset(&mut self, bufs: Vec<Vec<u8>>, addr: Option<&SockAddr>) {
        self.bufs = bufs;
        self.start = 0;
        self.addr_len = match addr {
            Some(addr) => {
                let len = (addr.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: `addr.as_ptr()` points to `addr.len()` initialised bytes; we copy at
                // most the size of the scratch storage, which is where they go.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        addr.as_ptr().cast::<u8>(),
                        (&mut self.scratch.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                        len,
                    )
                };
                len as libc::socklen_t
            }
            None => 0,
        };
    }

    /// The destination, if one was set.
    pub fn addr(&self) -> Option<SockAddr> {
        sock_addr_from(&self.scratch.addr, self.addr_len)
    }

    /// Builds the header for the kernel; valid while `self` is not mutated.
    pub(crate) fn prepare(&mut self) -> *const libc::msghdr {
        fill_write_iovecs(&mut self.scratch.iovecs, &self.bufs, self.start);
        let addr_len = (self.addr_len != 0).then_some(self.addr_len);
        self.scratch.link(addr_len)
    }
}

/// `recvmsg(2)`: one datagram into `buf`'s spare capacity, with its sender's address.
#[derive(Debug)]
pub struct RecvMsg {
    /// The socket.
    pub fd: RawFd,
    /// Receives the datagram in `len()..capacity()`.
    pub buf: Vec<u8>,
    /// `MSG_*` flags.
    pub flags: i32,
    pub(crate) scratch: Box<MsgScratch>,
}

impl RecvMsg {
    /// Receives one datagram into `buf`'s spare capacity.
    pub fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        RecvMsg {
            fd,
            buf,
            flags: 0,
            scratch: MsgScratch::boxed(),
        }
    }

    /// The sender's address, after a successful completion; `None` for unnamed AF_UNIX
    /// peers.
    pub fn peer(&self) -> Option<SockAddr> {
        self.scratch.received_addr()
    }

    /// Whether the datagram was longer than the buffer and its tail was discarded.
    pub fn truncated(&self) -> bool {
        self.scratch.hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    pub(crate) fn complete(&mut self, n: usize) {
        extend_by(&mut self.buf, n);
    }

    /// Builds the header for the kernel; valid while `self` is not mutated.
    pub(crate) fn prepare(&mut self) -> *mut libc::msghdr {
        let spare = self.buf.spare_capacity_mut();
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        self.scratch.iovecs.clear();
        self.scratch.iovecs.push(iov);
        self.scratch.link(Some(
            mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
        ))
    }
}

/// Heap storage for the address `accept` writes.
pub(crate) struct AddrBuf {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl AddrBuf {
    fn boxed() -> Box<AddrBuf> {
        Box::new(AddrBuf {
            // SAFETY: all-zero bytes is a valid `sockaddr_storage`.
            storage: unsafe { mem::zeroed() },
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }
}

impl fmt::Debug for AddrBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddrBuf(len={})", self.len)
    }
}

/// `accept4(2)` of one connection; the result is the new fd, and [`Accept::peer`] its
/// address. The new fd is created with `SOCK_CLOEXEC | SOCK_NONBLOCK` unless `flags` says
/// otherwise.
#[derive(Debug)]
pub struct Accept {
    /// The listening socket.
    pub fd: RawFd,
    /// `SOCK_*` flags for the new fd.
    pub flags: i32,
    pub(crate) addr: Box<AddrBuf>,
}

impl Accept {
    /// Accepts one connection on `fd`.
    pub fn new(fd: RawFd) -> Self {
        Accept {
            fd,
            flags: libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            addr: AddrBuf::boxed(),
        }
    }

    /// The accepted peer's address, after a successful completion.
    pub fn peer(&self) -> Option<SockAddr> {
        sock_addr_from(&self.addr.storage, self.addr.len)
    }

    /// The kernel's pointers to the address storage and its length.
    pub(crate) fn prepare(&mut self) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        self.addr.len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        (
            (&mut self.addr.storage as *mut libc::sockaddr_storage).cast(),
            &mut self.addr.len,
        )
    }
}

/// Multishot `accept4(2)`: one completion (`more == true`) per accepted fd, until cancelled
/// or an error ends it. Kernels without multishot accept get an emulation by repeated
/// single accepts. Peer addresses are not reported (ask the socket: `getpeername`).
#[derive(Debug)]
pub struct AcceptMulti {
    /// The listening socket.
    pub fd: RawFd,
    /// `SOCK_*` flags for the new fds.
    pub flags: i32,
}

impl AcceptMulti {
    /// Accepts connections on `fd` until cancelled.
    pub fn new(fd: RawFd) -> Self {
        AcceptMulti {
            fd,
            flags: libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        }
    }
}

/// `connect(2)` to `addr`.
#[derive(Debug)]
pub struct Connect {
    /// The socket (non-blocking or not; the backend handles both).
    pub fd: RawFd,
    /// The destination; boxed so its address stays put while the kernel reads it.
    pub addr: Box<SockAddr>,
}

impl Connect {
    /// Connects `fd` to `addr`.
    pub fn new(fd: RawFd, addr: SockAddr) -> Self {
        Connect {
            fd,
            addr: Box::new(addr),
        }
    }
}

/// `shutdown(2)`.
#[derive(Debug)]
pub struct Shutdown {
    /// The socket.
    pub fd: RawFd,
    /// Which directions.
    pub how: std::net::Shutdown,
}

impl Shutdown {
    /// Shuts down `how` on `fd`.
    pub fn new(fd: RawFd, how: std::net::Shutdown) -> Self {
        Shutdown { fd, how }
    }

    /// The `SHUT_*` constant.
    pub(crate) fn how_raw(&self) -> i32 {
        match self.how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        }
    }
}
