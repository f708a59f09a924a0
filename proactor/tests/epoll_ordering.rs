//! Order per fd on the epoll backend: ops parked on one fd run in push order, and a later op
//! never overtakes a parked earlier one of the same side.

mod epoll_util;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use epoll_util::*;
use ringloop_proactor::op::{self, Op};

/// Writes into `stream` until the kernel's buffers are full; returns how much went in.
fn fill(stream: &mut TcpStream) -> usize {
    stream.set_nonblocking(true).unwrap();
    let block = [0u8; 65536];
    let mut total = 0;
    loop {
        match stream.write(&block) {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    total
}

#[test]
fn parked_sends_go_out_in_push_order() {
    let mut p = proactor();
    let (mut client, mut server) = tcp_pair();
    let filler = fill(&mut client);
    let messages: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'A' + i; 100 + i as usize]).collect();
    let ids: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| p.push(op::Send::new(client.as_raw_fd(), m.clone()), i as u64))
        .collect();
    assert_idle(&mut p);
    assert_eq!(p.in_flight(), 8, "all sends wait behind the full buffer");

    let total = filler + messages.iter().map(Vec::len).sum::<usize>();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; total];
        server.read_exact(&mut got).unwrap();
        got
    });
    let done: Vec<_> = (0..8).map(|_| next(&mut p)).collect();
    assert_eq!(
        done.iter().map(|c| c.id).collect::<Vec<_>>(),
        ids,
        "completions in push order"
    );
    for (c, m) in done.iter().zip(&messages) {
        assert_eq!(
            c.result.as_ref().unwrap(),
            &(m.len() as u32),
            "whole message"
        );
    }
    let got = reader.join().unwrap();
    let tail: Vec<u8> = messages.concat();
    assert!(
        got[filler..] == tail[..],
        "the stream carries the messages in order"
    );
}

#[test]
fn a_new_send_queues_behind_a_parked_one_without_trying() {
    let mut p = proactor();
    let (mut client, mut server) = tcp_pair();
    let filler = fill(&mut client);
    let first = p.push(op::Send::new(client.as_raw_fd(), vec![b'1'; 4096]), 1);
    assert_idle(&mut p);
    // Make a little room: enough for a small send, which must still not overtake.
    let mut drained = vec![0; 8192];
    server.read_exact(&mut drained).unwrap();
    let second = p.push(op::Send::new(client.as_raw_fd(), b"2".to_vec()), 2);
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; filler - 8192 + 4097];
        server.read_exact(&mut got).unwrap();
        got
    });
    let a = next(&mut p);
    let b = next(&mut p);
    assert_eq!((a.id, b.id), (first, second));
    let got = reader.join().unwrap();
    let n = got.len();
    assert_eq!(&got[n - 4097..n - 1], &[b'1'; 4096][..]);
    assert_eq!(got[n - 1], b'2');
}

#[test]
fn parked_receives_take_the_data_in_push_order() {
    let mut p = proactor();
    let (client, mut server) = tcp_pair();
    let ids: Vec<_> = (0..3)
        .map(|t| p.push(op::Recv::new(client.as_raw_fd(), Vec::with_capacity(4)), t))
        .collect();
    assert_idle(&mut p);
    server.write_all(b"aaaabbbbcccc").unwrap();
    for (i, want) in [b"aaaa", b"bbbb", b"cccc"].iter().enumerate() {
        let c = next(&mut p);
        assert_eq!(c.id, ids[i]);
        let Some(Op::Recv(recv)) = c.op else {
            panic!("a recv comes back")
        };
        assert_eq!(&recv.buf[..], &want[..]);
    }
}
