//! Multishot receive and accept on the epoll backend: one completion per chunk or
//! connection, buffers from the pool with an owned fallback when it runs dry, and exactly one
//! final completion.

mod epoll_util;

use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use epoll_util::*;
use ringloop_proactor::op;
use ringloop_proactor::RecvBuf;

#[test]
fn multishot_recv_survives_pool_exhaustion_with_every_byte_in_order() {
    // 4 buffers of 64 bytes; 256 KiB in flight; every chunk is held until the end, so the
    // pool is dry after the fourth chunk and the rest must arrive in owned buffers.
    let mut p = proactor_with_pool(4, 64);
    let (client, mut server) = tcp_pair();
    let data = pattern(256 * 1024);
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        for part in sent.chunks(4096) {
            server.write_all(part).unwrap();
        }
        server.shutdown(Shutdown::Write).unwrap();
        server
    });
    let id = p.push(op::RecvMulti::new(client.as_raw_fd()), 7);
    let mut held: Vec<RecvBuf> = Vec::new();
    loop {
        let c = next(&mut p);
        assert_eq!((c.id, c.token), (id, 7));
        let n = c.result.unwrap() as usize;
        if !c.more {
            assert_eq!(n, 0, "the final completion is end of stream");
            assert!(c.buf.is_none());
            break;
        }
        let chunk = c.buf.expect("a chunk with every `more` completion");
        assert_eq!(chunk.len(), n);
        assert!(n > 0 && n <= 64, "chunk of {n} bytes");
        held.push(chunk);
    }
    let got: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes arrived out of order or corrupted");
    assert!(held.len() > 4, "more chunks than buffers were held at once");
    assert_eq!(p.in_flight(), 0);
    drop(writer.join().unwrap());
}

#[test]
fn multishot_recv_recycles_buffers_dropped_by_the_consumer() {
    let mut p = proactor_with_pool(2, 64);
    let (client, mut server) = tcp_pair();
    let id = p.push(op::RecvMulti::new(client.as_raw_fd()), 1);
    let mut got = Vec::new();
    for round in 0..20u8 {
        server.write_all(&[round; 10]).unwrap();
        let c = next(&mut p);
        assert_eq!((c.id, c.more), (id, true));
        got.extend_from_slice(&c.buf.unwrap()); // dropped here: back to the pool
    }
    assert_eq!(got.len(), 200);
    assert!(got.chunks(10).enumerate().all(|(i, c)| c == [i as u8; 10]));
    drop(server);
    let c = next(&mut p);
    assert_eq!((c.more, c.result.unwrap()), (false, 0));
}

#[test]
fn multishot_recv_on_a_non_socket_ends_with_its_error() {
    let mut p = proactor();
    let (r, w) = pipe();
    write_all(w.as_raw_fd(), b"x");
    p.push(op::RecvMulti::new(r.as_raw_fd()), 1);
    let c = next(&mut p);
    assert!(!c.more);
    assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::ENOTSOCK));
}

#[test]
fn multishot_accept_yields_one_fd_per_connection_until_cancelled() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let id = p.push(op::AcceptMulti::new(listener.as_raw_fd()), 3);
    assert_idle(&mut p);
    let clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut fds = Vec::new();
    while fds.len() < clients.len() {
        let c = next(&mut p);
        assert_eq!((c.id, c.more), (id, true));
        fds.push(c.result.unwrap() as i32);
    }
    fds.sort_unstable();
    fds.dedup();
    assert_eq!(fds.len(), 5, "five distinct fds");
    assert!(p.cancel(id));
    let c = next(&mut p);
    assert_eq!((c.id, c.more), (id, false));
    assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    for fd in fds {
        p.close_fd(fd).unwrap();
    }
}

#[test]
fn multishot_accept_on_a_socket_that_does_not_listen_ends_with_einval() {
    let mut p = proactor();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    p.push(op::AcceptMulti::new(socket.as_raw_fd()), 1);
    let c = next(&mut p);
    assert!(!c.more);
    assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn multishot_accept_takes_a_backlog_larger_than_one_turn() {
    // More pending connections than one readiness turn takes (32): the op yields and
    // resumes on the next poll without waiting for a new edge.
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let id = p.push(op::AcceptMulti::new(listener.as_raw_fd()), 3);
    let mut fds = Vec::new();
    while fds.len() < clients.len() {
        let c = next(&mut p);
        assert_eq!((c.id, c.more), (id, true));
        fds.push(c.result.unwrap() as i32);
    }
    assert!(p.cancel(id));
    assert!(!next(&mut p).more);
    for fd in fds {
        p.close_fd(fd).unwrap();
    }
}

#[test]
fn more_ready_connections_than_one_wait_takes_are_all_served_without_blocking() {
    // One wait takes a bounded batch of events; the rest stay ready in the kernel and the
    // next non-blocking poll returns them (edge-triggered readiness is not lost).
    const CONNS: usize = 100;
    let mut p = proactor();
    let (pairs, ids) = receiving_pairs(&mut p, CONNS);
    for (_, server) in &pairs {
        (&*server).write_all(b"ping").unwrap();
    }
    // Loopback delivers at write: every client is readable before the first poll.
    let mut seen = [false; CONNS];
    let mut polls = 0;
    while seen.iter().any(|s| !s) {
        polls += 1;
        assert!(polls <= CONNS, "a non-blocking poll returned nothing new");
        p.poll(Some(std::time::Duration::ZERO)).expect("poll");
        while let Some(c) = p.pop() {
            assert!(c.more, "{c:?}");
            let conn = ids.iter().position(|&id| id == c.id).expect("one of ours");
            assert_eq!(c.buf.as_deref(), Some(&b"ping"[..]));
            assert!(!std::mem::replace(&mut seen[conn], true), "one chunk each");
        }
    }
    assert!(
        polls > 1,
        "one wait took every event: the batch bound is not exercised"
    );
}
