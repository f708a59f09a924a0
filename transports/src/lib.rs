//! asyncio's protocol/transport model on the ringloop event loop: TCP, UDP, pipe and
//! Unix-socket transports, servers, name resolution and streams.
//!
//! Everything is reached as methods of the event loop through [`EventLoopExt`] (re-exported
//! by the `ringloop` facade), so `lp.create_connection(…)` reads as in asyncio:
//!
//! ```no_run
//! use ringloop_runtime::{EventLoop, LoopError};
//! use ringloop_transports::{ConnectOptions, EventLoopExt, Protocol, Transport};
//!
//! #[derive(Default)]
//! struct Client { received: Vec<u8> }
//!
//! impl Protocol for Client {
//!     fn connection_made(&mut self, transport: &Transport) {
//!         let _ = transport.write(b"ping");
//!         let _ = transport.write_eof();
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         self.received.extend_from_slice(data);
//!     }
//! }
//!
//! let lp = EventLoop::new()?;
//! let lp2 = lp.clone();
//! lp.run_until_complete(async move {
//!     let (_transport, client) = lp2
//!         .create_connection(Client::default, "127.0.0.1", 8888, ConnectOptions::default())
//!         .await?;
//!     let _ = client;
//!     Ok::<_, LoopError>(())
//! })?;
//! # Ok::<(), LoopError>(())
//! ```
//!
//! # Modules, one concept each
//! - `protocol`: the traits applications implement.
//! - `stream`: the byte-stream [`Transport`] (sockets and pipes): reads, writes, life.
//! - `flow`: write flow control (water marks).
//! - `flush`: the per-iteration write flush.
//! - `connect`, `server`, `unix`, `pipe`, `datagram`: creating transports and servers.
//! - `resolve`: `getaddrinfo`/`getnameinfo` and the numeric fast path.
//! - `streams`: `StreamReader`/`StreamWriter` (`open_connection`, `start_server`).
//! - `ext`: [`EventLoopExt`], the loop methods.
//! - `registry`: what happens to transports still open when their loop closes.
//!
//! # Differences from asyncio
//! - Protocol methods take `&mut self` and are never re-entered: a `pause_writing` raised
//!   by the protocol's own `write()` is delivered when its current method returns.
//! - A panic in a protocol method plays the role of an exception (see [`Protocol`]).
//! - `data_received` gets a borrowed slice valid for the call (copy to keep it).
//! - On io_uring, writes are sent at the end of the loop iteration (one send per
//!   connection), not inside `write()`; a write that the kernel could take at once still
//!   counts toward the buffer size until then. On epoll a write is sent inside `write()`,
//!   as asyncio's selector transports do.
//!
//! # Not implemented yet
//! - TLS: `ssl`/`server_hostname` are accepted by the option types and rejected with a clear
//!   error until `ringloop-ssl` lands.
// Denied rather than forbidden: `stream::slot` alone allows it, behind a safe interface.
#![deny(unsafe_code)]

mod address;
mod connect;
mod datagram;
mod error;
mod ext;
mod flow;
mod flow_signal;
mod flush;
mod options;
mod pipe;
mod protocol;
mod registry;
mod resolve;
mod server;
mod sock;
mod start;
mod stream;
pub mod streams;
mod unix;

pub use address::{Address, UnixAddress};
pub use connect::ConnectError;
pub use datagram::{DatagramProtocolRef, DatagramTransport};
pub use error::{errno_of, loop_errno, BindError, TransportError};
pub use ext::{Connection, EventLoopExt};
pub use flow::{InvalidLimits, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
pub use options::{ConnectOptions, DatagramOptions, ServerOptions};
pub use protocol::{BufferedProtocol, DatagramProtocol, Protocol};
pub use resolve::{
    getaddrinfo_blocking, getnameinfo_blocking, numeric_fast_path, AddrInfo, AddrInfoHints,
    ResolveError, Service,
};
pub use server::{Server, ServerSocket, ACCEPT_RETRY_DELAY};
pub use stream::{ExtraInfo, ProtocolRef, Transport};

/// Everything an application needs in one import: `use ringloop::transports::prelude::*;`
/// (the loop, the extension trait with the networking methods, the protocol traits and the
/// option types).
pub mod prelude {
    pub use crate::{
        Address, BufferedProtocol, ConnectOptions, DatagramOptions, DatagramProtocol,
        DatagramTransport, EventLoopExt, Protocol, Server, ServerOptions, Transport,
    };
    pub use ringloop_runtime::{EventLoop, LoopError};
}

// The user guide's chapters, compiled as doctests so their examples stay true.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../docs/transports/README.md")]
    mod readme {}
    #[doc = include_str!("../../docs/transports/protocols-and-transports.md")]
    mod protocols_and_transports {}
    #[doc = include_str!("../../docs/transports/connections.md")]
    mod connections {}
    #[doc = include_str!("../../docs/transports/servers.md")]
    mod servers {}
    #[doc = include_str!("../../docs/transports/datagrams.md")]
    mod datagrams {}
    #[doc = include_str!("../../docs/transports/pipes.md")]
    mod pipes {}
    #[doc = include_str!("../../docs/transports/name-resolution.md")]
    mod name_resolution {}
    #[doc = include_str!("../../docs/transports/streams.md")]
    mod streams {}
}
