//! `create_server`: argument rules, resolution, and one bound socket per address
//! (semantics 87–97).

use std::collections::HashSet;
use std::io;

use ringloop_runtime::{EventLoop, LoopError};
use socket2::{SockAddr, Socket};

use super::Server;
use crate::connect::check_stream_socket;
use crate::error::{bind_error, invalid};
use crate::options::ServerOptions;
use crate::resolve::{AddrInfoHints, Service};
use crate::sock::{addr_repr, new_socket, resolve, SocketGuard};
use crate::stream::ProtocolRef;

/// Checks the argument rules of semantics 87, 97.
fn validate(host: &str, port: &Service, options: &ServerOptions) -> Result<(), LoopError> {
    if options.ssl {
        return Err(invalid(
            "ssl is not supported yet: ringloop's TLS layer (ringloop-ssl) has not landed",
        ));
    }
    let host_or_port = !host.is_empty() || *port != Service::None;
    match &options.sock {
        Some(_) if host_or_port => Err(invalid(
            "host/port and sock can not be specified at the same time",
        )),
        None if !host_or_port => Err(invalid("Neither host/port nor sock were specified")),
        _ => Ok(()),
    }
}

/// asyncio's `create_server`.
pub(crate) async fn create_server(
    lp: EventLoop,
    factory: Box<dyn Fn() -> ProtocolRef>,
    host: String,
    port: Service,
    options: ServerOptions,
) -> Result<Server, LoopError> {
    validate(&host, &port, &options)?;
    let sockets = match options.sock {
        Some(sock) => {
            check_stream_socket(&sock)?;
            vec![sock]
        }
        None => bind_all(&lp, &host, port, &options).await?,
    };
    let server = Server::new(&lp, sockets, options.backlog, factory);
    if options.start_serving {
        server.start_serving()?;
    }
    Ok(server)
}

/// One bound socket per address the host resolves to (semantics 88, 89, 91–95).
async fn bind_all(
    lp: &EventLoop,
    host: &str,
    port: Service,
    options: &ServerOptions,
) -> Result<Vec<Socket>, LoopError> {
    let hints = AddrInfoHints {
        family: options.family,
        socktype: libc::SOCK_STREAM,
        protocol: 0,
        flags: options.flags | libc::AI_PASSIVE,
    };
    let host = (!host.is_empty()).then_some(host);
    let infos = resolve(lp, host, port, hints).await?;
    if infos.is_empty() {
        return Err(io::Error::other("getaddrinfo() returned empty list").into());
    }
    let mut seen = HashSet::new();
    let mut guards = Vec::new();
    for info in infos {
        if !seen.insert((info.family, info.addr)) {
            continue;
        }
        // Every socket made so far is closed if this one fails (semantics 95): the guards.
        let guard = SocketGuard::new(
            lp,
            new_socket(info.family, socket2::Type::STREAM, info.protocol)?,
        );
        let sock = guard.socket();
        if options.reuse_address {
            sock.set_reuse_address(true)?;
        }
        if options.reuse_port {
            sock.set_reuse_port(true).map_err(|_| invalid("reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."))?;
        }
        if info.family == libc::AF_INET6 {
            sock.set_only_v6(true)?;
        }
        sock.bind(&SockAddr::from(info.addr))
            .map_err(|err| bind_error(&addr_repr(&info.addr), &err))?;
        guards.push(guard);
    }
    Ok(guards
        .into_iter()
        .map(|guard| Socket::from(guard.into_fd()))
        .collect())
}
