//! Life of an epoll proactor: backend selection, wake-ups from other threads, dropping with
//! ops in flight (no fd leaks), and fds whose numbers are reused.

mod epoll_util;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use epoll_util::*;
use ringloop_proactor::{op, BackendKind, Proactor, SetupErrorKind};

#[test]
fn the_environment_selects_the_epoll_backend() {
    if !in_child_process("the_environment_selects_the_epoll_backend") {
        return;
    }
    std::env::set_var("RINGLOOP_BACKEND", "epoll");
    let p = Proactor::new().unwrap();
    assert_eq!(p.backend(), BackendKind::Epoll);
    assert_eq!(p.features().describe(p.backend()), "epoll");
    std::env::set_var("RINGLOOP_BACKEND", "kqueue");
    let err = Proactor::new().unwrap_err();
    assert_eq!(err.kind(), SetupErrorKind::InvalidChoice);
    assert!(err.to_string().contains("kqueue"), "{err}");
}

#[test]
fn a_wake_from_another_thread_interrupts_a_blocking_poll() {
    let mut p = proactor();
    let waker = p.waker();
    let start = Instant::now();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake();
    });
    p.poll(None).unwrap();
    let took = start.elapsed();
    assert!(p.pop().is_none(), "the wake-up is internal");
    assert!(
        took >= Duration::from_millis(50),
        "returned before the wake: {took:?}"
    );
    assert!(took < PATIENCE, "the wake-up was missed");
    thread.join().unwrap();
    // The wake-up read is re-armed: a second wake works too.
    let waker = p.waker();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    p.poll(Some(PATIENCE)).unwrap();
    assert!(start.elapsed() < PATIENCE);
    thread.join().unwrap();
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn a_wake_before_the_poll_makes_it_return_at_once() {
    let mut p = proactor();
    p.waker().wake();
    let start = Instant::now();
    p.poll(Some(Duration::from_secs(5))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn drop_with_a_thousand_ops_in_flight_leaks_no_fd() {
    if !in_child_process("drop_with_a_thousand_ops_in_flight_leaks_no_fd") {
        return;
    }
    let before = open_fds();
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut pairs = Vec::new();
        let mut pipes = Vec::new();
        let mut children = Vec::new();
        let mut p = proactor();
        let mut pushed = 0;
        for _ in 0..100 {
            let (client, server) = tcp_pair();
            for _ in 0..3 {
                p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(64)), 0);
            }
            p.push(op::RecvMulti::new(server.as_raw_fd()), 0);
            pairs.push((client, server));
            pushed += 4;
        }
        for _ in 0..100 {
            let (r, w) = pipe();
            p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(64)), 0);
            p.push(op::PollAdd::new(r.as_raw_fd(), libc::POLLIN as u32), 0);
            pipes.push((r, w));
            pushed += 2;
        }
        for _ in 0..100 {
            p.push(op::Accept::new(listener.as_raw_fd()), 0);
            pushed += 1;
        }
        p.push(op::AcceptMulti::new(listener.as_raw_fd()), 0);
        pushed += 1;
        for _ in 0..10 {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            p.push(op::WaitId::new(child.id() as i32), 0);
            children.push(child);
            pushed += 1;
        }
        while pushed < 1000 {
            p.push(op::Timeout::new(Duration::from_secs(3600)), 0);
            pushed += 1;
        }
        p.poll(Some(Duration::ZERO)).unwrap();
        assert!(p.in_flight() >= 990, "{} in flight", p.in_flight());
        // A connection arriving now would be accepted into a detached op: it is closed.
        let _late = TcpStream::connect(addr).unwrap();
        drop(p);
        for mut child in children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let after = open_fds();
    assert_eq!(
        before, after,
        "fds leaked: {before} open before, {after} after"
    );
}

#[test]
fn an_fd_number_reused_behind_the_backends_back_still_works() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for round in 0..20 {
        // Accept through the proactor, use the socket, then close it *without* telling the
        // proactor (dropping it): the next accept will likely get the same number.
        p.push(op::Accept::new(listener.as_raw_fd()), 1);
        let mut client = TcpStream::connect(addr).unwrap();
        let fd = next(&mut p).result.unwrap() as i32;
        p.push(op::Recv::new(fd, Vec::with_capacity(8)), 2);
        assert_idle(&mut p);
        std::io::Write::write_all(&mut client, b"hey").unwrap();
        let c = next(&mut p);
        assert_eq!(c.result.unwrap(), 3, "round {round}");
        // SAFETY: `fd` came from the accept above and is owned here; closing it directly
        // (not through the proactor) is the misuse under test.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn a_signal_interrupting_the_wait_is_a_normal_return() {
    if !in_child_process("a_signal_interrupting_the_wait_is_a_normal_return") {
        return;
    }
    // SAFETY: installs an async-signal-safe handler (it does nothing) without SA_RESTART,
    // so the wait is interrupted; `action` is fully initialised before the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as *const () as usize;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    let mut p = proactor();
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let start = Instant::now();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: `me` is the polling thread, alive until this thread is joined.
        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
    });
    p.poll(None).expect("EINTR is not an error");
    assert!(start.elapsed() < PATIENCE);
    assert!(p.pop().is_none());
    thread.join().unwrap();
}

#[test]
fn connect_and_multishot_recv_on_numbers_reused_behind_the_backends_back() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket2::SockAddr::from(listener.local_addr().unwrap());
    for round in 0..20 {
        // A fresh socket (likely the number the previous round dropped without telling the
        // proactor) connects, then receives through a multishot recv.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        p.push(op::Connect::new(socket.as_raw_fd(), addr.clone()), 1);
        assert_eq!(next(&mut p).result.unwrap(), 0, "round {round}");
        let (mut server, _) = listener.accept().unwrap();
        let id = p.push(op::RecvMulti::new(socket.as_raw_fd()), 2);
        assert_idle(&mut p);
        std::io::Write::write_all(&mut server, b"data").unwrap();
        let c = next(&mut p);
        assert_eq!(
            (c.id, c.more, c.result.unwrap()),
            (id, true, 4),
            "round {round}"
        );
        assert!(p.cancel(id));
        assert!(!next(&mut p).more);
        drop(socket); // closed behind the proactor's back: the misuse under test
    }
}

#[test]
fn a_signal_arrives_through_a_signalfd_read() {
    if !in_child_process("a_signal_arrives_through_a_signalfd_read") {
        return;
    }
    // SAFETY: `set` is initialised by sigemptyset before use; blocking SIGUSR2 on this
    // thread only affects this child process.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    assert!(sfd >= 0);
    let mut p = proactor();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    let id = p.push(op::Read::new(sfd, Vec::with_capacity(size)), 1);
    assert_idle(&mut p);
    // SAFETY: sends SIGUSR2 to this very thread, where it is blocked (so it stays pending
    // for the signalfd).
    let sent = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    assert_eq!(sent, 0);
    let c = next(&mut p);
    assert_eq!((c.id, c.result.unwrap() as usize), (id, size));
    let Some(op::Op::Read(read)) = c.op else {
        panic!("the read comes back")
    };
    // SAFETY: the kernel wrote one whole `signalfd_siginfo`; read_unaligned copes with the
    // Vec's byte alignment.
    let info: libc::signalfd_siginfo =
        unsafe { std::ptr::read_unaligned(read.buf.as_ptr().cast()) };
    assert_eq!(info.ssi_signo, libc::SIGUSR2 as u32);
    p.close_fd(sfd).unwrap();
}
