//! Errors of transport methods (asyncio's `RuntimeError`s on misuse) and helpers that build
//! the `io::Error`s and [`LoopError`]s the connection functions return.

use std::fmt;
use std::io;

use ringloop_runtime::LoopError;

/// Misuse of a transport method.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// `write()`/`writelines()` after `write_eof()` (semantics 124). Holds the method name.
    WriteAfterEof(&'static str),
    /// The transport cannot do this (for example `write_eof()` on a read pipe).
    NotSupported(&'static str),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::WriteAfterEof(method) => {
                write!(f, "Cannot call {method}() after write_eof()")
            }
            TransportError::NotSupported(what) => {
                write!(f, "{what} is not supported by this transport")
            }
        }
    }
}

impl std::error::Error for TransportError {}

impl From<TransportError> for LoopError {
    fn from(err: TransportError) -> Self {
        LoopError::other(err)
    }
}

impl From<TransportError> for io::Error {
    fn from(err: TransportError) -> Self {
        io::Error::other(err)
    }
}

/// asyncio's `ValueError`: a bad combination of arguments.
pub(crate) fn invalid(what: impl Into<String>) -> LoopError {
    LoopError::invalid_argument(what)
}

/// An OS error with asyncio's bind message: `error while attempting to bind on address
/// ('127.0.0.1', 8080): address already in use` (semantics 79, 95). Keeps the errno's kind.
pub(crate) fn bind_error(addr: &impl fmt::Display, err: &io::Error) -> io::Error {
    let strerror = strerror_lower(err);
    io::Error::new(
        err.kind(),
        BindError {
            errno: err.raw_os_error(),
            message: format!("error while attempting to bind on address {addr}: {strerror}"),
        },
    )
}

/// The errno and message of a failed `bind`.
#[derive(Debug)]
pub struct BindError {
    errno: Option<i32>,
    message: String,
}

impl BindError {
    /// The OS error number (`EADDRINUSE`, …).
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BindError {}

/// The errno of an error, also when it is wrapped (bind errors keep it in [`BindError`]).
pub fn errno_of(err: &io::Error) -> Option<i32> {
    if let Some(errno) = err.raw_os_error() {
        return Some(errno);
    }
    let inner = err.get_ref()?;
    if let Some(bind) = inner.downcast_ref::<BindError>() {
        return bind.errno();
    }
    inner
        .downcast_ref::<crate::connect::ConnectError>()?
        .errno()
}

/// The errno of a loop error wrapping an I/O error.
pub fn loop_errno(err: &LoopError) -> Option<i32> {
    err.as_io().and_then(errno_of)
}

/// `strerror` in lower case, without Rust's ` (os error N)` suffix.
fn strerror_lower(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(pos) => &text[..pos],
        None => &text,
    };
    text.to_lowercase()
}

/// Combines the failures of several connection attempts as asyncio does (semantics 77):
/// one error as is; several with the same text as the first; else `Multiple exceptions:
/// a, b`.
pub(crate) fn combine_connect_errors(mut errors: Vec<io::Error>) -> io::Error {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let first = errors[0].to_string();
    if errors.iter().all(|e| e.to_string() == first) {
        return errors.remove(0);
    }
    let joined: Vec<String> = errors.iter().map(ToString::to_string).collect();
    io::Error::other(format!("Multiple exceptions: {}", joined.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_embed_the_address_and_keep_the_errno() {
        // semantics 79, 95
        let err = bind_error(
            &"('127.0.0.1', 8080)",
            &io::Error::from_raw_os_error(libc::EADDRINUSE),
        );
        assert_eq!(
            err.to_string(),
            "error while attempting to bind on address ('127.0.0.1', 8080): address already in use"
        );
        assert_eq!(errno_of(&err), Some(libc::EADDRINUSE));
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn several_connect_errors_are_combined() {
        // semantics 77
        let refused = || io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            combine_connect_errors(vec![refused(), refused()]).raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        let mixed = combine_connect_errors(vec![
            refused(),
            io::Error::from_raw_os_error(libc::ENETUNREACH),
        ]);
        assert!(
            mixed.to_string().starts_with("Multiple exceptions: "),
            "{mixed}"
        );
    }

    #[test]
    fn misuse_messages_match_asyncio() {
        // semantics 124
        assert_eq!(
            TransportError::WriteAfterEof("write").to_string(),
            "Cannot call write() after write_eof()"
        );
    }
}
