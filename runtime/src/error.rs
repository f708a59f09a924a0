//! The loop's error type: every misuse of the loop, plus the outcomes a future can end with
//! (cancelled, panicked, failed with an I/O or user error).
//!
//! Variants follow the misuse table of asyncio (`RuntimeError`/`ValueError`/…); `Display`
//! uses asyncio's wording where it is stable, so messages are familiar to asyncio users.
//! The type is `Clone + Send + Sync` because a future's outcome can be observed more than
//! once (`Future::result`) and errors cross threads (executor jobs, the thread-safe handle).

use std::fmt;
use std::io;
use std::sync::Arc;

/// A `Result` whose error is [`LoopError`].
pub type Result<T, E = LoopError> = std::result::Result<T, E>;

/// What went wrong, and why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LoopError {
    /// The loop was closed; nothing can be scheduled or run on it any more.
    LoopClosed,
    /// `run_forever`/`run_until_complete` was called while this loop is already running.
    LoopRunning,
    /// `close()` was called from inside the running loop.
    CloseWhileRunning,
    /// Another loop is already running in this thread.
    AnotherLoopRunning,
    /// The loop stopped (someone called `stop()`) before the awaited future completed.
    StoppedBeforeComplete,
    /// A future or task of one loop was used with another loop.
    WrongLoop,
    /// No current event loop was set in this thread.
    NoCurrentLoop {
        /// The name of the thread (or its id when it has no name).
        thread: String,
    },
    /// `get_running_loop()` was called outside a running loop.
    NoRunningLoop,
    /// A future was used in a state that does not allow the operation
    /// (asyncio's `InvalidStateError`).
    InvalidState(String),
    /// An argument was out of range or otherwise unusable (asyncio's `ValueError`/`TypeError`).
    InvalidArgument {
        /// What was wrong with it.
        what: String,
    },
    /// The signal number is not a valid signal (0, negative, or ≥ `NSIG`).
    InvalidSignal(i32),
    /// The signal can never be caught (`SIGKILL`, `SIGSTOP`).
    SignalNotCatchable(i32),
    /// The executor was shut down; it accepts no more jobs.
    ExecutorShutdown,
    /// The future or task was cancelled (asyncio's `CancelledError`).
    Cancelled,
    /// A task or executor job panicked; the panic's message.
    Panicked(String),
    /// An operating-system error.
    Io(Arc<io::Error>),
    /// An error of the application's own, carried through a future.
    Other(Arc<dyn std::error::Error + Send + Sync>),
}

impl LoopError {
    /// An [`InvalidArgument`](LoopError::InvalidArgument) error saying `what`.
    pub fn invalid_argument(what: impl Into<String>) -> LoopError {
        LoopError::InvalidArgument { what: what.into() }
    }

    /// Wraps an application error so that a future can carry it.
    pub fn other(err: impl std::error::Error + Send + Sync + 'static) -> LoopError {
        LoopError::Other(Arc::new(err))
    }

    /// Whether this is the [`Cancelled`](LoopError::Cancelled) outcome.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, LoopError::Cancelled)
    }

    /// The I/O error inside, if this is an [`Io`](LoopError::Io) error.
    pub fn as_io(&self) -> Option<&io::Error> {
        match self {
            LoopError::Io(err) => Some(err),
            _ => None,
        }
    }

    /// The message of a caught panic payload (`&str` or `String`; anything else is named).
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> LoopError {
        LoopError::Panicked(panic_message(payload))
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopError::LoopClosed => f.write_str("Event loop is closed"),
            LoopError::LoopRunning => f.write_str("This event loop is already running"),
            LoopError::CloseWhileRunning => f.write_str("Cannot close a running event loop"),
            LoopError::AnotherLoopRunning => {
                f.write_str("Cannot run the event loop while another loop is running")
            }
            LoopError::StoppedBeforeComplete => {
                f.write_str("Event loop stopped before Future completed.")
            }
            LoopError::WrongLoop => f.write_str(
                "The future belongs to a different loop than the one specified as the loop argument",
            ),
            LoopError::NoCurrentLoop { thread } => {
                write!(f, "There is no current event loop in thread '{thread}'.")
            }
            LoopError::NoRunningLoop => f.write_str("no running event loop"),
            LoopError::InvalidState(what) => f.write_str(what),
            LoopError::InvalidArgument { what } => f.write_str(what),
            LoopError::InvalidSignal(sig) => write!(f, "invalid signal number {sig}"),
            LoopError::SignalNotCatchable(sig) => write!(f, "sig {sig} cannot be caught"),
            LoopError::ExecutorShutdown => f.write_str("Executor shutdown has been called"),
            LoopError::Cancelled => f.write_str("the operation was cancelled"),
            LoopError::Panicked(msg) => write!(f, "panicked: {msg}"),
            LoopError::Io(err) => fmt::Display::fmt(err, f),
            LoopError::Other(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoopError::Io(err) => Some(&**err),
            LoopError::Other(err) => Some(&**err),
            _ => None,
        }
    }
}

impl From<io::Error> for LoopError {
    fn from(err: io::Error) -> LoopError {
        LoopError::Io(Arc::new(err))
    }
}

impl From<ringloop_proactor::SetupError> for LoopError {
    fn from(err: ringloop_proactor::SetupError) -> LoopError {
        LoopError::Io(Arc::new(io::Error::from(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_asyncio() {
        assert_eq!(LoopError::LoopClosed.to_string(), "Event loop is closed");
        assert_eq!(
            LoopError::CloseWhileRunning.to_string(),
            "Cannot close a running event loop"
        );
        assert_eq!(
            LoopError::NoCurrentLoop {
                thread: "main".into()
            }
            .to_string(),
            "There is no current event loop in thread 'main'."
        );
        assert_eq!(
            LoopError::InvalidSignal(0).to_string(),
            "invalid signal number 0"
        );
        assert_eq!(
            LoopError::SignalNotCatchable(9).to_string(),
            "sig 9 cannot be caught"
        );
    }

    #[test]
    fn io_errors_keep_their_errno_through_clone() {
        let err = LoopError::from(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let copy = err.clone();
        assert_eq!(
            copy.as_io().and_then(io::Error::raw_os_error),
            Some(libc::ECONNREFUSED)
        );
        assert!(std::error::Error::source(&copy).is_some());
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<LoopError>();
    }
}
