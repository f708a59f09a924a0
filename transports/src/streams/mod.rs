//! Streams: asyncio's high-level API over transports (section R). [`open_connection`]
//! gives a [`StreamReader`]/[`StreamWriter`] pair; [`start_server`] calls an async handler
//! with one pair per connection.
//!
//! # Examples
//! ```no_run
//! use ringloop_runtime::{EventLoop, LoopError};
//! use ringloop_transports::streams;
//!
//! let lp = EventLoop::new()?;
//! let lp2 = lp.clone();
//! lp.run_until_complete(async move {
//!     let (reader, writer) = streams::open_connection(&lp2, "127.0.0.1", 8888).await?;
//!     writer.write(b"hello\n")?;
//!     writer.drain().await?;
//!     let line = reader.readline().await?;
//!     writer.close();
//!     writer.wait_closed().await?;
//!     let _ = line;
//!     Ok::<_, LoopError>(())
//! })?;
//! # Ok::<(), LoopError>(())
//! ```

mod errors;
mod protocol;
mod reader;
mod writer;

use std::future::Future as StdFuture;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, LoopError};

pub use errors::{IncompleteReadError, LimitOverrunError};
pub use reader::{StreamReader, DEFAULT_LIMIT};
pub use writer::StreamWriter;

use crate::ext::EventLoopExt;
use crate::options::{ConnectOptions, ServerOptions};
use crate::resolve::Service;
use crate::server::Server;
use protocol::{ClientConnected, Shared, StreamReaderProtocol};

/// Connects to `host:port` and returns a reader/writer pair (asyncio's `open_connection`,
/// with the default limit). A closed port gives `ConnectionRefused` (semantics 209).
///
/// # Errors
/// As [`EventLoopExt::create_connection`].
pub async fn open_connection(
    lp: &EventLoop,
    host: &str,
    port: impl Into<Service>,
) -> Result<(StreamReader, StreamWriter), LoopError> {
    open_connection_with(lp, host, port, DEFAULT_LIMIT, ConnectOptions::default()).await
}

/// [`open_connection`] with a buffer limit and connection options.
///
/// # Errors
/// As [`EventLoopExt::create_connection`]; `Limit cannot be <= 0`.
pub async fn open_connection_with(
    lp: &EventLoop,
    host: &str,
    port: impl Into<Service>,
    limit: usize,
    options: ConnectOptions,
) -> Result<(StreamReader, StreamWriter), LoopError> {
    let reader = StreamReader::new(lp, limit)?;
    let shared = Shared::new(lp);
    let (proto_reader, proto_shared) = (reader.clone(), shared.clone());
    let (transport, _protocol) = lp
        .create_connection(
            move || StreamReaderProtocol::new(proto_reader, proto_shared, None),
            host,
            port,
            options,
        )
        .await?;
    let writer = StreamWriter::new(transport, shared, reader.clone());
    Ok((reader, writer))
}

/// Serves `host:port`, calling `client_connected(reader, writer)` for each connection and
/// running the future it returns as a task (asyncio's `start_server`, semantics 209). If
/// that task fails, the exception handler gets `Unhandled exception in
/// client_connected_cb` and the connection is closed; if it is cancelled, the connection is
/// closed.
///
/// # Errors
/// As [`EventLoopExt::create_server`].
pub async fn start_server<F, Fut>(
    lp: &EventLoop,
    client_connected: F,
    host: &str,
    port: impl Into<Service>,
    limit: usize,
    options: ServerOptions,
) -> Result<Server, LoopError>
where
    F: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: StdFuture<Output = Result<(), LoopError>> + 'static,
{
    StreamReader::new(lp, limit)?;
    let callback: ClientConnected =
        Rc::new(move |reader, writer| Box::pin(client_connected(reader, writer)));
    let factory_loop = lp.clone();
    lp.create_server(
        move || {
            let reader = match StreamReader::new(&factory_loop, limit) {
                Ok(reader) => reader,
                Err(_) => unreachable!("the limit was checked above"),
            };
            StreamReaderProtocol::new(reader, Shared::new(&factory_loop), Some(callback.clone()))
        },
        host,
        port,
        options,
    )
    .await
}
