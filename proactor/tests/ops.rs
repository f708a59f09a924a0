//! Every op, on real fds: success paths, error paths, and that buffers come back with the
//! completion either way.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown as HowShutdown, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::{
    Accept, AcceptMulti, ChildExit, Close, Connect, Nop, PollAdd, Read, Readv, Recv, RecvMsg,
    RecvMulti, Send, SendMsg, Shutdown, Timeout, WaitId, Write, Writev,
};
use ringloop_proactor::{BackendKind, Op, Proactor};
use socket2::SockAddr;
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

#[test]
fn ops_nop_completes_with_zero_and_its_token() {
    let mut p = proactor();
    let id = p.push(Nop, 42);
    let done = next(&mut p);
    assert_eq!((done.token, done.id, done.more), (42, id, false));
    assert_eq!(done.result.unwrap(), 0);
    assert!(matches!(done.op, Some(Op::Nop(_))));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn ops_write_then_read_pipe_round_trips_bytes() {
    let mut p = proactor();
    let (r, w) = pipe();
    let done = run(&mut p, Write::new(w.as_raw_fd(), b"hello pipe".to_vec()));
    assert_eq!(done.result.unwrap(), 10);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b">>");
    let done = run(&mut p, Read::new(r.as_raw_fd(), buf));
    assert_eq!(done.result.unwrap(), 10);
    let Some(Op::Read(read)) = done.op else {
        panic!("read op not returned")
    };
    assert_eq!(
        read.buf, b">>hello pipe",
        "reads append to the buffer's spare capacity"
    );
}

#[test]
fn ops_read_waits_for_data_written_later() {
    let mut p = proactor();
    let (r, w) = pipe();
    let id = p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(16)), 1);
    p.poll(Some(Duration::from_millis(20))).unwrap();
    assert!(p.pop().is_none(), "nothing to read yet");
    nix::unistd::write(&w, b"late").unwrap();
    let (_, done) = finish(&mut p, id);
    assert_eq!(done.result.unwrap(), 4);
}

#[test]
fn ops_pread_pwrite_use_offsets() {
    let mut p = proactor();
    let file = temp_file(b"0123456789");
    let fd = file.as_raw_fd();
    let mut write = Write::new(fd, b"AB".to_vec());
    write.offset = Some(3);
    assert_eq!(run(&mut p, write).result.unwrap(), 2);
    let done = run(&mut p, Read::at(fd, Vec::with_capacity(4), 2));
    assert_eq!(done.result.unwrap(), 4);
    let Some(Op::Read(read)) = done.op else {
        panic!()
    };
    assert_eq!(read.buf, b"2AB5");
}

#[test]
fn ops_write_skips_bytes_before_start() {
    let mut p = proactor();
    let (r, w) = pipe();
    let mut write = Write::new(w.as_raw_fd(), b"skipKEEP".to_vec());
    write.start = 4;
    assert_eq!(run(&mut p, write).result.unwrap(), 4);
    let mut got = [0u8; 8];
    let n = nix::unistd::read(&r, &mut got).unwrap();
    assert_eq!(&got[..n], b"KEEP");
}

#[test]
fn ops_readv_writev_scatter_and_gather() {
    let mut p = proactor();
    let (r, w) = pipe();
    let mut writev = Writev::new(
        w.as_raw_fd(),
        vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec()],
    );
    writev.start = 1;
    assert_eq!(run(&mut p, writev).result.unwrap(), 7);
    let bufs = vec![Vec::with_capacity(2), Vec::with_capacity(10)];
    let done = run(&mut p, Readv::new(r.as_raw_fd(), bufs));
    assert_eq!(done.result.unwrap(), 7);
    let Some(Op::Readv(readv)) = done.op else {
        panic!()
    };
    assert_eq!(readv.bufs[0], b"bc");
    assert_eq!(readv.bufs[1], b"defgh");
}

#[test]
fn ops_read_on_closed_fd_is_ebadf_and_returns_the_buffer() {
    // In a child: another test thread could reuse the closed fd's number.
    if !isolate("ops_read_on_closed_fd_is_ebadf_and_returns_the_buffer", &[]) {
        return;
    }
    let mut p = proactor();
    let (r, _w) = pipe();
    let raw = r.into_raw_fd();
    // SAFETY: we own `raw` and close it once.
    unsafe { libc::close(raw) };
    let done = run(&mut p, Read::new(raw, Vec::with_capacity(123)));
    assert_eq!(errno(&done), Some(libc::EBADF));
    let Some(Op::Read(read)) = done.op else {
        panic!("buffer lost on error")
    };
    assert_eq!(read.buf.capacity(), 123);
}

#[test]
fn ops_write_to_pipe_without_reader_is_epipe() {
    let mut p = proactor();
    let (r, w) = pipe();
    drop(r);
    let done = run(&mut p, Write::new(w.as_raw_fd(), b"x".to_vec()));
    assert_eq!(errno(&done), Some(libc::EPIPE));
}

#[test]
fn ops_send_recv_over_tcp() {
    let mut p = proactor();
    let (server, client) = tcp_pair();
    let id = p.push(Recv::new(fd(&server), Vec::with_capacity(100)), 0);
    let sent = run_other(&mut p, Send::new(fd(&client), b"ping".to_vec()), id);
    assert_eq!(sent.result.unwrap(), 4);
    let (_, done) = finish(&mut p, id);
    assert_eq!(done.result.unwrap(), 4);
    let Some(Op::Recv(recv)) = done.op else {
        panic!()
    };
    assert_eq!(recv.buf, b"ping");
}

/// Runs `op` to completion while `pending` is also in flight (its completions are not
/// expected yet, but may arrive: they are handed back).
fn run_other(
    p: &mut Proactor,
    op: impl Into<Op>,
    pending: ringloop_proactor::OpId,
) -> ringloop_proactor::Completion {
    let id = p.push(op, 0);
    let mut early = Vec::new();
    loop {
        let done = next(p);
        if done.id == id {
            assert!(
                early.is_empty()
                    || early
                        .iter()
                        .all(|c: &ringloop_proactor::Completion| c.id == pending)
            );
            // Put nothing back: callers only use this when `pending` cannot finish first.
            assert!(early.is_empty(), "pending op finished first: {early:?}");
            return done;
        }
        early.push(done);
    }
}

#[test]
fn ops_recv_at_eof_is_zero() {
    let mut p = proactor();
    let (server, client) = tcp_pair();
    drop(client);
    let done = run(&mut p, Recv::new(fd(&server), Vec::with_capacity(8)));
    assert_eq!(done.result.unwrap(), 0);
}

#[test]
fn ops_send_to_closed_peer_fails_without_sigpipe() {
    let mut p = proactor();
    let (server, client) = tcp_pair();
    drop(client);
    // The first send may be accepted before the peer's RST arrives; keep sending.
    let mut last = None;
    for _ in 0..50 {
        let done = run(&mut p, Send::new(fd(&server), vec![0; 1024]));
        if let Some(e) = errno(&done) {
            last = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = last.expect("sending to a closed peer never failed");
    assert!(e == libc::EPIPE || e == libc::ECONNRESET, "errno {e}");
}

#[test]
fn ops_sendmsg_recvmsg_udp_carry_addresses() {
    let mut p = proactor();
    let a = udp();
    let b = udp();
    let b_addr = SockAddr::from(b.local_addr().unwrap());
    let id = p.push(RecvMsg::new(fd(&b), Vec::with_capacity(64)), 0);
    let send = SendMsg::new(fd(&a), vec![b"hel".to_vec(), b"lo".to_vec()], Some(&b_addr));
    assert_eq!(run_other(&mut p, send, id).result.unwrap(), 5);
    let (_, done) = finish(&mut p, id);
    assert_eq!(done.result.unwrap(), 5);
    let Some(Op::RecvMsg(msg)) = done.op else {
        panic!()
    };
    assert_eq!(msg.buf, b"hello");
    assert!(!msg.truncated());
    let peer = msg
        .peer()
        .and_then(|a| a.as_socket())
        .expect("sender address");
    assert_eq!(peer, a.local_addr().unwrap());
}

#[test]
fn ops_recvmsg_reports_truncated_datagram() {
    let mut p = proactor();
    let a = udp();
    let b = udp();
    a.send_to(b"0123456789", b.local_addr().unwrap()).unwrap();
    let done = run(&mut p, RecvMsg::new(fd(&b), Vec::with_capacity(4)));
    assert_eq!(done.result.unwrap(), 4);
    let Some(Op::RecvMsg(msg)) = done.op else {
        panic!()
    };
    assert_eq!(msg.buf, b"0123");
    assert!(msg.truncated());
}

#[test]
fn ops_sendmsg_to_unreachable_address_fails() {
    let mut p = proactor();
    let a = udp();
    // An IPv6 destination on an IPv4 socket is rejected.
    let dest = SockAddr::from("[::1]:9".parse::<std::net::SocketAddr>().unwrap());
    let done = run(
        &mut p,
        SendMsg::new(fd(&a), vec![b"x".to_vec()], Some(&dest)),
    );
    assert!(done.result.is_err(), "{done:?}");
}

#[test]
fn ops_accept_returns_fd_and_peer_address() {
    let mut p = proactor();
    let listener = listener();
    let id = p.push(Accept::new(fd(&listener)), 0);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_, done) = finish(&mut p, id);
    let new_fd = done.result.unwrap() as i32;
    assert!(fd_is_open(new_fd));
    let Some(Op::Accept(accept)) = done.op else {
        panic!()
    };
    let peer = accept.peer().and_then(|a| a.as_socket()).expect("peer");
    assert_eq!(peer, client.local_addr().unwrap());
    p.close_fd(new_fd).unwrap();
}

#[test]
fn ops_accept_on_unlistening_socket_fails() {
    let mut p = proactor();
    let sock = tcp_socket();
    let done = run(&mut p, Accept::new(sock.as_raw_fd()));
    assert_eq!(errno(&done), Some(libc::EINVAL));
}

#[test]
fn ops_accept_multi_yields_each_connection() {
    let mut p = proactor();
    let listener = listener();
    let id = p.push(AcceptMulti::new(fd(&listener)), 9);
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
        .collect();
    let mut fds = Vec::new();
    while fds.len() < 3 {
        let done = next(&mut p);
        assert_eq!((done.id, done.token), (id, 9));
        assert!(done.more, "accept multishot ended early: {done:?}");
        fds.push(done.result.unwrap() as i32);
    }
    assert!(p.cancel(id));
    let (events, done) = finish(&mut p, id);
    assert!(events.is_empty());
    assert_eq!(errno(&done), Some(libc::ECANCELED));
    for fd in fds {
        p.close_fd(fd).unwrap();
    }
    drop(clients);
}

#[test]
fn ops_connect_succeeds_and_refused_fails() {
    let mut p = proactor();
    let listener = listener();
    let sock = tcp_socket();
    let addr = SockAddr::from(listener.local_addr().unwrap());
    assert_eq!(
        run(&mut p, Connect::new(sock.as_raw_fd(), addr))
            .result
            .unwrap(),
        0
    );
    assert!(sock.peer_addr().is_ok());

    let sock = tcp_socket();
    let done = run(
        &mut p,
        Connect::new(sock.as_raw_fd(), SockAddr::from(refused_addr())),
    );
    assert_eq!(errno(&done), Some(libc::ECONNREFUSED));
}

#[test]
fn ops_shutdown_write_gives_peer_eof() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let done = run(&mut p, Shutdown::new(fd(&server), HowShutdown::Write));
    assert_eq!(done.result.unwrap(), 0);
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(client.read(&mut buf).unwrap(), 0);
}

#[test]
fn ops_shutdown_on_a_pipe_is_enotsock() {
    let mut p = proactor();
    let (r, _w) = pipe();
    let done = run(&mut p, Shutdown::new(r.as_raw_fd(), HowShutdown::Both));
    assert_eq!(errno(&done), Some(libc::ENOTSOCK));
}

#[test]
fn ops_close_releases_fd_and_bad_fd_is_ebadf() {
    // In a child: another test thread could reuse the closed fd's number.
    if !isolate("ops_close_releases_fd_and_bad_fd_is_ebadf", &[]) {
        return;
    }
    let mut p = proactor();
    let (r, _w) = pipe();
    let raw = r.into_raw_fd();
    assert_eq!(run(&mut p, Close::new(raw)).result.unwrap(), 0);
    assert!(!fd_is_open(raw));
    let done = run(&mut p, Close::new(raw));
    assert_eq!(errno(&done), Some(libc::EBADF));
}

#[test]
fn ops_timeout_expires_with_ok_after_its_duration() {
    let mut p = proactor();
    let start = Instant::now();
    let done = run(&mut p, Timeout::new(Duration::from_millis(30)));
    assert_eq!(done.result.unwrap(), 0);
    assert!(start.elapsed() >= Duration::from_millis(29));
}

#[test]
fn ops_poll_reports_readiness() {
    let mut p = proactor();
    let (r, w) = pipe();
    let id = p.push(PollAdd::new(r.as_raw_fd(), libc::POLLIN as u32), 0);
    p.poll(Some(Duration::from_millis(10))).unwrap();
    assert!(p.pop().is_none(), "not readable yet");
    nix::unistd::write(&w, b"!").unwrap();
    let (_, done) = finish(&mut p, id);
    assert_ne!(done.result.unwrap() & libc::POLLIN as u32, 0);
}

#[test]
fn ops_poll_multishot_reports_each_edge_until_cancelled() {
    let mut p = proactor();
    let (r, w) = pipe();
    let id = p.push(PollAdd::multishot(r.as_raw_fd(), libc::POLLIN as u32), 0);
    let mut scratch = [0u8; 8];
    for round in 0..3 {
        nix::unistd::write(&w, b"x").unwrap();
        let done = next(&mut p);
        assert_eq!(done.id, id);
        assert!(done.more, "round {round}: poll ended: {done:?}");
        assert_ne!(done.result.unwrap() & libc::POLLIN as u32, 0);
        nix::unistd::read(&r, &mut scratch).unwrap();
        // Let any duplicate edge arrive before the next write.
        for extra in settle(&mut p) {
            assert!(extra.more && extra.id == id, "{extra:?}");
        }
    }
    assert!(p.cancel(id));
    let (_, done) = finish(&mut p, id);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
}

#[test]
#[allow(clippy::zombie_processes)] // The WaitId op reaps the child.
fn ops_waitid_reaps_exit_status() {
    let mut p = proactor();
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let done = run(&mut p, WaitId::new(child.id() as i32));
    assert_eq!(done.result.unwrap(), 0);
    let Some(Op::WaitId(wait)) = done.op else {
        panic!()
    };
    assert_eq!(wait.exit(), Some(ChildExit::Exited(7)));
    // Reaped: the pid is gone.
    assert_eq!(
        nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG)
        )
        .unwrap_err(),
        nix::errno::Errno::ECHILD
    );
}

#[test]
#[allow(clippy::zombie_processes)] // The WaitId op reaps the child.
fn ops_waitid_reports_killing_signal() {
    let mut p = proactor();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let id = p.push(WaitId::new(child.id() as i32), 0);
    p.poll(Some(Duration::from_millis(10))).unwrap();
    assert!(p.pop().is_none(), "child still running");
    child.kill().unwrap();
    let (_, done) = finish(&mut p, id);
    assert_eq!(done.result.unwrap(), 0);
    let Some(Op::WaitId(wait)) = done.op else {
        panic!()
    };
    assert_eq!(wait.exit(), Some(ChildExit::Signaled(libc::SIGKILL)));
    assert_eq!(wait.exit().unwrap().returncode(), -9);
}

#[test]
fn ops_waitid_on_a_non_child_is_echild() {
    let mut p = proactor();
    let done = run(&mut p, WaitId::new(1));
    assert_eq!(errno(&done), Some(libc::ECHILD));
    let done = run(&mut p, WaitId::new(i32::MAX - 7));
    assert_eq!(errno(&done), Some(libc::ECHILD));
}

#[test]
fn ops_recv_multi_streams_chunks_until_eof() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 5);
    let data = pattern(100_000);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(7000) {
                client.write_all(chunk).unwrap();
            }
        })
    };
    let mut got = Vec::new();
    let mut finished = None;
    while finished.is_none() {
        let done = next(&mut p);
        assert_eq!((done.id, done.token), (id, 5));
        if done.more {
            let buf = done.buf.expect("a chunk without data");
            assert_eq!(buf.len() as u32, done.result.unwrap());
            got.extend_from_slice(&buf);
        } else {
            finished = Some(done);
        }
        if got.len() == data.len() && writer.is_finished() {
            break;
        }
    }
    writer.join().unwrap();
    // The writer dropped its stream: the multishot ends with EOF.
    let done = match finished {
        Some(done) => done,
        None => finish(&mut p, id).1,
    };
    assert_eq!(done.result.as_ref().ok(), Some(&0), "{done:?}");
    assert_eq!(got, data);
}

#[test]
fn ops_waker_interrupts_a_blocking_poll() {
    let mut p = proactor();
    let waker = p.waker();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake();
    });
    p.poll(None).unwrap();
    assert!(start.elapsed() < DEADLINE);
    assert!(p.pop().is_none(), "a wake-up is not a completion");
    t.join().unwrap();
    // The wake-up read is re-armed: a second wake-up works too.
    let waker = p.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    p.poll(None).unwrap();
    t.join().unwrap();
}

#[test]
fn ops_poll_with_zero_timeout_never_blocks() {
    let mut p = proactor();
    let (r, _w) = pipe();
    p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(4)), 0);
    let start = Instant::now();
    for _ in 0..100 {
        p.poll(Some(Duration::ZERO)).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    let start = Instant::now();
    p.poll(Some(Duration::from_millis(30))).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(25),
        "the timeout was not waited"
    );
    assert_eq!(p.in_flight(), 1);
}

#[test]
fn ops_poll_with_a_timeout_never_returns_early() {
    // semantics 43 at the proactor: the wait (absolute deadline with ABS_TIMER, a relative
    // timeout otherwise, a timeout SQE before EXT_ARG) lasts at least what was asked, with
    // and without a pending op in the ring.
    let mut p = proactor();
    let (r, _w) = pipe();
    for pending in [false, true] {
        if pending {
            p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(4)), 0);
        }
        assert_polls_never_early(&mut p);
    }
}

#[test]
fn ops_zero_timeout_poll_still_reaps_completions() {
    // With DEFER_TASKRUN, completions are posted only when the poll enters with GETEVENTS.
    let mut p = proactor();
    let (r, w) = pipe();
    let id = p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(4)), 0);
    p.poll(Some(Duration::ZERO)).unwrap();
    nix::unistd::write(&w, b"abc").unwrap();
    let start = Instant::now();
    let done = loop {
        p.poll(Some(Duration::ZERO)).unwrap();
        if let Some(done) = p.pop() {
            break done;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "zero-timeout polls never reaped"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((done.id, done.result.unwrap()), (id, 3));
}

#[test]
fn ops_features_name_what_io_uring_uses() {
    let p = proactor();
    let features = p.features().clone();
    println!(
        "backend {}: {}",
        p.backend(),
        features.describe(p.backend())
    );
    if p.backend() == BackendKind::Epoll {
        assert_eq!(features.sq_entries, 0);
        return;
    }
    assert_eq!(features.sq_entries, 1024);
    assert!(features.cq_entries >= 2 * features.sq_entries);
    let names = features.names();
    assert_eq!(
        names.len(),
        features
            .to_string()
            .split(',')
            .filter(|s| !s.is_empty())
            .count()
    );
    require!(
        std::env::var("RINGLOOP_URING_DISABLE").is_err(),
        "io_uring features turned off by RINGLOOP_URING_DISABLE"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    require!(
        version >= (6, 7),
        "kernel older than 6.7 lacks some io_uring features"
    );
    // The kernel CI runs on has every feature.
    for name in [
        "single_issuer",
        "defer_taskrun",
        "submit_all",
        "registered_ring_fd",
        "ext_arg",
        "nodrop",
        "multishot_accept",
        "multishot_recv",
        "multishot_poll",
        "buf_ring",
        "waitid",
        "shutdown",
    ] {
        assert!(
            names.contains(&name),
            "{name} missing on {release}: {names:?}"
        );
    }
    // IORING_ENTER_ABS_TIMER: 6.12.
    assert_eq!(
        names.contains(&"abs_timer"),
        version >= (6, 12),
        "abs_timer on {release}: {names:?}"
    );
}

#[test]
fn ops_builder_sizes_the_rings() {
    let p = Proactor::builder().entries(4).build().unwrap();
    if is_uring(&p) {
        assert_eq!(p.features().sq_entries, 4);
        assert_eq!(p.features().cq_entries, 8);
    }
}

#[test]
fn ops_error_paths_report_errno_and_return_buffers() {
    let mut p = proactor();
    let (r, w) = pipe();
    // Wrong ends of a pipe, a socket op on a pipe, and an fd that is never valid.
    let done = run(
        &mut p,
        Readv::new(w.as_raw_fd(), vec![Vec::with_capacity(8)]),
    );
    assert_eq!(errno(&done), Some(libc::EBADF));
    let Some(Op::Readv(readv)) = done.op else {
        panic!()
    };
    assert_eq!(readv.bufs[0].capacity(), 8);
    let done = run(&mut p, Writev::new(r.as_raw_fd(), vec![b"x".to_vec()]));
    assert_eq!(errno(&done), Some(libc::EBADF));
    let done = run(&mut p, Recv::new(r.as_raw_fd(), Vec::with_capacity(8)));
    assert_eq!(errno(&done), Some(libc::ENOTSOCK));
    let done = run(&mut p, RecvMsg::new(r.as_raw_fd(), Vec::with_capacity(8)));
    assert_eq!(errno(&done), Some(libc::ENOTSOCK));
    let Some(Op::RecvMsg(msg)) = done.op else {
        panic!()
    };
    assert_eq!(msg.buf.capacity(), 8);
    let done = run(&mut p, Send::new(-1, b"x".to_vec()));
    assert_eq!(errno(&done), Some(libc::EBADF));
    let done = run(&mut p, PollAdd::new(-1, libc::POLLIN as u32));
    assert_eq!(errno(&done), Some(libc::EBADF));
    let done = run(&mut p, Write::new(-1, b"x".to_vec()));
    assert_eq!(errno(&done), Some(libc::EBADF));
    let done = run(
        &mut p,
        Connect::new(r.as_raw_fd(), SockAddr::from(refused_addr())),
    );
    assert_eq!(errno(&done), Some(libc::ENOTSOCK));
    // Multishot ops end with their error as the final completion.
    let (events, done) = {
        let id = p.push(RecvMulti::new(r.as_raw_fd()), 0);
        finish(&mut p, id)
    };
    assert!(events.is_empty());
    assert_eq!(errno(&done), Some(libc::ENOTSOCK));
    let sock = tcp_socket();
    let (events, done) = {
        let id = p.push(AcceptMulti::new(sock.as_raw_fd()), 0);
        finish(&mut p, id)
    };
    assert!(events.is_empty());
    assert_eq!(errno(&done), Some(libc::EINVAL));
    assert_eq!(p.in_flight(), 0);
}

/// Compile-time check that `T` is not `Send` (ambiguous impls if it is).
trait AmbiguousIfSend<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + std::marker::Send> AmbiguousIfSend<u8> for T {}

#[test]
fn ops_proactor_stays_on_its_thread_and_the_waker_travels() {
    fn send_sync<T: std::marker::Send + Sync>() {}
    send_sync::<ringloop_proactor::Waker>();
    send_sync::<std::sync::Arc<ringloop_proactor::Waker>>();
    // Fails to compile (type annotations needed) if `Proactor` were `Send`.
    <Proactor as AmbiguousIfSend<_>>::check();
}

#[test]
fn ops_accept_at_the_fd_limit_fails_with_emfile_and_keeps_the_connection() {
    // In a child: it lowers RLIMIT_NOFILE for the whole process.
    if !isolate(
        "ops_accept_at_the_fd_limit_fails_with_emfile_and_keeps_the_connection",
        &[],
    ) {
        return;
    }
    let mut p = proactor();
    let listener = listener();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on live structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let low = libc::rlimit {
            rlim_cur: highest + 1,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    // Fill the holes below the limit.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let done = run(&mut p, Accept::new(fd(&listener)));
    assert_eq!(errno(&done), Some(libc::EMFILE));
    drop(fillers);
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0) };
    // The connection waited on the listener: the next accept gets it.
    let done = run(&mut p, Accept::new(fd(&listener)));
    let new_fd = done.result.unwrap() as i32;
    let Some(Op::Accept(accept)) = done.op else {
        panic!()
    };
    assert_eq!(
        accept.peer().and_then(|a| a.as_socket()),
        Some(client.local_addr().unwrap())
    );
    p.close_fd(new_fd).unwrap();
}
