//! ringloop: an asyncio-style event loop for Linux whose core is an io_uring proactor.
//!
//! This facade re-exports the member crates so that one `use ringloop::…` suffices:
//! the completion driver ([`proactor`]), the event loop ([`runtime`]), transports and
//! protocols ([`transports`]) and TLS ([`ssl`]).

pub use ringloop_proactor as proactor;
pub use ringloop_runtime as runtime;
pub use ringloop_ssl as ssl;
pub use ringloop_transports as transports;
