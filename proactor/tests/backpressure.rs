//! A full submission queue is a queue, not a panic; a full completion queue loses nothing.

mod support;

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::{Nop, Read, Recv, Send, Write};
use ringloop_proactor::{Op, Proactor};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

#[test]
fn backpressure_ring_of_4_drives_10000_ops_each_exactly_once() {
    let mut p = Proactor::builder().entries(4).build().unwrap();
    let (r, w) = pipe();
    const N: usize = 10_000;
    // Nops, plus pipe writes and reads that depend on each other across the backlog.
    for i in 0..N {
        match i % 4 {
            0 | 1 => p.push(Nop, i as u64),
            2 => p.push(Write::new(w.as_raw_fd(), vec![i as u8]), i as u64),
            _ => p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(1)), i as u64),
        };
    }
    let mut seen = vec![0u8; N];
    let mut done = 0;
    while done < N {
        let c = next(&mut p);
        assert!(!c.more);
        let token = c.token as usize;
        seen[token] += 1;
        assert_eq!(seen[token], 1, "op {token} completed twice");
        let n = c.result.unwrap_or_else(|e| panic!("op {token}: {e}"));
        if token % 4 >= 2 {
            assert_eq!(n, 1, "op {token}");
        }
        done += 1;
    }
    assert!(seen.iter().all(|&s| s == 1));
    assert_eq!(p.in_flight(), 0);
    assert!(settle(&mut p).is_empty(), "nothing completes twice");
}

#[test]
fn backpressure_ops_behind_a_full_ring_of_blocked_recvs_still_run() {
    // Four recvs fill the SQ of a 4-entry ring and block in the kernel; the sends that
    // would satisfy them wait in the backlog. A poll must not wait on the recvs alone.
    let mut p = Proactor::builder().entries(4).build().unwrap();
    let pairs: Vec<_> = (0..8).map(|_| tcp_pair()).collect();
    for (i, (server, _)) in pairs.iter().enumerate() {
        p.push(Recv::new(fd(server), Vec::with_capacity(16)), i as u64);
    }
    for (i, (_, client)) in pairs.iter().enumerate() {
        p.push(
            Send::new(fd(client), format!("msg{i}").into_bytes()),
            100 + i as u64,
        );
    }
    let mut recvs = 0;
    let mut sends = 0;
    while recvs + sends < 16 {
        let c = next(&mut p);
        match c.token {
            t @ 0..=7 => {
                let Some(Op::Recv(recv)) = c.op else { panic!() };
                assert_eq!(recv.buf, format!("msg{t}").into_bytes());
                recvs += 1;
            }
            _ => {
                assert_eq!(c.result.unwrap(), 4);
                sends += 1;
            }
        }
    }
}

#[test]
fn backpressure_cq_overflow_loses_no_completion() {
    // 2,000 completions against a CQ of 8, none reaped until all were submitted.
    let mut p = Proactor::builder().entries(4).build().unwrap();
    for i in 0..2000 {
        p.push(Nop, i);
    }
    for _ in 0..10 {
        p.poll(Some(Duration::ZERO)).unwrap();
    }
    let mut seen = vec![false; 2000];
    let mut count = 0;
    while count < 2000 {
        let c = next(&mut p);
        assert!(!std::mem::replace(&mut seen[c.token as usize], true));
        count += 1;
    }
    assert!(settle(&mut p).is_empty());
}

#[test]
fn backpressure_multishot_overflow_keeps_data_in_order() {
    // A multishot recv on a tiny CQ with a stream of small writes: the kernel may end the
    // multishot on overflow; the driver re-arms it and no byte is lost or reordered.
    let mut p = Proactor::builder()
        .entries(4)
        .recv_buffers(64, 64)
        .build()
        .unwrap();
    let (server, mut client) = tcp_pair();
    let id = p.push(ringloop_proactor::op::RecvMulti::new(fd(&server)), 0);
    let data = pattern(64 * 1024);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            client.set_nodelay(true).unwrap();
            for chunk in data.chunks(100) {
                client.write_all(chunk).unwrap();
            }
        })
    };
    // Reap slowly so completions pile up.
    let mut got = Vec::new();
    let mut eof = false;
    while !eof {
        std::thread::sleep(Duration::from_micros(200));
        p.poll(Some(Duration::from_millis(50))).unwrap();
        while let Some(c) = p.pop() {
            assert_eq!(c.id, id);
            if c.more {
                got.extend_from_slice(&c.buf.expect("chunk"));
            } else {
                assert_eq!(c.result.unwrap(), 0, "EOF after the writer closed");
                eof = true;
            }
        }
    }
    writer.join().unwrap();
    assert_eq!(got.len(), data.len(), "bytes lost");
    assert!(got == data, "bytes reordered");
}

/// A small deterministic pseudo-random generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn backpressure_random_cancels_and_detaches_finish_each_op_exactly_once() {
    if !isolate(
        "backpressure_random_cancels_and_detaches_finish_each_op_exactly_once",
        &[],
    ) {
        return;
    }
    for seed in [0x9E37_79B9_7F4A_7C15, 1, 0xDEAD_BEEF, 42] {
        random_mix(seed);
    }
}

/// Pushes, cancels, detaches and completes ops at random on a ring of 8; checks that every
/// op not detached reports exactly one final completion and a detached op none.
fn random_mix(seed: u64) {
    use ringloop_proactor::op::Timeout;
    use std::collections::HashMap;
    let fds_before = open_fds();
    let mut p = Proactor::builder()
        .entries(8)
        .recv_buffers(4, 64)
        .build()
        .unwrap();
    let pairs: Vec<_> = (0..16).map(|_| tcp_pair()).collect();
    let (r, w) = pipe();
    let mut rng = Rng(seed);
    // Every op pushed: whether it was detached, and how many final completions it got.
    let mut ops: HashMap<ringloop_proactor::OpId, (bool, u32)> = HashMap::new();
    let mut live: Vec<ringloop_proactor::OpId> = Vec::new();
    for step in 0..4000u64 {
        match rng.below(10) {
            0..=2 => {
                let (server, _) = &pairs[rng.below(16) as usize];
                let id = if rng.below(4) == 0 {
                    p.push(ringloop_proactor::op::RecvMulti::new(fd(server)), step)
                } else {
                    p.push(Recv::new(fd(server), Vec::with_capacity(32)), step)
                };
                ops.insert(id, (false, 0));
                live.push(id);
            }
            3 => {
                let (_, client) = &pairs[rng.below(16) as usize];
                (&*client).write_all(&[step as u8; 40]).unwrap();
            }
            4 => {
                let id = p.push(Timeout::new(Duration::from_micros(rng.below(500))), step);
                ops.insert(id, (false, 0));
                live.push(id);
            }
            5 => {
                let id = if rng.below(2) == 0 {
                    p.push(Write::new(w.as_raw_fd(), vec![1; 8]), step)
                } else {
                    p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(8)), step)
                };
                ops.insert(id, (false, 0));
                live.push(id);
            }
            6 if !live.is_empty() => {
                let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                p.cancel(id);
            }
            7 if !live.is_empty() => {
                let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                p.detach(id);
                // Detaching an op that already finished changes nothing.
                if let Some(op) = ops.get_mut(&id).filter(|op| op.1 == 0) {
                    op.0 = true;
                }
            }
            8 => {
                let id = p.push(Nop, step);
                ops.insert(id, (false, 0));
            }
            _ => {
                p.poll(Some(Duration::ZERO)).unwrap();
                while let Some(c) = p.pop() {
                    let op = ops.get_mut(&c.id).expect("completion of an unknown op");
                    assert!(!op.0, "a detached op reported {c:?}");
                    if !c.more {
                        op.1 += 1;
                    }
                }
            }
        }
    }
    // Cancel what is left, then drain.
    for id in live.drain(..) {
        p.cancel(id);
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    while p.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} ops never finished",
            p.in_flight()
        );
        p.poll(Some(Duration::from_millis(10))).unwrap();
        while let Some(c) = p.pop() {
            let op = ops.get_mut(&c.id).expect("completion of an unknown op");
            assert!(!op.0, "a detached op reported {c:?}");
            if !c.more {
                op.1 += 1;
            }
        }
    }
    for (id, (detached, finals)) in &ops {
        let expected = u32::from(!detached);
        assert_eq!(
            *finals, expected,
            "seed {seed}: op {id:?} (detached: {detached})"
        );
    }
    drop(p);
    drop((pairs, r, w));
    assert_eq!(open_fds(), fds_before);
}
