//! [`StreamReader`]: buffered reads with a limit and backpressure (semantics 199–205).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, Future, LoopError};

use super::errors::{IncompleteReadError, LimitOverrunError};
use crate::error::invalid;
use crate::stream::Transport;

/// asyncio's default stream limit: 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Reads from a connection: asyncio's `StreamReader`. Cheap to clone (a reference count);
/// all clones read the same buffer.
#[derive(Clone)]
pub struct StreamReader {
    inner: Rc<ReaderInner>,
}

struct ReaderInner {
    lp: EventLoop,
    limit: usize,
    /// Unread bytes are `buf[start..]`; the consumed prefix is dropped lazily.
    buf: RefCell<Vec<u8>>,
    start: Cell<usize>,
    eof: Cell<bool>,
    exception: RefCell<Option<LoopError>>,
    waiter: RefCell<Option<Future<()>>>,
    transport: RefCell<Option<Transport>>,
    paused: Cell<bool>,
}

impl StreamReader {
    /// A reader with `limit` (asyncio's default is [`DEFAULT_LIMIT`]).
    ///
    /// # Errors
    /// `Limit cannot be <= 0` for a zero limit.
    pub fn new(lp: &EventLoop, limit: usize) -> Result<StreamReader, LoopError> {
        if limit == 0 {
            return Err(invalid("Limit cannot be <= 0"));
        }
        Ok(StreamReader {
            inner: Rc::new(ReaderInner {
                lp: lp.clone(),
                limit,
                buf: RefCell::new(Vec::new()),
                start: Cell::new(0),
                eof: Cell::new(false),
                exception: RefCell::new(None),
                waiter: RefCell::new(None),
                transport: RefCell::new(None),
                paused: Cell::new(false),
            }),
        })
    }

    /// The buffer limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    fn buffered(&self) -> usize {
        self.inner.buf.borrow().len() - self.inner.start.get()
    }

    /// Connects the reader to the transport it pauses and resumes.
    pub(crate) fn set_transport(&self, transport: &Transport) {
        *self.inner.transport.borrow_mut() = Some(transport.clone());
    }

    /// Adds received bytes; pauses the transport above `2 * limit` (semantics 199).
    pub fn feed_data(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.inner.buf.borrow_mut().extend_from_slice(data);
        self.wake();
        if !self.inner.paused.get() && self.buffered() > 2 * self.inner.limit {
            let transport = self.inner.transport.borrow().clone();
            if let Some(transport) = transport {
                transport.pause_reading();
                self.inner.paused.set(true);
            }
        }
    }

    /// Marks the end of the stream.
    pub fn feed_eof(&self) {
        self.inner.eof.set(true);
        self.wake();
    }

    /// Whether the stream ended and the buffer is empty.
    pub fn at_eof(&self) -> bool {
        self.inner.eof.get() && self.buffered() == 0
    }

    /// The error set by [`set_exception`](StreamReader::set_exception), if any.
    pub fn exception(&self) -> Option<LoopError> {
        self.inner.exception.borrow().clone()
    }

    /// Makes the pending read and every later read fail with `error`, buffered data or not
    /// (semantics 205).
    pub fn set_exception(&self, error: LoopError) {
        *self.inner.exception.borrow_mut() = Some(error.clone());
        let waiter = self.inner.waiter.borrow_mut().take();
        if let Some(waiter) = waiter {
            if !waiter.done() {
                let _ = waiter.set_exception(error);
            }
        }
    }

    fn wake(&self) {
        let waiter = self.inner.waiter.borrow_mut().take();
        if let Some(waiter) = waiter {
            if !waiter.done() {
                let _ = waiter.set_result(());
            }
        }
    }

    fn check_exception(&self) -> Result<(), LoopError> {
        match &*self.inner.exception.borrow() {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// Resumes a paused transport once the buffer is at the limit or below.
    fn maybe_resume(&self) {
        if self.inner.paused.get() && self.buffered() <= self.inner.limit {
            self.inner.paused.set(false);
            let transport = self.inner.transport.borrow().clone();
            if let Some(transport) = transport {
                transport.resume_reading();
            }
        }
    }

    /// Waits until data or EOF arrives. A paused transport is resumed first, so a read
    /// larger than the limit cannot deadlock (semantics 199).
    async fn wait_for_data(&self, func: &str) -> Result<(), LoopError> {
        if self.inner.waiter.borrow().is_some() {
            return Err(LoopError::InvalidState(format!(
                "{func}() called while another coroutine is already waiting for incoming data"
            )));
        }
        if self.inner.paused.get() {
            self.inner.paused.set(false);
            let transport = self.inner.transport.borrow().clone();
            if let Some(transport) = transport {
                transport.resume_reading();
            }
        }
        let waiter = self.inner.lp.create_future::<()>();
        *self.inner.waiter.borrow_mut() = Some(waiter.clone());
        let outcome = waiter.await;
        *self.inner.waiter.borrow_mut() = None;
        outcome
    }

    /// Removes and returns the first `n` unread bytes.
    fn take(&self, n: usize) -> Vec<u8> {
        let mut buf = self.inner.buf.borrow_mut();
        let start = self.inner.start.get();
        let out = buf[start..start + n].to_vec();
        let start = start + n;
        if start == buf.len() {
            buf.clear();
            self.inner.start.set(0);
        } else if start > 64 * 1024 && start * 2 > buf.len() {
            buf.drain(..start);
            self.inner.start.set(0);
        } else {
            self.inner.start.set(start);
        }
        out
    }

    /// Drops the first `n` unread bytes.
    fn take_discard(&self, n: usize) -> usize {
        let mut buf = self.inner.buf.borrow_mut();
        let start = self.inner.start.get() + n;
        if start >= buf.len() {
            buf.clear();
            self.inner.start.set(0);
        } else {
            self.inner.start.set(start);
        }
        n
    }

    fn clear(&self) {
        self.inner.buf.borrow_mut().clear();
        self.inner.start.set(0);
    }

    /// Reads up to `n` bytes (semantics 200): `n == 0` returns nothing at once; `n < 0`
    /// reads until EOF; otherwise 1..=n bytes as soon as any are there, and an empty
    /// vector at EOF.
    ///
    /// # Errors
    /// The error set with [`set_exception`](StreamReader::set_exception) (a lost
    /// connection's error); a concurrent read; cancellation.
    pub async fn read(&self, n: isize) -> Result<Vec<u8>, LoopError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        if n < 0 {
            let mut all = Vec::new();
            loop {
                let chunk = self.read_some(self.inner.limit).await?;
                if chunk.is_empty() {
                    return Ok(all);
                }
                all.extend_from_slice(&chunk);
            }
        }
        self.read_some(n as usize).await
    }

    /// 1..=n bytes as soon as any are there; nothing at EOF.
    async fn read_some(&self, n: usize) -> Result<Vec<u8>, LoopError> {
        self.check_exception()?;
        if self.buffered() == 0 && !self.inner.eof.get() {
            self.wait_for_data("read").await?;
            self.check_exception()?;
        }
        let n = n.min(self.buffered());
        let out = self.take(n);
        self.maybe_resume();
        Ok(out)
    }

    /// Reads one line including its `\n`; at EOF the partial last line, or nothing
    /// (semantics 201).
    ///
    /// # Errors
    /// A line longer than the limit: `InvalidArgument` with the overrun message (the line,
    /// or the whole buffer when no separator was found, is consumed).
    pub async fn readline(&self) -> Result<Vec<u8>, LoopError> {
        match self.readuntil(b"\n").await {
            Ok(line) => Ok(line),
            Err(err) => {
                if let Some(partial) = IncompleteReadError::find(&err) {
                    return Ok(partial.partial.clone());
                }
                if let Some(overrun) = LimitOverrunError::find(&err) {
                    let consumed = overrun.consumed;
                    let message = overrun.message;
                    let found = {
                        let buf = self.inner.buf.borrow();
                        let unread = &buf[self.inner.start.get()..];
                        unread.get(consumed) == Some(&b'\n')
                    };
                    if found {
                        self.take(consumed + 1);
                    } else {
                        self.clear();
                    }
                    self.maybe_resume();
                    return Err(invalid(message));
                }
                Err(err)
            }
        }
    }

    /// Reads up to and including `separator` (semantics 202).
    ///
    /// # Errors
    /// At EOF [`IncompleteReadError`] with what was left (the buffer is cleared); past the
    /// limit [`LimitOverrunError`] (the data stays buffered); an empty separator is
    /// `Separator should be at least one-byte string`.
    pub async fn readuntil(&self, separator: &[u8]) -> Result<Vec<u8>, LoopError> {
        if separator.is_empty() {
            return Err(invalid("Separator should be at least one-byte string"));
        }
        self.check_exception()?;
        let seplen = separator.len();
        let mut offset = 0;
        let isep = loop {
            let found = {
                let buf = self.inner.buf.borrow();
                let unread = &buf[self.inner.start.get()..];
                if unread.len() >= offset + seplen {
                    match find(&unread[offset..], separator) {
                        Some(pos) => Ok(offset + pos),
                        None => Err(unread.len() + 1 - seplen),
                    }
                } else {
                    Err(offset)
                }
            };
            match found {
                Ok(isep) => break isep,
                Err(next) => {
                    offset = next;
                    if offset > self.inner.limit {
                        return Err(LoopError::other(LimitOverrunError {
                            message: "Separator is not found, and chunk exceed the limit",
                            consumed: offset,
                        }));
                    }
                }
            }
            if self.inner.eof.get() {
                let partial = self.take(self.buffered());
                return Err(LoopError::other(IncompleteReadError {
                    partial,
                    expected: None,
                }));
            }
            self.wait_for_data("readuntil").await?;
            self.check_exception()?;
        };
        if isep > self.inner.limit {
            return Err(LoopError::other(LimitOverrunError {
                message: "Separator is found, but chunk is longer than limit",
                consumed: isep,
            }));
        }
        let out = self.take(isep + seplen);
        self.maybe_resume();
        Ok(out)
    }

    /// Reads exactly `n` bytes (semantics 203).
    ///
    /// # Errors
    /// EOF first: [`IncompleteReadError`] with the partial data and `expected == n`.
    pub async fn readexactly(&self, n: usize) -> Result<Vec<u8>, LoopError> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        while self.buffered() < n {
            if self.inner.eof.get() {
                let partial = self.take(self.buffered());
                return Err(LoopError::other(IncompleteReadError {
                    partial,
                    expected: Some(n),
                }));
            }
            self.wait_for_data("readexactly").await?;
            self.check_exception()?;
        }
        let out = self.take(n);
        self.maybe_resume();
        Ok(out)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("buffered", &self.buffered())
            .field("limit", &self.inner.limit)
            .field("eof", &self.inner.eof.get())
            .field("paused", &self.inner.paused.get())
            .finish()
    }
}

impl StreamReader {
    /// Polls until data, EOF or an error is there (the `poll` form of waiting for data,
    /// shared by the `Stream` and `AsyncRead` impls). Resumes a paused transport first.
    fn poll_data(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), LoopError>> {
        use std::task::Poll;
        loop {
            if self.inner.exception.borrow().is_some()
                || self.buffered() > 0
                || self.inner.eof.get()
            {
                return Poll::Ready(Ok(()));
            }
            let existing = self.inner.waiter.borrow().clone();
            let mut waiter = match existing {
                Some(waiter) => waiter,
                None => {
                    if self.inner.paused.replace(false) {
                        let transport = self.inner.transport.borrow().clone();
                        if let Some(transport) = transport {
                            transport.resume_reading();
                        }
                    }
                    let waiter = self.inner.lp.create_future::<()>();
                    *self.inner.waiter.borrow_mut() = Some(waiter.clone());
                    waiter
                }
            };
            match std::future::Future::poll(std::pin::Pin::new(&mut waiter), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => {
                    *self.inner.waiter.borrow_mut() = None;
                    outcome?;
                }
            }
        }
    }
}

/// The reader as a `futures-core` [`Stream`](futures_core::Stream) of chunks (at most
/// `limit` bytes each), ending at EOF; a lost connection's error is yielded once, then the
/// stream ends.
impl futures_core::Stream for StreamReader {
    type Item = Result<Vec<u8>, LoopError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Err(err) = std::task::ready!(self.poll_data(cx)) {
            return Poll::Ready(Some(Err(err)));
        }
        if let Some(err) = self.inner.exception.borrow_mut().take() {
            self.inner.eof.set(true);
            self.clear();
            return Poll::Ready(Some(Err(err)));
        }
        let buffered = self.buffered();
        if buffered > 0 {
            let chunk = self.take(buffered.min(self.inner.limit));
            self.maybe_resume();
            return Poll::Ready(Some(Ok(chunk)));
        }
        Poll::Ready(None)
    }
}

/// The reader as a `futures-io` [`AsyncRead`](futures_io::AsyncRead): bytes as they arrive,
/// `Ok(0)` at EOF, the lost connection's error as an `io::Error`.
impl futures_io::AsyncRead for StreamReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Err(err) = std::task::ready!(self.poll_data(cx)) {
            return Poll::Ready(Err(super::errors::to_io(err)));
        }
        if let Some(err) = self.exception() {
            return Poll::Ready(Err(super::errors::to_io(err)));
        }
        let n = buf.len().min(self.buffered());
        if n > 0 {
            let start = self.inner.start.get();
            buf[..n].copy_from_slice(&self.inner.buf.borrow()[start..start + n]);
            let _ = self.take_discard(n);
            self.maybe_resume();
        }
        Poll::Ready(Ok(n))
    }
}
