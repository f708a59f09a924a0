//! Cancel and detach on the epoll backend: a parked op leaves its queue and completes once
//! with `ECANCELED`; an op that already finished keeps its real result.

mod epoll_util;

use std::io::Write as _;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::Duration;

use epoll_util::*;
use ringloop_proactor::op::{self, Op};

fn assert_cancelled(c: &ringloop_proactor::Completion) {
    assert!(!c.more, "the cancel's completion is final");
    match &c.result {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}"),
        Ok(v) => panic!("expected ECANCELED, got Ok({v})"),
    }
}

#[test]
fn cancel_of_a_parked_recv_returns_its_buffer_with_ecanceled() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    let id = p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(32)), 1);
    assert_idle(&mut p);
    assert!(p.cancel(id));
    assert!(!p.cancel(id), "a second cancel is refused");
    let c = next(&mut p);
    assert_eq!(c.id, id);
    assert_cancelled(&c);
    let Some(Op::Recv(recv)) = c.op else {
        panic!("the recv comes back")
    };
    assert_eq!(recv.buf.capacity(), 32, "the buffer is handed back");
    assert_eq!(p.in_flight(), 0);
    // The cancelled recv consumed nothing: the next one gets the data.
    server.write_all(b"kept").unwrap();
    p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(32)), 2);
    assert_eq!(next(&mut p).result.unwrap(), 4);
    assert!(
        !p.cancel(id),
        "cancel after the final completion is refused"
    );
}

#[test]
fn cancel_of_a_parked_accept() {
    let mut p = proactor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = p.push(op::Accept::new(listener.as_raw_fd()), 1);
    assert_idle(&mut p);
    assert!(p.cancel(id));
    assert_cancelled(&next(&mut p));
    assert_idle(&mut p);
}

#[test]
fn cancel_of_a_timeout_and_the_timer_never_fires() {
    let mut p = proactor();
    let id = p.push(op::Timeout::new(Duration::from_millis(20)), 1);
    let keep = p.push(op::Timeout::new(Duration::from_millis(40)), 2);
    assert!(p.cancel(id));
    let c = next(&mut p);
    assert_eq!(c.id, id);
    assert_cancelled(&c);
    let c = next(&mut p);
    assert_eq!((c.id, c.result.unwrap()), (keep, 0));
    p.poll(Some(Duration::from_millis(30))).unwrap();
    assert!(p.pop().is_none(), "the cancelled timer fired anyway");
}

#[test]
fn many_cancelled_timeouts_leave_the_live_ones_intact() {
    let mut p = proactor();
    let live = p.push(op::Timeout::new(Duration::from_millis(5)), 0);
    for i in 0..500 {
        let id = p.push(op::Timeout::new(Duration::from_secs(3600)), i + 1);
        assert!(p.cancel(id));
        assert_cancelled(&next(&mut p));
    }
    let c = next(&mut p);
    assert_eq!((c.id, c.result.unwrap()), (live, 0));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn cancel_of_a_waitid_leaves_the_child_to_be_reaped_normally() {
    let mut p = proactor();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let id = p.push(op::WaitId::new(child.id() as i32), 1);
    assert_idle(&mut p);
    assert!(p.cancel(id));
    assert_cancelled(&next(&mut p));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was still there to reap");
}

#[test]
fn cancel_of_an_op_that_already_completed_keeps_its_result() {
    let mut p = proactor();
    let (r, w) = pipe();
    write_all(w.as_raw_fd(), b"ready");
    // Completes at push (data is there); its completion is queued but not popped yet.
    let id = p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(8)), 1);
    p.cancel(id);
    let c = next(&mut p);
    assert_eq!((c.id, c.result.unwrap()), (id, 5));
    let nop = p.push(op::Nop, 2);
    p.cancel(nop);
    assert_eq!(next(&mut p).result.unwrap(), 0);
}

#[test]
fn cancel_from_the_middle_of_a_queue_keeps_the_others_in_order() {
    let mut p = proactor();
    let (r, w) = pipe();
    let ids: Vec<_> = (0..3)
        .map(|t| p.push(op::Read::new(r.as_raw_fd(), Vec::with_capacity(2)), t))
        .collect();
    assert_idle(&mut p);
    assert!(p.cancel(ids[1]));
    assert_cancelled(&next(&mut p));
    write_all(w.as_raw_fd(), b"aabb");
    let first = next(&mut p);
    let second = next(&mut p);
    assert_eq!((first.id, second.id), (ids[0], ids[2]));
    let bufs: Vec<Vec<u8>> = [first, second]
        .into_iter()
        .map(|c| match c.op {
            Some(Op::Read(read)) => read.buf,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bufs, [b"aa".to_vec(), b"bb".to_vec()]);
}

#[test]
fn cancel_ends_a_multishot_recv() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    let id = p.push(op::RecvMulti::new(client.as_raw_fd()), 1);
    server.write_all(b"one").unwrap();
    let c = next(&mut p);
    assert_eq!((c.id, c.more, c.result.unwrap()), (id, true, 3));
    assert_eq!(c.buf.as_deref(), Some(&b"one"[..]));
    assert!(p.cancel(id));
    let c = next(&mut p);
    assert_eq!(c.id, id);
    assert_cancelled(&c);
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn detach_of_a_parked_recv_delivers_nothing() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    let id = p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(8)), 1);
    assert_idle(&mut p);
    p.detach(id);
    assert_idle(&mut p);
    assert_eq!(p.in_flight(), 0);
    // Data that arrives later is not consumed by the detached recv.
    server.write_all(b"z").unwrap();
    p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(8)), 2);
    let c = next(&mut p);
    assert_eq!((c.token, c.result.unwrap()), (2, 1));
}
