//! asyncio's protocol/transport model on the ringloop event loop: TCP, UDP, pipe and
//! Unix-socket transports, servers, name resolution and streams.
#![forbid(unsafe_code)]
