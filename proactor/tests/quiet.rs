//! Quiet sends and writes (`Proactor::push_quiet`): a full success is kept unreported until
//! the owner reclaims it; everything else is reported as usual; a reclaimed op that was still
//! in flight becomes loud; detach and drop free finished quiet ops.

mod support;

use std::io::Read as _;
use std::time::Duration;

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::{Nop, Send, Write};
use ringloop_proactor::{Completion, Op};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

/// Writes to the non-blocking `stream` until the socket buffers are full, so the next send
/// has to wait for the reader; returns how many bytes that took.
fn fill_send_buffers(stream: &mut std::net::TcpStream) -> usize {
    let mut filled = 0;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match std::io::Write::write(stream, &chunk) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return filled,
            Err(e) => panic!("filling: {e}"),
        }
    }
}

#[test]
fn quiet_send_that_succeeds_waits_unreported_until_reclaimed() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let id = p.push_quiet(Send::new(fd(&server), b"hello".to_vec()), 7);
    assert!(settle(&mut p).is_empty(), "a full success is not reported");
    assert_eq!(read_n(&mut client, 5), b"hello", "the bytes went out");
    assert_eq!(p.in_flight(), 1, "it waits in the table until reclaimed");
    let done = p.reclaim(id).expect("finished");
    assert_eq!((done.token, done.id, done.more), (7, id, false));
    assert_eq!(*done.result.as_ref().unwrap(), 5);
    let Some(Op::Send(send)) = done.op else {
        panic!("the send comes back")
    };
    assert_eq!(send.buf, b"hello", "with its buffer");
    assert_eq!(p.in_flight(), 0);
    assert!(p.reclaim(id).is_none(), "only once");
}

#[test]
fn quiet_write_gives_its_buffer_back_through_reclaim_buf() {
    let mut p = proactor();
    let (rd, wr) = pipe();
    let id = p.push_quiet(Write::new(fd(&wr), b"pipe data".to_vec()), 1);
    assert!(settle(&mut p).is_empty());
    assert_eq!(p.reclaim_buf(id).as_deref(), Some(&b"pipe data"[..]));
    assert_eq!(p.in_flight(), 0);
    let mut got = [0u8; 9];
    std::fs::File::from(rd).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pipe data");
}

#[test]
fn quiet_send_that_fails_is_reported() {
    let mut p = proactor();
    let (server, client) = tcp_pair();
    drop(client);
    // The peer is gone: the first send may still be accepted by the kernel (the RST has
    // not come back yet); keep sending until one fails, as a transport would.
    let mut failed = None;
    for _ in 0..50 {
        let id = p.push_quiet(Send::new(fd(&server), vec![1u8; 1024]), 3);
        let reported = settle(&mut p);
        if let Some(done) = reported.into_iter().find(|d| d.id == id) {
            failed = Some(done);
            break;
        }
        assert!(p.reclaim_buf(id).is_some(), "unreported means it finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = failed.expect("a send to a closed peer fails");
    assert!(
        matches!(errno(&done), Some(libc::EPIPE | libc::ECONNRESET)),
        "{done:?}"
    );
    assert!(
        matches!(done.op, Some(Op::Send(_))),
        "the buffer comes back"
    );
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn reclaiming_a_quiet_send_still_in_flight_makes_it_loud() {
    let mut p = proactor();
    let (mut server, mut client) = tcp_pair();
    let filled = fill_send_buffers(&mut server);
    let id = p.push_quiet(Send::new(fd(&server), b"tail".to_vec()), 9);
    let _ = p.poll(Some(Duration::from_millis(20)));
    assert!(p.pop().is_none(), "nothing can be sent yet");
    assert!(p.reclaim(id).is_none(), "still in flight");
    let mut drained = vec![0u8; filled];
    client.read_exact(&mut drained).unwrap();
    // Now loud: its completion is reported even though it is a full success.
    let done = next(&mut p);
    assert_eq!((done.id, done.token), (id, 9));
    assert_eq!(*done.result.as_ref().unwrap(), 4);
    assert_eq!(read_n(&mut client, 4), b"tail");
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn detaching_a_finished_quiet_send_frees_it() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let id = p.push_quiet(Send::new(fd(&server), b"x".to_vec()), 0);
    assert!(settle(&mut p).is_empty());
    assert_eq!(read_n(&mut client, 1), b"x");
    assert_eq!(p.in_flight(), 1);
    p.detach(id);
    assert_eq!(
        p.in_flight(),
        0,
        "freed at once: the kernel is done with it"
    );
    assert!(p.reclaim(id).is_none());
    assert!(!p.cancel(id), "nothing left to cancel");
}

#[test]
fn dropping_the_proactor_frees_finished_quiet_sends() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    for _ in 0..10 {
        p.push_quiet(Send::new(fd(&server), b"ab".to_vec()), 0);
    }
    assert!(settle(&mut p).is_empty());
    assert_eq!(read_n(&mut client, 20), b"ab".repeat(10));
    drop(p); // The audit allocator aborts if a buffer were freed while lent.
}

#[test]
fn push_quiet_of_other_ops_reports_them_as_usual() {
    let mut p = proactor();
    let id = p.push_quiet(Nop, 5);
    let done = next(&mut p);
    assert_eq!((done.id, done.token), (id, 5));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn resend_starts_a_finished_quiet_send_again_in_place() {
    let mut p = proactor();
    let (server, mut client) = tcp_pair();
    let id = p.push_quiet(Send::new(fd(&server), b"one".to_vec()), 4);
    assert!(settle(&mut p).is_empty());
    let mut buf = b"two".to_vec();
    assert!(p.resend(id, &mut buf), "finished: starts again");
    assert_eq!(buf, b"one", "the sent buffer comes back");
    assert!(settle(&mut p).is_empty(), "still quiet");
    assert_eq!(read_n(&mut client, 6), b"onetwo", "in order");
    let done = p.reclaim(id).expect("the same id finished again");
    assert_eq!(*done.result.as_ref().unwrap(), 3);
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn resend_of_a_quiet_send_still_in_flight_gives_the_buffer_back_and_makes_it_loud() {
    let mut p = proactor();
    let (mut server, mut client) = tcp_pair();
    let filled = fill_send_buffers(&mut server);
    let id = p.push_quiet(Send::new(fd(&server), b"first".to_vec()), 2);
    let _ = p.poll(Some(Duration::from_millis(20)));
    assert!(p.pop().is_none());
    let mut back = b"second".to_vec();
    assert!(!p.resend(id, &mut back));
    assert_eq!(back, b"second", "untouched");
    let mut drained = vec![0u8; filled];
    client.read_exact(&mut drained).unwrap();
    let done = next(&mut p);
    assert_eq!(done.id, id, "reported: it is loud now");
    assert_eq!(read_n(&mut client, 5), b"first");
    assert!(!p.resend(id, &mut Vec::new()), "a reported op is gone");
}

#[test]
fn the_id_of_an_empty_completion_names_no_op() {
    // An empty completion's id, passed back, must not reach a vacant slot of the table.
    let mut p = proactor();
    let done = run(&mut p, Nop);
    let none = Completion::default().id;
    assert_ne!(done.id, none);
    assert!(!p.cancel(none));
    p.detach(none);
    assert!(p.reclaim(none).is_none());
    assert!(p.reclaim_buf(none).is_none());
    assert!(!p.resend(none, &mut b"x".to_vec()));
    // The table is intact: ops still come and go.
    let again = run(&mut p, Nop);
    assert_eq!(again.result.unwrap(), 0);
    assert_eq!(p.in_flight(), 0);
}
