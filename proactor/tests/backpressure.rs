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
