//! Multishot receives into the shared buffer pool: buffers recycle when dropped, and a dry
//! pool falls back to owned buffers without ending the op or losing or reordering bytes.

mod support;

use std::io::Write as _;
use std::time::Duration;

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::RecvMulti;
use ringloop_proactor::{Completion, Op, Proactor, RecvBuf};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

/// Streams `data` into a multishot receive on a proactor with a pool of `count` buffers of
/// 64 bytes; `hold` keeps every chunk alive until the end (the pool runs dry at once).
/// Returns the bytes received, the number of chunks and how many of them were pooled.
fn stream(count: u16, data: &[u8], hold: bool) -> (Vec<u8>, usize, usize) {
    let mut p = Proactor::builder().recv_buffers(count, 64).build().unwrap();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 1);
    let writer = {
        let data = data.to_vec();
        std::thread::spawn(move || {
            for chunk in data.chunks(1000) {
                client.write_all(chunk).unwrap();
            }
        })
    };
    let mut got = Vec::new();
    let mut held: Vec<RecvBuf> = Vec::new();
    let mut chunks = 0;
    let mut pooled = 0;
    loop {
        let c = next(&mut p);
        assert_eq!(c.id, id);
        if !c.more {
            assert_eq!(
                c.result.as_ref().ok(),
                Some(&0),
                "the stream ended with an error: {c:?}"
            );
            break;
        }
        let buf = c.buf.expect("a chunk carries data");
        assert!(
            !buf.is_empty() && buf.len() <= 64,
            "chunk of {} bytes",
            buf.len()
        );
        assert_eq!(buf.len() as u32, c.result.unwrap());
        got.extend_from_slice(&buf);
        chunks += 1;
        pooled += usize::from(buf.is_pooled());
        if hold {
            held.push(buf);
        }
    }
    writer.join().unwrap();
    // Held chunks still read back what they received.
    let concat: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    if hold {
        assert_eq!(concat, got);
    }
    (got, chunks, pooled)
}

#[test]
fn bufring_exhausted_pool_delivers_every_byte_in_order() {
    let data = pattern(64 * 1024);
    let (got, chunks, _) = stream(4, &data, true);
    assert_eq!(got.len(), data.len(), "bytes lost");
    assert!(got == data, "bytes reordered");
    assert!(chunks >= data.len() / 64, "{chunks} chunks");
}

#[test]
fn bufring_held_chunks_use_every_pooled_buffer_then_owned_ones_in_order() {
    // A pool larger than the io_uring ring's first depth: while chunks are held, the ring is
    // topped up from the spare buffers (and deepened when the kernel finds it dry) until
    // every buffer of the pool is in use; only then do chunks go to owned buffers.
    let data = pattern(64 * 1024);
    let (got, chunks, pooled) = stream(256, &data, true);
    assert_eq!(got.len(), data.len(), "bytes lost");
    assert!(got == data, "bytes reordered");
    assert_eq!(pooled, 256, "pooled chunks out of {chunks}");
}

#[test]
fn bufring_dropped_chunks_carry_a_long_stream_through_a_large_pool() {
    let data = pattern(1024 * 1024);
    let (got, _, pooled) = stream(512, &data, false);
    assert_eq!(got.len(), data.len(), "bytes lost");
    assert!(got == data, "bytes reordered");
    assert!(pooled > 0);
}

#[test]
fn bufring_recycled_buffers_carry_a_long_stream() {
    let data = pattern(1024 * 1024);
    let (got, _, _) = stream(4, &data, false);
    assert_eq!(got.len(), data.len(), "bytes lost");
    assert!(got == data, "bytes reordered");
}

#[test]
fn bufring_pool_recovers_after_running_dry() {
    // Run the pool dry while holding chunks, release them, and keep receiving: the op goes
    // on throughout and later chunks come from the pool again.
    let mut p = Proactor::builder().recv_buffers(4, 64).build().unwrap();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 0);
    let data = pattern(4096);
    let mut got = Vec::new();
    let mut held = Vec::new();
    client.write_all(&data[..2048]).unwrap();
    while got.len() < 2048 {
        let c = next(&mut p);
        assert!(c.more, "{c:?}");
        let buf = c.buf.unwrap();
        got.extend_from_slice(&buf);
        held.push(buf);
    }
    drop(held);
    client.write_all(&data[2048..]).unwrap();
    while got.len() < data.len() {
        let c = next(&mut p);
        assert!(c.more, "{c:?}");
        got.extend_from_slice(&c.buf.unwrap());
    }
    assert!(got == data);
    assert!(p.cancel(id));
    let (_, last) = finish(&mut p, id);
    assert_eq!(errno(&last), Some(libc::ECANCELED));
    p.poll(Some(Duration::ZERO)).unwrap();
}

#[test]
fn bufring_two_streams_share_the_pool() {
    let mut p = Proactor::builder().recv_buffers(8, 64).build().unwrap();
    let (s1, mut c1) = tcp_pair();
    let (s2, mut c2) = tcp_pair();
    let a = p.push(RecvMulti::new(fd(&s1)), 1);
    let b = p.push(RecvMulti::new(fd(&s2)), 2);
    let d1 = pattern(20_000);
    let d2: Vec<u8> = pattern(30_000).into_iter().rev().collect();
    let t1 = {
        let d = d1.clone();
        std::thread::spawn(move || c1.write_all(&d).unwrap())
    };
    let t2 = {
        let d = d2.clone();
        std::thread::spawn(move || c2.write_all(&d).unwrap())
    };
    let (mut g1, mut g2) = (Vec::new(), Vec::new());
    let mut ended = 0;
    while ended < 2 {
        let c = next(&mut p);
        let into = if c.id == a {
            &mut g1
        } else {
            assert_eq!(c.id, b);
            &mut g2
        };
        if c.more {
            into.extend_from_slice(&c.buf.unwrap());
        } else {
            assert_eq!(c.result.unwrap(), 0);
            ended += 1;
        }
    }
    t1.join().unwrap();
    t2.join().unwrap();
    assert!(g1 == d1 && g2 == d2);
}

/// Polls until `pop_into` fills `completion`; panics after a few seconds.
fn next_into(p: &mut Proactor, completion: &mut Completion) {
    let start = std::time::Instant::now();
    while !p.pop_into(completion) {
        assert!(start.elapsed() < Duration::from_secs(10), "no completion");
        p.poll(Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn bufring_pop_into_drops_what_the_completion_held() {
    // One pooled buffer: a later chunk comes from the pool only if `pop_into` dropped the
    // first, which the completion still held.
    let mut p = Proactor::builder().recv_buffers(1, 64).build().unwrap();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 7);
    let mut completion = Completion::default();
    client.write_all(b"first").unwrap();
    next_into(&mut p, &mut completion);
    assert_eq!((completion.token, completion.id), (7, id));
    assert!(completion.more && completion.op.is_none());
    assert_eq!(completion.result.as_ref().ok(), Some(&5));
    assert_eq!(completion.buf.as_deref(), Some(&b"first"[..]));
    assert!(completion.buf.as_ref().is_some_and(RecvBuf::is_pooled));
    // Nothing ready: `false`, and the completion is left empty.
    p.poll(Some(Duration::ZERO)).unwrap();
    assert!(!p.pop_into(&mut completion));
    assert!(completion.buf.is_none() && completion.op.is_none() && completion.result.is_ok());
    // The next chunk, or (a receive standing in for the multishot took its buffer when the
    // first arrived: kernels without buffer rings) the one after.
    let mut pooled = false;
    for word in [&b"second"[..], b"third"] {
        client.write_all(word).unwrap();
        next_into(&mut p, &mut completion);
        assert_eq!(completion.buf.as_deref(), Some(word));
        if completion.buf.as_ref().is_some_and(RecvBuf::is_pooled) {
            pooled = true;
            break;
        }
    }
    assert!(pooled, "the first chunk's buffer never came back");
    // The final completion, with its op, replaces the chunk.
    assert!(p.cancel(id));
    next_into(&mut p, &mut completion);
    assert_eq!((completion.id, completion.more), (id, false));
    assert!(completion.buf.is_none() && matches!(completion.op, Some(Op::RecvMulti(_))));
    assert_eq!(errno(&completion), Some(libc::ECANCELED));
}
