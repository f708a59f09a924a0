//! The servers under test. Each contender serves TCP echo or a minimal HTTP/1.1 responder
//! with its own idiomatic API, in a process of its own (see [`crate::server`]).
//!
//! Protocol with the harness: the server binds `127.0.0.1:0` (or the given port), prints
//! `READY <port> <what it runs on>` on stdout, then serves until it is killed.

mod bare_epoll;
mod bare_uring;
#[cfg(feature = "peers")]
mod compio;
pub(crate) mod http;
#[cfg(feature = "peers")]
mod monoio;
pub(crate) mod ringloop;
mod tokio;

use std::io::{self, Write};
use std::net::TcpListener;

/// Per-connection read buffer of every contender, so that memory figures compare alike.
pub(crate) const READ_BUF: usize = 16 * 1024;
/// Listen backlog: 10,000 connections arrive faster than one accept at a time.
pub(crate) const BACKLOG: i32 = 4096;

/// A server implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Contender {
    /// ringloop's `Protocol` API on the io_uring backend.
    RingloopIoUring,
    /// ringloop's `Protocol` API on the epoll backend.
    RingloopEpoll,
    /// tokio's current-thread runtime, a task per connection.
    Tokio,
    /// A minimal loop written directly on io_uring: the floor for completion-based loops.
    BareIoUring,
    /// A minimal edge-triggered epoll loop: the floor for readiness-based loops.
    BareEpoll,
    /// monoio (io_uring), a task per connection.
    Monoio,
    /// compio (io_uring), a task per connection.
    Compio,
}

/// What a server does with the bytes it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Writes back every byte read.
    Echo,
    /// Answers each HTTP/1.1 request with a fixed plaintext response (keep-alive).
    Http,
}

impl Mode {
    /// The mode's command-line name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
        }
    }

    /// Parses `echo` or `http`.
    pub(crate) fn parse(s: &str) -> Option<Mode> {
        match s {
            "echo" => Some(Mode::Echo),
            "http" => Some(Mode::Http),
            _ => None,
        }
    }
}

impl Contender {
    /// Every contender, in report order.
    pub(crate) const ALL: [Contender; 7] = [
        Contender::RingloopIoUring,
        Contender::RingloopEpoll,
        Contender::Tokio,
        Contender::Monoio,
        Contender::Compio,
        Contender::BareIoUring,
        Contender::BareEpoll,
    ];

    /// The name used on the command line, in the table and in JSON records.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::RingloopIoUring => "ringloop-io-uring",
            Contender::RingloopEpoll => "ringloop-epoll",
            Contender::Tokio => "tokio",
            Contender::BareIoUring => "bare-io-uring",
            Contender::BareEpoll => "bare-epoll",
            Contender::Monoio => "monoio",
            Contender::Compio => "compio",
        }
    }

    /// Parses a contender name.
    pub(crate) fn parse(s: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Why this contender cannot run in this build, if it cannot.
    pub(crate) fn unavailable_reason(self) -> Option<&'static str> {
        match self {
            Contender::RingloopIoUring | Contender::RingloopEpoll => ringloop::UNAVAILABLE,
            Contender::Monoio | Contender::Compio if !cfg!(feature = "peers") => {
                Some("built without the `peers` feature (cargo run --release -p ringloop-bench --features peers)")
            }
            _ => None,
        }
    }

    /// The environment variable that selects this contender's backend, if it has one
    /// (ringloop reads `RINGLOOP_BACKEND`, as its users would set it).
    pub(crate) fn env(self) -> Option<(&'static str, &'static str)> {
        match self {
            Contender::RingloopIoUring => Some(("RINGLOOP_BACKEND", "io_uring")),
            Contender::RingloopEpoll => Some(("RINGLOOP_BACKEND", "epoll")),
            _ => None,
        }
    }

    /// Serves `mode` on `port` (0 = any) until killed. Runs in the server process.
    pub(crate) fn serve(self, mode: Mode, port: u16) -> io::Result<()> {
        match self {
            Contender::Tokio => tokio::serve(listen(port)?, mode),
            Contender::BareIoUring => bare_uring::serve(listen(port)?, mode),
            Contender::BareEpoll => bare_epoll::serve(listen(port)?, mode),
            Contender::RingloopIoUring => ringloop::serve(ringloop::Backend::IoUring, mode, port),
            Contender::RingloopEpoll => ringloop::serve(ringloop::Backend::Epoll, mode, port),
            #[cfg(feature = "peers")]
            Contender::Monoio => monoio::serve(listen(port)?, mode),
            #[cfg(feature = "peers")]
            Contender::Compio => compio::serve(listen(port)?, mode),
            #[cfg(not(feature = "peers"))]
            Contender::Monoio | Contender::Compio => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "built without the `peers` feature",
            )),
        }
    }
}

/// Tells the harness the server is listening on `port`.
///
/// `info` (one line) tells what the server runs on, e.g. the io_uring setup flags in use.
pub(crate) fn announce_ready(port: u16, info: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "READY {port} {info}")?;
    out.flush()
}

/// Announces `listener`'s port and `info` to the harness.
fn ready(listener: &TcpListener, info: &str) -> io::Result<()> {
    announce_ready(listener.local_addr()?.port(), info)
}

/// A listening socket on `127.0.0.1:port` with a deep backlog.
fn listen(port: u16) -> io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the listener takes ownership.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the option value and address point to live values of the lengths passed.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
            && libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == 0
            && libc::listen(fd, BACKLOG) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// Disables Nagle's algorithm on a raw socket (request/response traffic).
pub(crate) fn set_nodelay(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the length passed. A failure only
    // costs latency, so it is ignored.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
