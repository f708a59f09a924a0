//! ringloop through its asyncio-style API, as its users write it: `lp.create_server(factory,
//! host, port, options)` with a [`Protocol`] whose `data_received` calls `transport.write`,
//! on the io_uring or the epoll backend (chosen by `RINGLOOP_BACKEND`, which the harness sets
//! for the child). Also ringloop's side of the micro-workloads.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop::transports::{ServerOptions, ServerSocket};
use ringloop::{EventLoop, EventLoopExt, LoopError, Protocol, Transport};

use super::http::{push_responses, RequestCounter};
use super::{announce_ready, Mode, BACKLOG};
use crate::metrics::Histogram;
use crate::micro::{timer_delay, MicroKind, MicroResult, LATENESS_DELAY};

/// Why ringloop cannot be benchmarked in this build, if it cannot.
pub(crate) const UNAVAILABLE: Option<&str> = None;

/// The proactor backend a ringloop server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `RINGLOOP_BACKEND=io_uring`.
    IoUring,
    /// `RINGLOOP_BACKEND=epoll`.
    Epoll,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

fn to_io(e: LoopError) -> io::Error {
    io::Error::other(e.to_string())
}

/// A loop on `backend`; refuses to run on another one (a silent fallback would mislabel
/// every figure).
fn new_loop(backend: Backend) -> io::Result<EventLoop> {
    let lp = EventLoop::new().map_err(to_io)?;
    let got = lp.backend().to_string();
    if got != backend.name() {
        return Err(io::Error::other(format!(
            "asked for {}, the loop runs on {got}",
            backend.name()
        )));
    }
    Ok(lp)
}

/// Echoes every chunk back through the transport.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // A write on a closing transport fails; the connection is going away anyway.
            let _ = t.write(data);
        }
    }
}

/// Answers every HTTP/1.1 request with the fixed response.
#[derive(Default)]
struct Http {
    transport: Option<Transport>,
    requests: RequestCounter,
    out: Vec<u8>,
}

impl Protocol for Http {
    fn connection_made(&mut self, transport: &Transport) {
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        let n = self.requests.feed(data);
        if let (Some(t), true) = (&self.transport, n > 0) {
            self.out.clear();
            push_responses(&mut self.out, n);
            let _ = t.write(&self.out);
        }
    }
}

/// Serves `mode` on `127.0.0.1:port` with a ringloop `Protocol` on `backend`, forever.
pub(crate) fn serve(backend: Backend, mode: Mode, port: u16) -> io::Result<()> {
    let lp = new_loop(backend)?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let options = ServerOptions {
            backlog: BACKLOG,
            ..ServerOptions::default()
        };
        let server = match mode {
            Mode::Echo => {
                lp2.create_server(Echo::default, "127.0.0.1", port, options)
                    .await?
            }
            Mode::Http => {
                lp2.create_server(Http::default, "127.0.0.1", port, options)
                    .await?
            }
        };
        let bound = server
            .sockets()
            .first()
            .and_then(ServerSocket::port)
            .unwrap_or(port);
        if let Err(e) = announce_ready(
            bound,
            &format!(
                "ringloop Protocol API, {}",
                lp2.features().describe(lp2.backend())
            ),
        ) {
            return Err(LoopError::from(e));
        }
        server.serve_forever().await
    })
    .map_err(to_io)
}

/// Runs a micro-workload on a ringloop event loop on `backend`.
pub(crate) fn micro(backend: Backend, kind: MicroKind, n: u64) -> io::Result<MicroResult> {
    let lp = new_loop(backend)?;
    let result = match kind {
        MicroKind::CallSoon => call_soon(&lp, n),
        MicroKind::CreateTask => create_task(&lp, n),
        MicroKind::Timers => timers(&lp, n),
        MicroKind::TimerLateness => lateness(&lp, n),
        MicroKind::TimersDelayQueue => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "tokio-only workload",
            ))
        }
    };
    result.map_err(to_io)
}

/// Chunk of callbacks or tasks queued before one loop iteration runs them.
const CHUNK: u64 = 100_000;

fn call_soon(lp: &EventLoop, n: u64) -> Result<MicroResult, LoopError> {
    let ran = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut scheduled = 0;
    while scheduled < n {
        let chunk = CHUNK.min(n - scheduled);
        for _ in 0..chunk {
            let ran = ran.clone();
            lp.call_soon(move || ran.set(ran.get() + 1))?;
        }
        scheduled += chunk;
        lp.stop();
        lp.run_forever()?;
    }
    check(ran.get(), n)?;
    Ok(MicroResult::throughput(n, start.elapsed()))
}

fn create_task(lp: &EventLoop, n: u64) -> Result<MicroResult, LoopError> {
    let done = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut spawned = 0;
    while spawned < n {
        let chunk = CHUNK.min(n - spawned);
        for _ in 0..chunk {
            let done = done.clone();
            lp.create_task(async move {
                done.set(done.get() + 1);
                Ok::<_, LoopError>(())
            })?;
        }
        spawned += chunk;
        while done.get() < spawned {
            lp.stop();
            lp.run_forever()?;
        }
    }
    Ok(MicroResult::throughput(n, start.elapsed()))
}

fn timers(lp: &EventLoop, n: u64) -> Result<MicroResult, LoopError> {
    let fired = Rc::new(Cell::new(0u64));
    let expected = n - n / 2;
    let start = Instant::now();
    for i in 0..n {
        let (fired, lp2) = (fired.clone(), lp.clone());
        let timer = lp.call_later(timer_delay(i), move || {
            fired.set(fired.get() + 1);
            if fired.get() == expected {
                lp2.stop();
            }
        })?;
        if i % 2 == 1 {
            timer.cancel();
        }
    }
    lp.run_forever()?;
    check(fired.get(), expected)?;
    Ok(MicroResult::throughput(n, start.elapsed()))
}

fn lateness(lp: &EventLoop, n: u64) -> Result<MicroResult, LoopError> {
    let mut hist = Histogram::new();
    let mut early = 0;
    let start = Instant::now();
    for _ in 0..n {
        let fired_after = Rc::new(Cell::new(Duration::ZERO));
        let (out, lp2, t0) = (fired_after.clone(), lp.clone(), Instant::now());
        lp.call_later(LATENESS_DELAY, move || {
            out.set(t0.elapsed());
            lp2.stop();
        })?;
        lp.run_forever()?;
        match fired_after.get().checked_sub(LATENESS_DELAY) {
            Some(late) => hist.record(late.as_nanos() as u64),
            None => early += 1,
        }
    }
    Ok(MicroResult::lateness(&hist, early, start.elapsed()))
}

fn check(got: u64, want: u64) -> Result<(), LoopError> {
    if got == want {
        Ok(())
    } else {
        Err(LoopError::from(io::Error::other(format!(
            "{got} of {want} callbacks ran"
        ))))
    }
}
