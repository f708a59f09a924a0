//! [`StreamWriter`]: writes with `drain()` backpressure (semantics 206, 207).

use std::fmt;
use std::io;
use std::rc::Rc;

use ringloop_runtime::LoopError;

use super::protocol::Shared;
use super::reader::StreamReader;
use crate::error::TransportError;
use crate::stream::{ExtraInfo, Transport};

/// Writes to a connection: asyncio's `StreamWriter`. Cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    transport: Transport,
    shared: Rc<Shared>,
    reader: StreamReader,
    /// The drain waiter a pending `poll_write`/`poll_flush` is parked on.
    parked: Option<ringloop_runtime::Future<()>>,
}

impl StreamWriter {
    pub(crate) fn new(transport: Transport, shared: Rc<Shared>, reader: StreamReader) -> Self {
        StreamWriter {
            transport,
            shared,
            reader,
            parked: None,
        }
    }

    /// The underlying transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Queues `data`; follow with [`drain`](StreamWriter::drain) to respect backpressure.
    ///
    /// # Errors
    /// As [`Transport::write`].
    pub fn write(&self, data: &[u8]) -> Result<(), TransportError> {
        self.transport.write(data)
    }

    /// Queues each buffer in turn.
    ///
    /// # Errors
    /// As [`Transport::writelines`].
    pub fn writelines<I, B>(&self, lines: I) -> Result<(), TransportError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.transport.writelines(lines)
    }

    /// Closes the writing side after the buffer is sent.
    ///
    /// # Errors
    /// As [`Transport::write_eof`].
    pub fn write_eof(&self) -> Result<(), TransportError> {
        self.transport.write_eof()
    }

    /// Whether [`write_eof`](StreamWriter::write_eof) is supported.
    pub fn can_write_eof(&self) -> bool {
        self.transport.can_write_eof()
    }

    /// Waits until the write buffer is below the high-water mark (semantics 206): returns
    /// at once when writing is not paused; several concurrent drains all wake on resume.
    ///
    /// # Errors
    /// The reader's error if one is set; `ConnectionReset` (`Connection lost`) once the
    /// connection is gone, so a write/drain loop against a closed peer ends.
    pub async fn drain(&self) -> Result<(), LoopError> {
        if let Some(err) = self.reader.exception() {
            return Err(err);
        }
        if self.transport.is_closing() {
            // Let connection_lost run first (asyncio yields once here).
            self.shared.lp.sleep(0.0).await?;
        }
        if self.shared.lost.get() {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "Connection lost").into());
        }
        if !self.shared.paused.get() {
            return Ok(());
        }
        let waiter = self.shared.lp.create_future::<()>();
        self.shared.drain_waiters.borrow_mut().push(waiter.clone());
        waiter.await
    }

    /// Closes the connection (the buffer is still flushed); `is_closing()` is true at once.
    pub fn close(&self) {
        self.transport.close();
    }

    /// Whether the writer is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.transport.is_closing()
    }

    /// Completes once the connection is lost (semantics 207).
    ///
    /// # Errors
    /// Cancellation.
    pub async fn wait_closed(&self) -> Result<(), LoopError> {
        if self.shared.lost.get() {
            return Ok(());
        }
        let waiter = self.shared.lp.create_future::<()>();
        self.shared.closed_waiters.borrow_mut().push(waiter.clone());
        waiter.await
    }

    /// As [`Transport::get_extra_info`].
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.transport.get_extra_info(name)
    }
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("transport", &self.transport)
            .finish()
    }
}

impl StreamWriter {
    /// Polls until writing is not paused (the `poll` form of [`drain`](StreamWriter::drain)).
    fn poll_unpaused(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        loop {
            if self.shared.lost.get() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "Connection lost",
                )));
            }
            if !self.shared.paused.get() {
                self.parked = None;
                return Poll::Ready(Ok(()));
            }
            let mut waiter = match self.parked.take() {
                Some(waiter) => waiter,
                None => {
                    let waiter = self.shared.lp.create_future::<()>();
                    self.shared.drain_waiters.borrow_mut().push(waiter.clone());
                    waiter
                }
            };
            match std::future::Future::poll(std::pin::Pin::new(&mut waiter), cx) {
                Poll::Pending => {
                    self.parked = Some(waiter);
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(super::errors::to_io(err))),
                Poll::Ready(Ok(())) => {}
            }
        }
    }
}

/// The writer as a `futures-io` [`AsyncWrite`](futures_io::AsyncWrite): `poll_write` queues
/// the whole buffer unless writing is paused (then it waits, which is the backpressure),
/// `poll_flush` waits like `drain()`, `poll_close` half-closes (`write_eof()`, a write
/// pipe's `close()`).
impl futures_io::AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::ready!(self.poll_unpaused(cx))?;
        if self.transport.is_closing() {
            return std::task::Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the transport is closing",
            )));
        }
        self.transport.write(buf)?;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.poll_unpaused(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.shared.lost.get() {
            std::task::ready!(self.poll_unpaused(cx))?;
        }
        let _ = self.transport.write_eof();
        std::task::Poll::Ready(Ok(()))
    }
}
