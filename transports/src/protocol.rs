//! The protocol traits the application implements: [`Protocol`] for byte streams,
//! [`BufferedProtocol`] for streams read straight into the protocol's own buffer, and
//! [`DatagramProtocol`] for datagram endpoints (asyncio's `protocols` module).
//!
//! # The call-order contract (semantics 109)
//! A transport calls its protocol in the order
//! `connection_made → data_received* → eof_received? → connection_lost`, with
//! `connection_made` and `connection_lost` exactly once each. `connection_made` is scheduled
//! with `call_soon` (never called from inside the transport's constructor) and reading
//! starts only after it returns (semantics 110); `connection_lost` is always scheduled, never
//! called synchronously inside `close()` or `abort()` (semantics 119).
//!
//! # Re-entrancy
//! Protocol methods take `&mut self`. While one of them runs, the transport never calls
//! another: if the protocol's own `write()` crosses the high-water mark, `pause_writing()` is
//! delivered right after the running method returns, before any further I/O (asyncio calls
//! it from inside `write()`). Check [`Transport::is_writing_paused`] to stop writing at once.
//!
//! # Failures
//! A protocol method that panics is treated as asyncio treats one that raises: the panic is
//! caught, reported to the loop's exception handler (`Fatal error: protocol.data_received()
//! call failed.` and so on), the transport is aborted and `connection_lost` receives the
//! error (semantics 115, 116; the selector behaviour, as SEMANTICS recommends). A panic in
//! `pause_writing`/`resume_writing` is reported and the transport carries on (semantics 140).
//!
//! [`Transport::is_writing_paused`]: crate::Transport::is_writing_paused

use std::io;

use crate::address::Address;
use crate::datagram::DatagramTransport;
use crate::stream::Transport;

/// A byte-stream protocol (TCP, Unix stream sockets, pipes).
///
/// Every method has a default that does nothing, so a protocol implements only what it
/// needs.
///
/// # Examples
/// An echo server's protocol:
/// ```
/// use ringloop_transports::{Protocol, Transport};
///
/// #[derive(Default)]
/// struct Echo {
///     transport: Option<Transport>,
/// }
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: &Transport) {
///         self.transport = Some(transport.clone());
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.transport {
///             t.write(data);
///         }
///     }
/// }
/// ```
pub trait Protocol: 'static {
    /// The connection is up; `transport` is how to write to it and close it. Keep a clone.
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Bytes arrived. The slice is valid only during the call (it is a view of a receive
    /// buffer that is recycled right after): copy what you want to keep. Chunk boundaries
    /// carry no meaning.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The peer closed its writing side. Return `true` to keep the connection half-open
    /// (you can still write, then `close()`), `false` to let the transport close itself
    /// (semantics 113). Pipes always close, whatever this returns (semantics 167).
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is gone: `None` after a clean close or EOF, else the error that ended
    /// it (peer reset: `ConnectionReset`, semantics 117).
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The transport's write buffer went above the high-water mark: stop writing until
    /// [`resume_writing`](Protocol::resume_writing) (semantics 137).
    fn pause_writing(&mut self) {}

    /// The write buffer drained to the low-water mark: writing may go on.
    fn resume_writing(&mut self) {}

    /// Makes this a [`BufferedProtocol`]: return `Some(self)` and the transport reads through
    /// [`get_buffer`](BufferedProtocol::get_buffer)/[`buffer_updated`](BufferedProtocol::buffer_updated)
    /// instead of [`data_received`](Protocol::data_received). Asked once, when the protocol
    /// is installed.
    fn as_buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
        None
    }
}

/// Reads into a buffer the protocol owns (asyncio's `BufferedProtocol`, semantics 142–143).
///
/// Implement it together with [`Protocol`] and return `Some(self)` from
/// [`Protocol::as_buffered`]. For each received chunk the transport asks for a buffer with
/// `get_buffer(len)`, copies as much as fits, and reports it with `buffer_updated(n)`,
/// repeating until the chunk is consumed. The state machine is
/// `CM [GB [BU?]]* [ER?] CL`.
///
/// # Examples
/// ```
/// use ringloop_transports::{BufferedProtocol, Protocol};
///
/// struct Counter { buf: Vec<u8>, total: usize }
///
/// impl Protocol for Counter {
///     fn as_buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
///         Some(self)
///     }
/// }
///
/// impl BufferedProtocol for Counter {
///     fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
///         &mut self.buf
///     }
///     fn buffer_updated(&mut self, nbytes: usize) {
///         self.total += nbytes;
///     }
/// }
/// ```
pub trait BufferedProtocol {
    /// A buffer to receive into; `size_hint` is how many bytes are waiting. A buffer of any
    /// non-zero size is fine. An empty buffer is a fatal error (semantics 143).
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// `nbytes` bytes were written at the start of the last buffer returned by
    /// [`get_buffer`](BufferedProtocol::get_buffer).
    fn buffer_updated(&mut self, nbytes: usize);
}

/// A datagram protocol (UDP, Unix datagram sockets).
pub trait DatagramProtocol: 'static {
    /// The endpoint is ready; keep a clone of `transport` to send.
    fn connection_made(&mut self, transport: &DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr` (`None` for an unnamed Unix-domain peer, as for one
    /// end of a socketpair; semantics 160). Empty datagrams are delivered too.
    fn datagram_received(&mut self, data: &[u8], addr: Option<&Address>) {
        let _ = (data, addr);
    }

    /// A send or receive failed with an error that does not close the endpoint, such as
    /// `ConnectionRefused` from an ICMP port-unreachable (semantics 158).
    fn error_received(&mut self, error: io::Error) {
        let _ = error;
    }

    /// The endpoint is closed: `None` after `close()`/`abort()`, else the fatal error.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The send queue went above the high-water mark (semantics 161).
    fn pause_writing(&mut self) {}

    /// The send queue drained to the low-water mark.
    fn resume_writing(&mut self) {}
}
