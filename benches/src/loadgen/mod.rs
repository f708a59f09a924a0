//! The load generator: a closed loop over N connections on one thread. Each connection
//! writes a request, waits for the complete response (the echo, or the fixed HTTP response),
//! records the round trip and writes the next request at once.
//!
//! It runs on io_uring (batched submissions, one `io_uring_enter` per batch: the cheapest
//! client this machine allows, so that the server rather than the client saturates first),
//! and falls back to edge-triggered epoll where io_uring is not permitted.
//! Every wait is bounded: a server that stalls or dies turns into an error, never a hang.

mod common;
mod epoll;
mod uring;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::metrics::Histogram;
use common::ClosedLoop;

/// `RINGLOOP_BENCH_LOADGEN=epoll` forces the epoll load generator.
pub(crate) const ENGINE_ENV: &str = "RINGLOOP_BENCH_LOADGEN";

/// Connections are opened in batches of this size, each batch completing one round trip
/// before the next opens, so that the server's accept backlog never overflows.
const CONNECT_BATCH: usize = 256;

/// What one measured window saw.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Round trips completed within the window.
    pub(crate) messages: u64,
    /// Wall-clock length of the window.
    pub(crate) elapsed: Duration,
    /// Round-trip latency of each message completed in the window.
    pub(crate) latency: Histogram,
}

impl Window {
    /// Round trips per second.
    pub(crate) fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A closed-loop client over a fixed set of connections.
#[derive(Debug)]
pub(crate) struct LoadGen(Engine);

#[derive(Debug)]
enum Engine {
    /// Completion-based (the default).
    Uring(Box<uring::UringLoad>),
    /// Readiness-based (fallback).
    Epoll(epoll::EpollLoad),
}

impl LoadGen {
    /// Opens `n` connections to `addr`, each completing one round trip before returning.
    ///
    /// # Errors
    /// A refused or failed connection, a wrong response, or `timeout` elapsing.
    pub(crate) fn connect(
        addr: SocketAddr,
        n: usize,
        request: Vec<u8>,
        response_len: usize,
        timeout: Duration,
    ) -> io::Result<LoadGen> {
        let forced_epoll = std::env::var_os(ENGINE_ENV).is_some_and(|v| v == "epoll");
        let ring = if forced_epoll {
            Err(io::Error::new(io::ErrorKind::Unsupported, "epoll forced"))
        } else {
            uring::UringLoad::new(n)
        };
        match ring {
            Ok(load) => load
                .connect(addr, n, request, response_len, timeout)
                .map(|l| LoadGen(Engine::Uring(Box::new(l)))),
            Err(_) => epoll::EpollLoad::connect(addr, n, request, response_len, timeout)
                .map(|l| LoadGen(Engine::Epoll(l))),
        }
    }

    /// Drives every connection in a closed loop for `dur`. Requests still in flight at the
    /// end stay in flight (a later `run` or `drain` completes them).
    pub(crate) fn run(&mut self, dur: Duration) -> io::Result<Window> {
        let started = Instant::now();
        let mut win = match &mut self.0 {
            Engine::Uring(l) => l.run(dur)?,
            Engine::Epoll(l) => l.run(dur)?,
        };
        win.elapsed = started.elapsed();
        Ok(win)
    }

    /// Sends nothing new and waits until every in-flight request has its response.
    pub(crate) fn drain(&mut self, timeout: Duration) -> io::Result<Window> {
        match &mut self.0 {
            Engine::Uring(l) => l.drain(timeout),
            Engine::Epoll(l) => l.drain(timeout),
        }
    }
}

/// Opens one client connection: no Nagle, reset on close.
fn open_stream(addr: SocketAddr, idx: usize, deadline: Instant) -> io::Result<TcpStream> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&addr, left)
        .map_err(|e| io::Error::new(e.kind(), format!("connection {idx} to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    reset_on_close(&stream);
    Ok(stream)
}

/// Makes `close` send a reset instead of a FIN, so benchmark runs leave no TIME_WAIT sockets
/// behind to exhaust ephemeral ports across rounds.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value points to a live linger of the length passed. Failure only
    // leaves the default close behaviour, so it is ignored.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The error for a response that did not arrive in time.
fn missing(outstanding: usize, conns: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{outstanding} of {conns} responses still missing"),
    )
}
