//! Degraded kernels and containers, reproduced with a seccomp filter in a child process:
//! io_uring blocked (`Auto` falls back to epoll and logs why, in one line), no `pidfd_open`
//! (child waits fail cleanly with `ENOSYS`), no `epoll_pwait2` (millisecond waits, still
//! never early).

mod epoll_util;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use epoll_util::*;
use ringloop_proactor::{op, BackendChoice, BackendKind, Proactor, SetupErrorKind};

/// Makes the calling thread's (and its future children's) syscalls `nr` fail with `errno`,
/// like a container's seccomp profile. Irreversible: only call it in a child process.
fn deny(syscalls: &[(libc::c_long, i32)]) {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data.nr is at offset 0. (No architecture check: this is a test on the build's
    // own architecture, whose syscall numbers `libc` gives.)
    let mut prog = vec![insn(LD_W_ABS, 0, 0, 0)];
    for &(nr, errno) in syscalls {
        prog.push(insn(JEQ_K, 0, 1, nr as u32));
        prog.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno as u32));
    }
    prog.push(insn(RET_K, 0, 0, RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; `fprog` points to `prog`, both alive during the
    // call (the kernel copies the program).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Collects every `tracing` event's level and message.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_blocks_io_uring() {
    if !in_child_process("auto_falls_back_to_epoll_when_seccomp_blocks_io_uring") {
        return;
    }
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    deny(&[(libc::SYS_io_uring_setup, libc::EPERM)]);

    let err = Proactor::builder()
        .backend(BackendChoice::IoUring)
        .build()
        .unwrap_err();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() == "2")
        .unwrap_or(false);
    let (kind, why) = if disabled {
        (
            SetupErrorKind::Disabled,
            "io_uring_setup: EPERM — kernel.io_uring_disabled = 2",
        )
    } else {
        (
            SetupErrorKind::Blocked,
            "io_uring_setup: EPERM — blocked by seccomp or kernel.io_uring_disabled",
        )
    };
    assert_eq!(err.kind(), kind, "{err}");

    capture.0.lock().unwrap().clear();
    let mut p = Proactor::builder()
        .backend(BackendChoice::Auto)
        .build()
        .unwrap();
    assert_eq!(p.backend(), BackendKind::Epoll);
    let logged = capture.0.lock().unwrap().clone();
    let warnings: Vec<&String> = logged
        .iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .map(|(_, message)| message)
        // The old-kernel test pass announces its own switch; that line is not the fallback's.
        .filter(|message| !message.starts_with("RINGLOOP_URING_DISABLE"))
        .collect();
    assert_eq!(warnings, [&format!("{why}; using epoll")], "{logged:?}");
    // And the fallback works.
    p.push(op::Timeout::new(Duration::from_millis(1)), 1);
    assert!(next(&mut p).result.is_ok());
}

#[test]
#[allow(clippy::zombie_processes)] // Reaped by `child.wait()` below after the failed op.
fn waitid_without_pidfd_open_fails_cleanly_with_enosys() {
    if !in_child_process("waitid_without_pidfd_open_fails_cleanly_with_enosys") {
        return;
    }
    deny(&[(libc::SYS_pidfd_open, libc::ENOSYS)]);
    let mut p = proactor();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "exit 4"])
        .spawn()
        .unwrap();
    p.push(op::WaitId::new(child.id() as i32), 1);
    let c = next(&mut p);
    assert_eq!(
        c.result.unwrap_err().raw_os_error(),
        Some(libc::ENOSYS),
        "a clear error, not a hang"
    );
    assert_eq!(
        child.wait().unwrap().code(),
        Some(4),
        "the child is left to reap"
    );
}

#[test]
fn timers_are_never_early_with_millisecond_epoll_wait() {
    if !in_child_process("timers_are_never_early_with_millisecond_epoll_wait") {
        return;
    }
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    deny(&[(libc::SYS_epoll_pwait2, libc::ENOSYS)]);
    let mut p = proactor();
    assert!(
        capture
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, message)| message.starts_with("epoll_pwait2 unavailable")),
        "the backend noticed and fell back to epoll_wait"
    );
    for micros in [200, 1_200, 2_500, 7_700] {
        let want = Duration::from_micros(micros);
        let start = Instant::now();
        p.push(op::Timeout::new(want), micros);
        let c = next(&mut p);
        assert!(c.result.is_ok());
        assert!(start.elapsed() >= want, "timeout {want:?} fired early");
        let start = Instant::now();
        p.poll(Some(want)).unwrap();
        assert!(start.elapsed() >= want, "poll({want:?}) returned early");
    }
}
