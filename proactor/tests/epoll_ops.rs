//! Every op on the epoll backend, success and error paths, on real pipes, loopback sockets,
//! files and child processes. Results must be exactly what the syscall (and io_uring)
//! reports.

mod epoll_util;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use epoll_util::*;
use ringloop_proactor::op::{self, ChildExit, Op};
use socket2::{Domain, SockAddr, Socket, Type};

fn errno_of(c: &ringloop_proactor::Completion) -> i32 {
    match &c.result {
        Err(e) => e.raw_os_error().expect("an OS error"),
        Ok(v) => panic!("expected an error, got Ok({v})"),
    }
}

#[test]
fn nop_completes_at_once_with_zero() {
    let mut p = proactor();
    let id = p.push(op::Nop, 9);
    let c = next(&mut p);
    assert_eq!(
        (c.token, c.id, c.result.unwrap(), c.more),
        (9, id, 0, false)
    );
    assert!(matches!(c.op, Some(Op::Nop(_))));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn read_parks_on_an_empty_pipe_until_data_arrives() {
    let mut p = proactor();
    let (r, w) = pipe();
    let id = p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(64)), 1);
    assert_idle(&mut p);
    assert_eq!(p.in_flight(), 1);
    write_all(w.as_raw_fd(), b"hello");
    let c = next(&mut p);
    assert_eq!(
        (c.token, c.id, c.result.unwrap(), c.more),
        (1, id, 5, false)
    );
    let Some(Op::Read(read)) = c.op else {
        panic!("a read comes back")
    };
    assert_eq!(read.buf, b"hello");
}

#[test]
fn read_of_a_closed_writer_is_end_of_file_and_bad_fds_are_ebadf() {
    let mut p = proactor();
    let (r, w) = pipe();
    drop(w);
    p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(8)), 1);
    assert_eq!(next(&mut p).result.unwrap(), 0);
    p.push(op::Read::new(-1, Vec::with_capacity(8)), 2);
    assert_eq!(errno_of(&next(&mut p)), libc::EBADF);
    let (_r, w) = pipe();
    p.push(op::Read::new(w.as_raw_fd(), Vec::with_capacity(8)), 3);
    assert_eq!(
        errno_of(&next(&mut p)),
        libc::EBADF,
        "reading a write end is EBADF, as read(2) says"
    );
}

#[test]
fn write_to_a_pipe_and_epipe_once_the_reader_is_gone() {
    let mut p = proactor();
    let (r, w) = pipe();
    let mut write = op::Write::new(w.as_raw_fd(), b"xxhello".to_vec());
    write.start = 2;
    p.push(write, 1);
    let c = next(&mut p);
    assert_eq!(c.result.unwrap(), 5);
    assert_eq!(read_exact(r.as_raw_fd(), 5), b"hello");
    drop(r);
    p.push(op::Write::new(w.as_raw_fd(), b"lost".to_vec()), 2);
    assert_eq!(errno_of(&next(&mut p)), libc::EPIPE);
}

#[test]
fn write_parks_on_a_full_pipe_and_completes_when_it_drains() {
    let mut p = proactor();
    let (r, w) = pipe();
    // The first write fills the pipe (a short count, as on any non-blocking pipe).
    p.push(op::Write::new(w.as_raw_fd(), vec![1; 1 << 20]), 1);
    let first = next(&mut p).result.unwrap() as usize;
    assert!(first > 0 && first < 1 << 20, "wrote {first}");
    p.push(op::Write::new(w.as_raw_fd(), b"tail".to_vec()), 2);
    assert_idle(&mut p);
    assert_eq!(read_exact(r.as_raw_fd(), first), vec![1; first]);
    let c = next(&mut p);
    assert_eq!((c.token, c.result.unwrap()), (2, 4));
    assert_eq!(read_exact(r.as_raw_fd(), 4), b"tail");
}

#[test]
fn readv_and_writev_move_several_buffers_in_order() {
    let mut p = proactor();
    let (r, w) = pipe();
    let mut writev = op::Writev::new(
        w.as_raw_fd(),
        vec![b"ab".to_vec(), Vec::new(), b"cdef".to_vec()],
    );
    writev.start = 1;
    p.push(writev, 1);
    assert_eq!(next(&mut p).result.unwrap(), 5);
    p.push(
        op::Readv::new(
            r.as_raw_fd(),
            vec![Vec::with_capacity(2), Vec::with_capacity(8)],
        ),
        2,
    );
    let c = next(&mut p);
    assert_eq!(c.result.unwrap(), 5);
    let Some(Op::Readv(readv)) = c.op else {
        panic!("a readv comes back")
    };
    assert_eq!(readv.bufs, [b"bc".to_vec(), b"def".to_vec()]);
}

#[test]
fn regular_files_are_read_and_written_synchronously_at_offsets() {
    let path = std::env::temp_dir().join(format!("ringloop-epoll-{}.dat", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut p = proactor();
    p.push(op::Write::new(file.as_raw_fd(), b"0123456789".to_vec()), 1);
    assert_eq!(next(&mut p).result.unwrap(), 10);
    let mut at = op::Write::new(file.as_raw_fd(), b"AB".to_vec());
    at.offset = Some(3);
    p.push(at, 2);
    assert_eq!(next(&mut p).result.unwrap(), 2);
    p.push(op::Read::at(file.as_raw_fd(), Vec::with_capacity(4), 2), 3);
    let c = next(&mut p);
    let Some(Op::Read(read)) = c.op else {
        panic!("a read comes back")
    };
    assert_eq!(read.buf, b"2AB5");
    // Past the end: end of file, at once (files are always "ready").
    p.push(
        op::Read::at(file.as_raw_fd(), Vec::with_capacity(4), 100),
        4,
    );
    assert_eq!(next(&mut p).result.unwrap(), 0);
    // Polling a regular file reports it ready at once.
    p.push(op::PollAdd::new(file.as_raw_fd(), libc::POLLIN as u32), 5);
    let c = next(&mut p);
    assert_ne!(c.result.unwrap() & libc::POLLIN as u32, 0);
}

#[test]
fn recv_and_send_on_loopback_tcp() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    p.push(op::Send::new(client.as_raw_fd(), b"ping".to_vec()), 1);
    assert_eq!(next(&mut p).result.unwrap(), 4);
    let mut got = [0; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    let id = p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(16)), 2);
    assert_idle(&mut p);
    server.write_all(b"pong").unwrap();
    let c = next(&mut p);
    assert_eq!((c.id, c.result.as_ref().unwrap()), (id, &4));
    let Some(Op::Recv(recv)) = c.op else {
        panic!("a recv comes back")
    };
    assert_eq!(recv.buf, b"pong");

    drop(server);
    p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(16)), 3);
    assert_eq!(next(&mut p).result.unwrap(), 0, "end of stream");
}

#[test]
fn send_after_shutdown_is_epipe_and_recv_on_a_pipe_is_enotsock() {
    let mut p = proactor();
    let (client, _server) = tcp_pair();
    client.shutdown(Shutdown::Write).unwrap();
    p.push(op::Send::new(client.as_raw_fd(), b"late".to_vec()), 1);
    assert_eq!(errno_of(&next(&mut p)), libc::EPIPE);
    let (r, _w) = pipe();
    p.push(op::Recv::new(r.as_raw_fd(), Vec::with_capacity(4)), 2);
    assert_eq!(errno_of(&next(&mut p)), libc::ENOTSOCK);
}

#[test]
fn send_to_a_reset_connection_fails_with_econnreset_or_epipe() {
    let mut p = proactor();
    let (client, server) = tcp_pair();
    let server = Socket::from(server);
    server.set_linger(Some(Duration::ZERO)).unwrap();
    drop(server); // RST
    let id = p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(4)), 1);
    let c = next(&mut p);
    assert_eq!(c.id, id);
    assert_eq!(errno_of(&c), libc::ECONNRESET);
    p.push(op::Send::new(client.as_raw_fd(), b"x".to_vec()), 2);
    let errno = errno_of(&next(&mut p));
    assert!(errno == libc::EPIPE || errno == libc::ECONNRESET, "{errno}");
}

#[test]
fn sendmsg_and_recvmsg_carry_datagrams_and_addresses() {
    let mut p = proactor();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = SockAddr::from(b.local_addr().unwrap());

    let recv_id = p.push(op::RecvMsg::new(b.as_raw_fd(), Vec::with_capacity(16)), 1);
    assert_idle(&mut p);
    let send = op::SendMsg::new(
        a.as_raw_fd(),
        vec![b"da".to_vec(), b"ta".to_vec()],
        Some(&b_addr),
    );
    p.push(send, 2);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let c = next(&mut p);
        seen.push(c.token);
        if c.id == recv_id {
            assert_eq!(c.result.unwrap(), 4);
            let Some(Op::RecvMsg(msg)) = c.op else {
                panic!("a recvmsg comes back")
            };
            assert_eq!(msg.buf, b"data");
            assert_eq!(
                msg.peer().and_then(|a| a.as_socket()),
                Some(a.local_addr().unwrap())
            );
            assert!(!msg.truncated());
        } else {
            assert_eq!(c.result.unwrap(), 4);
        }
    }
    seen.sort();
    assert_eq!(seen, [1, 2]);

    // A datagram longer than the buffer is truncated, and says so.
    a.send_to(b"0123456789", b.local_addr().unwrap()).unwrap();
    p.push(op::RecvMsg::new(b.as_raw_fd(), Vec::with_capacity(4)), 3);
    let c = next(&mut p);
    assert_eq!(c.result.unwrap(), 4);
    let Some(Op::RecvMsg(msg)) = c.op else {
        panic!("a recvmsg comes back")
    };
    assert_eq!((msg.buf.as_slice(), msg.truncated()), (&b"0123"[..], true));

    // Sending without a destination on an unconnected socket fails as sendmsg(2) does.
    p.push(
        op::SendMsg::new(a.as_raw_fd(), vec![b"x".to_vec()], None),
        4,
    );
    assert_eq!(errno_of(&next(&mut p)), libc::EDESTADDRREQ);
}

#[test]
fn accept_parks_until_a_client_connects_and_reports_its_address() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = p.push(op::Accept::new(listener.as_raw_fd()), 1);
    assert_idle(&mut p);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = next(&mut p);
    assert_eq!(c.id, id);
    let fd = c.result.unwrap() as i32;
    let Some(Op::Accept(accept)) = c.op else {
        panic!("an accept comes back")
    };
    assert_eq!(
        accept.peer().and_then(|a| a.as_socket()),
        Some(client.local_addr().unwrap())
    );
    // The new fd is non-blocking and close-on-exec, as asked.
    // SAFETY: F_GETFL/F_GETFD take no pointers.
    let (fl, fdfl) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
    p.close_fd(fd).unwrap();
}

#[test]
fn accept_on_a_socket_that_does_not_listen_is_einval() {
    let mut p = proactor();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    p.push(op::Accept::new(socket.as_raw_fd()), 1);
    assert_eq!(errno_of(&next(&mut p)), libc::EINVAL);
}

#[test]
fn connect_succeeds_on_blocking_and_non_blocking_sockets() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = SockAddr::from(listener.local_addr().unwrap());
    for nonblocking in [false, true] {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_nonblocking(nonblocking).unwrap();
        p.push(op::Connect::new(socket.as_raw_fd(), addr.clone()), 1);
        let c = next(&mut p);
        assert_eq!(c.result.unwrap(), 0, "nonblocking={nonblocking}");
        let (mut accepted, _) = listener.accept().unwrap();
        // A send pushed right after works on the connected socket.
        p.push(op::Send::new(socket.as_raw_fd(), b"hi".to_vec()), 2);
        assert_eq!(next(&mut p).result.unwrap(), 2);
        let mut got = [0; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        p.close_fd(socket.into_raw_fd()).unwrap();
    }
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let mut p = proactor();
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        SockAddr::from(listener.local_addr().unwrap())
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    p.push(op::Connect::new(socket.as_raw_fd(), addr), 1);
    assert_eq!(errno_of(&next(&mut p)), libc::ECONNREFUSED);
}

#[test]
fn connect_with_a_send_queued_behind_it_sends_after_connecting() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = SockAddr::from(listener.local_addr().unwrap());
    let connect = p.push(op::Connect::new(socket.as_raw_fd(), addr), 1);
    let send = p.push(op::Send::new(socket.as_raw_fd(), b"after".to_vec()), 2);
    let first = next(&mut p);
    let second = next(&mut p);
    assert_eq!((first.id, second.id), (connect, send));
    assert_eq!((first.result.unwrap(), second.result.unwrap()), (0, 5));
    let (mut accepted, _) = listener.accept().unwrap();
    let mut got = [0; 5];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after");
}

#[test]
fn shutdown_ends_the_peers_stream_and_fails_on_a_pipe() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    p.push(op::Shutdown::new(client.as_raw_fd(), Shutdown::Write), 1);
    assert_eq!(next(&mut p).result.unwrap(), 0);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let (r, _w) = pipe();
    p.push(op::Shutdown::new(r.as_raw_fd(), Shutdown::Both), 2);
    assert_eq!(errno_of(&next(&mut p)), libc::ENOTSOCK);
}

#[test]
fn close_closes_and_a_bad_fd_is_ebadf() {
    let mut p = proactor();
    let (r, w) = pipe();
    // Register the read end first, so that close must also forget the registration.
    p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(4)), 1);
    write_all(w.as_raw_fd(), b"1");
    assert_eq!(next(&mut p).result.unwrap(), 1);
    p.push(op::Close::new(r.into_raw_fd()), 2);
    assert_eq!(next(&mut p).result.unwrap(), 0);
    // Writing now fails: the only read end is closed.
    p.push(op::Write::new(w.as_raw_fd(), b"x".to_vec()), 3);
    assert_eq!(errno_of(&next(&mut p)), libc::EPIPE);
    p.push(op::Close::new(-1), 4);
    assert_eq!(errno_of(&next(&mut p)), libc::EBADF);
}

#[test]
fn poll_reports_readiness_once_or_every_edge() {
    let mut p = proactor();
    let (r, w) = pipe();
    let pollin = libc::POLLIN as u32;
    p.push(op::PollAdd::new(r.as_raw_fd(), pollin), 1);
    assert_idle(&mut p);
    write_all(w.as_raw_fd(), b"a");
    let c = next(&mut p);
    assert_eq!((c.token, c.more), (1, false));
    assert_ne!(c.result.unwrap() & pollin, 0);
    // Already readable: a new poll completes at once (the edge was consumed before).
    p.push(op::PollAdd::new(r.as_raw_fd(), pollin), 2);
    assert_ne!(next(&mut p).result.unwrap() & pollin, 0);
    assert_eq!(read_exact(r.as_raw_fd(), 1), b"a");

    let id = p.push(op::PollAdd::multishot(r.as_raw_fd(), pollin), 3);
    assert_idle(&mut p);
    for round in 0..3 {
        write_all(w.as_raw_fd(), b"b");
        let c = next(&mut p);
        assert_eq!((c.id, c.more), (id, true), "round {round}");
        assert_ne!(c.result.unwrap() & pollin, 0);
        assert_eq!(read_exact(r.as_raw_fd(), 1), b"b");
    }
    assert_idle(&mut p);
    assert!(p.cancel(id));
    let c = next(&mut p);
    assert_eq!((c.id, c.more), (id, false));
    assert_eq!(errno_of(&c), libc::ECANCELED);
    // A hang-up is reported whatever was asked.
    p.push(op::PollAdd::new(r.as_raw_fd(), pollin), 4);
    assert_idle(&mut p);
    drop(w);
    assert_ne!(next(&mut p).result.unwrap() & libc::POLLHUP as u32, 0);
}

fn spawn(script: &str) -> std::process::Child {
    std::process::Command::new("sh")
        .args(["-c", script])
        .spawn()
        .expect("spawn sh")
}

#[test]
#[allow(clippy::zombie_processes)] // The WaitId ops under test reap the children.
fn waitid_reaps_a_child_that_exits_and_one_that_is_killed() {
    let mut p = proactor();
    let child = spawn("exit 3");
    p.push(op::WaitId::new(child.id() as i32), 1);
    let c = next(&mut p);
    assert_eq!(c.result.unwrap(), 0);
    let Some(Op::WaitId(wait)) = c.op else {
        panic!("a waitid comes back")
    };
    assert_eq!(wait.exit(), Some(ChildExit::Exited(3)));

    let mut sleeper = spawn("sleep 30");
    let id = p.push(op::WaitId::new(sleeper.id() as i32), 2);
    assert_idle(&mut p);
    sleeper.kill().unwrap();
    let c = next(&mut p);
    assert_eq!((c.id, c.result.as_ref().unwrap()), (id, &0));
    let Some(Op::WaitId(wait)) = c.op else {
        panic!("a waitid comes back")
    };
    assert_eq!(wait.exit(), Some(ChildExit::Signaled(libc::SIGKILL)));
    assert_eq!(wait.exit().map(ChildExit::returncode), Some(-9));
}

#[test]
fn waitid_for_a_process_that_is_not_a_child_is_echild() {
    let mut p = proactor();
    p.push(op::WaitId::new(1), 1);
    assert_eq!(errno_of(&next(&mut p)), libc::ECHILD);
    // No such process at all (above any pid_max).
    p.push(op::WaitId::new(0x3fff_fff0), 2);
    assert_eq!(errno_of(&next(&mut p)), libc::ECHILD);
}

#[test]
fn timeouts_are_never_early_and_fire_in_deadline_order() {
    let mut p = proactor();
    for micros in [1_000, 1_500, 5_000, 12_345] {
        let want = Duration::from_micros(micros);
        let start = Instant::now();
        p.push(op::Timeout::new(want), micros);
        let c = next(&mut p);
        let took = start.elapsed();
        assert_eq!((c.token, c.result.unwrap()), (micros, 0));
        assert!(took >= want, "timeout of {want:?} fired after {took:?}");
    }
    for (token, ms) in [(30, 30), (10, 10), (20, 20)] {
        p.push(op::Timeout::new(Duration::from_millis(ms)), token);
    }
    let order: Vec<u64> = (0..3).map(|_| next(&mut p).token).collect();
    assert_eq!(order, [10, 20, 30]);
}

#[test]
fn poll_with_a_timeout_waits_at_least_that_long() {
    let mut p = proactor();
    for micros in [500, 2_500, 15_000] {
        let want = Duration::from_micros(micros);
        let start = Instant::now();
        p.poll(Some(want)).unwrap();
        assert!(p.pop().is_none());
        assert!(start.elapsed() >= want, "poll({want:?}) returned early");
    }
}

#[test]
fn poll_reports_urgent_data_as_pollpri() {
    let mut p = proactor();
    let (client, server) = tcp_pair();
    let pollpri = libc::POLLPRI as u32;
    let id = p.push(op::PollAdd::new(server.as_raw_fd(), pollpri), 1);
    assert_idle(&mut p);
    // SAFETY: sends one byte from a live static buffer.
    let sent = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1);
    let c = next(&mut p);
    assert_eq!(c.id, id);
    assert_ne!(c.result.unwrap() & pollpri, 0);
}
