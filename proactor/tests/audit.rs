//! The buffer audit itself: it records what ops lend, forgets it at the final completion,
//! and aborts the process when lent memory is freed or reallocated early. Each test runs in
//! a child process so the registry counts are its own.

mod support;

use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop_proactor::audit::{self, AuditAllocator};
use ringloop_proactor::op::{Read, Readv, Recv, RecvMsg, Timeout};
use support::*;

#[global_allocator]
static ALLOC: AuditAllocator = AuditAllocator;

/// Runs `name` in a child expected to abort with the audit's message about `what`.
fn expect_abort(name: &str, what: &str) {
    let out = child(name, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived:\n{stderr}");
    let expected = format!("ringloop buffer audit: memory lent to the kernel was {what} before its op's final completion");
    assert!(stderr.contains(&expected), "no audit message in:\n{stderr}");
}

fn in_child(name: &str) -> bool {
    std::env::var("RINGLOOP_TEST_CHILD").as_deref() == Ok(name)
}

#[test]
fn audit_aborts_when_lent_memory_is_freed() {
    const NAME: &str = "audit_aborts_when_lent_memory_is_freed";
    if in_child(NAME) {
        let buf = vec![0u8; 4096];
        audit::lend_range(buf.as_ptr(), buf.capacity());
        drop(buf);
        unreachable!("the audit let a lent buffer be freed");
    }
    expect_abort(NAME, "freed");
}

#[test]
fn audit_aborts_when_lent_memory_is_reallocated() {
    const NAME: &str = "audit_aborts_when_lent_memory_is_reallocated";
    if in_child(NAME) {
        let mut buf = Vec::<u8>::with_capacity(16);
        audit::lend_range(buf.as_ptr(), buf.capacity());
        buf.extend_from_slice(&[0; 64]);
        unreachable!("the audit let a lent buffer move");
    }
    expect_abort(NAME, "reallocated");
}

#[test]
fn audit_allows_freeing_after_reclaim() {
    let buf = vec![0u8; 100];
    audit::lend_range(buf.as_ptr(), buf.capacity());
    audit::reclaim_range(buf.as_ptr(), buf.capacity());
    drop(buf);
}

#[test]
fn audit_records_op_memory_until_the_final_completion() {
    if !isolate("audit_records_op_memory_until_the_final_completion", &[]) {
        return;
    }
    assert_eq!(audit::lent(), 0);
    let mut p = proactor();
    let base = audit::lent();
    let (r, w) = pipe();
    let id = p.push(Read::new(r.as_raw_fd(), Vec::with_capacity(100)), 0);
    assert_eq!(audit::lent(), base + 1, "a read lends its buffer");
    nix::unistd::write(&w, b"x").unwrap();
    finish(&mut p, id);
    assert_eq!(audit::lent(), base, "reclaimed at the final completion");

    let bufs = vec![Vec::with_capacity(8), Vec::with_capacity(8), Vec::new()];
    let id = p.push(Readv::new(r.as_raw_fd(), bufs), 0);
    assert_eq!(audit::lent(), base + 3, "two buffers and the iovec array");
    nix::unistd::write(&w, b"y").unwrap();
    finish(&mut p, id);
    assert_eq!(audit::lent(), base);

    let sock = udp();
    let id = p.push(RecvMsg::new(fd(&sock), Vec::with_capacity(8)), 0);
    assert_eq!(
        audit::lent(),
        base + 3,
        "buffer, header scratch and its iovec"
    );
    p.poll(Some(Duration::ZERO)).unwrap();
    assert!(p.cancel(id));
    finish(&mut p, id);
    assert_eq!(audit::lent(), base, "reclaimed after a cancel");

    let (server, _client) = tcp_pair();
    let id = p.push(Recv::new(fd(&server), Vec::with_capacity(64)), 0);
    p.push(Timeout::new(Duration::from_secs(60)), 0);
    p.poll(Some(Duration::ZERO)).unwrap();
    p.detach(id);
    assert!(audit::lent() > base, "a detached op keeps its memory lent");
    drop(p);
    assert_eq!(
        audit::lent(),
        0,
        "dropping the proactor reclaims everything"
    );
    assert_eq!(audit::unrecorded(), 0);
}
