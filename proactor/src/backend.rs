//! Which kernel interface a [`Proactor`](crate::Proactor) drives, and how it is chosen.

use std::fmt;
use std::str::FromStr;

/// The environment variable that forces a backend: `io_uring`, `epoll` or `auto`.
pub const BACKEND_ENV: &str = "RINGLOOP_BACKEND";

/// The backend a proactor runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Completions from an io_uring instance.
    IoUring,
    /// Completions emulated over edge-triggered epoll readiness.
    Epoll,
}

impl BackendKind {
    /// The backend's name as the benchmark report and the logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to pick the backend when a proactor is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else epoll (logging why).
    #[default]
    Auto,
    /// io_uring or an error naming why it is unavailable.
    IoUring,
    /// epoll, even where io_uring works.
    Epoll,
}

impl BackendChoice {
    /// The choice named by `RINGLOOP_BACKEND`, or `None` when it is unset.
    ///
    /// # Errors
    /// A value other than `io_uring`, `io-uring`, `uring`, `epoll` or `auto` is an error that
    /// quotes it.
    pub fn from_env() -> Result<Option<BackendChoice>, String> {
        match std::env::var(BACKEND_ENV) {
            Ok(value) => value.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(format!("{BACKEND_ENV}={v:?} is not valid unicode"))
            }
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "io_uring" | "io-uring" | "uring" | "iouring" => Ok(BackendChoice::IoUring),
            "epoll" => Ok(BackendChoice::Epoll),
            other => Err(format!(
                "{BACKEND_ENV}={other:?} is not a backend: expected io_uring, epoll or auto"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!("IO_URING".parse(), Ok(BackendChoice::IoUring));
        assert_eq!("io-uring".parse(), Ok(BackendChoice::IoUring));
        assert_eq!(" epoll ".parse(), Ok(BackendChoice::Epoll));
        assert!("kqueue"
            .parse::<BackendChoice>()
            .unwrap_err()
            .contains("kqueue"));
    }
}
