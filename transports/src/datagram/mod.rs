//! [`DatagramTransport`] (asyncio section N): one receive in flight into a reused buffer, a
//! queue of datagrams sent one `sendmsg` at a time, errors that do not close the endpoint
//! delivered to `error_received`. `endpoint.rs` creates endpoints
//! (`create_datagram_endpoint`).

mod endpoint;

pub(crate) use endpoint::create_datagram_endpoint;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use ringloop_proactor::{op, Completion, Op, OpId};
use ringloop_runtime::{EventLoop, ExceptionContext, IoHandler, IoToken, LoopError};
use socket2::{SockAddr, Socket};

use crate::address::Address;
use crate::error::invalid;
use crate::flow::{FlowControl, FlowSignal, InvalidLimits};
use crate::flow_signal::{self, DeferredFlow};
use crate::flush::{Flush, FlushList};
use crate::protocol::DatagramProtocol;

/// The largest datagram received (asyncio's `max_size`, 256 KiB; semantics 160).
const MAX_DATAGRAM: usize = 256 * 1024;

/// asyncio's per-datagram overhead in the buffer accounting (semantics 161).
const HEADER_SIZE: usize = 8;

/// A datagram protocol as a transport holds it.
pub type DatagramProtocolRef = Rc<RefCell<dyn DatagramProtocol>>;

/// A datagram endpoint: asyncio's `DatagramTransport`. Cheap to clone.
#[derive(Clone)]
pub struct DatagramTransport {
    inner: Rc<DgramInner>,
}

pub(crate) struct DgramInner {
    lp: EventLoop,
    token: Cell<Option<IoToken>>,
    fd: RefCell<Option<OwnedFd>>,
    raw_fd: Cell<RawFd>,
    protocol: RefCell<Option<DatagramProtocolRef>>,
    remote: Option<Address>,
    sockname: Option<Address>,
    started: Cell<bool>,
    closing: Cell<bool>,
    lost: Cell<bool>,
    lost_error: RefCell<Option<io::Error>>,
    dropped: Cell<u32>,
    recv_op: Cell<Option<OpId>>,
    recv: RefCell<Option<op::RecvMsg>>,
    queue: RefCell<VecDeque<(Vec<u8>, Option<SockAddr>)>>,
    queued: Cell<usize>,
    send_op: Cell<Option<OpId>>,
    in_flight: Cell<usize>,
    send: RefCell<Option<op::SendMsg>>,
    flow: Cell<FlowControl>,
    deferred_flow: DeferredFlow,
    listed: Cell<bool>,
    flush_list: Rc<FlushList>,
    me: RefCell<Weak<DgramInner>>,
}

impl DatagramTransport {
    fn start(
        lp: &EventLoop,
        sock: Socket,
        protocol: DatagramProtocolRef,
    ) -> Result<(DatagramTransport, ringloop_runtime::Future<()>), LoopError> {
        let remote = sock
            .peer_addr()
            .ok()
            .and_then(|a| Address::from_sock_addr(&a));
        let sockname = sock
            .local_addr()
            .ok()
            .and_then(|a| Address::from_sock_addr(&a));
        let fd = OwnedFd::from(sock);
        let raw = fd.as_raw_fd();
        let inner = Rc::new_cyclic(|me| DgramInner {
            lp: lp.clone(),
            token: Cell::new(None),
            fd: RefCell::new(Some(fd)),
            raw_fd: Cell::new(raw),
            protocol: RefCell::new(Some(protocol)),
            remote,
            sockname,
            started: Cell::new(false),
            closing: Cell::new(false),
            lost: Cell::new(false),
            lost_error: RefCell::new(None),
            dropped: Cell::new(0),
            recv_op: Cell::new(None),
            recv: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            send_op: Cell::new(None),
            in_flight: Cell::new(0),
            send: RefCell::new(None),
            flow: Cell::new(FlowControl::default()),
            deferred_flow: DeferredFlow::default(),
            listed: Cell::new(false),
            flush_list: FlushList::of(lp),
            me: RefCell::new(me.clone()),
        });
        let made = crate::start::start(lp, inner.clone())?;
        Ok((DatagramTransport { inner }, made))
    }

    /// Sends `data` as one datagram to `addr`, or to the connected peer when `addr` is
    /// `None`. `sendto(b"")` sends an empty datagram (semantics 157). After close, data is
    /// dropped (a warning from the fifth on).
    ///
    /// # Errors
    /// `InvalidArgument` when the endpoint is connected and `addr` is another address, or
    /// not connected and `addr` is `None`.
    pub fn sendto(&self, data: &[u8], addr: Option<&Address>) -> Result<(), LoopError> {
        let inner = &self.inner;
        let target = match (&inner.remote, addr) {
            (Some(remote), Some(addr)) if addr != remote => {
                return Err(invalid(format!(
                    "Invalid address: must be None or {remote}"
                )))
            }
            (Some(_), _) => None,
            (None, Some(addr)) => Some(addr.to_sock_addr()?),
            (None, None) => {
                return Err(invalid(
                    "sendto() needs an address on an unconnected endpoint",
                ))
            }
        };
        if inner.closing.get() || inner.lost.get() {
            let dropped = inner.dropped.get();
            if dropped >= 5 {
                tracing::warn!("socket.sendto() raised exception.");
            }
            inner.dropped.set(dropped + 1);
            return Ok(());
        }
        inner.queue.borrow_mut().push_back((data.to_vec(), target));
        inner
            .queued
            .set(inner.queued.get() + data.len() + HEADER_SIZE);
        if inner.send_op.get().is_none() && !inner.listed.replace(true) {
            // Not closing (checked above): the handle's own `Rc` is the transport's.
            inner.flush_list.push_datagram(Rc::clone(inner));
        }
        inner.check_flow(true);
        Ok(())
    }

    /// Closes after the queued datagrams are sent; `connection_lost(None)` follows.
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closing.replace(true) {
            return;
        }
        if let Some(id) = inner.recv_op.get() {
            inner.lp.cancel_op(id);
        }
        inner.maybe_finish();
    }

    /// Closes at once, discarding queued datagrams.
    pub fn abort(&self) {
        self.inner.abort(None);
    }

    /// Whether the endpoint is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.get()
    }

    /// `sockname`, `peername` (connected endpoints) or `socket` (the fd, −1 once closed).
    pub fn get_extra_info(&self, name: &str) -> Option<crate::ExtraInfo> {
        match name {
            "sockname" => self.inner.sockname.clone().map(crate::ExtraInfo::Address),
            "peername" => self.inner.remote.clone().map(crate::ExtraInfo::Address),
            "socket" => Some(crate::ExtraInfo::Fd(self.inner.raw_fd.get())),
            _ => None,
        }
    }

    /// The local address.
    pub fn sockname(&self) -> Option<Address> {
        self.inner.sockname.clone()
    }

    /// Queued bytes plus 8 per datagram (semantics 161).
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.queued.get() + self.inner.in_flight.get()
    }

    /// As [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits).
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
        self.inner.check_flow(true);
        self.inner.check_flow(false);
        Ok(())
    }

    /// The current protocol (`None` after `connection_lost`).
    pub fn get_protocol(&self) -> Option<DatagramProtocolRef> {
        self.inner.protocol.borrow().clone()
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("fd", &self.inner.raw_fd.get())
            .field("sockname", &self.inner.sockname)
            .field("remote", &self.inner.remote)
            .finish()
    }
}

impl DgramInner {
    fn with_protocol<R>(
        &self,
        method: &str,
        f: impl FnOnce(&mut dyn DatagramProtocol) -> R,
    ) -> Option<R> {
        let outcome = {
            // Borrowed for the call instead of cloning the `Rc` (once per datagram): nothing
            // takes the protocol out of its slot while one of its methods runs
            // (`connection_lost` is a callback of its own, and the loop does not close
            // from inside a callback).
            let slot = self.protocol.try_borrow().ok()?;
            let mut guard = slot.as_ref()?.try_borrow_mut().ok()?;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *guard)))
        };
        match outcome {
            Ok(value) => {
                self.deliver_deferred_flow();
                Some(value)
            }
            Err(payload) => {
                let error = crate::stream::panic_error(method, &*payload);
                self.lp.call_exception_handler(
                    ExceptionContext::new(format!("Fatal error: protocol.{method}() call failed."))
                        .with_error(LoopError::other(io::Error::new(
                            error.kind(),
                            error.to_string(),
                        ))),
                );
                self.abort(Some(error));
                None
            }
        }
    }

    fn connection_made(&self, transport: &DatagramTransport) {
        self.started.set(true);
        let _ = self.with_protocol("connection_made", |p| p.connection_made(transport));
        if self.closing.get() {
            self.maybe_finish();
        } else {
            self.arm_recv();
        }
    }

    fn arm_recv(&self) {
        if self.recv_op.get().is_some() || self.closing.get() {
            return;
        }
        let Some(token) = self.token.get() else {
            return;
        };
        let op = self.recv.borrow_mut().take();
        let mut op = op.unwrap_or_else(|| {
            op::RecvMsg::new(self.raw_fd.get(), Vec::with_capacity(MAX_DATAGRAM))
        });
        op.buf.clear();
        if let Ok(id) = self.lp.submit(op, token) {
            self.recv_op.set(Some(id));
        }
    }

    fn recv_completed(&self, completion: Completion) {
        self.recv_op.set(None);
        let Some(Op::RecvMsg(msg)) = completion.op else {
            return;
        };
        match completion.result {
            Ok(_) if !self.closing.get() => {
                let addr = msg.peer().and_then(|a| Address::from_sock_addr(&a));
                let addr = match addr {
                    Some(Address::Unix(crate::UnixAddress::Unnamed)) => None,
                    other => other,
                };
                let _ = self.with_protocol("datagram_received", |p| {
                    p.datagram_received(&msg.buf, addr.as_ref())
                });
            }
            Err(err) if err.raw_os_error() == Some(libc::ECANCELED) => {}
            Err(err) if !self.closing.get() => {
                // ICMP errors and the like: the endpoint stays open (semantics 158, 159).
                let _ = self.with_protocol("error_received", |p| p.error_received(err));
            }
            _ => {}
        }
        *self.recv.borrow_mut() = Some(msg);
        self.arm_recv();
    }

    fn submit_send(&self) {
        if self.send_op.get().is_some() {
            return;
        }
        let Some(token) = self.token.get() else {
            return;
        };
        let Some((data, addr)) = self.queue.borrow_mut().pop_front() else {
            return;
        };
        let size = data.len() + HEADER_SIZE;
        self.queued.set(self.queued.get() - size);
        self.in_flight.set(size);
        let op = self.send.borrow_mut().take();
        let op = match op {
            Some(mut op) => {
                let mut bufs = std::mem::take(&mut op.bufs);
                bufs.clear();
                bufs.push(data);
                op.reset(bufs, addr.as_ref());
                op
            }
            None => op::SendMsg::new(self.raw_fd.get(), vec![data], addr.as_ref()),
        };
        match self.lp.submit(op, token) {
            Ok(id) => self.send_op.set(Some(id)),
            Err(_) => self.in_flight.set(0),
        }
    }

    fn send_completed(&self, completion: Completion) {
        self.send_op.set(None);
        self.in_flight.set(0);
        if let Some(Op::SendMsg(op)) = completion.op {
            *self.send.borrow_mut() = Some(op);
        }
        if let Err(err) = completion.result {
            if err.raw_os_error() != Some(libc::ECANCELED) && !self.lost.get() {
                let _ = self.with_protocol("error_received", |p| p.error_received(err));
            }
        }
        self.check_flow(false);
        self.submit_send();
    }

    fn check_flow(&self, grow: bool) {
        let mut flow = self.flow.get();
        let size = self.queued.get() + self.in_flight.get();
        let signal = if grow {
            flow.after_grow(size)
        } else {
            flow.after_shrink(size)
        };
        self.flow.set(flow);
        if signal != FlowSignal::None {
            self.signal_flow(signal);
        }
    }

    /// Tells the protocol to pause or resume, now or (if it is busy: a `sendto` from inside
    /// one of its methods) right after its current method returns. A panic is reported and
    /// the endpoint carries on (semantics 140).
    fn signal_flow(&self, signal: FlowSignal) {
        flow_signal::signal(&self.lp, &self.protocol, &self.deferred_flow, signal);
    }

    fn deliver_deferred_flow(&self) {
        flow_signal::deliver_deferred(&self.lp, &self.protocol, &self.deferred_flow);
    }

    fn abort(&self, error: Option<io::Error>) {
        if self.lost.get() {
            return;
        }
        if error.is_some() && self.lost_error.borrow().is_none() {
            *self.lost_error.borrow_mut() = error;
        }
        self.closing.set(true);
        self.queue.borrow_mut().clear();
        self.queued.set(0);
        for id in [self.recv_op.get(), self.send_op.get()]
            .into_iter()
            .flatten()
        {
            self.lp.cancel_op(id);
        }
        self.maybe_finish();
    }

    fn maybe_finish(&self) {
        if !self.closing.get()
            || self.lost.get()
            || !self.started.get()
            || self.recv_op.get().is_some()
            || self.send_op.get().is_some()
            || !self.queue.borrow().is_empty()
        {
            return;
        }
        self.lost.set(true);
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        if self.lp.call_soon(move || me.connection_lost()).is_err() {
            self.release_fd();
        }
    }

    /// The scheduled end: `connection_lost`, then the fd is closed. A panic in it is
    /// reported as the stream transport reports it (semantics 82: the loop goes on).
    fn connection_lost(&self) {
        let error = self.lost_error.borrow_mut().take();
        let protocol = self.protocol.borrow_mut().take();
        if let Some(protocol) = protocol {
            let outcome = match protocol.try_borrow_mut() {
                Ok(mut guard) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    guard.connection_lost(error)
                })),
                Err(_) => {
                    tracing::warn!("protocol busy during connection_lost; not called");
                    Ok(())
                }
            };
            if let Err(payload) = outcome {
                let error = crate::stream::panic_error("connection_lost", &*payload);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Exception in callback connection_lost")
                        .with_error(LoopError::from(error)),
                );
            }
        }
        self.release_fd();
    }

    fn release_fd(&self) {
        if let Some(fd) = self.fd.borrow_mut().take() {
            let _ = self.lp.close_fd(fd.into_raw_fd());
        }
        self.raw_fd.set(-1);
        if let Some(token) = self.token.take() {
            self.lp.deregister_io(token);
        }
        *self.me.borrow_mut() = Weak::new();
    }
}

impl IoHandler for DgramInner {
    fn complete(&self, _lp: &EventLoop, completion: &mut Completion) {
        let id = Some(completion.id);
        if id == self.recv_op.get() {
            self.recv_completed(completion.take());
        } else if id == self.send_op.get() {
            self.send_completed(completion.take());
        }
        self.maybe_finish();
    }
}

impl crate::start::TransportState for DgramInner {
    fn set_token(&self, token: IoToken) {
        self.token.set(Some(token));
    }

    fn begin(self: Rc<Self>) {
        let transport = DatagramTransport { inner: self };
        transport.inner.connection_made(&transport);
    }

    fn release(&self) {
        self.release_fd();
    }
}

impl crate::registry::Abandon for DgramInner {
    fn abandon(&self, graveyard: &mut Vec<OwnedFd>) {
        self.closing.set(true);
        self.lost.set(true);
        // The slot is borrowed only while a protocol method runs; a loop does not close
        // from inside one.
        let protocol = self
            .protocol
            .try_borrow_mut()
            .ok()
            .and_then(|mut slot| slot.take());
        drop(protocol);
        self.queue.borrow_mut().clear();
        graveyard.extend(self.fd.borrow_mut().take());
        self.raw_fd.set(-1);
        self.token.set(None);
        *self.me.borrow_mut() = Weak::new();
    }
}

impl Flush for DgramInner {
    fn flush(&self) {
        self.listed.set(false);
        self.submit_send();
    }
}
