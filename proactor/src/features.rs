//! What the running kernel offers, as probed when the proactor starts.

use std::fmt;

use crate::BackendKind;

/// The features a proactor found and is using; for logs and the benchmark report.
///
/// On the epoll backend every io_uring field is `false` and the sizes are 0.
///
/// For testing the paths older kernels take, `RINGLOOP_URING_DISABLE` (a comma list of the
/// names [`Features::names`] uses, or `all`) turns io_uring features off at startup as if the
/// kernel lacked them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19), used when `DEFER_TASKRUN` is missing.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL` (5.18).
    pub submit_all: bool,
    /// The ring fd is registered (`IORING_REGISTER_RING_FDS`, 5.18).
    pub registered_ring_fd: bool,
    /// Wait with a timeout inside `io_uring_enter` (`IORING_FEAT_EXT_ARG`, 5.11).
    pub ext_arg: bool,
    /// The wait's timeout is an absolute `CLOCK_MONOTONIC` deadline
    /// (`IORING_ENTER_ABS_TIMER`, 6.12); else a relative timeout taken just before the wait.
    pub abs_timer: bool,
    /// Completions are never dropped on CQ overflow (`IORING_FEAT_NODROP`, 5.5).
    pub nodrop: bool,
    /// Multishot accept (5.19).
    pub multishot_accept: bool,
    /// Multishot recv (6.0).
    pub multishot_recv: bool,
    /// Multishot poll (5.13); else emulated by re-armed single polls.
    pub multishot_poll: bool,
    /// Provided buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19).
    pub buf_ring: bool,
    /// `IORING_OP_WAITID` (6.7); else child exits are watched with a pidfd poll.
    pub waitid: bool,
    /// `IORING_OP_SHUTDOWN` (5.11); else `shutdown(2)` is called in user space.
    pub shutdown: bool,
}

impl Features {
    /// The names of the io_uring features in use, for one log line.
    pub fn names(&self) -> Vec<&'static str> {
        let flags = [
            (self.single_issuer, "single_issuer"),
            (self.defer_taskrun, "defer_taskrun"),
            (self.coop_taskrun, "coop_taskrun"),
            (self.submit_all, "submit_all"),
            (self.registered_ring_fd, "registered_ring_fd"),
            (self.ext_arg, "ext_arg"),
            (self.abs_timer, "abs_timer"),
            (self.nodrop, "nodrop"),
            (self.multishot_accept, "multishot_accept"),
            (self.multishot_recv, "multishot_recv"),
            (self.multishot_poll, "multishot_poll"),
            (self.buf_ring, "buf_ring"),
            (self.waitid, "waitid"),
            (self.shutdown, "shutdown"),
        ];
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect()
    }

    /// Formats the features together with the backend's name.
    pub fn describe(&self, backend: BackendKind) -> String {
        match backend {
            BackendKind::Epoll => "epoll".to_owned(),
            BackendKind::IoUring => format!(
                "io_uring sq={} cq={} [{}]",
                self.sq_entries,
                self.cq_entries,
                self.names().join(",")
            ),
        }
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}
