//! `create_datagram_endpoint`: resolving the local and remote addresses, picking a family
//! both match, and opening the socket (semantics 155, 163, 164).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, LoopError};
use socket2::{SockAddr, Socket};

use super::{DatagramProtocolRef, DatagramTransport};
use crate::error::invalid;
use crate::options::DatagramOptions;
use crate::protocol::DatagramProtocol;
use crate::resolve::{AddrInfo, AddrInfoHints, Service};
use crate::sock::{new_socket, resolve, SocketGuard};

/// asyncio's `create_datagram_endpoint`.
pub(crate) async fn create_datagram_endpoint<P, F>(
    lp: EventLoop,
    factory: F,
    options: DatagramOptions,
) -> Result<(DatagramTransport, Rc<RefCell<P>>), LoopError>
where
    F: FnOnce() -> P,
    P: DatagramProtocol,
{
    let sock = match options.sock {
        Some(sock) => {
            let mut given = Vec::new();
            if let Some(addr) = &options.local_addr {
                given.push(format!("local_addr={addr:?}"));
            }
            if let Some(addr) = &options.remote_addr {
                given.push(format!("remote_addr={addr:?}"));
            }
            for (name, value) in [
                ("family", options.family),
                ("proto", options.proto),
                ("flags", options.flags),
            ] {
                if value != 0 {
                    given.push(format!("{name}={value}"));
                }
            }
            if options.reuse_port {
                given.push("reuse_port=True".into());
            }
            if options.allow_broadcast {
                given.push("allow_broadcast=True".into());
            }
            if !given.is_empty() {
                return Err(invalid(format!(
                    "socket modifier keyword arguments can not be used when sock is specified. ({})",
                    given.join(", ")
                )));
            }
            if sock.r#type()? != socket2::Type::DGRAM {
                return Err(invalid(format!(
                    "A datagram socket was expected, got {sock:?}"
                )));
            }
            sock.set_nonblocking(true)?;
            sock
        }
        None => open_endpoint(&lp, &options).await?,
    };
    let protocol = Rc::new(RefCell::new(factory()));
    let (transport, made) =
        DatagramTransport::start(&lp, sock, protocol.clone() as DatagramProtocolRef)?;
    if let Err(err) = made.await {
        transport.abort();
        return Err(err);
    }
    Ok((transport, protocol))
}

/// Resolves the addresses and opens a socket of a family both match (semantics 155).
async fn open_endpoint(lp: &EventLoop, options: &DatagramOptions) -> Result<Socket, LoopError> {
    if options.local_addr.is_none() && options.remote_addr.is_none() && options.family == 0 {
        return Err(invalid("unexpected address family"));
    }
    let hints = AddrInfoHints {
        family: options.family,
        socktype: libc::SOCK_DGRAM,
        protocol: options.proto,
        flags: options.flags,
    };
    let lookup = |addr: &Option<(String, u16)>| {
        let addr = addr.clone();
        async move {
            match addr {
                Some((host, port)) => {
                    let infos = resolve(lp, Some(&host), Service::Port(port), hints).await?;
                    if infos.is_empty() {
                        return Err(LoopError::from(io::Error::other(
                            "getaddrinfo() returned empty list",
                        )));
                    }
                    Ok(Some(infos))
                }
                None => Ok(None),
            }
        }
    };
    let locals = lookup(&options.local_addr).await?;
    let remotes = lookup(&options.remote_addr).await?;
    let mut pairs: Vec<(i32, Option<AddrInfo>, Option<AddrInfo>)> = Vec::new();
    match (&locals, &remotes) {
        (None, None) => pairs.push((options.family, None, None)),
        (Some(ls), None) => pairs.extend(ls.iter().map(|l| (l.family, Some(l.clone()), None))),
        (None, Some(rs)) => pairs.extend(rs.iter().map(|r| (r.family, None, Some(r.clone())))),
        (Some(ls), Some(rs)) => {
            for l in ls {
                if let Some(r) = rs.iter().find(|r| r.family == l.family) {
                    pairs.push((l.family, Some(l.clone()), Some(r.clone())));
                }
            }
            if pairs.is_empty() {
                return Err(invalid("can not get address information"));
            }
        }
    }
    let mut last = None;
    for (family, local, remote) in pairs {
        let attempt = (|| -> io::Result<SocketGuard> {
            let guard =
                SocketGuard::new(lp, new_socket(family, socket2::Type::DGRAM, options.proto)?);
            let sock = guard.socket();
            if options.reuse_port {
                sock.set_reuse_port(true)?;
            }
            if options.allow_broadcast {
                sock.set_broadcast(true)?;
            }
            if let Some(local) = &local {
                sock.bind(&SockAddr::from(local.addr))?;
            }
            if let Some(remote) = &remote {
                sock.connect(&SockAddr::from(remote.addr))?;
            }
            Ok(guard)
        })();
        match attempt {
            Ok(guard) => return Ok(Socket::from(guard.into_fd())),
            Err(err) => last = Some(err),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::other("no address to open an endpoint on"))
        .into())
}
