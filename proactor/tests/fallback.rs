//! The paths older kernels take, exercised on this one: each test runs in a child process
//! with `RINGLOOP_URING_DISABLE=all`, which makes the io_uring backend behave as if the
//! kernel had none of the optional features (no `EXT_ARG`, multishot ops, buffer rings,
//! `IORING_OP_WAITID`, `IORING_OP_SHUTDOWN`, `DEFER_TASKRUN`, …). On the epoll backend the
//! variable changes nothing and the same behaviour is checked.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown as How, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringloop_proactor::audit::AuditAllocator;
use ringloop_proactor::op::{
    AcceptMulti, ChildExit, PollAdd, Read, RecvMulti, Shutdown, Timeout, WaitId,
};
use ringloop_proactor::{Op, Proactor};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

const ALL_OFF: &[(&str, &str)] = &[("RINGLOOP_URING_DISABLE", "all")];

/// A proactor with every optional io_uring feature off (checked on io_uring).
fn degraded() -> Proactor {
    let p = Proactor::builder().recv_buffers(4, 64).build().unwrap();
    if is_uring(&p) {
        assert_eq!(p.features().names(), ["nodrop"], "features still on");
    }
    p
}

#[test]
fn fallback_recv_multi_runs_as_single_recvs() {
    if !isolate("fallback_recv_multi_runs_as_single_recvs", ALL_OFF) {
        return;
    }
    let mut p = degraded();
    let (server, mut client) = tcp_pair();
    p.push(RecvMulti::new(fd(&server)), 0);
    let data = pattern(50_000);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || client.write_all(&data).unwrap())
    };
    let mut got = Vec::new();
    let mut held = Vec::new();
    loop {
        let c = next(&mut p);
        if !c.more {
            assert_eq!(c.result.unwrap(), 0);
            break;
        }
        let buf = c.buf.unwrap();
        got.extend_from_slice(&buf);
        // Hold some chunks so both pool and owned buffers are used.
        if held.len() < 8 {
            held.push(buf);
        }
    }
    writer.join().unwrap();
    assert!(got == data);
}

#[test]
fn fallback_recv_multi_cancel() {
    if !isolate("fallback_recv_multi_cancel", ALL_OFF) {
        return;
    }
    let mut p = degraded();
    let (server, mut client) = tcp_pair();
    let id = p.push(RecvMulti::new(fd(&server)), 0);
    client.write_all(b"one").unwrap();
    assert_eq!(&*next(&mut p).buf.unwrap(), b"one");
    assert!(p.cancel(id));
    let (_, last) = finish(&mut p, id);
    assert_eq!(errno(&last), Some(libc::ECANCELED));
}

#[test]
fn fallback_accept_multi_runs_as_single_accepts() {
    if !isolate("fallback_accept_multi_runs_as_single_accepts", ALL_OFF) {
        return;
    }
    let fds_before = open_fds();
    let mut p = degraded();
    let listener = listener();
    let id = p.push(AcceptMulti::new(fd(&listener)), 0);
    let clients: Vec<_> = (0..5)
        .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
        .collect();
    let mut fds = Vec::new();
    while fds.len() < 5 {
        let c = next(&mut p);
        assert!(c.more, "{c:?}");
        fds.push(c.result.unwrap() as i32);
    }
    assert!(p.cancel(id));
    let (_, last) = finish(&mut p, id);
    assert_eq!(errno(&last), Some(libc::ECANCELED));
    for fd in fds {
        p.close_fd(fd).unwrap();
    }
    drop((clients, listener, p));
    assert_eq!(open_fds(), fds_before);
}

#[test]
fn fallback_poll_multishot_runs_as_rearmed_polls() {
    if !isolate("fallback_poll_multishot_runs_as_rearmed_polls", ALL_OFF) {
        return;
    }
    let mut p = degraded();
    let (r, w) = pipe();
    let id = p.push(PollAdd::multishot(r.as_raw_fd(), libc::POLLIN as u32), 0);
    let mut scratch = [0u8; 8];
    for _ in 0..3 {
        nix::unistd::write(&w, b"x").unwrap();
        let c = next(&mut p);
        assert!(c.more && c.id == id, "{c:?}");
        nix::unistd::read(&r, &mut scratch).unwrap();
        for extra in settle(&mut p) {
            assert!(extra.more && extra.id == id);
        }
    }
    assert!(p.cancel(id));
    let (_, last) = finish(&mut p, id);
    assert_eq!(errno(&last), Some(libc::ECANCELED));
}

#[test]
#[allow(clippy::zombie_processes)] // The WaitId ops reap the children.
fn fallback_waitid_polls_a_pidfd() {
    if !isolate("fallback_waitid_polls_a_pidfd", ALL_OFF) {
        return;
    }
    let fds_before = open_fds();
    let mut p = degraded();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let id = p.push(WaitId::new(child.id() as i32), 0);
    p.poll(Some(Duration::from_millis(10))).unwrap();
    assert!(p.pop().is_none());
    child.kill().unwrap();
    let (_, done) = finish(&mut p, id);
    let Some(Op::WaitId(wait)) = done.op else {
        panic!()
    };
    assert_eq!(wait.exit(), Some(ChildExit::Signaled(libc::SIGKILL)));

    let exited = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let done = run(&mut p, WaitId::new(exited.id() as i32));
    let Some(Op::WaitId(wait)) = done.op else {
        panic!()
    };
    assert_eq!(
        wait.exit(),
        Some(ChildExit::Exited(0)),
        "an already exited child"
    );

    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let id = p.push(WaitId::new(sleeper.id() as i32), 0);
    p.poll(Some(Duration::from_millis(5))).unwrap();
    assert!(p.cancel(id));
    let (_, done) = finish(&mut p, id);
    assert_eq!(errno(&done), Some(libc::ECANCELED));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    assert_eq!(errno(&run(&mut p, WaitId::new(1))), Some(libc::ECHILD));
    drop(p);
    assert_eq!(open_fds(), fds_before, "a pidfd leaked");
}

#[test]
fn fallback_shutdown_and_waits_without_ext_arg() {
    if !isolate("fallback_shutdown_and_waits_without_ext_arg", ALL_OFF) {
        return;
    }
    let mut p = degraded();
    let (server, mut client) = tcp_pair();
    assert_eq!(
        run(&mut p, Shutdown::new(fd(&server), How::Write))
            .result
            .unwrap(),
        0
    );
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(client.read(&mut [0u8; 4]).unwrap(), 0);

    // Timed waits (a timeout SQE stands in for EXT_ARG) return after the timeout...
    let start = Instant::now();
    p.poll(Some(Duration::from_millis(30))).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert!(p.pop().is_none(), "the wait timeout is internal");
    // ...or as soon as an op completes.
    let (r, w) = pipe();
    let id = p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(4)), 0);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        nix::unistd::write(&w, b"go").unwrap();
    });
    let start = Instant::now();
    p.poll(Some(Duration::from_secs(5))).unwrap();
    let (_, done) = finish(&mut p, id);
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(done.result.unwrap(), 2);
    t.join().unwrap();
    assert_eq!(
        run(&mut p, Timeout::new(Duration::from_millis(5)))
            .result
            .unwrap(),
        0
    );
}

#[test]
fn fallback_waits_without_abs_timer_are_never_early() {
    // Kernels 5.11–6.11: EXT_ARG but no IORING_ENTER_ABS_TIMER, so the wait's deadline is
    // turned back into a relative timeout just before the enter (semantics 43).
    const NO_ABS: &[(&str, &str)] = &[("RINGLOOP_URING_DISABLE", "abs_timer")];
    if !isolate("fallback_waits_without_abs_timer_are_never_early", NO_ABS) {
        return;
    }
    let mut p = Proactor::builder().build().unwrap();
    if is_uring(&p) {
        let names = p.features().names();
        assert!(!names.contains(&"abs_timer"), "{names:?}");
    }
    assert_polls_never_early(&mut p);
}
