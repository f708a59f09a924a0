//! Cancelling and detaching ops in flight: the final completion still comes exactly once
//! (with `ECANCELED` or the real result), buffers come back, and fds produced after a
//! detach are closed.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::{Accept, AcceptMulti, Read, Recv, RecvMulti, Timeout, WaitId};
use ringloop_proactor::{Op, Proactor};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

/// Lets pushed ops reach the kernel (and block there).
fn submit(p: &mut Proactor) {
    p.poll(Some(Duration::from_millis(5))).unwrap();
    assert!(p.pop().is_none(), "nothing should have completed");
}

#[test]
fn cancel_inflight_recv_returns_ecanceled_and_the_buffer() {
    let mut p = proactor();
    let (server, _client) = tcp_pair();
    let id = p.push(Recv::new(fd(&server), Vec::with_capacity(77)), 3);
    submit(&mut p);
    assert!(p.cancel(id));
    assert!(!p.cancel(id), "a second cancel is a no-op");
    let (_, done) = finish(&mut p, id);
    assert_eq!(done.token, 3);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
    let Some(Op::Recv(recv)) = done.op else {
        panic!("buffer lost")
    };
    assert_eq!(recv.buf.capacity(), 77);
    assert!(!p.cancel(id), "cancel after completion is a no-op");
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn cancel_inflight_accept() {
    let mut p = proactor();
    let listener = listener();
    let id = p.push(Accept::new(fd(&listener)), 0);
    submit(&mut p);
    assert!(p.cancel(id));
    let (_, done) = finish(&mut p, id);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
}

#[test]
fn cancel_timeout_before_it_expires() {
    let mut p = proactor();
    let id = p.push(Timeout::new(Duration::from_secs(3600)), 0);
    submit(&mut p);
    assert!(p.cancel(id));
    let (_, done) = finish(&mut p, id);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
}

#[test]
fn cancel_waitid_leaves_the_child_to_reap() {
    let mut p = proactor();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let id = p.push(WaitId::new(child.id() as i32), 0);
    submit(&mut p);
    assert!(p.cancel(id));
    let (_, done) = finish(&mut p, id);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
    // The child was not reaped by the cancelled wait.
    child.kill().unwrap();
    assert!(child.wait().is_ok());
}

#[test]
fn cancel_recv_multi_ends_the_stream_after_delivered_chunks() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 0);
    client.write_all(b"before cancel").unwrap();
    let first = next(&mut p);
    assert!(first.more);
    assert_eq!(&*first.buf.unwrap(), b"before cancel");
    assert!(p.cancel(id));
    let (events, done) = finish(&mut p, id);
    assert!(events.iter().all(|e| e.buf.is_some()));
    assert_eq!(errno(&done), Some(libc::ECANCELED));
}

#[test]
fn cancel_of_an_op_that_already_finished_changes_nothing() {
    let mut p = proactor();
    let (r, w) = pipe();
    nix::unistd::write(&w, b"data").unwrap();
    let id = p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(8)), 0);
    // Let it complete in the kernel, then cancel before popping.
    std::thread::sleep(Duration::from_millis(5));
    p.poll(Some(Duration::ZERO)).unwrap();
    p.cancel(id);
    let (_, done) = finish(&mut p, id);
    assert_eq!(
        done.result.unwrap(),
        4,
        "the real result wins over a late cancel"
    );
}

#[test]
fn cancel_ops_still_queued_in_user_space() {
    // A ring of 4: the last pushes wait in the backlog and are cancelled there.
    let mut p = Proactor::builder().entries(4).build().unwrap();
    let pairs: Vec<_> = (0..12).map(|_| tcp_pair()).collect();
    let ids: Vec<_> = pairs
        .iter()
        .map(|(s, _)| p.push(Recv::new(fd(s), Vec::with_capacity(8)), 0))
        .collect();
    for &id in &ids[4..] {
        assert!(p.cancel(id));
    }
    for (_, client) in &pairs[..4] {
        (&*client).write_all(b"hi").unwrap();
    }
    let mut cancelled = 0;
    let mut received = 0;
    for _ in 0..ids.len() {
        let done = next(&mut p);
        let index = ids.iter().position(|&id| id == done.id).unwrap();
        if index < 4 {
            assert_eq!(done.result.unwrap(), 2);
            received += 1;
        } else {
            assert_eq!(errno(&done), Some(libc::ECANCELED));
            cancelled += 1;
        }
    }
    assert_eq!((received, cancelled), (4, 8));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn cancel_detached_accept_closes_a_late_fd() {
    if !isolate("cancel_detached_accept_closes_a_late_fd", &[]) {
        return;
    }
    let fds_before = open_fds();
    let mut p = proactor();
    let listener = listener();
    let id = p.push(Accept::new(fd(&listener)), 0);
    p.poll(Some(Duration::ZERO)).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    // Let the accept complete in the kernel before the caller gives it up.
    std::thread::sleep(Duration::from_millis(20));
    p.poll(Some(Duration::ZERO)).unwrap();
    p.detach(id);
    assert!(settle(&mut p).is_empty(), "a detached op reports nothing");
    assert_eq!(p.in_flight(), 0);
    // Either the accept won (its fd was closed: the client sees EOF) or the cancel won
    // (the connection is still queued on the listener, owned by nobody in the proactor).
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => println!("accept won; its fd was closed"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            assert!(listener.accept().is_ok(), "the connection vanished");
        }
        other => panic!("unexpected {other:?}"),
    }
    drop((client, listener, p));
    assert_eq!(open_fds(), fds_before, "an fd leaked");
}

#[test]
fn cancel_detached_accept_multi_closes_every_late_fd() {
    if !isolate("cancel_detached_accept_multi_closes_every_late_fd", &[]) {
        return;
    }
    let fds_before = open_fds();
    let mut p = proactor();
    let listener = listener();
    let id = p.push(AcceptMulti::new(fd(&listener)), 0);
    p.poll(Some(Duration::ZERO)).unwrap();
    let mut clients: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    p.poll(Some(Duration::ZERO)).unwrap();
    p.detach(id);
    assert!(settle(&mut p).is_empty());
    let mut closed = 0;
    for client in &mut clients {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(0) = client.read(&mut [0u8; 1]) {
            closed += 1;
        }
    }
    while listener.accept().is_ok() {
        closed += 1;
    }
    assert_eq!(
        closed, 4,
        "every connection was closed or left on the listener"
    );
    drop((clients, listener, p));
    assert_eq!(open_fds(), fds_before, "an fd leaked");
}

#[test]
fn cancel_detach_frees_buffers_only_after_the_kernel_is_done() {
    // Under the audit allocator, freeing a detached recv's buffer before its final CQE
    // would abort the test binary.
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    for _ in 0..8 {
        let id = p.push(Recv::new(fd(&server), Vec::with_capacity(4096)), 0);
        submit(&mut p);
        p.detach(id);
    }
    client.write_all(&[1; 100]).unwrap();
    assert!(settle(&mut p).is_empty());
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn cancel_with_a_full_submission_queue_waits_its_turn() {
    // The cancel finds the SQ full of newer pushes: it queues behind them in user space and
    // still reaches the kernel, and every op completes exactly once.
    let mut p = Proactor::builder().entries(4).build().unwrap();
    let pairs: Vec<_> = (0..8).map(|_| tcp_pair()).collect();
    let first: Vec<_> = pairs[..3]
        .iter()
        .map(|(s, _)| p.push(Recv::new(fd(s), Vec::with_capacity(8)), 1))
        .collect();
    submit(&mut p);
    let second: Vec<_> = pairs[3..]
        .iter()
        .map(|(s, _)| p.push(Recv::new(fd(s), Vec::with_capacity(8)), 2))
        .collect();
    assert!(p.cancel(first[1]));
    for (_, client) in pairs.iter().skip(3) {
        (&*client).write_all(b"ok").unwrap();
    }
    (&pairs[0].1).write_all(b"ok").unwrap();
    (&pairs[2].1).write_all(b"ok").unwrap();
    let mut results = std::collections::HashMap::new();
    while results.len() < first.len() + second.len() {
        let c = next(&mut p);
        assert!(results.insert(c.id, errno(&c)).is_none(), "{c:?} twice");
    }
    assert_eq!(results[&first[1]], Some(libc::ECANCELED));
    for id in first.iter().chain(&second).filter(|&&id| id != first[1]) {
        assert_eq!(results[id], None);
    }
}
