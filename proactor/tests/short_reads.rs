//! Short reads and end of stream: no byte and no end of stream is ever lost, whatever the
//! sizes of chunks relative to the receive buffers.
//!
//! The epoll backend treats a read that returns less than its buffer holds on a byte stream
//! as "drained" and waits for the next edge instead of reading again until `EAGAIN` (one
//! syscall saved per message). These tests pin the cases where that inference could lose
//! something if it were wrong: a chunk that exactly fills the buffer, data arriving right
//! after a short read, end of stream after a short read (alone or with data), datagrams, and
//! a writer racing the reader. They run on the backend `RINGLOOP_BACKEND` selects; io_uring
//! must behave the same.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop_proactor::{op, Op, OpId, Proactor};
use support::*;

/// Pool buffers of this size: the minimum, so chunk sizes around it are cheap to produce.
const BUF: usize = 64;

fn proactor_with_small_buffers() -> Proactor {
    Proactor::builder()
        .recv_buffers(16, BUF)
        .build()
        .unwrap_or_else(|e| panic!("building a proactor: {e}"))
}

/// Collects chunks of the multishot receive `id` until `want` bytes arrived (appended to
/// `got`); panics on its final completion or after the deadline.
fn collect(p: &mut Proactor, id: OpId, want: usize, got: &mut Vec<u8>) {
    let target = got.len() + want;
    while got.len() < target {
        let c = next(p);
        assert_eq!(c.id, id);
        assert!(c.more, "the receive ended early: {:?}", c.result);
        let chunk = c.buf.expect("a chunk with every `more` completion");
        assert!(
            !chunk.is_empty() && chunk.len() <= BUF,
            "{} bytes",
            chunk.len()
        );
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), target, "more bytes than were sent");
}

/// The final completion of multishot receive `id`: end of stream, with no data left over.
fn expect_end(p: &mut Proactor, id: OpId) {
    let c = next(p);
    assert_eq!(c.id, id);
    assert!(c.buf.is_none(), "data after end of stream: {:?}", c.buf);
    assert!(!c.more, "expected end of stream, got {:?}", c.result);
    assert_eq!(c.result.unwrap(), 0);
}

#[test]
fn multishot_recv_delivers_every_size_around_the_buffer_size_then_eof() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let data = pattern(40_000);
    let mut got = Vec::new();
    let mut at = 0;
    // 1..=200 bytes per message: short chunks, exactly one buffer (64, 128, 192), a buffer
    // and a bit. Each message is awaited before the next is written, so every write lands
    // on a receive that already saw its fd drained.
    for size in 1..=200 {
        peer.write_all(&data[at..at + size]).unwrap();
        collect(&mut p, id, size, &mut got);
        at += size;
    }
    assert!(got == data[..at], "bytes lost, reordered or corrupted");
    peer.shutdown(Shutdown::Write).unwrap();
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_sees_data_written_right_after_a_short_read() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let mut got = Vec::new();
    peer.write_all(b"first").unwrap();
    collect(&mut p, id, 5, &mut got);
    // Written before the loop polls again: the backend must not have lost it between the
    // short read and its next wait.
    peer.write_all(b"second").unwrap();
    collect(&mut p, id, 6, &mut got);
    assert_eq!(got, b"firstsecond");
    assert_idle_briefly(&mut p);
    drop(peer);
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_reports_eof_after_a_short_read() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let mut got = Vec::new();
    peer.write_all(b"short").unwrap();
    collect(&mut p, id, 5, &mut got);
    // End of stream alone, after the fd was seen drained.
    peer.shutdown(Shutdown::Write).unwrap();
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_reports_eof_after_an_exactly_full_chunk() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let mut got = Vec::new();
    peer.write_all(&[7; BUF]).unwrap();
    collect(&mut p, id, BUF, &mut got);
    peer.shutdown(Shutdown::Write).unwrap();
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_reports_data_and_eof_that_follow_a_short_read_together() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let mut got = Vec::new();
    peer.write_all(b"one").unwrap();
    collect(&mut p, id, 3, &mut got);
    // More data than one buffer, then end of stream, before the loop looks again.
    let tail = pattern(3 * BUF + 5);
    peer.write_all(&tail).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    collect(&mut p, id, tail.len(), &mut got);
    assert_eq!(&got[3..], &tail[..]);
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_keeps_every_byte_of_a_racing_writer() {
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    peer.set_nodelay(true).unwrap();
    let data = pattern(300_000);
    let sent = data.clone();
    // Pieces of 1 to 150 bytes with occasional pauses: arrivals land before, during and
    // after the reader's short reads.
    let writer = std::thread::spawn(move || {
        let mut at = 0;
        let mut step = 0usize;
        while at < sent.len() {
            step += 1;
            let size = (step * 37 % 150 + 1).min(sent.len() - at);
            peer.write_all(&sent[at..at + size]).unwrap();
            at += size;
            if step % 64 == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        peer.shutdown(Shutdown::Write).unwrap();
        peer
    });
    let id = p.push(op::RecvMulti::new(ours.as_raw_fd()), 1);
    let mut got = Vec::new();
    collect(&mut p, id, data.len(), &mut got);
    expect_end(&mut p, id);
    assert!(got == data, "bytes lost, reordered or corrupted");
    drop(writer.join().unwrap());
}

#[test]
fn a_new_multishot_recv_after_a_cancelled_one_gets_what_arrived_in_between() {
    // Reading paused (the multishot cancelled) right after a short read, data arriving while
    // nothing reads, then reading resumed with a new multishot: the data must come, whether
    // its edge was consumed while no op was parked or is still queued.
    let mut p = proactor_with_small_buffers();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    for round in 0..3u8 {
        let id = p.push(op::RecvMulti::new(fd), 1);
        let mut got = Vec::new();
        peer.write_all(&[round; 5]).unwrap();
        collect(&mut p, id, 5, &mut got);
        assert!(p.cancel(id));
        let c = next(&mut p);
        assert!(!c.more && c.id == id, "{c:?}");
        peer.write_all(&[round + 10; 7]).unwrap();
        if round == 1 {
            // Let the loop see (and consume) the arrival's edge while nothing is parked.
            assert_idle_briefly(&mut p);
        }
        let id = p.push(op::RecvMulti::new(fd), 2);
        got.clear();
        collect(&mut p, id, 7, &mut got);
        assert_eq!(got, [round + 10; 7], "round {round}");
        assert!(p.cancel(id));
        assert!(!next(&mut p).more);
    }
    drop(peer);
    let id = p.push(op::RecvMulti::new(fd), 3);
    expect_end(&mut p, id);
}

#[test]
fn multishot_recv_on_udp_delivers_every_queued_datagram() {
    let mut p = proactor_with_small_buffers();
    let (sock, peer) = (udp(), udp());
    peer.connect(sock.local_addr().unwrap()).unwrap();
    let id = p.push(op::RecvMulti::new(sock.as_raw_fd()), 1);
    // Datagrams shorter than the buffer do not drain the socket: each must arrive, also
    // the ones queued behind a short one with no further edge to announce them.
    for round in 0..3u8 {
        for msg in [&b"a"[..], b"bb", b"ccc"] {
            peer.send(msg).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let c = next(&mut p);
            assert!(c.more && c.id == id, "{c:?}");
            got.push(c.buf.unwrap().to_vec());
        }
        assert_eq!(got, [&b"a"[..], b"bb", b"ccc"], "round {round}");
    }
    p.cancel(id);
    let c = next(&mut p);
    assert!(!c.more);
}

/// A single `Recv` of at most `BUF` bytes on `fd`, waited for; `(count, bytes)`.
fn recv_once(p: &mut Proactor, fd: i32) -> (u32, Vec<u8>) {
    let done = run(p, op::Recv::new(fd, Vec::with_capacity(BUF)));
    let n = done.result.expect("recv");
    let Some(Op::Recv(recv)) = done.op else {
        panic!("the op comes back with its completion")
    };
    (n, recv.buf)
}

/// A single `Read` of at most `BUF` bytes on `fd`, waited for; `(count, bytes)`.
fn read_once(p: &mut Proactor, fd: i32) -> (u32, Vec<u8>) {
    let done = run(p, op::Read::new(fd, Vec::with_capacity(BUF)));
    let n = done.result.expect("read");
    let Some(Op::Read(read)) = done.op else {
        panic!("the op comes back with its completion")
    };
    (n, read.buf)
}

#[test]
fn single_recv_after_short_and_full_reads_loses_nothing() {
    let mut p = proactor();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    // Register the fd with the backend: a first receive that has to wait.
    let first = p.push(op::Recv::new(fd, Vec::with_capacity(BUF)), 0);
    peer.write_all(b"hello").unwrap();
    let done = next(&mut p);
    assert_eq!((done.id, done.result.unwrap()), (first, 5));
    // Data right after the short read.
    peer.write_all(b"again").unwrap();
    assert_eq!(recv_once(&mut p, fd), (5, b"again".to_vec()));
    // Exactly one buffer, then a buffer and a bit.
    let full = pattern(BUF);
    peer.write_all(&full).unwrap();
    assert_eq!(recv_once(&mut p, fd), (BUF as u32, full.clone()));
    let more = pattern(BUF + 9);
    peer.write_all(&more).unwrap();
    assert_eq!(recv_once(&mut p, fd), (BUF as u32, more[..BUF].to_vec()));
    assert_eq!(recv_once(&mut p, fd), (9, more[BUF..].to_vec()));
    // End of stream after that short read.
    peer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(recv_once(&mut p, fd), (0, Vec::new()));
}

#[test]
fn single_recv_sees_eof_after_an_exactly_full_read() {
    let mut p = proactor();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let first = p.push(op::Recv::new(fd, Vec::with_capacity(BUF)), 0);
    peer.write_all(b"x").unwrap();
    assert_eq!(next(&mut p).id, first);
    peer.write_all(&[1; BUF]).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(recv_once(&mut p, fd), (BUF as u32, vec![1; BUF]));
    assert_eq!(recv_once(&mut p, fd), (0, Vec::new()));
}

#[test]
fn single_recv_sees_data_and_eof_that_follow_a_short_read() {
    let mut p = proactor();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let first = p.push(op::Recv::new(fd, Vec::with_capacity(BUF)), 0);
    peer.write_all(b"abc").unwrap();
    assert_eq!(next(&mut p).result.unwrap(), 3, "{first:?}");
    peer.write_all(b"tail").unwrap();
    drop(peer);
    assert_eq!(recv_once(&mut p, fd), (4, b"tail".to_vec()));
    assert_eq!(recv_once(&mut p, fd), (0, Vec::new()));
}

#[test]
fn single_reads_on_a_pipe_lose_nothing_around_short_reads() {
    let mut p = proactor();
    let (r, w) = pipe();
    let rfd = r.as_raw_fd();
    let mut w = std::fs::File::from(w);
    let first = p.push(op::Read::new(rfd, Vec::with_capacity(BUF)), 0);
    w.write_all(b"ab").unwrap();
    assert_eq!(next(&mut p).id, first);
    w.write_all(b"cd").unwrap();
    assert_eq!(read_once(&mut p, rfd), (2, b"cd".to_vec()));
    w.write_all(&[5; BUF]).unwrap();
    assert_eq!(read_once(&mut p, rfd), (BUF as u32, vec![5; BUF]));
    w.write_all(b"e").unwrap();
    assert_eq!(read_once(&mut p, rfd), (1, b"e".to_vec()));
    drop(w);
    assert_eq!(read_once(&mut p, rfd), (0, Vec::new()));
}

/// Nothing completes for a short while (no spurious chunk, no early end of stream).
fn assert_idle_briefly(p: &mut Proactor) {
    p.poll(Some(Duration::from_millis(20))).expect("poll");
    if let Some(c) = p.pop() {
        panic!("unexpected completion: {c:?}");
    }
}
