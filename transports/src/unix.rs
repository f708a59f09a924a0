//! Unix-domain stream sockets: `create_unix_connection` and `create_unix_server`.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

use ringloop_proactor::op;
use ringloop_runtime::{EventLoop, LoopError};
use socket2::{Domain, SockAddr, Type};

use crate::connect::{check_stream_socket, start_transport};
use crate::error::bind_error;
use crate::options::ServerOptions;
use crate::protocol::Protocol;
use crate::server::Server;
use crate::sock::{new_socket, SocketGuard};
use crate::stream::{ProtocolRef, StreamKind, Transport};

/// asyncio's `create_unix_connection(factory, path)`.
pub(crate) async fn create_unix_connection<P, F>(
    lp: EventLoop,
    factory: F,
    path: PathBuf,
) -> Result<(Transport, Rc<RefCell<P>>), LoopError>
where
    F: FnOnce() -> P,
    P: Protocol,
{
    let addr = SockAddr::unix(&path)?;
    let guard = SocketGuard::new(&lp, new_socket(libc::AF_UNIX, Type::STREAM, 0)?);
    let fd = guard.socket().as_raw_fd();
    let completion = lp.run_op(op::Connect::new(fd, addr)).await?;
    completion.result?;
    start_transport(&lp, guard.into_fd(), StreamKind::Socket, factory).await
}

/// asyncio's `create_unix_server(factory, path)`: binds `path` (or serves `options.sock`).
/// A stale socket file at `path` is removed first, as asyncio does.
pub(crate) fn create_unix_server(
    lp: &EventLoop,
    factory: Box<dyn Fn() -> ProtocolRef>,
    path: Option<PathBuf>,
    options: ServerOptions,
) -> Result<Server, LoopError> {
    let sock = match (path, options.sock) {
        (Some(_), Some(_)) => {
            return Err(crate::error::invalid(
                "path and sock can not be specified at the same time",
            ))
        }
        (None, None) => {
            return Err(crate::error::invalid(
                "path was not specified, and no sock specified",
            ))
        }
        (None, Some(sock)) => {
            check_stream_socket(&sock)?;
            sock
        }
        (Some(path), None) => {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let guard = SocketGuard::new(
                lp,
                socket2::Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?,
            );
            guard
                .socket()
                .bind(&SockAddr::unix(&path)?)
                .map_err(|err| bind_error(&format!("'{}'", path.display()), &err))
                .map_err(|err: io::Error| LoopError::from(err))?;
            socket2::Socket::from(guard.into_fd())
        }
    };
    let server = Server::new(lp, vec![sock], options.backlog, factory);
    if options.start_serving {
        server.start_serving()?;
    }
    Ok(server)
}
