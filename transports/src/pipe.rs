//! `connect_read_pipe` / `connect_write_pipe` (asyncio section O): stream transports over a
//! pipe, a socket or a character device that the caller hands over.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, LoopError};

use crate::connect::start_transport;
use crate::error::invalid;
use crate::protocol::Protocol;
use crate::stream::{StreamKind, Transport};

/// Checks the file type (semantics 166, 170) and makes the fd non-blocking.
fn check_pipe(fd: OwnedFd, read: bool) -> Result<OwnedFd, LoopError> {
    let file = std::fs::File::from(fd);
    let kind = file.metadata()?.file_type();
    if !(kind.is_fifo() || kind.is_socket() || kind.is_char_device()) {
        return Err(invalid(if read {
            "Pipe transport is for pipes/sockets only."
        } else {
            "Pipe transport is only for pipes, sockets and character devices"
        }));
    }
    let fd = OwnedFd::from(file);
    // fcntl(F_SETFL, O_NONBLOCK) works on any fd, not only sockets.
    socket2::SockRef::from(&fd).set_nonblocking(true)?;
    Ok(fd)
}

/// asyncio's `connect_read_pipe` / `connect_write_pipe`.
pub(crate) async fn connect_pipe<P, F>(
    lp: EventLoop,
    factory: F,
    fd: OwnedFd,
    read: bool,
) -> Result<(Transport, Rc<RefCell<P>>), LoopError>
where
    F: FnOnce() -> P,
    P: Protocol,
{
    let fd = check_pipe(fd, read)?;
    let kind = if read {
        StreamKind::ReadPipe
    } else {
        StreamKind::WritePipe
    };
    start_transport(&lp, fd, kind, factory).await
}
