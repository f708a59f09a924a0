//! Socket plumbing shared by the connection functions: a guard that closes a socket
//! through the proactor unless it is handed on, and asynchronous resolution.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};

use ringloop_runtime::{EventLoop, LoopError};
use socket2::Socket;

use crate::resolve::{self, AddrInfo, AddrInfoHints, Service};

/// Owns a socket being set up; dropping it (an error, or the caller giving up: a cancelled
/// or dropped future, semantics 81) closes the socket through the proactor, so the epoll
/// backend forgets it and the fd number is never left to be reused under us.
#[derive(Debug)]
pub(crate) struct SocketGuard {
    lp: EventLoop,
    sock: Option<Socket>,
}

impl SocketGuard {
    pub(crate) fn new(lp: &EventLoop, sock: Socket) -> Self {
        SocketGuard {
            lp: lp.clone(),
            sock: Some(sock),
        }
    }

    pub(crate) fn socket(&self) -> &Socket {
        self.sock
            .as_ref()
            .unwrap_or_else(|| unreachable!("a SocketGuard holds its socket until into_fd"))
    }

    /// Hands the socket on.
    pub(crate) fn into_fd(mut self) -> OwnedFd {
        match self.sock.take() {
            Some(sock) => OwnedFd::from(sock),
            None => unreachable!("a SocketGuard holds its socket until into_fd"),
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(sock) = self.sock.take() {
            let _ = self.lp.close_fd(sock.into_raw_fd());
        }
    }
}

/// Resolves `host`/`service` like asyncio's `_ensure_resolved`: numeric hosts at once
/// (semantics 68), anything else with `getaddrinfo` in the loop's default executor
/// (semantics 67).
pub(crate) async fn resolve(
    lp: &EventLoop,
    host: Option<&str>,
    service: Service,
    hints: AddrInfoHints,
) -> Result<Vec<AddrInfo>, LoopError> {
    if let Some(info) = resolve::numeric_fast_path(host, &service, &hints) {
        return Ok(vec![info]);
    }
    let host = host.map(str::to_owned);
    let job = lp.run_in_executor(None, move || {
        resolve::getaddrinfo_blocking(host.as_deref(), &service, &hints)
    })?;
    Ok(job.await??)
}

/// A new non-blocking, close-on-exec socket.
pub(crate) fn new_socket(
    family: i32,
    socktype: socket2::Type,
    protocol: i32,
) -> io::Result<Socket> {
    let protocol = (protocol != 0).then(|| socket2::Protocol::from(protocol));
    Socket::new(
        socket2::Domain::from(family),
        socktype.nonblocking().cloexec(),
        protocol,
    )
}

/// asyncio's repr of an address tuple, for messages: `('127.0.0.1', 8080)`.
pub(crate) fn addr_repr(addr: &std::net::SocketAddr) -> String {
    format!("('{}', {})", addr.ip(), addr.port())
}
