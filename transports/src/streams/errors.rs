//! The stream errors with data: asyncio's `IncompleteReadError` and `LimitOverrunError`.
//! They travel inside [`LoopError::Other`]; find them with `find`.

use std::fmt;

use ringloop_runtime::LoopError;

/// EOF came before the read was satisfied (semantics 202, 203).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteReadError {
    /// What was read before EOF.
    pub partial: Vec<u8>,
    /// How many bytes were expected; `None` for `readuntil`.
    pub expected: Option<usize>,
}

impl IncompleteReadError {
    /// The error inside `err`, if it is one.
    pub fn find(err: &LoopError) -> Option<&IncompleteReadError> {
        match err {
            LoopError::Other(inner) => inner.downcast_ref::<IncompleteReadError>(),
            _ => None,
        }
    }
}

impl fmt::Display for IncompleteReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(n) => write!(
                f,
                "{} bytes read on a total of {n} expected bytes",
                self.partial.len()
            ),
            None => write!(
                f,
                "{} bytes read on a total of undefined expected bytes",
                self.partial.len()
            ),
        }
    }
}

impl std::error::Error for IncompleteReadError {}

/// The separator was not found within the limit (semantics 202); the data stays buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOverrunError {
    /// asyncio's message.
    pub message: &'static str,
    /// How many bytes to consume to get past the overrun.
    pub consumed: usize,
}

impl LimitOverrunError {
    /// The error inside `err`, if it is one.
    pub fn find(err: &LoopError) -> Option<&LimitOverrunError> {
        match err {
            LoopError::Other(inner) => inner.downcast_ref::<LimitOverrunError>(),
            _ => None,
        }
    }
}

impl fmt::Display for LimitOverrunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for LimitOverrunError {}

/// A loop error as an `io::Error` (for the `futures-io` traits): OS errors keep their kind
/// and message; anything else is wrapped.
pub(crate) fn to_io(err: LoopError) -> std::io::Error {
    match err {
        LoopError::Io(io) => std::io::Error::new(io.kind(), io.to_string()),
        LoopError::Cancelled => std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"),
        other => std::io::Error::other(other),
    }
}
