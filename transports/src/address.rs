//! [`Address`]: a socket address as transports report it (`peername`, `sockname`, the
//! sender of a datagram), for both internet and Unix-domain sockets.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// A socket address: an IPv4/IPv6 address and port, or a Unix-domain address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An internet address (asyncio's `(host, port)` / `(host, port, flowinfo, scope_id)`).
    Inet(SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddress),
}

/// A Unix-domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddress {
    /// Bound to a path in the file system.
    Path(PathBuf),
    /// Bound to a name in Linux's abstract namespace (without the leading NUL).
    Abstract(Vec<u8>),
    /// Not bound (a client socket, one end of a socketpair). asyncio reports `''` or `None`.
    Unnamed,
}

impl Address {
    /// Converts a kernel socket address; `None` for families other than inet and Unix.
    pub fn from_sock_addr(addr: &SockAddr) -> Option<Address> {
        if let Some(inet) = addr.as_socket() {
            return Some(Address::Inet(inet));
        }
        if !addr.is_unix() {
            return None;
        }
        if let Some(path) = addr.as_pathname() {
            return Some(Address::Unix(UnixAddress::Path(path.to_path_buf())));
        }
        if let Some(name) = addr.as_abstract_namespace() {
            return Some(Address::Unix(UnixAddress::Abstract(name.to_vec())));
        }
        Some(Address::Unix(UnixAddress::Unnamed))
    }

    /// The kernel form of this address.
    ///
    /// # Errors
    /// A Unix path too long for `sockaddr_un`; unnamed Unix addresses cannot be targets.
    pub fn to_sock_addr(&self) -> std::io::Result<SockAddr> {
        match self {
            Address::Inet(inet) => Ok(SockAddr::from(*inet)),
            Address::Unix(UnixAddress::Path(path)) => SockAddr::unix(path),
            Address::Unix(UnixAddress::Abstract(name)) => {
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(Path::new(OsStr::from_bytes(&bytes)))
            }
            Address::Unix(UnixAddress::Unnamed) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an unnamed Unix-domain address cannot be a destination",
            )),
        }
    }

    /// The internet address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(inet) => Some(*inet),
            Address::Unix(_) => None,
        }
    }

    /// The port of an internet address.
    pub fn port(&self) -> Option<u16> {
        self.as_inet().map(|a| a.port())
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Inet(addr)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Self {
        Address::Unix(UnixAddress::Path(path))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(inet) => write!(f, "{inet}"),
            Address::Unix(UnixAddress::Path(path)) => write!(f, "{}", path.display()),
            Address::Unix(UnixAddress::Abstract(name)) => {
                write!(f, "@{}", String::from_utf8_lossy(name))
            }
            Address::Unix(UnixAddress::Unnamed) => f.write_str("(unnamed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inet_and_unix() {
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let addr = Address::from(v6);
        assert_eq!(
            Address::from_sock_addr(&addr.to_sock_addr().unwrap()),
            Some(addr)
        );
        let path = Address::from(PathBuf::from("/tmp/x.sock"));
        assert_eq!(
            Address::from_sock_addr(&path.to_sock_addr().unwrap()),
            Some(path.clone())
        );
        assert_eq!(path.to_string(), "/tmp/x.sock");
        let abs = Address::Unix(UnixAddress::Abstract(b"ringloop".to_vec()));
        assert_eq!(
            Address::from_sock_addr(&abs.to_sock_addr().unwrap()),
            Some(abs)
        );
        assert!(Address::Unix(UnixAddress::Unnamed).to_sock_addr().is_err());
    }
}
