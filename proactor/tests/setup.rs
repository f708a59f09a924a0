//! Building a proactor where io_uring is unavailable: a typed error naming the cause, and
//! `Auto` falling back to epoll. A seccomp filter (installed in a child process, since it is
//! process-wide and irreversible) makes `io_uring_setup` fail the way a container profile or
//! an old kernel would.

mod support;

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::Nop;
use ringloop_proactor::{BackendChoice, BackendKind, Proactor, SetupErrorKind};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

/// Makes every later `io_uring_setup` in this process fail with `errno`; `false` when this
/// system does not allow seccomp filters.
fn block_io_uring_setup(errno: u32) -> bool {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        // seccomp_data.nr is at offset 0.
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        insn(RET_K, 0, 0, RET_ERRNO | errno),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` points to a live, well-formed filter program that
    // the kernel copies during the call.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) == 0
    }
}

fn io_uring_disabled() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn setup_blocked_by_seccomp_is_a_typed_error_and_auto_uses_epoll() {
    if !isolate(
        "setup_blocked_by_seccomp_is_a_typed_error_and_auto_uses_epoll",
        &[],
    ) {
        return;
    }
    require!(
        block_io_uring_setup(libc::EPERM as u32),
        "seccomp filters are not available here"
    );
    let err = Proactor::builder()
        .backend(BackendChoice::IoUring)
        .build()
        .expect_err("io_uring_setup is blocked");
    let expected = if io_uring_disabled() == 2 {
        SetupErrorKind::Disabled
    } else {
        SetupErrorKind::Blocked
    };
    assert_eq!(err.kind(), expected, "{err}");
    assert!(err.to_string().contains("EPERM"), "{err}");
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);

    let mut p = Proactor::builder()
        .backend(BackendChoice::Auto)
        .build()
        .expect("Auto falls back to epoll");
    assert_eq!(p.backend(), BackendKind::Epoll);
    assert_eq!(run(&mut p, Nop).result.unwrap(), 0);
}

#[test]
fn setup_without_io_uring_in_the_kernel_is_unsupported() {
    if !isolate("setup_without_io_uring_in_the_kernel_is_unsupported", &[]) {
        return;
    }
    require!(
        block_io_uring_setup(libc::ENOSYS as u32),
        "seccomp filters are not available here"
    );
    let err = Proactor::builder()
        .backend(BackendChoice::IoUring)
        .build()
        .expect_err("io_uring_setup is missing");
    assert_eq!(err.kind(), SetupErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("ENOSYS"), "{err}");
}

#[test]
fn setup_rejects_an_unknown_backend_name() {
    if !isolate(
        "setup_rejects_an_unknown_backend_name",
        &[("RINGLOOP_BACKEND", "kqueue")],
    ) {
        return;
    }
    let err = Proactor::new().expect_err("kqueue is not a backend");
    assert_eq!(err.kind(), SetupErrorKind::InvalidChoice);
    assert!(err.to_string().contains("kqueue"), "{err}");
}

#[test]
fn setup_tiny_rings_still_run_everything() {
    let mut p = Proactor::builder().entries(1).build().unwrap();
    if is_uring(&p) {
        assert_eq!(p.features().sq_entries, 1);
        assert_eq!(p.features().cq_entries, 2);
    }
    let (r, w) = pipe();
    use std::os::fd::AsRawFd;
    for i in 0..300u64 {
        match i % 3 {
            0 => p.push(Nop, i),
            1 => p.push(ringloop_proactor::op::Write::new(w.as_raw_fd(), vec![1]), i),
            _ => p.push(
                ringloop_proactor::op::Read::new(r.as_raw_fd(), Vec::with_capacity(1)),
                i,
            ),
        };
    }
    let mut seen = vec![false; 300];
    for _ in 0..300 {
        let c = next(&mut p);
        assert!(c.result.is_ok(), "{c:?}");
        assert!(!std::mem::replace(&mut seen[c.token as usize], true));
    }
    assert!(settle(&mut p).is_empty());
}
