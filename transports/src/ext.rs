//! [`EventLoopExt`]: the transport functions as methods of the event loop, so that code reads
//! as in asyncio (`lp.create_connection(…)`) and nobody needs to know which crate a method
//! lives in. `use ringloop::…` (or `use ringloop_transports::EventLoopExt`) brings it in.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, LoopError};

use crate::datagram::{self, DatagramTransport};
use crate::options::{ConnectOptions, DatagramOptions, ServerOptions};
use crate::protocol::{DatagramProtocol, Protocol};
use crate::resolve::{self, AddrInfo, AddrInfoHints, Service};
use crate::server::{self, Server};
use crate::stream::{ProtocolRef, Transport};
use crate::{connect, pipe, unix};

/// A connection's transport and the protocol the factory made (asyncio's
/// `(transport, protocol)` pair).
pub type Connection<P> = (Transport, Rc<RefCell<P>>);

/// Writes each method of the trait once: its rustdoc and signature become the declaration
/// in the trait, its signature and body the implementation for [`EventLoop`] (the only
/// implementor), so declaration and implementation cannot drift apart. Bounds go in
/// `where [...]`, brackets the macro strips. (Provided methods would say it without a
/// macro, but they need a supertrait to reach the `EventLoop`: a change to the public
/// trait.)
macro_rules! event_loop_ext {
    (
        $(#[$trait_attr:meta])*
        pub trait $trait:ident for $target:ty {
            $(
                $(#[$attr:meta])*
                fn $name:ident $(<$($generic:ident),+>)? (&$self:ident $(, $arg:ident: $ty:ty)*)
                    -> $ret:ty
                $(where [$($bound:tt)*])?
                $body:block
            )*
        }
    ) => {
        $(#[$trait_attr])*
        pub trait $trait {
            $(
                $(#[$attr])*
                fn $name $(<$($generic),+>)? (&$self $(, $arg: $ty)*) -> $ret
                $(where $($bound)*)?;
            )*
        }

        impl $trait for $target {
            $(
                fn $name $(<$($generic),+>)? (&$self $(, $arg: $ty)*) -> $ret
                $(where $($bound)*)?
                $body
            )*
        }
    };
}

fn server_factory<P: Protocol, F: Fn() -> P + 'static>(factory: F) -> Box<dyn Fn() -> ProtocolRef> {
    Box::new(move || Rc::new(RefCell::new(factory())) as ProtocolRef)
}

event_loop_ext! {
    /// asyncio's networking methods of the event loop.
    ///
    /// Every future is `'static` (arguments are copied in), so it can be handed to
    /// `create_task`. Results are [`LoopError`]s: OS failures are `LoopError::Io` keeping the
    /// errno (see [`errno_of`](crate::errno_of)), argument conflicts are
    /// `LoopError::InvalidArgument` with asyncio's message, and a cancelled task gets
    /// `LoopError::Cancelled`, after the half-made socket was closed.
    pub trait EventLoopExt for EventLoop {
        /// `getaddrinfo(host, port, family, type, proto, flags)` in the default executor; results
        /// and errors equal the blocking call's (semantics 67). Numeric hosts skip the resolver
        /// (semantics 68).
        fn getaddrinfo(&self, host: Option<&str>, port: impl Into<Service>, hints: AddrInfoHints)
            -> impl Future<Output = Result<Vec<AddrInfo>, LoopError>> + 'static
        {
            let lp = self.clone();
            let host = host.map(str::to_owned);
            let port = port.into();
            async move { crate::sock::resolve(&lp, host.as_deref(), port, hints).await }
        }

        /// `getnameinfo(addr, flags)` in the default executor: `(host, service)`.
        fn getnameinfo(&self, addr: SocketAddr, flags: i32)
            -> impl Future<Output = Result<(String, String), LoopError>> + 'static
        {
            let job =
                self.run_in_executor(None, move || resolve::getnameinfo_blocking(&addr, flags));
            async move { Ok(job?.await??) }
        }

        /// Opens a TCP connection to `host:port` (section H): resolves, tries each address in
        /// order, sets `TCP_NODELAY`, and resolves once `connection_made` has run (semantics
        /// 70). `host` may be empty with `options.sock` set.
        fn create_connection<P, F>(
            &self,
            factory: F,
            host: &str,
            port: impl Into<Service>,
            options: ConnectOptions
        ) -> impl Future<Output = Result<Connection<P>, LoopError>> + 'static
        where [F: FnOnce() -> P + 'static, P: Protocol]
        {
            connect::create_connection(self.clone(), factory, host.to_owned(), port.into(), options)
        }

        /// Listens on `host:port` (section I); an empty `host` binds every interface (one
        /// socket per family). `factory` makes one protocol per connection.
        fn create_server<P, F>(
            &self,
            factory: F,
            host: &str,
            port: impl Into<Service>,
            options: ServerOptions
        ) -> impl Future<Output = Result<Server, LoopError>> + 'static
        where [F: Fn() -> P + 'static, P: Protocol]
        {
            let factory = server_factory(factory);
            server::create_server(self.clone(), factory, host.to_owned(), port.into(), options)
        }

        /// Connects to the Unix-domain stream socket at `path`.
        fn create_unix_connection<P, F>(&self, factory: F, path: impl Into<PathBuf>)
            -> impl Future<Output = Result<Connection<P>, LoopError>> + 'static
        where [F: FnOnce() -> P + 'static, P: Protocol]
        {
            unix::create_unix_connection(self.clone(), factory, path.into())
        }

        /// Listens on the Unix-domain socket `path` (or `options.sock` when `path` is `None`).
        fn create_unix_server<P, F>(
            &self,
            factory: F,
            path: Option<PathBuf>,
            options: ServerOptions
        ) -> impl Future<Output = Result<Server, LoopError>> + 'static
        where [F: Fn() -> P + 'static, P: Protocol]
        {
            let result = unix::create_unix_server(self, server_factory(factory), path, options);
            async move { result }
        }

        /// A read transport over `fd`: a pipe, socket or character device (section O).
        fn connect_read_pipe<P, F>(&self, factory: F, fd: OwnedFd)
            -> impl Future<Output = Result<Connection<P>, LoopError>> + 'static
        where [F: FnOnce() -> P + 'static, P: Protocol]
        {
            pipe::connect_pipe(self.clone(), factory, fd, true)
        }

        /// A write transport over `fd`: a pipe, socket or character device (section O).
        fn connect_write_pipe<P, F>(&self, factory: F, fd: OwnedFd)
            -> impl Future<Output = Result<Connection<P>, LoopError>> + 'static
        where [F: FnOnce() -> P + 'static, P: Protocol]
        {
            pipe::connect_pipe(self.clone(), factory, fd, false)
        }

        /// A datagram endpoint (section N).
        fn create_datagram_endpoint<P, F>(
            &self,
            factory: F,
            options: DatagramOptions
        ) -> impl Future<Output = Result<(DatagramTransport, Rc<RefCell<P>>), LoopError>>
               + 'static
        where [F: FnOnce() -> P + 'static, P: DatagramProtocol]
        {
            datagram::create_datagram_endpoint(self.clone(), factory, options)
        }
    }
}
