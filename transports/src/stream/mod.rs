//! [`Transport`]: the byte-stream transport over a socket (TCP, Unix stream) or a pipe,
//! driven by proactor ops (asyncio's `_ProactorSocketTransport` and pipe transports).
//!
//! # Ground rules
//! - **Reads**: sockets keep one multishot receive in flight; each chunk arrives in a
//!   buffer of the proactor's pool, `data_received` gets a view of it, and the buffer goes
//!   back to the pool as soon as the call returns, so an idle connection holds no read
//!   buffer. Pipes use single reads into one reused buffer.
//! - **Pausing** never loses data: chunks that arrive while paused (the multishot receive is
//!   cancelled, and whatever it already received still arrives) are kept in order and
//!   delivered after `resume_reading()`.
//! - **Writes** are copied into the transport's buffer; on io_uring the loop's before-poll
//!   hook submits everything queued in an iteration as one send per connection, on epoll
//!   `write()` sends at once (`writes_through`). Only one send is in
//!   flight per connection; its bytes still count toward `get_write_buffer_size()`
//!   (semantics 141). The two write buffers alternate, so steady state allocates nothing.
//! - **Teardown** (semantics 212): `connection_lost` is scheduled only once every op in
//!   flight has completed; after it the socket is shut down and closed through the proactor.
//!
//! The state lives in [`StreamInner`] (interior mutability, never borrowed across a protocol
//! call); `read.rs`, `write.rs` and `lifecycle.rs` hold its read side, write side and
//! connection life.

mod lifecycle;
mod read;
mod slot;
mod write;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use ringloop_proactor::{BackendKind, Completion, OpId, RecvBuf};
use ringloop_runtime::{EventLoop, Future, IoHandler, IoToken, LoopError};

use crate::address::Address;
use crate::error::TransportError;
use crate::flow::{FlowControl, InvalidLimits};
use crate::flow_signal::DeferredFlow;
use crate::flush::FlushList;
use crate::protocol::Protocol;
use slot::ProtocolSlot;

/// A protocol as a transport holds it.
pub type ProtocolRef = Rc<RefCell<dyn Protocol>>;

/// What kind of file a stream transport drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// A connected stream socket: reads and writes, half-close with `shutdown`.
    Socket,
    /// The read end of a pipe (or a character device): reads only; EOF always closes.
    ReadPipe,
    /// The write end of a pipe: writes only; `write_eof()` is `close()`.
    WritePipe,
}

/// Whether a transport of `kind` on `lp` sends inside `write()` rather than at the loop's
/// before-poll flush: on the epoll backend, where a send is a system call made when it is
/// submitted (asyncio's selector transports do the same). Its receives and sends then
/// alternate, as a task per connection's do, instead of a turn's receives all coming before
/// its sends; on io_uring, where the flush only fills SQEs, it would only split a turn's
/// writes. Such a transport keeps `write_blocked` set, so that `write()`'s fast path stays
/// the io_uring one.
pub(crate) fn writes_through(lp: &EventLoop, kind: StreamKind) -> bool {
    lp.backend() == BackendKind::Epoll && kind != StreamKind::ReadPipe
}

impl StreamKind {
    fn reads(self) -> bool {
        !matches!(self, StreamKind::WritePipe)
    }
}

/// A chunk kept while reading is paused.
pub(crate) enum Chunk {
    /// A provided buffer of the proactor's pool.
    Pooled(RecvBuf),
    /// A buffer of our own (pipe reads).
    Owned(Vec<u8>),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Pooled(buf) => buf,
            Chunk::Owned(buf) => buf,
        }
    }
}

/// One value of [`Transport::get_extra_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtraInfo {
    /// `peername` or `sockname`.
    Address(Address),
    /// `socket` or `pipe`: the file descriptor, −1 once the transport is closed
    /// (asyncio returns a socket object whose `fileno()` is then −1).
    Fd(RawFd),
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created; `connection_made` is scheduled.
    Starting,
    /// `connection_made` ran.
    Open,
    /// `connection_lost` is scheduled or ran; the fd is (being) closed.
    Lost,
}

/// The transport's state. Every field is a `Cell` or a short-lived `RefCell` borrow.
pub(crate) struct StreamInner {
    pub(crate) lp: EventLoop,
    pub(crate) kind: StreamKind,
    pub(crate) token: Cell<Option<IoToken>>,
    /// Owns the fd until teardown closes it through the proactor.
    pub(crate) fd: RefCell<Option<OwnedFd>>,
    pub(crate) raw_fd: Cell<RawFd>,
    /// The protocol. The slot keeps it while one of its methods runs through
    /// `call_protocol` (the per-chunk call holds no `Rc` of it), so `set_protocol` from
    /// inside such a method leaves its protocol in `protocol_next`.
    pub(crate) protocol: ProtocolSlot<dyn Protocol>,
    /// A `set_protocol` made while a protocol method ran: installed by
    /// `install_next_protocol` before the protocol is next called. Never set while the read
    /// gate is open (`set_protocol` closes it), so the per-chunk path need not look here.
    pub(crate) protocol_next: RefCell<Option<ProtocolRef>>,
    /// Whether `protocol` is a buffered one, once asked (`None` until then).
    pub(crate) protocol_is_buffered: Cell<Option<bool>>,
    pub(crate) phase: Cell<Phase>,
    /// `close()`, `abort()` or a fatal error happened: no more reads are delivered.
    pub(crate) closing: Cell<bool>,
    /// `write()` must take its slow path: closing, after `write_eof()`, a read pipe, or
    /// always on a write-through transport.
    pub(crate) write_blocked: Cell<bool>,
    /// The write buffer was discarded (abort or fatal error).
    pub(crate) aborted: Cell<bool>,
    /// The error `connection_lost` will receive.
    pub(crate) lost_error: RefCell<Option<io::Error>>,
    /// asyncio's `_conn_lost` counter of dropped writes (semantics 125).
    pub(crate) dropped_writes: Cell<u32>,
    pub(crate) peername: Option<Address>,
    pub(crate) sockname: Option<Address>,
    /// Runs once after `connection_lost` (a server forgetting the connection).
    pub(crate) on_lost: RefCell<Option<Box<dyn FnOnce()>>>,
    // ----- read side (read.rs) -----
    pub(crate) read_op: Cell<Option<OpId>>,
    pub(crate) read_paused: Cell<bool>,
    /// Chunks kept for later, in order. Never non-empty unless `read_paused`,
    /// `delivery_scheduled` or `closing` is set: the per-chunk path relies on it.
    pub(crate) pending: RefCell<VecDeque<Chunk>>,
    pub(crate) pending_eof: Cell<bool>,
    pub(crate) eof_seen: Cell<bool>,
    pub(crate) delivery_scheduled: Cell<bool>,
    /// Whether a chunk must leave the per-message path: `closing`, `read_paused` or
    /// `delivery_scheduled` is set, or the protocol is not known to be a plain one. One
    /// byte to test per chunk instead of four; `refresh_read_gate` recomputes it after
    /// each change of those.
    pub(crate) read_gate_closed: Cell<bool>,
    // ----- write side (write.rs) -----
    pub(crate) wbuf: RefCell<Vec<u8>>,
    /// The other write buffer (the two alternate); a read pipe, which never writes, keeps
    /// its read buffer here instead.
    pub(crate) spare: RefCell<Vec<u8>>,
    pub(crate) write_op: Cell<Option<OpId>>,
    /// `write_op` again if it is quiet (else [`OpId::NONE`]): its success is not reported,
    /// so it is reclaimed (`settle_write`) when the transport next writes or needs the
    /// outcome. The id rather than a flag, and `NONE` rather than an `Option`: the
    /// per-message resend looks it up untested (a lookup of `NONE` finds nothing).
    pub(crate) quiet_op: Cell<OpId>,
    pub(crate) in_flight: Cell<usize>,
    pub(crate) flow: Cell<FlowControl>,
    /// Flow signals raised while the protocol was busy, delivered when it returns.
    pub(crate) deferred_flow: DeferredFlow,
    pub(crate) eof_requested: Cell<bool>,
    pub(crate) eof_sent: Cell<bool>,
    pub(crate) listed: Cell<bool>,
    pub(crate) flush_list: Rc<FlushList>,
    /// The stream listed before this one (`FlushList` links its streams through here);
    /// `None` unless listed.
    pub(crate) flush_next: Cell<Option<Rc<StreamInner>>>,
    /// The write pipe's watch for the reader closing (semantics 171).
    pub(crate) watch_op: Cell<Option<OpId>>,
    /// `Rc` to self for the flush list; set at creation, cleared at teardown.
    pub(crate) me: RefCell<std::rc::Weak<StreamInner>>,
}

/// A byte-stream transport: asyncio's `Transport` for TCP and Unix stream sockets and for
/// pipes. Cheap to clone (a reference count); all clones are the same transport.
///
/// # Examples
/// ```no_run
/// use ringloop_runtime::{EventLoop, LoopError};
/// use ringloop_transports::{EventLoopExt, Protocol, ConnectOptions};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, transport: &ringloop_transports::Transport) {
///         let _ = transport.write(b"hello\n");
///         transport.close();
///     }
/// }
///
/// let lp = EventLoop::new()?;
/// let lp2 = lp.clone();
/// lp.run_until_complete(async move {
///     let (_transport, _protocol) =
///         lp2.create_connection(|| Hello, "127.0.0.1", 8888, ConnectOptions::default()).await?;
///     Ok::<_, LoopError>(())
/// })?;
/// # Ok::<(), LoopError>(())
/// ```
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Rc<StreamInner>,
}

impl Transport {
    /// Creates a transport over `fd` and schedules `connection_made`; the returned future
    /// resolves once it has run (semantics 110).
    pub(crate) fn start(
        lp: &EventLoop,
        fd: OwnedFd,
        kind: StreamKind,
        protocol: ProtocolRef,
        on_lost: Option<Box<dyn FnOnce()>>,
    ) -> Result<(Transport, Future<()>), LoopError> {
        let (peername, sockname) = match kind {
            StreamKind::Socket => {
                let sock = socket2::SockRef::from(&fd);
                (
                    sock.peer_addr()
                        .ok()
                        .and_then(|a| Address::from_sock_addr(&a)),
                    sock.local_addr()
                        .ok()
                        .and_then(|a| Address::from_sock_addr(&a)),
                )
            }
            _ => (None, None),
        };
        let raw_fd = fd.as_raw_fd();
        let inner = Rc::new_cyclic(|me| StreamInner {
            lp: lp.clone(),
            kind,
            token: Cell::new(None),
            fd: RefCell::new(Some(fd)),
            raw_fd: Cell::new(raw_fd),
            protocol: ProtocolSlot::new(Some(protocol)),
            protocol_next: RefCell::new(None),
            protocol_is_buffered: Cell::new(None),
            phase: Cell::new(Phase::Starting),
            closing: Cell::new(false),
            write_blocked: Cell::new(writes_through(lp, kind) || kind == StreamKind::ReadPipe),
            aborted: Cell::new(false),
            lost_error: RefCell::new(None),
            dropped_writes: Cell::new(0),
            peername,
            sockname,
            on_lost: RefCell::new(on_lost),
            read_op: Cell::new(None),
            read_paused: Cell::new(false),
            pending: RefCell::new(VecDeque::new()),
            pending_eof: Cell::new(false),
            eof_seen: Cell::new(false),
            delivery_scheduled: Cell::new(false),
            read_gate_closed: Cell::new(true),
            wbuf: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            write_op: Cell::new(None),
            quiet_op: Cell::new(OpId::NONE),
            in_flight: Cell::new(0),
            flow: Cell::new(FlowControl::default()),
            deferred_flow: DeferredFlow::default(),
            eof_requested: Cell::new(false),
            eof_sent: Cell::new(false),
            listed: Cell::new(false),
            flush_list: FlushList::of(lp),
            flush_next: Cell::new(None),
            watch_op: Cell::new(None),
            me: RefCell::new(me.clone()),
        });
        let made = crate::start::start(lp, inner.clone())?;
        Ok((Transport { inner }, made))
    }

    /// Queues `data` to be sent. Returns at once: the bytes are copied (the caller may reuse
    /// its buffer, semantics 128). On io_uring they go out, with everything else written in
    /// this loop iteration, as one send before the loop next waits; on epoll they are sent
    /// inside this call, as far as the socket takes them (the rest waits for it to become
    /// writable), as asyncio's selector transports do. `write(b"")` does nothing
    /// (semantics 123).
    ///
    /// After `close()` or once the connection is lost, data is dropped silently; from the
    /// fifth dropped write on, each logs a warning (semantics 125).
    ///
    /// # Errors
    /// [`TransportError::WriteAfterEof`] after [`write_eof`](Transport::write_eof), even
    /// after `close()` (semantics 124).
    #[inline]
    pub fn write(&self, data: &[u8]) -> Result<(), TransportError> {
        self.inner.write(data, "write")
    }

    /// Writes each buffer in turn: the same as one `write` of their concatenation
    /// (semantics 127).
    ///
    /// # Errors
    /// As [`write`](Transport::write) (`Cannot call writelines() after write_eof()`).
    pub fn writelines<I, B>(&self, lines: I) -> Result<(), TransportError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        for line in lines {
            self.inner.write(line.as_ref(), "writelines")?;
        }
        Ok(())
    }

    /// Closes the writing side after the buffered data is sent (`shutdown(SHUT_WR)` for
    /// sockets, exactly once; semantics 129). A second call does nothing, as does a call
    /// after `close()`. For a write pipe it is [`close`](Transport::close) (semantics 170).
    ///
    /// # Errors
    /// [`TransportError::NotSupported`] on a read pipe.
    pub fn write_eof(&self) -> Result<(), TransportError> {
        self.inner.write_eof()
    }

    /// Whether [`write_eof`](Transport::write_eof) is supported: true for sockets and write
    /// pipes.
    pub fn can_write_eof(&self) -> bool {
        self.inner.kind != StreamKind::ReadPipe
    }

    /// Closes the transport: no more data is delivered, buffered data is still sent, then
    /// the protocol's `connection_lost(None)` is called from a later callback, never from
    /// inside `close()` (semantics 119). Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes at once: buffered data is discarded, ops in flight are cancelled, and
    /// `connection_lost(None)` follows once they completed (semantics 121). After `close()`
    /// or a second `abort()`, `connection_lost` still comes exactly once. A paused writer
    /// gets no `resume_writing()` (semantics 122).
    pub fn abort(&self) {
        self.inner.force_close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.get() || self.inner.phase.get() == Phase::Lost
    }

    /// Extra information (semantics 130): `peername` and `sockname` (sockets; kept after
    /// close), `socket` (sockets) or `pipe` (pipes): the fd, −1 once closed. `None` for
    /// anything else.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        let fd = self.inner.raw_fd.get();
        match (name, self.inner.kind) {
            ("peername", _) => self.peername().map(ExtraInfo::Address),
            ("sockname", _) => self.sockname().map(ExtraInfo::Address),
            ("socket", StreamKind::Socket) => Some(ExtraInfo::Fd(fd)),
            ("pipe", StreamKind::ReadPipe | StreamKind::WritePipe) => Some(ExtraInfo::Fd(fd)),
            _ => None,
        }
    }

    /// The peer's address (sockets), also after close.
    pub fn peername(&self) -> Option<Address> {
        self.inner.peername.clone()
    }

    /// The local address (sockets), also after close.
    pub fn sockname(&self) -> Option<Address> {
        self.inner.sockname.clone()
    }

    /// The file descriptor, or −1 once the transport closed it.
    pub fn fileno(&self) -> RawFd {
        self.inner.raw_fd.get()
    }

    /// Stops delivering data until [`resume_reading`](Transport::resume_reading). Nothing
    /// is lost: data that was already being received is kept and delivered after resuming.
    /// Idempotent; a no-op once closing (semantics 131).
    pub fn pause_reading(&self) {
        self.inner.pause_reading();
    }

    /// Delivers again, starting with what arrived while paused (from a later callback, as
    /// asyncio does). Idempotent; a no-op once closing.
    pub fn resume_reading(&self) {
        self.inner.resume_reading();
    }

    /// Whether data is being delivered: not paused and not closing (semantics 131).
    pub fn is_reading(&self) -> bool {
        self.inner.kind.reads()
            && !self.inner.read_paused.get()
            && !self.inner.closing.get()
            && self.inner.phase.get() != Phase::Lost
    }

    /// Sets the write-buffer water marks (semantics 136): with only `high`, low is
    /// `high / 4`; with only `low`, high is `4 * low`; with neither, 64 KiB and 16 KiB.
    /// The protocol may be paused or resumed at once.
    ///
    /// # Errors
    /// [`InvalidLimits`] unless `high >= low`.
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), InvalidLimits> {
        let (high, low) = FlowControl::resolve(high, low)?;
        let mut flow = self.inner.flow.get();
        flow.set_limits(high, low);
        self.inner.flow.set(flow);
        self.inner.settle_write();
        self.inner.check_flow_grow();
        self.inner.check_flow_shrink();
        Ok(())
    }

    /// `(low, high)`: the water marks (semantics 135).
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.inner.flow.get().limits()
    }

    /// Bytes queued plus bytes submitted to the kernel and not yet confirmed sent
    /// (semantics 141).
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.settle_write();
        self.inner.buffered()
    }

    /// Whether the protocol was told to pause writing and not yet to resume.
    pub fn is_writing_paused(&self) -> bool {
        self.inner.flow.get().is_paused()
    }

    /// Replaces the protocol; later events go to `protocol`, and
    /// [`get_protocol`](Transport::get_protocol) returns it at once.
    ///
    /// Called from inside one of the current protocol's methods, the switch completes once
    /// that method has returned: events raised meanwhile (a `pause_writing()` by a write in
    /// the same method) wait for it and then go to `protocol`.
    pub fn set_protocol(&self, protocol: ProtocolRef) {
        let inner = &self.inner;
        let old = match inner.protocol.replace(Some(protocol)) {
            Ok(old) => {
                let superseded = inner.protocol_next.borrow_mut().take();
                (old, superseded)
            }
            // A protocol method is running: the slot must keep the protocol it runs on.
            Err(protocol) => (inner.protocol_next.replace(protocol), None),
        };
        inner.protocol_is_buffered.set(None);
        inner.refresh_read_gate();
        // Dropped last: a protocol's `Drop` may call back into the transport.
        drop(old);
    }

    /// The current protocol; `None` after `connection_lost` (the transport lets go of it
    /// then, so the protocol and transport do not keep each other alive).
    pub fn get_protocol(&self) -> Option<ProtocolRef> {
        let next = self.inner.protocol_next.borrow().clone();
        next.or_else(|| self.inner.protocol.get())
    }

    /// The loop this transport runs on.
    pub fn get_loop(&self) -> &EventLoop {
        &self.inner.lp
    }

    /// Whether `self` and `other` are the same transport.
    pub fn ptr_eq(&self, other: &Transport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("kind", &self.inner.kind)
            .field("fd", &self.inner.raw_fd.get())
            .field("peername", &self.inner.peername)
            .field("closing", &self.is_closing())
            .finish()
    }
}

impl IoHandler for StreamInner {
    #[inline]
    fn complete(&self, _lp: &EventLoop, completion: &mut Completion) {
        if completion.more && self.deliver_chunk_now(completion) {
            return;
        }
        self.complete_other(completion);
    }
}

impl StreamInner {
    /// Recomputes `read_gate_closed`; called after every change of what it sums up.
    #[inline]
    pub(crate) fn refresh_read_gate(&self) {
        self.read_gate_closed.set(self.read_gate_should_close());
    }

    /// What `read_gate_closed` must be.
    #[inline]
    pub(crate) fn read_gate_should_close(&self) -> bool {
        self.closing.get()
            || self.read_paused.get()
            || self.delivery_scheduled.get()
            || self.protocol_is_buffered.get() != Some(false)
    }

    /// Every completion but the per-message chunk: kept out of line so that the hot path
    /// in `complete` stays small (fewer registers saved, a smaller frame).
    #[inline(never)]
    fn complete_other(&self, completion: &mut Completion) {
        let id = Some(completion.id);
        // What the read and write paths leave in the completion (an op, a buffer) is
        // dropped in place before `maybe_finish`, as if they had owned it.
        if id == self.read_op.get() {
            self.read_completed(completion);
            completion.op = None;
            completion.buf = None;
        } else if id == self.write_op.get() {
            self.write_completed(completion);
            completion.op = None;
            completion.buf = None;
        } else if id == self.watch_op.get() {
            self.watch_completed(completion.take());
        } else {
            tracing::trace!(?completion, "stray completion for a stream transport");
        }
        self.maybe_finish();
    }
}

impl crate::start::TransportState for StreamInner {
    fn set_token(&self, token: IoToken) {
        self.token.set(Some(token));
    }

    fn begin(self: Rc<Self>) {
        let transport = Transport { inner: self };
        transport.inner.call_connection_made(&transport);
    }

    fn release(&self) {
        self.release_fd();
    }
}

impl crate::registry::Abandon for StreamInner {
    fn abandon(&self, graveyard: &mut Vec<OwnedFd>) {
        self.closing.set(true);
        self.refresh_read_gate();
        self.write_blocked.set(true);
        self.phase.set(Phase::Lost);
        let next = self.protocol_next.borrow_mut().take();
        drop(next);
        // The slot keeps its protocol only while a protocol method runs; a loop does not
        // close from inside one (`close()` refuses while it runs).
        let protocol = self.protocol.replace(None).ok().flatten();
        drop(protocol);
        let on_lost = self.on_lost.borrow_mut().take();
        drop(on_lost);
        self.pending.borrow_mut().clear();
        graveyard.extend(self.fd.borrow_mut().take());
        self.raw_fd.set(-1);
        self.token.set(None);
        *self.me.borrow_mut() = std::rc::Weak::new();
    }
}

/// The error a panicking protocol method leaves behind.
pub(crate) fn panic_error(method: &str, payload: &(dyn std::any::Any + Send)) -> io::Error {
    let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    };
    io::Error::other(format!("protocol.{method}() panicked: {msg}"))
}
