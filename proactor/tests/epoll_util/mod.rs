//! Helpers for the epoll backend's integration tests: proactors forced onto epoll, real
//! loopback sockets and pipes, waiting for completions, and running a test alone in a child
//! process (fd counting is process-wide).
#![allow(dead_code)] // Each test file uses a different subset of these helpers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use ringloop_proactor::{BackendChoice, BackendKind, Completion, Proactor};

/// How long any single wait in these tests may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A proactor on the epoll backend, chosen explicitly (not through the environment).
pub(crate) fn proactor() -> Proactor {
    let p = Proactor::builder()
        .backend(BackendChoice::Epoll)
        .build()
        .expect("epoll proactor");
    assert_eq!(p.backend(), BackendKind::Epoll);
    p
}

/// An epoll proactor whose multishot receives share `count` buffers of `size` bytes.
pub(crate) fn proactor_with_pool(count: u16, size: usize) -> Proactor {
    let p = Proactor::builder()
        .backend(BackendChoice::Epoll)
        .recv_buffers(count, size)
        .build()
        .expect("epoll proactor");
    assert_eq!(p.backend(), BackendKind::Epoll);
    p
}

/// The next completion, polling as needed; panics after [`PATIENCE`].
pub(crate) fn next(p: &mut Proactor) -> Completion {
    let start = Instant::now();
    loop {
        if let Some(c) = p.pop() {
            return c;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no completion within {PATIENCE:?}"
        );
        p.poll(Some(Duration::from_millis(100))).expect("poll");
    }
}

/// Polls without blocking and asserts nothing completed.
pub(crate) fn assert_idle(p: &mut Proactor) {
    p.poll(Some(Duration::ZERO)).expect("poll");
    if let Some(c) = p.pop() {
        panic!("unexpected completion: {c:?}");
    }
}

/// A connected loopback TCP pair `(client, server)`.
pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    (client, server)
}

/// `conns` loopback TCP pairs with a multishot receive (token 1) pushed on each client,
/// and the receives' ids in the same order; nothing is readable yet.
pub(crate) fn receiving_pairs(
    p: &mut Proactor,
    conns: usize,
) -> (Vec<(TcpStream, TcpStream)>, Vec<ringloop_proactor::OpId>) {
    let pairs: Vec<_> = (0..conns).map(|_| tcp_pair()).collect();
    let ids = pairs
        .iter()
        .map(|(client, _)| p.push(ringloop_proactor::op::RecvMulti::new(client.as_raw_fd()), 1))
        .collect();
    assert_idle(p);
    (pairs, ids)
}

/// A pipe `(read end, write end)`, both blocking (the backend must cope).
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2(2) writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Writes all of `data` to a raw fd (blocking).
pub(crate) fn write_all(fd: RawFd, data: &[u8]) {
    // SAFETY: borrow the fd as a File without taking ownership (ManuallyDrop below).
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.write_all(data).expect("write_all");
}

/// Reads exactly `len` bytes from a raw fd (blocking).
pub(crate) fn read_exact(fd: RawFd, len: usize) -> Vec<u8> {
    // SAFETY: as in `write_all`.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut out = vec![0; len];
    file.read_exact(&mut out).expect("read_exact");
    out
}

/// Hands a socket's fd to the test, to be closed through the proactor.
pub(crate) fn into_fd(stream: TcpStream) -> RawFd {
    stream.into_raw_fd()
}

/// The raw fd of anything that has one.
pub(crate) fn fd_of(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// How many fds this process has open.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A deterministic byte pattern of `len` bytes.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The env var that marks a re-executed test binary running one test alone.
const CHILD_ENV: &str = "RINGLOOP_EPOLL_TEST_CHILD";

/// Runs test `name` of this binary alone in a child process and asserts it passed; returns
/// `true` in the child, where the caller then runs the test body. Process-wide checks (open
/// fd counts) cannot be disturbed by tests running in parallel threads this way.
pub(crate) fn in_child_process(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("re-exec the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
