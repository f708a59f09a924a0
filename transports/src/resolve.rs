//! Name resolution: `getaddrinfo`/`getnameinfo` as the blocking libc calls compute them
//! (semantics 67), plus asyncio's numeric fast path that skips the resolver for literal IP
//! addresses (semantics 68). The asynchronous wrappers that run these in the loop's
//! executor live in [`crate::ext`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// The service part of a lookup: asyncio's `port` argument.
///
/// `None` and `""` mean port 0; a decimal string is that port; anything else is a service
/// name that goes to `getaddrinfo` (semantics 68).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Service {
    /// No port: 0.
    #[default]
    None,
    /// A port number.
    Port(u16),
    /// A service name or a port written as text (`"http"`, `"8080"`).
    Name(String),
}

impl Service {
    /// The port when it is numeric (or absent, meaning 0); `None` for a service name.
    pub fn numeric(&self) -> Option<u16> {
        match self {
            Service::None => Some(0),
            Service::Port(port) => Some(*port),
            Service::Name(name) if name.is_empty() => Some(0),
            Service::Name(name) => name.parse().ok(),
        }
    }

    /// The service string handed to `getaddrinfo`, if any.
    fn as_c_service(&self) -> Option<String> {
        match self {
            Service::None => None,
            Service::Port(port) => Some(port.to_string()),
            Service::Name(name) if name.is_empty() => None,
            Service::Name(name) => Some(name.clone()),
        }
    }
}

impl From<u16> for Service {
    fn from(port: u16) -> Self {
        Service::Port(port)
    }
}

impl From<Option<u16>> for Service {
    fn from(port: Option<u16>) -> Self {
        port.map_or(Service::None, Service::Port)
    }
}

impl From<&str> for Service {
    fn from(name: &str) -> Self {
        Service::Name(name.to_owned())
    }
}

impl From<String> for Service {
    fn from(name: String) -> Self {
        Service::Name(name)
    }
}

/// The `hints` of `getaddrinfo`: `family` (`libc::AF_*`, 0 for any), `socktype`
/// (`libc::SOCK_*`, 0 for any), `protocol` (`libc::IPPROTO_*`, 0 for any) and `flags`
/// (`libc::AI_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrInfoHints {
    /// Address family, or 0 (`AF_UNSPEC`).
    pub family: i32,
    /// Socket type, or 0.
    pub socktype: i32,
    /// Protocol, or 0.
    pub protocol: i32,
    /// `AI_*` flags.
    pub flags: i32,
}

/// One result of `getaddrinfo`: asyncio's `(family, type, proto, canonname, sockaddr)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    /// Address family (`libc::AF_INET` or `libc::AF_INET6`).
    pub family: i32,
    /// Socket type (`libc::SOCK_STREAM`, …).
    pub socktype: i32,
    /// Protocol (`libc::IPPROTO_TCP`, …).
    pub protocol: i32,
    /// The canonical name, when `AI_CANONNAME` asked for it.
    pub canonname: Option<String>,
    /// The address.
    pub addr: SocketAddr,
}

/// A failure of `getaddrinfo`/`getnameinfo`: asyncio's `socket.gaierror`, with the
/// resolver's `EAI_*` code and its message (`gai_strerror`). Travels inside an
/// [`io::Error`]; find it with [`ResolveError::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    code: i32,
    message: String,
}

impl ResolveError {
    /// The `EAI_*` code (negative on glibc, e.g. `EAI_NONAME` = −2).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// `gai_strerror(code)`, e.g. `Name or service not known`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The resolver error inside `err`, if `err` came from name resolution.
    pub fn find(err: &io::Error) -> Option<&ResolveError> {
        err.get_ref()?.downcast_ref::<ResolveError>()
    }

    fn from_lookup(err: dns_lookup::LookupError) -> io::Error {
        let code = err.error_num();
        if code == libc::EAI_SYSTEM {
            return io::Error::from(err);
        }
        let text = io::Error::from(err).to_string();
        let message = text
            .strip_prefix("failed to lookup address information: ")
            .unwrap_or(&text)
            .to_owned();
        io::Error::other(ResolveError { code, message })
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[Errno {}] {}", self.code, self.message)
    }
}

impl std::error::Error for ResolveError {}

/// asyncio's `_ipaddr_info`: the single result `getaddrinfo` would give for a literal IP
/// address, or `None` when the resolver must be asked (semantics 68).
///
/// The fast path applies only to `SOCK_STREAM`/`SOCK_DGRAM` with protocol 0 or the matching
/// TCP/UDP, a numeric port (or none), and a host that parses as an IP address of the
/// requested family. A zone-indexed IPv6 host (`fe80::1%lo`) or an unspecified socket type
/// goes to the resolver.
pub fn numeric_fast_path(
    host: Option<&str>,
    service: &Service,
    hints: &AddrInfoHints,
) -> Option<AddrInfo> {
    let host = host?;
    let protocol = match (hints.socktype, hints.protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => libc::IPPROTO_TCP,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => libc::IPPROTO_UDP,
        _ => return None,
    };
    let port = service.numeric()?;
    if host.contains('%') {
        return None;
    }
    let ip: IpAddr = host.parse().ok()?;
    let (family, addr) = match ip {
        IpAddr::V4(v4) if matches!(hints.family, libc::AF_UNSPEC | libc::AF_INET) => {
            (libc::AF_INET, SocketAddr::from((v4, port)))
        }
        IpAddr::V6(v6) if matches!(hints.family, libc::AF_UNSPEC | libc::AF_INET6) => (
            libc::AF_INET6,
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
        ),
        _ => return None,
    };
    Some(AddrInfo {
        family,
        socktype: hints.socktype,
        protocol,
        canonname: None,
        addr,
    })
}

/// The blocking `getaddrinfo(3)`: every result, in the resolver's order.
///
/// # Errors
/// A [`ResolveError`] (inside the `io::Error`) carrying the resolver's code and message, or
/// the OS error for `EAI_SYSTEM`; an interior NUL in `host` is `InvalidInput`.
pub fn getaddrinfo_blocking(
    host: Option<&str>,
    service: &Service,
    hints: &AddrInfoHints,
) -> io::Result<Vec<AddrInfo>> {
    let c_service = service.as_c_service();
    let (host, c_service) = match (host, c_service) {
        // getaddrinfo needs one of the two; asyncio passes port 0 as "0".
        (None, None) => (None, Some("0".to_owned())),
        (host, service) => (host, service),
    };
    let lookup_hints = dns_lookup::AddrInfoHints {
        flags: hints.flags,
        address: hints.family,
        socktype: hints.socktype,
        protocol: hints.protocol,
    };
    let iter = dns_lookup::getaddrinfo(host, c_service.as_deref(), Some(lookup_hints))
        .map_err(ResolveError::from_lookup)?;
    let mut out = Vec::new();
    for info in iter {
        let info = info?;
        out.push(AddrInfo {
            family: info.address,
            socktype: info.socktype,
            protocol: info.protocol,
            canonname: info.canonname,
            addr: info.sockaddr,
        });
    }
    Ok(out)
}

/// The blocking `getnameinfo(3)`: `(host, service)`.
///
/// # Errors
/// As [`getaddrinfo_blocking`].
pub fn getnameinfo_blocking(addr: &SocketAddr, flags: i32) -> io::Result<(String, String)> {
    dns_lookup::getnameinfo(addr, flags).map_err(ResolveError::from_lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> AddrInfoHints {
        AddrInfoHints {
            socktype: libc::SOCK_STREAM,
            ..AddrInfoHints::default()
        }
    }

    #[test]
    fn numeric_hosts_skip_the_resolver() {
        // semantics 68
        let info = numeric_fast_path(Some("127.0.0.1"), &Service::Port(80), &stream()).unwrap();
        assert_eq!(info.family, libc::AF_INET);
        assert_eq!(info.protocol, libc::IPPROTO_TCP);
        assert_eq!(info.addr, "127.0.0.1:80".parse().unwrap());
        let info = numeric_fast_path(Some("::1"), &"1".into(), &stream()).unwrap();
        assert_eq!(info.family, libc::AF_INET6);
        assert_eq!(info.addr.port(), 1);
        let dgram = AddrInfoHints {
            socktype: libc::SOCK_DGRAM,
            ..AddrInfoHints::default()
        };
        assert_eq!(
            numeric_fast_path(Some("::1"), &Service::None, &dgram)
                .unwrap()
                .protocol,
            libc::IPPROTO_UDP
        );
        assert_eq!(
            numeric_fast_path(Some("::1"), &"".into(), &stream())
                .unwrap()
                .addr
                .port(),
            0
        );
    }

    #[test]
    fn zone_index_unspecified_type_and_service_names_go_to_the_resolver() {
        // semantics 68
        assert!(numeric_fast_path(Some("::3%lo"), &Service::Port(1), &stream()).is_none());
        assert!(
            numeric_fast_path(Some("::1"), &Service::Port(1), &AddrInfoHints::default()).is_none()
        );
        assert!(numeric_fast_path(Some("::1"), &"http".into(), &stream()).is_none());
        assert!(numeric_fast_path(Some("localhost"), &Service::Port(1), &stream()).is_none());
        let v4_only = AddrInfoHints {
            family: libc::AF_INET,
            ..stream()
        };
        assert!(numeric_fast_path(Some("::1"), &Service::Port(1), &v4_only).is_none());
        let udp_on_stream = AddrInfoHints {
            protocol: libc::IPPROTO_UDP,
            ..stream()
        };
        assert!(numeric_fast_path(Some("::1"), &Service::Port(1), &udp_on_stream).is_none());
    }

    #[test]
    fn fast_path_agrees_with_the_resolver() {
        // semantics 67, 68: a differential oracle against libc.
        for host in ["127.0.0.1", "::1"] {
            let fast = numeric_fast_path(Some(host), &Service::Port(8080), &stream()).unwrap();
            let slow = getaddrinfo_blocking(Some(host), &Service::Port(8080), &stream()).unwrap();
            assert_eq!(slow.len(), 1, "{slow:?}");
            assert_eq!((fast.family, fast.socktype, fast.protocol, fast.addr), {
                let s = &slow[0];
                (s.family, s.socktype, s.protocol, s.addr)
            });
        }
    }

    #[test]
    fn unknown_hosts_give_the_resolvers_error() {
        // semantics 67
        let err = getaddrinfo_blocking(Some("nonexistent.invalid"), &Service::Port(80), &stream())
            .unwrap_err();
        let gai = ResolveError::find(&err).expect("a resolver error");
        assert!(gai.code() < 0, "{gai}");
        assert!(!gai.message().is_empty());
        assert!(err.to_string().starts_with("[Errno -"), "{err}");
    }

    #[test]
    fn getnameinfo_matches_libc_numeric() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let (host, service) =
            getnameinfo_blocking(&addr, libc::NI_NUMERICHOST | libc::NI_NUMERICSERV).unwrap();
        assert_eq!((host.as_str(), service.as_str()), ("127.0.0.1", "80"));
    }
}
