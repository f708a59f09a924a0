//! The epoll backend allocates nothing per op in steady state: ops that complete at push,
//! ops that park and complete on readiness, multishot chunks from the pool (also when more
//! connections are readable at once than the pool has buffers), and timers.
//!
//! A counting global allocator counts the allocations made by the test's own thread while
//! the measured loop runs.

mod epoll_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use epoll_util::*;
use ringloop_proactor::op::{self, Op};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only reads a
// thread-local flag and bumps an atomic, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `round` `warm` times unmeasured, then `measured` times counting allocations.
fn allocations_in_steady_state(mut round: impl FnMut(), warm: usize, measured: usize) -> usize {
    for _ in 0..warm {
        round();
    }
    ALLOCATIONS.store(0, Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    for _ in 0..measured {
        round();
    }
    MEASURING.with(|m| m.set(false));
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn echo_ops_timers_and_multishot_chunks_allocate_nothing_in_steady_state() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    let (cfd, sfd) = (client.as_raw_fd(), server.as_raw_fd());
    let mut send_buf = Some(b"0123456789abcdef".to_vec());
    let mut recv_buf = Some(Vec::with_capacity(64));

    // A recv that parks first (pushed before the data exists), then a send that completes
    // at push; the recv completes from the readiness event.
    let parked_echo = || {
        let mut recv = recv_buf.take().unwrap();
        recv.clear();
        p.push(op::Recv::new(sfd, recv), 1);
        p.push(op::Send::new(cfd, send_buf.take().unwrap()), 2);
        let mut done = 0;
        while done < 2 {
            match next(&mut p).op {
                Some(Op::Recv(r)) => {
                    assert_eq!(r.buf.len(), 16);
                    recv_buf = Some(r.buf);
                }
                Some(Op::Send(s)) => send_buf = Some(s.buf),
                other => panic!("{other:?}"),
            }
            done += 1;
        }
    };
    let allocations = allocations_in_steady_state(parked_echo, 200, 2000);
    assert_eq!(allocations, 0, "parked recv + send");

    let mut p = proactor();
    let id = p.push(op::RecvMulti::new(cfd), 3);
    let chunks = || {
        server.write_all(b"chunk").unwrap();
        let c = next(&mut p);
        assert_eq!((c.id, c.more), (id, true));
        assert_eq!(c.buf.as_deref(), Some(&b"chunk"[..]));
    };
    let allocations = allocations_in_steady_state(chunks, 200, 2000);
    assert_eq!(allocations, 0, "multishot chunks from the pool");

    // Timeout ops are reused from their completions (constructing one boxes a timespec).
    let mut short = Some(op::Timeout::new(Duration::from_micros(10)));
    let mut long = Some(op::Timeout::new(Duration::from_secs(60)));
    let timers = || {
        let a = p.push(short.take().unwrap(), 4);
        let b = p.push(long.take().unwrap(), 5);
        assert!(p.cancel(b));
        for _ in 0..2 {
            let c = next(&mut p);
            let Some(Op::Timeout(t)) = c.op else {
                panic!("a timeout comes back")
            };
            if c.id == a {
                assert!(c.result.is_ok());
                short = Some(t);
            } else {
                assert_eq!(c.id, b);
                long = Some(t);
            }
        }
    };
    let allocations = allocations_in_steady_state(timers, 200, 2000);
    assert_eq!(allocations, 0, "timers");
}

#[test]
fn more_readable_connections_than_pool_buffers_allocate_nothing() {
    // 2 buffers, 6 connections with a message each ready in the same wait: the receives
    // beyond the second wait a turn for the buffers the consumer hands back, instead of
    // reading into buffers of their own.
    const CONNS: usize = 6;
    let mut p = proactor_with_pool(2, 64);
    let (pairs, ids) = receiving_pairs(&mut p, CONNS);
    let mut pairs = pairs;
    let mut owned = 0;
    let round = || {
        for (_, server) in pairs.iter_mut() {
            server.write_all(b"ping").unwrap();
        }
        let mut seen = [false; CONNS];
        for _ in 0..CONNS {
            let c = next(&mut p);
            assert!(c.more, "{c:?}");
            let conn = ids.iter().position(|&id| id == c.id).expect("one of ours");
            assert!(
                !std::mem::replace(&mut seen[conn], true),
                "one chunk per connection"
            );
            let chunk = c.buf.expect("a chunk");
            assert_eq!(&chunk[..], b"ping");
            owned += usize::from(!chunk.is_pooled());
        }
    };
    let allocations = allocations_in_steady_state(round, 20, 200);
    assert_eq!(allocations, 0, "chunks beyond the pool's buffers");
    assert_eq!(owned, 0, "every chunk came in a pool buffer");
}
