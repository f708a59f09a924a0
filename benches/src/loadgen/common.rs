//! What the two load generators share: the state of the request in progress on a
//! connection, the closed loop around an engine's event pump (open in batches, run, drain),
//! and the deadline rule every pump follows. Each engine keeps only its own I/O.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{missing, open_stream, Window, CONNECT_BATCH};

/// The request in progress on one connection.
#[derive(Debug)]
pub(super) struct Exchange {
    /// A request is in flight (written or being written, response not complete).
    pub(super) busy: bool,
    /// Request bytes written.
    pub(super) sent: usize,
    /// Response bytes read.
    pub(super) received: usize,
    /// When the request began: the round trip is measured from here.
    started: Instant,
}

impl Exchange {
    /// No request in flight.
    pub(super) fn idle() -> Exchange {
        Exchange {
            busy: false,
            sent: 0,
            received: 0,
            started: Instant::now(),
        }
    }

    /// Begins a new request: nothing sent, nothing received, the clock starts.
    #[inline]
    pub(super) fn begin(&mut self) {
        self.busy = true;
        self.sent = 0;
        self.received = 0;
        self.started = Instant::now();
    }

    /// Ends the request whose response is complete and records its round trip in `win`.
    #[inline]
    pub(super) fn finish(&mut self, win: &mut Window) {
        self.busy = false;
        win.latency.record(self.started.elapsed().as_nanos() as u64);
        win.messages += 1;
    }
}

/// How long a pump may wait for events next, or `None` when it is done: with `keep_going`
/// at `until`; without, as soon as nothing is `outstanding` (failing if `until` passes
/// first). Waits are capped at 100 ms so that the deadline is checked regularly.
#[inline]
pub(super) fn next_wait(
    until: Instant,
    keep_going: bool,
    outstanding: usize,
    conns: usize,
) -> io::Result<Option<Duration>> {
    if !keep_going && outstanding == 0 {
        return Ok(None);
    }
    let now = Instant::now();
    if now >= until {
        if keep_going {
            return Ok(None);
        }
        return Err(missing(outstanding, conns));
    }
    Ok(Some((until - now).min(Duration::from_millis(100))))
}

/// The error for a connection the server closed.
pub(super) fn closed(idx: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("server closed connection {idx}"),
    )
}

/// An engine: its connections and its event pump. The closed loop around them is shared.
pub(super) trait ClosedLoop {
    /// Connections opened so far.
    fn conns(&self) -> usize;
    /// Whether connection `idx` has a request in flight.
    fn is_busy(&self, idx: usize) -> bool;
    /// Takes over a freshly opened connection as the next index, idle.
    fn add(&mut self, stream: TcpStream) -> io::Result<()>;
    /// Begins a new request on connection `idx`.
    fn start(&mut self, idx: usize) -> io::Result<()>;
    /// Handles events until `until`; when `keep_going` is false, returns as soon as nothing
    /// is in flight (and fails if `until` passes first). Completed round trips go to `win`.
    fn pump(&mut self, until: Instant, keep_going: bool, win: &mut Window) -> io::Result<()>;

    /// Opens connections to `addr` up to `n` in batches, each connection completing one
    /// round trip before the next batch opens.
    fn open(&mut self, addr: SocketAddr, n: usize, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.conns() < n {
            let batch_end = (self.conns() + CONNECT_BATCH).min(n);
            for idx in self.conns()..batch_end {
                self.add(open_stream(addr, idx, deadline)?)?;
                self.start(idx)?;
            }
            self.pump(deadline, false, &mut Window::default())?;
        }
        Ok(())
    }

    /// Drives every connection in a closed loop for `dur`. Requests still in flight at the
    /// end stay in flight (a later `run` or `drain` completes them).
    fn run(&mut self, dur: Duration) -> io::Result<Window> {
        for idx in 0..self.conns() {
            if !self.is_busy(idx) {
                self.start(idx)?;
            }
        }
        let started = Instant::now();
        let mut win = Window::default();
        self.pump(started + dur, true, &mut win)?;
        win.elapsed = started.elapsed();
        Ok(win)
    }

    /// Sends nothing new and waits until every in-flight request has its response.
    fn drain(&mut self, timeout: Duration) -> io::Result<Window> {
        let started = Instant::now();
        let mut win = Window::default();
        self.pump(started + timeout, false, &mut win)?;
        win.elapsed = started.elapsed();
        Ok(win)
    }
}
