//! Why a proactor could not be built.

use std::fmt;
use std::io;

/// What kind of obstacle stopped the proactor from starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupErrorKind {
    /// The kernel has no io_uring (`ENOSYS`): too old, or built without it.
    Unsupported,
    /// io_uring exists but this process may not use it (`EPERM`): a container's seccomp
    /// profile, or `kernel.io_uring_disabled`.
    Blocked,
    /// `kernel.io_uring_disabled` is set to 2 (disabled for everyone).
    Disabled,
    /// The kernel ran out of a resource (`ENOMEM`, `EMFILE`, locked memory).
    Resources,
    /// The requested backend name was not understood.
    InvalidChoice,
    /// Any other failure.
    Other,
}

/// A proactor could not be built; the message names the syscall and the cause.
#[derive(Debug)]
pub struct SetupError {
    kind: SetupErrorKind,
    context: String,
    source: Option<io::Error>,
}

impl SetupError {
    /// An error of `kind` with a sentence of context and the OS error behind it.
    pub(crate) fn new(
        kind: SetupErrorKind,
        context: impl Into<String>,
        source: Option<io::Error>,
    ) -> Self {
        SetupError {
            kind,
            context: context.into(),
            source,
        }
    }

    /// Classifies an error returned by `io_uring_setup`.
    pub(crate) fn from_uring_setup(err: io::Error) -> Self {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let (kind, context) = match err.raw_os_error() {
            Some(libc::ENOSYS) => (
                SetupErrorKind::Unsupported,
                "io_uring_setup: ENOSYS — the kernel has no io_uring",
            ),
            Some(libc::EPERM) if disabled == 2 => (
                SetupErrorKind::Disabled,
                "io_uring_setup: EPERM — kernel.io_uring_disabled = 2",
            ),
            Some(libc::EPERM) => (
                SetupErrorKind::Blocked,
                "io_uring_setup: EPERM — blocked by seccomp or kernel.io_uring_disabled",
            ),
            Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE) => (
                SetupErrorKind::Resources,
                "io_uring_setup: out of memory or file descriptors",
            ),
            _ => (SetupErrorKind::Other, "io_uring_setup failed"),
        };
        SetupError::new(kind, context, Some(err))
    }

    /// What kind of obstacle this is.
    pub fn kind(&self) -> SetupErrorKind {
        self.kind
    }

    /// The line `BackendChoice::Auto` logs when it falls back to epoll because of this
    /// error, e.g. "io_uring_setup: EPERM — blocked by seccomp or kernel.io_uring_disabled;
    /// using epoll". The OS error is added only where the context does not already name it.
    pub(crate) fn fallback_line(&self) -> String {
        match (&self.source, self.kind) {
            (Some(source), SetupErrorKind::Other) => {
                format!("{} ({source}); using epoll", self.context)
            }
            _ => format!("{}; using epoll", self.context),
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<SetupError> for io::Error {
    fn from(err: SetupError) -> io::Error {
        let kind = match err.kind {
            SetupErrorKind::Unsupported => io::ErrorKind::Unsupported,
            SetupErrorKind::Blocked | SetupErrorKind::Disabled => io::ErrorKind::PermissionDenied,
            SetupErrorKind::InvalidChoice => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_line_names_the_cause_and_the_backend() {
        let blocked = SetupError::from_uring_setup(io::Error::from_raw_os_error(libc::EPERM));
        let line = blocked.fallback_line();
        if blocked.kind() == SetupErrorKind::Blocked {
            assert_eq!(
                line,
                "io_uring_setup: EPERM — blocked by seccomp or kernel.io_uring_disabled; using epoll"
            );
        } else {
            assert_eq!(
                line,
                "io_uring_setup: EPERM — kernel.io_uring_disabled = 2; using epoll"
            );
        }
        let missing = SetupError::from_uring_setup(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(
            missing.fallback_line(),
            "io_uring_setup: ENOSYS — the kernel has no io_uring; using epoll"
        );
        let other = SetupError::from_uring_setup(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(
            other.fallback_line().starts_with("io_uring_setup failed (")
                && other.fallback_line().ends_with("); using epoll"),
            "{}",
            other.fallback_line()
        );
    }
}
