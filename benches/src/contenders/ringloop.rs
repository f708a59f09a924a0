//! ringloop through its asyncio-style API: `create_server` with a `Protocol` whose
//! `data_received` calls `transport.write`, on the io_uring or the epoll backend.
//!
//! Placeholder until the runtime and the transports land on `main`.

use std::io;

use super::Mode;

/// Why ringloop cannot be benchmarked in this build, if it cannot.
pub(crate) const UNAVAILABLE: Option<&str> =
    Some("ringloop's event loop and TCP transport are not merged yet");

/// The proactor backend a ringloop server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `RINGLOOP_BACKEND=io_uring`.
    IoUring,
    /// `RINGLOOP_BACKEND=epoll`.
    Epoll,
}

/// Serves `mode` on `port` with a ringloop `Protocol` on `backend`.
pub(crate) fn serve(_backend: Backend, _mode: Mode, _port: u16) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        UNAVAILABLE.unwrap_or("unavailable"),
    ))
}

/// Runs a micro-workload on a ringloop event loop on `backend`.
pub(crate) fn micro(
    _backend: Backend,
    _kind: crate::micro::MicroKind,
    _n: u64,
) -> io::Result<crate::micro::MicroResult> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        UNAVAILABLE.unwrap_or("unavailable"),
    ))
}
