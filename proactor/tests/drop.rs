//! Dropping a proactor with ops in flight: everything is cancelled and waited for, no fd
//! leaks, and no buffer is freed before the kernel is done with it (the audit allocator
//! aborts the test binary if one is).

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringloop_proactor::audit::{self, AuditAllocator};
use ringloop_proactor::op::{Accept, AcceptMulti, Read, Recv, RecvMulti, Timeout, WaitId};
use ringloop_proactor::Proactor;
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

#[test]
fn drop_with_1000_ops_in_flight_leaks_no_fd() {
    if !isolate("drop_with_1000_ops_in_flight_leaks_no_fd", &[]) {
        return;
    }
    let fds_before = open_fds();
    let lent_before = audit::lent();
    let pairs: Vec<_> = (0..50).map(|_| tcp_pair()).collect();
    let listeners: Vec<_> = (0..10).map(|_| listener()).collect();
    let pipes: Vec<_> = (0..20).map(|_| pipe()).collect();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        })
        .collect();
    let fds_with_sockets = open_fds();
    let mut p = proactor();
    let mut pushed = 0;
    for i in 0..450 {
        p.push(
            Recv::new(fd(&pairs[i % 50].0), Vec::with_capacity(1024)),
            i as u64,
        );
        pushed += 1;
    }
    for (_, client) in &pairs {
        p.push(RecvMulti::new(fd(client)), 0);
        pushed += 1;
    }
    for i in 0..100 {
        p.push(Accept::new(fd(&listeners[i % 10])), 0);
        pushed += 1;
    }
    for (i, l) in listeners.iter().enumerate().take(5) {
        p.push(AcceptMulti::new(fd(l)), i as u64);
        pushed += 1;
    }
    for _ in 0..193 {
        p.push(Timeout::new(Duration::from_secs(3600)), 0);
        pushed += 1;
    }
    for i in 0..200 {
        p.push(
            Read::new(pipes[i % 20].0.as_raw_fd(), Vec::with_capacity(512)),
            0,
        );
        pushed += 1;
    }
    for child in &children {
        p.push(WaitId::new(child.id() as i32), 0);
        pushed += 1;
    }
    assert_eq!(pushed, 1000);
    p.poll(Some(Duration::from_millis(10))).unwrap();
    assert!(p.pop().is_none());
    assert_eq!(p.in_flight(), 1000);
    // Some connections arrive while the proactor is being dropped: their fds must not leak.
    let clients: Vec<_> = listeners
        .iter()
        .map(|l| TcpStream::connect(l.local_addr().unwrap()).unwrap())
        .collect();
    // Let the kernel complete those accepts (unreaped) before the drop detaches them.
    std::thread::sleep(Duration::from_millis(20));
    p.poll(Some(Duration::ZERO)).unwrap();
    if audit::unrecorded() == 0 {
        assert!(audit::lent() > lent_before, "lent buffers are recorded");
    }
    let start = Instant::now();
    drop(p);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        start.elapsed()
    );
    assert_eq!(audit::lent(), lent_before, "every lent range was reclaimed");
    assert_eq!(
        open_fds(),
        fds_with_sockets + clients.len(),
        "the proactor leaked fds"
    );
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    drop((pairs, listeners, pipes, clients));
    assert_eq!(open_fds(), fds_before);
}

#[test]
fn drop_cancels_ops_still_queued_in_user_space() {
    let mut p = Proactor::builder().entries(4).build().unwrap();
    let (server, _client) = tcp_pair();
    for _ in 0..100 {
        p.push(Recv::new(fd(&server), Vec::with_capacity(64)), 0);
    }
    assert_eq!(p.in_flight(), 100);
    let start = Instant::now();
    drop(p);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn drop_right_after_push_without_any_poll() {
    let mut p = proactor();
    let (r, _w) = pipe();
    for _ in 0..10 {
        p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(64)), 0);
    }
    drop(p);
}

#[test]
fn drop_leaves_received_chunks_readable() {
    let mut p = Proactor::builder().recv_buffers(4, 64).build().unwrap();
    let (server, mut client) = tcp_pair();
    p.push(RecvMulti::new(fd(&server)), 0);
    client.write_all(b"outlives the proactor").unwrap();
    let chunk = next(&mut p).buf.expect("a chunk");
    drop(p);
    assert_eq!(&*chunk, b"outlives the proactor");
    drop(chunk);
}
