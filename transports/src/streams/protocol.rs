//! `StreamReaderProtocol`: the protocol behind a reader/writer pair. It feeds the reader,
//! tracks write pauses for `drain()`, and records the connection's end for `wait_closed()`.

use std::cell::{Cell, RefCell};
use std::future::Future as StdFuture;
use std::io;
use std::pin::Pin;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, ExceptionContext, Future, LoopError};

use super::reader::StreamReader;
use super::writer::StreamWriter;
use crate::protocol::Protocol;
use crate::stream::Transport;

/// The callback of `start_server`: builds the future that serves one connection.
pub(crate) type ClientConnected = Rc<
    dyn Fn(StreamReader, StreamWriter) -> Pin<Box<dyn StdFuture<Output = Result<(), LoopError>>>>,
>;

/// State shared by the protocol and the writer (never borrowed across a user call).
pub(crate) struct Shared {
    pub(crate) lp: EventLoop,
    pub(crate) paused: Cell<bool>,
    pub(crate) lost: Cell<bool>,
    pub(crate) drain_waiters: RefCell<Vec<Future<()>>>,
    pub(crate) closed_waiters: RefCell<Vec<Future<()>>>,
}

impl Shared {
    pub(crate) fn new(lp: &EventLoop) -> Rc<Shared> {
        Rc::new(Shared {
            lp: lp.clone(),
            paused: Cell::new(false),
            lost: Cell::new(false),
            drain_waiters: RefCell::new(Vec::new()),
            closed_waiters: RefCell::new(Vec::new()),
        })
    }

    fn wake_drainers(&self, error: Option<&io::Error>) {
        let waiters = std::mem::take(&mut *self.drain_waiters.borrow_mut());
        for waiter in waiters {
            if waiter.done() {
                continue;
            }
            let _ = match error {
                Some(err) => waiter
                    .set_exception(LoopError::from(io::Error::new(err.kind(), err.to_string()))),
                None => waiter.set_result(()),
            };
        }
    }
}

/// asyncio's `StreamReaderProtocol`.
pub(crate) struct StreamReaderProtocol {
    reader: StreamReader,
    shared: Rc<Shared>,
    client_connected: Option<ClientConnected>,
}

impl StreamReaderProtocol {
    pub(crate) fn new(
        reader: StreamReader,
        shared: Rc<Shared>,
        client_connected: Option<ClientConnected>,
    ) -> Self {
        StreamReaderProtocol {
            reader,
            shared,
            client_connected,
        }
    }
}

impl Protocol for StreamReaderProtocol {
    fn connection_made(&mut self, transport: &Transport) {
        self.reader.set_transport(transport);
        let Some(callback) = self.client_connected.take() else {
            return;
        };
        let writer = StreamWriter::new(transport.clone(), self.shared.clone(), self.reader.clone());
        let future = callback(self.reader.clone(), writer);
        let task = match self.shared.lp.create_task(future) {
            Ok(task) => task,
            Err(_) => {
                transport.close();
                return;
            }
        };
        // A failed handler is reported and its transport closed; a cancelled one is just
        // closed (semantics 209).
        let transport = transport.clone();
        let lp = self.shared.lp.clone();
        task.add_done_callback(move |done| {
            if done.cancelled() {
                transport.close();
                return;
            }
            if let Ok(Some(error)) = done.exception() {
                lp.call_exception_handler(
                    ExceptionContext::new("Unhandled exception in client_connected_cb")
                        .with_error(error)
                        .with_extra("transport", format!("{transport:?}")),
                );
                transport.close();
            }
        });
    }

    fn data_received(&mut self, data: &[u8]) {
        self.reader.feed_data(data);
    }

    fn eof_received(&mut self) -> bool {
        self.reader.feed_eof();
        // Keep TCP half-open so the application can still write (semantics 208).
        true
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        match &error {
            None => self.reader.feed_eof(),
            Some(err) => self
                .reader
                .set_exception(LoopError::from(io::Error::new(err.kind(), err.to_string()))),
        }
        self.shared.lost.set(true);
        self.shared.wake_drainers(error.as_ref());
        let waiters = std::mem::take(&mut *self.shared.closed_waiters.borrow_mut());
        for waiter in waiters {
            let _ = waiter.set_result(());
        }
    }

    fn pause_writing(&mut self) {
        self.shared.paused.set(true);
    }

    fn resume_writing(&mut self) {
        self.shared.paused.set(false);
        self.shared.wake_drainers(None);
    }
}
