//! Ring setup: the best flags this kernel accepts, opcode probing, a registered ring fd and
//! the provided-buffer ring.
//!
//! Each feature degrades on its own: setup flags the kernel rejects (`EINVAL`) are dropped
//! one step at a time (`DEFER_TASKRUN` → `COOP_TASKRUN` → neither), opcodes are probed with
//! `IORING_REGISTER_PROBE`, and registrations that fail leave the feature off. Everything in
//! use is recorded in [`Features`].
//!
//! For tests of the degraded paths on a modern kernel, `RINGLOOP_URING_DISABLE` (a comma
//! list of feature names as [`Features::names`] spells them, or `all`) turns features off
//! as if the kernel lacked them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, IoUring, Probe};

use crate::buf::BufPool;
use crate::error::{SetupError, SetupErrorKind};
use crate::sys::Config;
use crate::Features;

/// The environment variable that turns io_uring features off (for tests).
pub(super) const DISABLE_ENV: &str = "RINGLOOP_URING_DISABLE";

/// `IORING_REGISTER_RING_FDS` / `IORING_UNREGISTER_RING_FDS` (5.18).
const REGISTER_RING_FDS: libc::c_uint = 20;
const UNREGISTER_RING_FDS: libc::c_uint = 21;

/// The buffer group id of the shared receive pool.
pub(super) const BUF_GROUP: u16 = 0;

/// Features turned off by `RINGLOOP_URING_DISABLE`.
#[derive(Debug, Default, Clone)]
pub(super) struct Disabled(Vec<String>);

impl Disabled {
    pub(super) fn from_env() -> Disabled {
        let list = std::env::var(DISABLE_ENV).unwrap_or_default();
        let names: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if !names.is_empty() {
            tracing::warn!("{DISABLE_ENV}={list}: io_uring features turned off for testing");
        }
        Disabled(names)
    }

    /// Whether the feature `name` may be used.
    pub(super) fn allows(&self, name: &str) -> bool {
        !self.0.iter().any(|n| n == name || n == "all")
    }
}

/// What the driver may use beyond the required opcodes (copied into [`Features`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Caps {
    pub(super) ext_arg: bool,
    /// `IORING_ENTER_ABS_TIMER` (6.12): the wait's timeout may be an absolute deadline.
    pub(super) abs_timer: bool,
    pub(super) multishot_recv: bool,
    pub(super) multishot_accept: bool,
    pub(super) multishot_poll: bool,
    pub(super) waitid: bool,
    pub(super) shutdown: bool,
}

/// Setup flag sets to try, best first.
#[derive(Clone, Copy)]
struct Flags {
    single_issuer: bool,
    defer_taskrun: bool,
    coop_taskrun: bool,
    submit_all: bool,
}

/// Creates the ring with the best flags this kernel accepts.
///
/// # Errors
/// The classified `io_uring_setup` error when no flag set works.
pub(super) fn create_ring(
    config: &Config,
    off: &Disabled,
) -> Result<(IoUring, Features), SetupError> {
    let f = |single_issuer, defer_taskrun, coop_taskrun, submit_all| Flags {
        single_issuer,
        defer_taskrun,
        coop_taskrun,
        submit_all,
    };
    let attempts = [
        f(true, true, false, true),
        f(true, false, true, true),
        f(false, false, true, true),
        f(false, false, false, true),
        f(false, false, false, false),
    ];
    let allowed = attempts.into_iter().filter(|a| {
        (!a.single_issuer || off.allows("single_issuer"))
            && (!a.defer_taskrun || off.allows("defer_taskrun"))
            && (!a.coop_taskrun || off.allows("coop_taskrun"))
            && (!a.submit_all || off.allows("submit_all"))
    });
    let mut last_err = None;
    for flags in allowed {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(config.entries.saturating_mul(2))
            .setup_clamp();
        if flags.single_issuer {
            builder.setup_single_issuer();
        }
        if flags.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if flags.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        if flags.submit_all {
            builder.setup_submit_all();
        }
        match builder.build(config.entries) {
            Ok(ring) => {
                let params = ring.params();
                let features = Features {
                    sq_entries: params.sq_entries(),
                    cq_entries: params.cq_entries(),
                    single_issuer: flags.single_issuer,
                    defer_taskrun: flags.defer_taskrun,
                    coop_taskrun: flags.coop_taskrun,
                    submit_all: flags.submit_all,
                    ext_arg: params.is_feature_ext_arg() && off.allows("ext_arg"),
                    nodrop: params.is_feature_nodrop(),
                    ..Features::default()
                };
                return Ok((ring, features));
            }
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("io_uring_setup rejected a flag set ({err}); trying fewer flags");
                last_err = Some(err);
            }
            Err(err) => return Err(SetupError::from_uring_setup(err)),
        }
    }
    Err(SetupError::from_uring_setup(last_err.unwrap_or_else(
        || io::Error::from_raw_os_error(libc::EINVAL),
    )))
}

/// Opcodes every op needs; a kernel without one of them (older than 5.6) cannot run the
/// io_uring backend at all.
const REQUIRED: [(u8, &str); 15] = [
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// Probes the opcodes and fills the op-related fields of `features`.
///
/// Multishot variants have no opcode of their own; each is inferred from an opcode added in
/// the same (or a later) release: `SEND_ZC` (6.0) for multishot recv, `SOCKET` (5.19) for
/// multishot accept, `MKDIRAT` (5.15) for multishot poll (5.13).
///
/// # Errors
/// `Unsupported` when a required opcode is missing or the kernel cannot be probed.
pub(super) fn probe(
    ring: &IoUring,
    off: &Disabled,
    features: &mut Features,
) -> Result<Caps, SetupError> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        SetupError::new(
            SetupErrorKind::Unsupported,
            "io_uring cannot be probed (IORING_REGISTER_PROBE, kernel older than 5.6)",
            Some(e),
        )
    })?;
    if let Some((_, name)) = REQUIRED.iter().find(|(op, _)| !probe.is_supported(*op)) {
        return Err(SetupError::new(
            SetupErrorKind::Unsupported,
            format!(
                "io_uring lacks IORING_OP_{name}, which ringloop needs (kernel older than 5.6)"
            ),
            None,
        ));
    }
    let has = |op: u8, name: &str| probe.is_supported(op) && off.allows(name);
    let caps = Caps {
        ext_arg: features.ext_arg,
        abs_timer: features.ext_arg
            && off.allows("abs_timer")
            && super::submit::probe_abs_timer(ring),
        multishot_recv: has(opcode::SendZc::CODE, "multishot_recv"),
        multishot_accept: has(opcode::Socket::CODE, "multishot_accept"),
        multishot_poll: has(opcode::MkDirAt::CODE, "multishot_poll"),
        waitid: has(opcode::WaitId::CODE, "waitid"),
        shutdown: has(opcode::Shutdown::CODE, "shutdown"),
    };
    features.abs_timer = caps.abs_timer;
    features.multishot_accept = caps.multishot_accept;
    features.multishot_poll = caps.multishot_poll;
    features.waitid = caps.waitid;
    features.shutdown = caps.shutdown;
    Ok(caps)
}

/// How `io_uring_enter` names the ring: the registered index (with
/// `IORING_ENTER_REGISTERED_RING`) or the plain fd.
#[derive(Debug, Clone, Copy)]
pub(super) struct EnterTarget {
    /// The fd or registered index passed to `io_uring_enter`.
    pub(super) fd: RawFd,
    /// Extra enter flags (`IORING_ENTER_REGISTERED_RING` or 0).
    pub(super) flags: u32,
    /// The ring's own fd, to unregister the index.
    ring_fd: RawFd,
    registered: bool,
}

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// Registers the ring fd with the calling thread (the only one that uses the ring), so
/// `io_uring_enter` skips the fd lookup. The io-uring crate keeps such a registration only
/// inside one short-lived `Submitter`, so it is done here directly.
pub(super) fn register_ring_fd(ring: &IoUring, off: &Disabled) -> EnterTarget {
    let ring_fd = ring.as_raw_fd();
    let plain = EnterTarget {
        fd: ring_fd,
        flags: 0,
        ring_fd,
        registered: false,
    };
    if !off.allows("registered_ring_fd") {
        return plain;
    }
    let mut update = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: ring_fd as u64,
    };
    // SAFETY: `update` is a live, correctly laid out `io_uring_rsrc_update` that the kernel
    // reads and writes (the chosen index) during the call; `nr_args` is 1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            REGISTER_RING_FDS,
            &mut update as *mut RsrcUpdate,
            1u32,
        )
    };
    if ret != 1 {
        tracing::debug!(
            "registering the ring fd failed ({}); entering by plain fd",
            io::Error::last_os_error()
        );
        return plain;
    }
    EnterTarget {
        fd: update.offset as RawFd,
        flags: io_uring::EnterFlags::REGISTERED_RING.bits(),
        ring_fd,
        registered: true,
    }
}

impl EnterTarget {
    /// Whether the ring fd is registered.
    pub(super) fn registered(&self) -> bool {
        self.registered
    }

    /// Drops the registration (on the thread that made it).
    pub(super) fn unregister(&mut self) {
        if !self.registered {
            return;
        }
        let update = RsrcUpdate {
            offset: self.fd as u32,
            resv: 0,
            data: 0,
        };
        // SAFETY: `update` is a live `io_uring_rsrc_update` naming the index registered by
        // `register_ring_fd` on this thread; the kernel only reads it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring_fd,
                UNREGISTER_RING_FDS,
                &update as *const RsrcUpdate,
                1u32,
            )
        };
        if ret < 0 {
            tracing::warn!(
                "unregistering the ring fd failed: {}",
                io::Error::last_os_error()
            );
        }
        self.registered = false;
        self.fd = self.ring_fd;
        self.flags = 0;
    }
}

/// The shared receive pool: a provided-buffer ring registered as group [`BUF_GROUP`] when
/// the kernel has them (5.19), else a free list the driver takes from for single receives.
pub(super) fn buffer_pool(ring: &IoUring, config: &Config, off: &Disabled) -> BufPool {
    if off.allows("buf_ring") {
        match BufPool::with_ring(config.recv_buffers, config.recv_buffer_size) {
            Ok(pool) => {
                if let Some(addr) = pool.ring_addr() {
                    // SAFETY: `addr` is the page-aligned array of `count` ring entries owned
                    // by `pool`, which the driver keeps alive (or leaks) until the group is
                    // unregistered or the ring is gone.
                    let registered = unsafe {
                        ring.submitter().register_buf_ring_with_flags(
                            addr,
                            pool.count(),
                            BUF_GROUP,
                            0,
                        )
                    };
                    match registered {
                        Ok(()) => return pool,
                        Err(err) => tracing::debug!(
                            "no provided-buffer ring ({err}); receiving into a free list"
                        ),
                    }
                }
            }
            Err(err) => tracing::warn!("provided-buffer ring allocation failed: {err}"),
        }
    }
    crate::sys::free_list_pool(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_names_and_all() {
        let off = Disabled(vec!["ext_arg".into(), "waitid".into()]);
        assert!(!off.allows("ext_arg") && !off.allows("waitid"));
        assert!(off.allows("buf_ring"));
        assert!(!Disabled(vec!["all".into()]).allows("defer_taskrun"));
        assert!(Disabled::default().allows("anything"));
    }

    /// A real ring the kernel runs dry: the driver reports `ENOBUFS` to the pool, which
    /// deepens the ring and tops it up from its spares, so every chunk still lands in a pooled
    /// buffer and none is lost or reordered.
    #[test]
    fn a_ring_the_kernel_runs_dry_grows_deeper() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        use std::time::{Duration, Instant};

        use crate::buf::INITIAL_RING_DEPTH;
        use crate::op::{Op, RecvMulti};
        use crate::sys::Backend as _;
        use crate::table::OpTable;

        let config = Config {
            entries: 64,
            recv_buffers: 64,
            recv_buffer_size: 64,
            wake_fd: -1,
        };
        let Ok(mut driver) = super::super::Driver::new(&config) else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        if !driver.features.multishot_recv {
            eprintln!("SKIPPED: no multishot receive from a buffer ring");
            return;
        }
        assert_eq!(driver.pool.ring_depth(), Some(INITIAL_RING_DEPTH));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut table = OpTable::default();
        let id = table.insert(Op::RecvMulti(RecvMulti::new(server.as_raw_fd())), 0);
        driver.push(&mut table, id);
        driver.poll(&mut table, Some(Duration::ZERO)).unwrap();
        // 48 chunks' worth at once, more than the ring holds: the kernel takes all 16
        // published buffers in one go and reports the ring dry.
        let data: Vec<u8> = (0..48 * 64).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).unwrap();
        let mut held = Vec::new();
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < data.len() {
            assert!(start.elapsed() < Duration::from_secs(10), "stalled");
            driver
                .poll(&mut table, Some(Duration::from_millis(100)))
                .unwrap();
            while let Some(c) = crate::sys::pop_raw(&mut driver, &mut table) {
                assert!(c.more, "the receive ended: {}", c.result);
                let Some(buf) = c.buf else { continue };
                got.extend_from_slice(&buf);
                held.push(buf);
            }
        }
        assert!(got == data, "bytes lost or reordered");
        assert!(
            held.iter().all(|b| b.is_pooled()),
            "a chunk fell back to an owned buffer while spares were left"
        );
        let depth = driver.pool.ring_depth().unwrap();
        assert!(
            depth > INITIAL_RING_DEPTH,
            "the ring did not grow ({depth})"
        );
        // End the op and reap its last completion so the driver can free the pool.
        driver.cancel(&mut table, id);
        let start = Instant::now();
        'end: loop {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no final completion"
            );
            driver
                .poll(&mut table, Some(Duration::from_millis(100)))
                .unwrap();
            while let Some(c) = crate::sys::pop_raw(&mut driver, &mut table) {
                if !c.more {
                    break 'end;
                }
            }
        }
        table.remove(id);
        drop(held);
        assert_eq!(driver.pool.in_use(), 0);
    }
}
