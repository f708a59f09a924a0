//! Keyword arguments of the connection functions, as option structs with asyncio's
//! defaults. Fill what you need and take the rest from `Default`:
//! `ConnectOptions { local_addr: Some(("127.0.0.1".into(), 0)), ..Default::default() }`.

use std::fmt;

/// Options of [`create_connection`](crate::EventLoopExt::create_connection) (asyncio's keyword
/// arguments; section H).
#[derive(Default)]
pub struct ConnectOptions {
    /// Address family for resolution (`libc::AF_INET`, `libc::AF_INET6`; 0 for any).
    pub family: i32,
    /// Protocol for resolution (0 for any).
    pub proto: i32,
    /// `AI_*` flags for resolution.
    pub flags: i32,
    /// An already-connected stream socket to use instead of connecting (then host and port
    /// must be empty and `family`, `proto`, `flags`, `local_addr` unset; semantics 75, 86).
    pub sock: Option<socket2::Socket>,
    /// `(host, port)` to bind the socket to before connecting (semantics 79).
    pub local_addr: Option<(String, u16)>,
    /// Ask for TLS. Accepted so code can be written against the final API, but rejected until
    /// the TLS layer lands.
    pub ssl: bool,
    /// The TLS server name; only meaningful with `ssl` (semantics 71).
    pub server_hostname: Option<String>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("family", &self.family)
            .field("proto", &self.proto)
            .field("flags", &self.flags)
            .field("sock", &self.sock)
            .field("local_addr", &self.local_addr)
            .field("ssl", &self.ssl)
            .field("server_hostname", &self.server_hostname)
            .finish()
    }
}

/// Options of [`create_server`](crate::EventLoopExt::create_server) (section I).
#[derive(Debug)]
pub struct ServerOptions {
    /// Address family (0 for all families the host resolves to).
    pub family: i32,
    /// `AI_*` flags (`AI_PASSIVE` is always added).
    pub flags: i32,
    /// An already-bound listening socket to serve instead of binding (then host and port must
    /// be empty; semantics 97).
    pub sock: Option<socket2::Socket>,
    /// The `listen()` backlog (default 100, semantics 94).
    pub backlog: i32,
    /// `SO_REUSEADDR` (default true on Linux, semantics 92).
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (default false, semantics 93).
    pub reuse_port: bool,
    /// Start accepting before returning (default true, semantics 100).
    pub start_serving: bool,
    /// Ask for TLS: rejected until the TLS layer lands.
    pub ssl: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            family: 0,
            flags: 0,
            sock: None,
            backlog: 100,
            reuse_address: true,
            reuse_port: false,
            start_serving: true,
            ssl: false,
        }
    }
}

/// Options of [`create_datagram_endpoint`](crate::EventLoopExt::create_datagram_endpoint)
/// (section N). There is no `reuse_address`: asyncio removed it for UDP (semantics 165).
#[derive(Debug, Default)]
pub struct DatagramOptions {
    /// `(host, port)` to bind to.
    pub local_addr: Option<(String, u16)>,
    /// `(host, port)` to connect to (then `sendto` takes no address).
    pub remote_addr: Option<(String, u16)>,
    /// Address family (needed when neither address is given).
    pub family: i32,
    /// Protocol for resolution.
    pub proto: i32,
    /// `AI_*` flags for resolution.
    pub flags: i32,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `SO_BROADCAST`.
    pub allow_broadcast: bool,
    /// An existing datagram socket to use (then nothing else may be given; semantics 163).
    pub sock: Option<socket2::Socket>,
}
