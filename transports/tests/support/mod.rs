//! Shared helpers of the transports tests: loops that fail on unexpected exception-handler
//! calls, fd counting, loopback listeners, connections and echo servers, and small protocols
//! that record what happened to them.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use std::cell::RefCell;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringloop_runtime::{EventLoop, ExceptionContext, LoopError};
use ringloop_transports::{
    ConnectOptions, Connection, EventLoopExt, Protocol, Server, ServerOptions, Transport,
};

/// A loop whose exception handler records every call (tests assert it stays empty on clean
/// paths, semantics 52).
pub fn new_loop() -> (EventLoop, Rc<RefCell<Vec<String>>>) {
    let lp = EventLoop::new().expect("an event loop");
    let reports = Rc::new(RefCell::new(Vec::new()));
    let seen = reports.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
        seen.borrow_mut().push(ctx.render());
    }));
    (lp, reports)
}

/// Runs `future` with a deadline so a hang fails the test instead of blocking CI.
pub fn run<T: 'static>(
    lp: &EventLoop,
    secs: u64,
    future: impl std::future::Future<Output = Result<T, LoopError>> + 'static,
) -> Result<T, LoopError> {
    let stopper = lp.clone();
    let timer = lp
        .call_later(Duration::from_secs(secs), move || stopper.stop())
        .expect("a timer");
    let out = lp.run_until_complete(future);
    timer.cancel();
    out
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A std listener on loopback and its port: a peer the test drives by hand.
pub fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    listener().1
}

/// A peer thread: listens on loopback (already bound when this returns), accepts one
/// connection and runs `script` on it. Returns the port and the thread.
pub fn peer<T: Send + 'static>(
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let (l, port) = listener();
    let thread = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        script(s)
    });
    (port, thread)
}

/// Connects to `127.0.0.1:port` with `protocol` (default options).
pub async fn connect<P: Protocol>(
    lp: &EventLoop,
    port: u16,
    protocol: P,
) -> Result<Connection<P>, LoopError> {
    lp.create_connection(
        move || protocol,
        "127.0.0.1",
        port,
        ConnectOptions::default(),
    )
    .await
}

/// A server on `host` (any port; `""` binds every interface) whose connections echo what
/// they receive, each through a [`Recorder`].
pub async fn echo_server(lp: &EventLoop, host: &str) -> Result<Server, LoopError> {
    lp.create_server(Recorder::echoing, host, 0, ServerOptions::default())
        .await
}

/// Everything that happened to a [`Recorder`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Made,
    Data(Vec<u8>),
    Eof,
    Lost(Option<io::ErrorKind>),
    PauseWriting,
    ResumeWriting,
}

/// A protocol that records its events and keeps its transport.
#[derive(Default)]
pub struct Recorder {
    pub transport: Option<Transport>,
    pub events: Vec<Event>,
    pub keep_open_on_eof: bool,
    pub echo: bool,
    pub lost: Option<ringloop_runtime::Future<()>>,
}

impl Recorder {
    /// A recorder that writes back everything it receives.
    pub fn echoing() -> Recorder {
        Recorder {
            echo: true,
            ..Recorder::default()
        }
    }

    /// All bytes received, concatenated.
    pub fn data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for event in &self.events {
            if let Event::Data(d) = event {
                out.extend_from_slice(d);
            }
        }
        out
    }

    /// The events other than data, in order (data collapsed into one `Data(all)`).
    pub fn shape(&self) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for event in &self.events {
            match (event, out.last_mut()) {
                (Event::Data(d), Some(Event::Data(acc))) => acc.extend_from_slice(d),
                (e, _) => out.push(e.clone()),
            }
        }
        out
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, transport: &Transport) {
        assert!(
            self.events.is_empty(),
            "connection_made must come first: {:?}",
            self.events
        );
        self.transport = Some(transport.clone());
        self.events.push(Event::Made);
    }
    fn data_received(&mut self, data: &[u8]) {
        assert!(matches!(
            self.events.last(),
            Some(Event::Made | Event::Data(_) | Event::PauseWriting | Event::ResumeWriting)
        ));
        self.events.push(Event::Data(data.to_vec()));
        if self.echo {
            if let Some(t) = &self.transport {
                t.write(data).expect("write");
            }
        }
    }
    fn eof_received(&mut self) -> bool {
        self.events.push(Event::Eof);
        self.keep_open_on_eof
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        assert!(
            !self.events.iter().any(|e| matches!(e, Event::Lost(_))),
            "connection_lost twice"
        );
        self.events.push(Event::Lost(error.map(|e| e.kind())));
        if let Some(lost) = self.lost.take() {
            let _ = lost.set_result(());
        }
    }
    fn pause_writing(&mut self) {
        self.events.push(Event::PauseWriting);
    }
    fn resume_writing(&mut self) {
        self.events.push(Event::ResumeWriting);
    }
}

/// A recorder whose `lost` future resolves on `connection_lost`.
pub fn recorder(lp: &EventLoop) -> (Recorder, ringloop_runtime::Future<()>) {
    let lost = lp.create_future::<()>();
    (
        Recorder {
            lost: Some(lost.clone()),
            ..Recorder::default()
        },
        lost,
    )
}
