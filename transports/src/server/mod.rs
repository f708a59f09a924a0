//! [`Server`] (asyncio section I): listening sockets, a multishot accept per socket, a
//! transport per accepted connection, and the server's life (`close`, `wait_closed`,
//! `serve_forever`). `bind.rs` creates servers (`create_server`).
//!
//! Accept errors never kill a server (semantics 105; the selector behaviour, as SEMANTICS
//! recommends over the proactor's): out-of-resource errors (`EMFILE`, `ENFILE`, `ENOBUFS`,
//! `ENOMEM`) are reported to the exception handler as `socket.accept() out of system
//! resource`, accepting pauses for one second, then resumes; `ECONNABORTED` is skipped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use ringloop_runtime::{
    AcceptHandler, Acceptor, EventLoop, ExceptionContext, Future, LoopError, TimerHandle,
};
use socket2::Socket;

use crate::address::Address;
use crate::connect::set_nodelay;
use crate::stream::{ProtocolRef, StreamKind, Transport};

mod bind;

pub(crate) use bind::create_server;

/// asyncio's `ACCEPT_RETRY_DELAY`: the pause after an out-of-resource accept error.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A server: listening sockets whose connections get a transport and a protocol each.
///
/// Cheap to clone. The loop keeps a serving server alive even when every handle is dropped
/// (semantics 99).
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
}

/// One listening socket of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSocket {
    /// Its file descriptor.
    pub fd: RawFd,
    /// The address it is bound to.
    pub sockname: Option<Address>,
}

impl ServerSocket {
    /// The port it listens on (`None` for Unix-domain sockets), e.g. the ephemeral port a
    /// server bound with port 0 got.
    pub fn port(&self) -> Option<u16> {
        self.sockname.as_ref().and_then(Address::port)
    }
}

struct Listener {
    sock: Option<Socket>,
    acceptor: Option<Acceptor>,
    retry: Option<TimerHandle>,
}

pub(crate) struct ServerInner {
    lp: EventLoop,
    factory: Box<dyn Fn() -> ProtocolRef>,
    listeners: RefCell<Vec<Listener>>,
    backlog: i32,
    listening: Cell<bool>,
    serving: Cell<bool>,
    closed: Cell<bool>,
    active: Cell<usize>,
    waiters: RefCell<Vec<Future<()>>>,
    serve_forever: RefCell<Option<Future<()>>>,
    me: RefCell<Weak<ServerInner>>,
}

impl Server {
    /// A server over bound (not yet listening) sockets.
    pub(crate) fn new(
        lp: &EventLoop,
        sockets: Vec<Socket>,
        backlog: i32,
        factory: Box<dyn Fn() -> ProtocolRef>,
    ) -> Server {
        let inner = Rc::new(ServerInner {
            lp: lp.clone(),
            factory,
            listeners: RefCell::new(
                sockets
                    .into_iter()
                    .map(|sock| Listener {
                        sock: Some(sock),
                        acceptor: None,
                        retry: None,
                    })
                    .collect(),
            ),
            backlog,
            listening: Cell::new(false),
            serving: Cell::new(false),
            closed: Cell::new(false),
            active: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            serve_forever: RefCell::new(None),
            me: RefCell::new(Weak::new()),
        });
        *inner.me.borrow_mut() = Rc::downgrade(&inner);
        let weak: Weak<dyn crate::registry::Abandon> = Rc::downgrade(&inner) as _;
        crate::registry::Registry::of(lp).add(weak);
        Server { inner }
    }

    /// The listening sockets; empty after [`close`](Server::close) (semantics 98).
    pub fn sockets(&self) -> Vec<ServerSocket> {
        if self.inner.closed.get() {
            return Vec::new();
        }
        self.inner
            .listeners
            .borrow()
            .iter()
            .filter_map(|l| l.sock.as_ref())
            .map(|sock| ServerSocket {
                fd: sock.as_raw_fd(),
                sockname: sock
                    .local_addr()
                    .ok()
                    .and_then(|a| Address::from_sock_addr(&a)),
            })
            .collect()
    }

    /// Whether the server accepts connections.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get()
    }

    /// How many connections of this server are open.
    pub fn active_connections(&self) -> usize {
        self.inner.active.get()
    }

    /// Starts listening and accepting; idempotent (semantics 100).
    ///
    /// # Errors
    /// [`LoopError::InvalidState`] on a closed server; `listen()` failures.
    pub fn start_serving(&self) -> Result<(), LoopError> {
        self.inner.start_serving()
    }

    /// Stops listening at once; open connections are left alone (semantics 98, 104).
    /// Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Completes once the server is closed and all its connections are gone, whichever
    /// comes last (semantics 103).
    ///
    /// # Errors
    /// [`LoopError::Cancelled`] if the waiting task is cancelled.
    pub async fn wait_closed(&self) -> Result<(), LoopError> {
        if self.inner.closed.get() && self.inner.active.get() == 0 {
            return Ok(());
        }
        let fut = self.inner.lp.create_future::<()>();
        self.inner.waiters.borrow_mut().push(fut.clone());
        fut.await
    }

    /// Serves until the awaiting task is cancelled, then closes the server and waits for it
    /// (semantics 104).
    ///
    /// # Errors
    /// `server … is closed`, `server … is already being awaited on serve_forever()`;
    /// [`LoopError::Cancelled`] when cancelled (after closing).
    pub async fn serve_forever(&self) -> Result<(), LoopError> {
        if self.inner.serve_forever.borrow().is_some() {
            return Err(LoopError::InvalidState(format!(
                "server {self:?} is already being awaited on serve_forever()"
            )));
        }
        if self.inner.closed.get() {
            return Err(LoopError::InvalidState(format!(
                "server {self:?} is closed"
            )));
        }
        self.start_serving()?;
        let fut = self.inner.lp.create_future::<()>();
        *self.inner.serve_forever.borrow_mut() = Some(fut.clone());
        let outcome = fut.await;
        *self.inner.serve_forever.borrow_mut() = None;
        self.close();
        let _ = self.wait_closed().await;
        outcome.and(Err(LoopError::Cancelled))
    }

    /// The loop this server runs on.
    pub fn get_loop(&self) -> &EventLoop {
        &self.inner.lp
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("sockets", &self.sockets())
            .field("serving", &self.inner.serving.get())
            .field("active", &self.inner.active.get())
            .finish()
    }
}

impl ServerInner {
    fn start_serving(&self) -> Result<(), LoopError> {
        if self.closed.get() {
            return Err(LoopError::InvalidState("the server is closed".into()));
        }
        if self.serving.get() {
            return Ok(());
        }
        if !self.listening.get() {
            for listener in self.listeners.borrow().iter() {
                if let Some(sock) = &listener.sock {
                    sock.listen(self.backlog)?;
                }
            }
            self.listening.set(true);
        }
        self.serving.set(true);
        let count = self.listeners.borrow().len();
        for index in 0..count {
            self.arm_accept(index);
        }
        Ok(())
    }

    fn arm_accept(&self, index: usize) {
        if !self.serving.get() {
            return;
        }
        let Some(me) = self.me.borrow().upgrade() else {
            return;
        };
        let fd = {
            let listeners = self.listeners.borrow();
            match listeners.get(index) {
                Some(Listener {
                    sock: Some(sock),
                    acceptor: None,
                    ..
                }) => sock.as_raw_fd(),
                _ => return,
            }
        };
        let handler = Rc::new(ListenerHandler { server: me, index });
        match self.lp.accept_multishot(fd, handler) {
            Ok(acceptor) => {
                if let Some(listener) = self.listeners.borrow_mut().get_mut(index) {
                    listener.acceptor = Some(acceptor);
                }
            }
            Err(err) => tracing::debug!("cannot accept on fd {fd}: {err}"),
        }
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.serving.set(false);
        let mut to_close = Vec::new();
        for listener in self.listeners.borrow_mut().iter_mut() {
            if let Some(retry) = listener.retry.take() {
                retry.cancel();
            }
            match &listener.acceptor {
                // The accept's end closes the socket (the kernel is still using it). Shutting
                // the read side stops listening at once: new connects are refused from now.
                Some(acceptor) if acceptor.is_active() => {
                    if let Some(sock) = &listener.sock {
                        let _ = sock.shutdown(std::net::Shutdown::Read);
                    }
                    acceptor.cancel();
                }
                _ => to_close.extend(listener.sock.take()),
            }
        }
        for sock in to_close {
            let _ = self.lp.close_fd(sock.into_raw_fd());
        }
        let forever = self.serve_forever.borrow_mut().take();
        if let Some(forever) = forever {
            forever.cancel();
        }
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        if !self.closed.get() || self.active.get() != 0 {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            let _ = waiter.set_result(());
        }
    }

    fn detach(&self) {
        self.active.set(self.active.get().saturating_sub(1));
        self.wake_waiters();
    }

    fn connection(self: &Rc<Self>, fd: OwnedFd) {
        if self.closed.get() {
            let _ = self.lp.close_fd(fd.into_raw_fd());
            return;
        }
        let sock = Socket::from(fd);
        set_nodelay(&sock);
        let protocol = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.factory)()
        })) {
            Ok(protocol) => protocol,
            Err(payload) => {
                let error = crate::stream::panic_error("protocol_factory", &*payload);
                self.lp.call_exception_handler(
                    ExceptionContext::new("Error on transport creation for incoming connection")
                        .with_error(LoopError::from(error)),
                );
                let _ = self.lp.close_fd(sock.into_raw_fd());
                return;
            }
        };
        let server = self.clone();
        let on_lost: Box<dyn FnOnce()> = Box::new(move || server.detach());
        match Transport::start(
            &self.lp,
            OwnedFd::from(sock),
            StreamKind::Socket,
            protocol,
            Some(on_lost),
        ) {
            Ok(_) => self.active.set(self.active.get() + 1),
            Err(err) => tracing::debug!("dropping an accepted connection: {err}"),
        }
    }

    /// Reports an accept failure and pauses accepting on this socket for
    /// [`ACCEPT_RETRY_DELAY`] (semantics 105): the accept is cancelled and re-armed later.
    fn accept_error(self: &Rc<Self>, index: usize, error: io::Error) {
        let (fd, backing_off) = {
            let listeners = self.listeners.borrow();
            let listener = listeners.get(index);
            (
                listener.and_then(|l| l.sock.as_ref().map(AsRawFd::as_raw_fd)),
                listener.is_some_and(|l| l.retry.is_some()),
            )
        };
        let message = match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                "socket.accept() out of system resource"
            }
            _ => "Accept failed on a socket",
        };
        self.lp.call_exception_handler(
            ExceptionContext::new(message)
                .with_error(LoopError::from(error))
                .with_extra("socket", format!("fd={}", fd.unwrap_or(-1))),
        );
        if backing_off {
            return;
        }
        let acceptor = self
            .listeners
            .borrow()
            .get(index)
            .and_then(|l| l.acceptor.clone());
        if let Some(acceptor) = acceptor {
            acceptor.cancel();
        }
        let server = Rc::downgrade(self);
        let retry = self.lp.call_later(ACCEPT_RETRY_DELAY, move || {
            if let Some(server) = server.upgrade() {
                if let Some(listener) = server.listeners.borrow_mut().get_mut(index) {
                    listener.retry = None;
                }
                server.arm_accept(index);
            }
        });
        if let (Ok(retry), Some(listener)) = (retry, self.listeners.borrow_mut().get_mut(index)) {
            listener.retry = Some(retry);
        }
    }
}

impl crate::registry::Abandon for ServerInner {
    fn abandon(&self, graveyard: &mut Vec<OwnedFd>) {
        self.closed.set(true);
        self.serving.set(false);
        let listeners = std::mem::take(&mut *self.listeners.borrow_mut());
        for listener in listeners {
            graveyard.extend(listener.sock.map(OwnedFd::from));
            // Dropping the acceptor breaks the server ↔ accept handler cycle.
            drop(listener.acceptor);
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        drop(waiters);
        let forever = self.serve_forever.borrow_mut().take();
        drop(forever);
    }
}

/// Receives one listening socket's connections.
struct ListenerHandler {
    server: Rc<ServerInner>,
    index: usize,
}

impl AcceptHandler for ListenerHandler {
    fn accepted(&self, _lp: &EventLoop, connection: io::Result<OwnedFd>) {
        match connection {
            Ok(fd) => self.server.connection(fd),
            Err(err) if err.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(err) if is_out_of_resources(&err) => self.server.accept_error(self.index, err),
            Err(err) => tracing::debug!("accept failed: {err}"),
        }
    }

    fn finished(&self, _lp: &EventLoop, result: io::Result<()>) {
        let server = &self.server;
        let (sock, backing_off) = {
            let mut listeners = server.listeners.borrow_mut();
            let Some(listener) = listeners.get_mut(self.index) else {
                return;
            };
            listener.acceptor = None;
            let sock = if server.closed.get() {
                listener.sock.take()
            } else {
                None
            };
            (sock, listener.retry.is_some())
        };
        if let Some(sock) = sock {
            let _ = server.lp.close_fd(sock.into_raw_fd());
            return;
        }
        if server.closed.get() || !server.serving.get() || backing_off {
            return;
        }
        match result {
            // Ended on its own, or cancelled for a back-off that has already elapsed.
            Ok(()) => server.arm_accept(self.index),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ECANCELED | libc::ECONNABORTED)
                ) =>
            {
                server.arm_accept(self.index)
            }
            Err(err) => server.accept_error(self.index, err),
        }
    }
}

fn is_out_of_resources(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
