//! `create_connection` (asyncio section H): resolve, try each address in order, close every
//! failed socket, then wrap the connected socket in a [`Transport`].

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use ringloop_proactor::op;
use ringloop_runtime::{EventLoop, LoopError};
use socket2::{SockAddr, Socket};

use crate::error::{bind_error, combine_connect_errors, invalid};
use crate::options::ConnectOptions;
use crate::protocol::Protocol;
use crate::resolve::{AddrInfo, AddrInfoHints, Service};
use crate::sock::{addr_repr, new_socket, resolve, SocketGuard};
use crate::stream::{ProtocolRef, StreamKind, Transport};

/// Checks the argument rules of semantics 71, 75, 86 and rejects TLS until it lands.
fn validate(host: &str, port: &Service, options: &ConnectOptions) -> Result<(), LoopError> {
    if options.server_hostname.is_some() && !options.ssl {
        return Err(invalid("server_hostname is only meaningful with ssl"));
    }
    if options.ssl {
        return Err(invalid(
            "ssl=True is not supported yet: ringloop's TLS layer (ringloop-ssl) has not landed",
        ));
    }
    let host_or_port = !host.is_empty() || *port != Service::None;
    match &options.sock {
        Some(_) if host_or_port => Err(invalid(
            "host/port and sock can not be specified at the same time",
        )),
        Some(_)
            if options.family != 0
                || options.proto != 0
                || options.flags != 0
                || options.local_addr.is_some() =>
        {
            Err(invalid(
                "family, proto, flags and local_addr can not be specified together with sock",
            ))
        }
        None if !host_or_port => Err(invalid(
            "host and port was not specified and no sock specified",
        )),
        _ => Ok(()),
    }
}

/// Checks a caller's socket: a stream socket, made non-blocking (semantics 76, 80).
pub(crate) fn check_stream_socket(sock: &Socket) -> Result<(), LoopError> {
    let ty = sock.r#type()?;
    if ty != socket2::Type::STREAM {
        return Err(invalid(format!(
            "A Stream Socket was expected, got {sock:?}"
        )));
    }
    sock.set_nonblocking(true)?;
    Ok(())
}

/// `TCP_NODELAY` on internet stream sockets (semantics 83).
pub(crate) fn set_nodelay(sock: &Socket) {
    let inet = sock
        .local_addr()
        .map(|a| a.is_ipv4() || a.is_ipv6())
        .unwrap_or(false);
    if inet {
        if let Err(err) = sock.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY failed: {err}");
        }
    }
}

/// asyncio's `create_connection`.
pub(crate) async fn create_connection<P, F>(
    lp: EventLoop,
    factory: F,
    host: String,
    port: Service,
    options: ConnectOptions,
) -> Result<(Transport, Rc<RefCell<P>>), LoopError>
where
    F: FnOnce() -> P,
    P: Protocol,
{
    validate(&host, &port, &options)?;
    let guard = match options.sock {
        Some(sock) => {
            let guard = SocketGuard::new(&lp, sock);
            check_stream_socket(guard.socket())?;
            guard
        }
        None => connect_any(&lp, &host, port, &options).await?,
    };
    set_nodelay(guard.socket());
    start_transport(&lp, guard.into_fd(), StreamKind::Socket, factory).await
}

/// The end of every `create_*connection` and `connect_*_pipe`: makes the protocol, starts a
/// transport over `fd` and waits until `connection_made` has run. If the wait fails (the
/// caller was cancelled), the transport is aborted.
pub(crate) async fn start_transport<P, F>(
    lp: &EventLoop,
    fd: OwnedFd,
    kind: StreamKind,
    factory: F,
) -> Result<(Transport, Rc<RefCell<P>>), LoopError>
where
    F: FnOnce() -> P,
    P: Protocol,
{
    let protocol = Rc::new(RefCell::new(factory()));
    let (transport, made) = Transport::start(lp, fd, kind, protocol.clone() as ProtocolRef, None)?;
    if let Err(err) = made.await {
        transport.abort();
        return Err(err);
    }
    Ok((transport, protocol))
}

/// Resolves and connects to the first address that accepts (semantics 77, 79, 80).
async fn connect_any(
    lp: &EventLoop,
    host: &str,
    port: Service,
    options: &ConnectOptions,
) -> Result<SocketGuard, LoopError> {
    let hints = AddrInfoHints {
        family: options.family,
        socktype: libc::SOCK_STREAM,
        protocol: options.proto,
        flags: options.flags,
    };
    let host = (!host.is_empty()).then_some(host);
    let infos = resolve(lp, host, port, hints).await?;
    if infos.is_empty() {
        return Err(io::Error::other("getaddrinfo() returned empty list").into());
    }
    let locals = match &options.local_addr {
        Some((lhost, lport)) => {
            let locals = resolve(lp, Some(lhost.as_str()), Service::Port(*lport), hints).await?;
            if locals.is_empty() {
                return Err(io::Error::other("getaddrinfo() returned empty list").into());
            }
            Some(locals)
        }
        None => None,
    };
    let mut errors = Vec::new();
    for info in &infos {
        match connect_one(lp, info, locals.as_deref()).await {
            Ok(guard) => return Ok(guard),
            // A cancelled connect closes its socket (the guard) and ends here (semantics 81).
            Err(Attempt::Loop(err)) => return Err(err),
            Err(Attempt::Failed(err)) => errors.push(err),
        }
    }
    Err(combine_connect_errors(errors).into())
}

enum Attempt {
    Failed(io::Error),
    Loop(LoopError),
}

impl From<io::Error> for Attempt {
    fn from(err: io::Error) -> Self {
        Attempt::Failed(err)
    }
}

async fn connect_one(
    lp: &EventLoop,
    info: &AddrInfo,
    locals: Option<&[AddrInfo]>,
) -> Result<SocketGuard, Attempt> {
    let guard = SocketGuard::new(
        lp,
        new_socket(info.family, socket2::Type::STREAM, info.protocol)?,
    );
    if let Some(locals) = locals {
        bind_local(guard.socket(), info.family, locals)?;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(guard.socket());
    let completion = lp
        .run_op(op::Connect::new(fd, SockAddr::from(info.addr)))
        .await
        .map_err(Attempt::Loop)?;
    match completion.result {
        Ok(_) => Ok(guard),
        Err(err) => Err(Attempt::Failed(io::Error::new(
            err.kind(),
            ConnectError {
                errno: err.raw_os_error(),
                message: format!(
                    "[Errno {}] Connect call failed {}",
                    err.raw_os_error().unwrap_or(0),
                    addr_repr(&info.addr)
                ),
                source: err,
            },
        ))),
    }
}

/// Binds to the first local address of the same family that works (semantics 79).
fn bind_local(sock: &Socket, family: i32, locals: &[AddrInfo]) -> Result<(), io::Error> {
    let mut last = None;
    for local in locals.iter().filter(|l| l.family == family) {
        match sock.bind(&SockAddr::from(local.addr)) {
            Ok(()) => return Ok(()),
            Err(err) => last = Some(bind_error(&addr_repr(&local.addr), &err)),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::other(format!(
            "no matching local address with family={family} found"
        ))
    }))
}

/// A failed `connect`: asyncio's `OSError(errno, 'Connect call failed (host, port)')`.
#[derive(Debug)]
pub struct ConnectError {
    errno: Option<i32>,
    message: String,
    source: io::Error,
}

impl ConnectError {
    /// The OS error number (`ECONNREFUSED`, …).
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_rules_match_asyncio() {
        // semantics 71, 75, 86
        let msg = |host: &str, port: Service, options: ConnectOptions| {
            validate(host, &port, &options).unwrap_err().to_string()
        };
        assert_eq!(
            msg(
                "h",
                Service::Port(1),
                ConnectOptions {
                    server_hostname: Some(String::new()),
                    ..Default::default()
                }
            ),
            "server_hostname is only meaningful with ssl"
        );
        assert_eq!(
            msg("", Service::None, ConnectOptions::default()),
            "host and port was not specified and no sock specified"
        );
        let sock =
            || Some(Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap());
        assert_eq!(
            msg(
                "h",
                Service::None,
                ConnectOptions {
                    sock: sock(),
                    ..Default::default()
                }
            ),
            "host/port and sock can not be specified at the same time"
        );
        assert!(msg(
            "",
            Service::None,
            ConnectOptions {
                sock: sock(),
                family: libc::AF_INET,
                ..Default::default()
            }
        )
        .contains("together with sock"));
        assert!(msg(
            "h",
            Service::Port(1),
            ConnectOptions {
                ssl: true,
                ..Default::default()
            }
        )
        .contains("TLS"));
    }
}
