//! ringloop: an asyncio-style event loop for Linux whose core is an io_uring proactor.
//!
//! This facade re-exports the member crates so that one `use ringloop::…` suffices:
//! the completion driver ([`proactor`]), the event loop ([`runtime`]), transports and
//! protocols ([`transports`]) and TLS ([`ssl`]).

pub use ringloop_proactor as proactor;
pub use ringloop_runtime as runtime;
pub use ringloop_ssl as ssl;
pub use ringloop_transports as transports;

// The names a user reaches for first, at the root, so `use ringloop::{EventLoop, …}` works
// without knowing which member crate holds them.
pub use ringloop_runtime::{
    get_event_loop, get_running_loop, new_event_loop, set_event_loop, sleep, EventLoop, Future,
    Handle, LoopError, LoopHandle, Task, TimerHandle,
};
pub use ringloop_transports::{
    BufferedProtocol, DatagramProtocol, DatagramTransport, EventLoopExt, Protocol, Server,
    Transport,
};

/// Everything an application usually needs: `use ringloop::prelude::*;`.
pub mod prelude {
    pub use ringloop_transports::prelude::*;
}

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
