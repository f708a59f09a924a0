//! Helpers shared by the proactor's integration tests: real fds (loopback sockets, pipes,
//! files), a proactor on whatever backend `RINGLOOP_BACKEND` picks, waiting for
//! completions with a deadline, counting open fds, running a test in a child process, and
//! counted skips.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringloop_proactor::{BackendKind, Completion, Op, OpId, Proactor};

/// How long any single wait in a test may take before it counts as a hang.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A proactor on the backend `RINGLOOP_BACKEND` names (else the best available).
pub(crate) fn proactor() -> Proactor {
    Proactor::new().unwrap_or_else(|e| panic!("building a proactor: {e}"))
}

/// Whether `proactor` runs on io_uring (tests of io_uring-only details gate on this).
pub(crate) fn is_uring(proactor: &Proactor) -> bool {
    proactor.backend() == BackendKind::IoUring
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Records and announces a skipped test: prints `SKIPPED: <test>: <reason>` and appends the
/// line to `skipped.log` in the target's test scratch directory, so a run can count skips.
pub(crate) fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("SKIPPED: {test}: {reason}");
    // Straight to stderr: the test harness captures `println!`/`eprintln!` of passing
    // tests, and a skip must be visible.
    let _ = writeln!(std::io::stderr(), "{line}");
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// How many tests this process skipped.
pub(crate) fn skipped() -> usize {
    SKIPPED.load(Ordering::Relaxed)
}

/// Skips the rest of the test (counted, announced) unless `cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $reason:expr) => {
        if !$cond {
            $crate::support::skip($reason);
            return;
        }
    };
}

/// Open fds of this process (entries of `/proc/self/fd`, less the one reading it).
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
        - 1
}

/// Whether `fd` is open in this process.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

const CHILD_ENV: &str = "RINGLOOP_TEST_CHILD";

/// Runs test `name` in a child process (this test binary, filtered to it, one thread,
/// with `env` set), so process-wide state (fd counts, env, rlimits, the audit registry) is
/// its own. In the parent, waits and asserts the child passed, then returns `false`; in the
/// child returns `true`: run the body.
pub(crate) fn isolate(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return true;
    }
    let out = child(name, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("SKIPPED:")) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    assert!(
        out.status.success(),
        "child test {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "child ran no test named {name}:\n{stdout}"
    );
    false
}

/// Runs test `name` of this binary in a child process and returns its output.
pub(crate) fn child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawning the test binary")
}

/// Polls until a completion is ready and pops it; panics after [`DEADLINE`].
pub(crate) fn next(proactor: &mut Proactor) -> Completion {
    let start = Instant::now();
    loop {
        if let Some(done) = proactor.pop() {
            return done;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no completion within {DEADLINE:?}"
        );
        proactor
            .poll(Some(Duration::from_millis(100)))
            .expect("poll failed");
    }
}

/// Polls and pops until the final completion of `id`; returns the intermediate
/// completions of `id` and the final one. Completions of other ops are a test bug.
pub(crate) fn finish(proactor: &mut Proactor, id: OpId) -> (Vec<Completion>, Completion) {
    let mut events = Vec::new();
    loop {
        let done = next(proactor);
        assert_eq!(done.id, id, "unexpected completion {done:?}");
        if !done.more {
            return (events, done);
        }
        events.push(done);
    }
}

/// Pushes `op`, waits for its final completion and returns it.
pub(crate) fn run(proactor: &mut Proactor, op: impl Into<Op>) -> Completion {
    let id = proactor.push(op, 0);
    let (events, done) = finish(proactor, id);
    assert!(events.is_empty(), "a single-shot op reported {events:?}");
    done
}

/// Polls (without waiting) until nothing more completes for a little while, collecting
/// everything popped.
pub(crate) fn settle(proactor: &mut Proactor) -> Vec<Completion> {
    let mut out = Vec::new();
    let mut quiet = 0;
    while quiet < 5 {
        proactor
            .poll(Some(Duration::from_millis(10)))
            .expect("poll failed");
        let before = out.len();
        while let Some(done) = proactor.pop() {
            out.push(done);
        }
        quiet = if out.len() == before { quiet + 1 } else { 0 };
    }
    out
}

/// The errno of a failed completion.
pub(crate) fn errno(done: &Completion) -> Option<i32> {
    done.result.as_ref().err().and_then(|e| e.raw_os_error())
}

/// A connected loopback TCP pair (non-blocking on our side, as a loop would have it).
pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).unwrap();
    (server, client)
}

/// A listening loopback TCP socket (non-blocking).
pub(crate) fn listener() -> TcpListener {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.set_nonblocking(true).unwrap();
    listener
}

/// A bound loopback UDP socket (non-blocking).
pub(crate) fn udp() -> UdpSocket {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
    sock.set_nonblocking(true).unwrap();
    sock
}

/// A loopback address nobody listens on (bound then closed).
pub(crate) fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().unwrap()
}

/// A pipe: (read end, write end), both non-blocking and close-on-exec.
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A non-blocking TCP socket, not yet connected.
pub(crate) fn tcp_socket() -> socket2::Socket {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_nonblocking(true).unwrap();
    sock
}

/// A scratch file with `contents`, unlinked (the fd keeps it alive).
pub(crate) fn temp_file(contents: &[u8]) -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "ringloop-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("temp file");
    std::fs::remove_file(&path).ok();
    file.write_all(contents).unwrap();
    file
}

/// Reads from a (blocking) stream until `n` bytes or EOF.
pub(crate) fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = vec![0; n];
    let mut got = 0;
    while got < n {
        match stream.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => panic!("read: {e}"),
        }
    }
    out.truncate(got);
    out
}

/// The raw fd of anything with one.
pub(crate) fn fd(x: &impl AsRawFd) -> RawFd {
    x.as_raw_fd()
}

/// Deterministic test data: `n` bytes of a counting pattern.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Polls with timeouts of 0.3, 1.7 and 12 ms with nothing to complete, and asserts that no
/// poll returns before its timeout (semantics 43: timers never fire early).
pub(crate) fn assert_polls_never_early(proactor: &mut Proactor) {
    for micros in [300, 1_700, 12_000] {
        let want = Duration::from_micros(micros);
        let start = Instant::now();
        proactor.poll(Some(want)).unwrap();
        let waited = start.elapsed();
        assert!(proactor.pop().is_none());
        assert!(waited >= want, "poll({want:?}) returned after {waited:?}");
    }
}
