//! I/O registration and one-shot ops against the real proactor, with real pipes.

mod support;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use ringloop_runtime::proactor::{op, Completion, Op};
use ringloop_runtime::{EventLoop, IoHandler, LoopError};
use support::{assert_no_reports, new_loop, recording_loop, run_until};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_all(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: writes from a live slice to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

/// Collects every chunk read from a pipe, re-arming its read from inside `complete`.
struct Reader {
    fd: i32,
    token: RefCell<Option<ringloop_runtime::IoToken>>,
    data: RefCell<Vec<u8>>,
    completions: RefCell<usize>,
}

impl IoHandler for Reader {
    fn complete(&self, lp: &EventLoop, completion: &mut Completion) {
        *self.completions.borrow_mut() += 1;
        let completion = completion.take();
        let Some(Op::Read(read)) = completion.op else {
            panic!("not a read: {completion:?}")
        };
        let n = completion.result.expect("the read succeeded") as usize;
        self.data.borrow_mut().extend_from_slice(&read.buf[..n]);
        if n > 0 {
            // Re-submitting from inside the handler must work (no borrow is held).
            let mut buf = read.buf;
            buf.clear();
            let token = self.token.borrow().unwrap();
            lp.submit(op::Read::new(self.fd, buf), token).unwrap();
        }
    }
}

#[test]
fn completions_reach_their_handler_and_handlers_can_resubmit() {
    let (lp, reports) = recording_loop();
    let (rd, wr) = pipe();
    let reader = Rc::new(Reader {
        fd: rd.as_raw_fd(),
        token: RefCell::new(None),
        data: RefCell::new(Vec::new()),
        completions: RefCell::new(0),
    });
    let token = lp.register_io(reader.clone()).unwrap();
    *reader.token.borrow_mut() = Some(token);
    lp.submit(op::Read::new(rd.as_raw_fd(), Vec::with_capacity(64)), token)
        .unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in [&b"hello "[..], b"proactor"] {
            std::thread::sleep(Duration::from_millis(20));
            write_all(&wr, chunk);
        }
        wr
    });
    run_until(&lp, || reader.data.borrow().len() == 14);
    assert_eq!(&*reader.data.borrow(), b"hello proactor");
    assert!(*reader.completions.borrow() >= 2);
    drop(writer.join().unwrap()); // EOF: the pending read completes with 0
    run_until(&lp, || lp.ops_in_flight() == 0);
    assert!(lp.deregister_io(token));
    assert!(!lp.deregister_io(token));
    assert_no_reports(&reports);
}

#[test]
fn completions_for_a_deregistered_handler_are_dropped_safely() {
    let (lp, reports) = recording_loop();
    struct Panicky;
    impl IoHandler for Panicky {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {
            panic!("a deregistered handler was called");
        }
    }
    let (rd, wr) = pipe();
    let token = lp.register_io(Rc::new(Panicky)).unwrap();
    lp.submit(op::Read::new(rd.as_raw_fd(), Vec::with_capacity(16)), token)
        .unwrap();
    assert!(lp.deregister_io(token));
    // A new handler may take the same slot: the stale token must not reach it.
    let count = Rc::new(RefCell::new(0));
    struct Counter(Rc<RefCell<usize>>);
    impl IoHandler for Counter {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {
            *self.0.borrow_mut() += 1;
        }
    }
    let token2 = lp.register_io(Rc::new(Counter(count.clone()))).unwrap();
    assert_ne!(token, token2);
    write_all(&wr, b"x");
    run_until(&lp, || lp.ops_in_flight() == 0);
    assert_eq!(*count.borrow(), 0);
    assert_no_reports(&reports);
}

/// A handler that deregisters itself (and another handler) inside `complete` stays alive
/// until the call returns, however few counts of it anyone else holds; both are dropped by
/// the end of that dispatch, and one deregistered outside dispatch is dropped at once.
#[test]
fn handlers_deregistered_during_their_completion_live_until_it_returns() {
    let (lp, reports) = recording_loop();
    struct Dropped(Rc<std::cell::Cell<bool>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    struct Other(#[allow(dead_code)] Dropped);
    impl IoHandler for Other {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {}
    }
    struct SelfRemoving {
        token: std::cell::Cell<Option<ringloop_runtime::IoToken>>,
        other: ringloop_runtime::IoToken,
        dropped: Dropped,
        name: String,
        seen: Rc<RefCell<Vec<String>>>,
    }
    impl IoHandler for SelfRemoving {
        fn complete(&self, lp: &EventLoop, _: &mut Completion) {
            assert!(lp.deregister_io(self.token.get().unwrap()));
            assert!(lp.deregister_io(self.other));
            // Slots freed above are taken again: the registry moves on meanwhile.
            let replacement = lp
                .register_io(Rc::new(Other(Dropped(Rc::default()))))
                .unwrap();
            assert!(!self.dropped.0.get(), "dropped during its own completion");
            self.seen.borrow_mut().push(self.name.clone());
            lp.deregister_io(replacement);
        }
    }
    let self_dropped = Rc::new(std::cell::Cell::new(false));
    let other_dropped = Rc::new(std::cell::Cell::new(false));
    let other = lp
        .register_io(Rc::new(Other(Dropped(other_dropped.clone()))))
        .unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let handler = Rc::new(SelfRemoving {
        token: std::cell::Cell::new(None),
        other,
        dropped: Dropped(self_dropped.clone()),
        name: "still here".to_string(),
        seen: seen.clone(),
    });
    let token = lp.register_io(handler.clone()).unwrap();
    handler.token.set(Some(token));
    // The registry holds the only count from here on.
    drop(handler);
    lp.submit(op::Nop, token).unwrap();
    run_until(&lp, || !seen.borrow().is_empty());
    assert_eq!(*seen.borrow(), ["still here"]);
    assert!(self_dropped.get(), "dropped once its completion returned");
    assert!(other_dropped.get());
    assert_eq!(lp.registered_io(), 0);
    // Outside dispatch, deregistering drops the handler at once.
    let dropped = Rc::new(std::cell::Cell::new(false));
    let token = lp
        .register_io(Rc::new(Other(Dropped(dropped.clone()))))
        .unwrap();
    assert!(lp.deregister_io(token));
    assert!(dropped.get());
    assert_no_reports(&reports);
}

#[test]
fn a_panicking_handler_is_reported_and_the_loop_goes_on() {
    let (lp, reports) = recording_loop();
    struct Panicky;
    impl IoHandler for Panicky {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {
            support::fail("handler panicked");
        }
    }
    let token = lp.register_io(Rc::new(Panicky)).unwrap();
    lp.submit(op::Nop, token).unwrap();
    run_until(&lp, || reports.len() == 1);
    let got = reports.take();
    assert_eq!(got[0].message, "Exception in I/O completion handler");
}

#[test]
fn run_op_resolves_to_the_completion_with_the_buffers() {
    let (lp, reports) = recording_loop();
    let (rd, wr) = pipe();
    write_all(&wr, b"ping");
    let lp2 = lp.clone();
    let fd = rd.as_raw_fd();
    let (n, data) = lp
        .run_until_complete(async move {
            let done = lp2
                .run_op(op::Read::new(fd, Vec::with_capacity(16)))
                .await?;
            let n = done.result.map_err(LoopError::from)?;
            let Some(Op::Read(read)) = done.op else {
                unreachable!()
            };
            let nop = lp2.run_op(op::Nop).await?;
            assert_eq!(nop.result.unwrap(), 0);
            let timeout = lp2
                .run_op(op::Timeout::new(Duration::from_millis(5)))
                .await?;
            assert!(
                timeout.result.is_ok()
                    || timeout.result.as_ref().unwrap_err().raw_os_error() == Some(libc::ETIME)
            );
            Ok::<_, LoopError>((n, read.buf))
        })
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(data, b"ping");
    assert_eq!(
        lp.registered_io(),
        0,
        "one-shot handlers deregister themselves"
    );
    assert_no_reports(&reports);
}

#[test]
fn dropping_or_cancelling_run_op_detaches_the_op() {
    let (lp, reports) = recording_loop();
    let (rd, _wr) = pipe();
    // Dropped before completion: the read (which would never complete) is detached.
    let pending = lp.run_op(op::Read::new(rd.as_raw_fd(), Vec::with_capacity(16)));
    assert!(pending.id().is_some());
    assert_eq!(lp.ops_in_flight(), 1);
    drop(pending);
    assert_eq!(lp.registered_io(), 0);
    run_until(&lp, || lp.ops_in_flight() == 0);

    // Cancelled through its task: the await yields Cancelled and the op is detached.
    let lp2 = lp.clone();
    let fd = rd.as_raw_fd();
    let task = lp
        .create_task(async move { lp2.run_op(op::Read::new(fd, Vec::with_capacity(16))).await })
        .unwrap();
    support::run_once(&lp);
    assert_eq!(lp.ops_in_flight(), 1);
    assert!(task.cancel());
    let err = lp.run_until_complete(task).unwrap_err();
    assert!(err.is_cancelled());
    run_until(&lp, || lp.ops_in_flight() == 0);
    assert_eq!(lp.registered_io(), 0);
    assert_no_reports(&reports);
}

#[test]
fn submitting_to_a_closed_loop_fails() {
    let lp = new_loop();
    struct Nothing;
    impl IoHandler for Nothing {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {}
    }
    let token = lp.register_io(Rc::new(Nothing)).unwrap();
    lp.close().unwrap();
    assert!(matches!(
        lp.submit(op::Nop, token),
        Err(LoopError::LoopClosed)
    ));
    assert!(matches!(
        lp.register_io(Rc::new(Nothing)),
        Err(LoopError::LoopClosed)
    ));
    let err = lp
        .run_until_complete(async { Ok::<_, LoopError>(()) })
        .unwrap_err();
    assert!(matches!(err, LoopError::LoopClosed));
    let lp2 = new_loop();
    let fut = lp.run_op(op::Nop);
    let err = lp2.run_until_complete(fut).unwrap_err();
    assert!(matches!(err, LoopError::LoopClosed));
}

#[test]
fn close_waits_for_in_flight_ops() {
    let lp = new_loop();
    let (rd, _wr) = pipe();
    struct Nothing;
    impl IoHandler for Nothing {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {}
    }
    let token = lp.register_io(Rc::new(Nothing)).unwrap();
    lp.submit(op::Read::new(rd.as_raw_fd(), Vec::with_capacity(16)), token)
        .unwrap();
    support::run_once(&lp);
    lp.close().unwrap();
    assert_eq!(lp.ops_in_flight(), 0);
}

#[test]
fn accept_multishot_hands_over_owned_connections_until_cancelled() {
    use ringloop_runtime::AcceptHandler;
    use std::io;

    struct Collect {
        accepted: RefCell<Vec<OwnedFd>>,
        finished: RefCell<Option<io::Result<()>>>,
    }
    impl AcceptHandler for Collect {
        fn accepted(&self, _: &EventLoop, connection: io::Result<OwnedFd>) {
            self.accepted
                .borrow_mut()
                .push(connection.expect("an accepted connection"));
        }
        fn finished(&self, _: &EventLoop, result: io::Result<()>) {
            *self.finished.borrow_mut() = Some(result);
        }
    }

    let (lp, reports) = recording_loop();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Rc::new(Collect {
        accepted: RefCell::new(Vec::new()),
        finished: RefCell::new(None),
    });
    let acceptor = lp
        .accept_multishot(listener.as_raw_fd(), handler.clone())
        .unwrap();
    assert!(acceptor.is_active());
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    run_until(&lp, || handler.accepted.borrow().len() == 3);
    // The accepted fds are real connections to our clients.
    for fd in handler.accepted.borrow().iter() {
        let mut addr: libc::sockaddr_storage = unsafe_zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: getpeername writes at most `len` bytes into a live, large-enough struct.
        let rc = unsafe {
            libc::getpeername(
                fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
    }
    assert!(acceptor.cancel());
    run_until(&lp, || handler.finished.borrow().is_some());
    let finished = handler.finished.borrow_mut().take().unwrap();
    assert_eq!(finished.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert!(!acceptor.is_active());
    drop(clients);
    assert_no_reports(&reports);
}

fn unsafe_zeroed() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero bytes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The loop reports its proactor's features: some on io_uring, none on epoll.
#[test]
fn loop_reports_the_proactor_features_it_uses() {
    let lp = ringloop_runtime::EventLoop::new().unwrap();
    let features = lp.features();
    match lp.backend() {
        ringloop_runtime::proactor::BackendKind::IoUring => assert!(features.sq_entries > 0),
        ringloop_runtime::proactor::BackendKind::Epoll => assert!(features.names().is_empty()),
    }
    lp.close().unwrap();
    assert_eq!(
        lp.features(),
        Default::default(),
        "a closed loop has no proactor"
    );
}

struct Ignore;

impl IoHandler for Ignore {
    fn complete(&self, _lp: &EventLoop, _completion: &mut Completion) {}
}

/// A multishot accept whose handler was deregistered must not leak the fds it still
/// produces: the loop closes them, so the client sees end of stream.
#[test]
fn orphaned_multishot_accept_closes_late_connections() {
    use std::io::Read;
    let lp = new_loop();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let token = lp.register_io(Rc::new(Ignore)).unwrap();
    lp.submit(op::AcceptMulti::new(listener.as_raw_fd()), token)
        .unwrap();
    assert!(lp.deregister_io(token));
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ops_before = lp.ops_in_flight();
    assert_eq!(ops_before, 1, "the multishot accept is still armed");
    // The accept completes for a handler that is gone: the loop detaches the op and
    // closes the new fd.
    run_until(&lp, || lp.ops_in_flight() == 0);
    let mut buf = [0u8; 1];
    let n = client
        .read(&mut buf)
        .expect("the orphaned connection is closed, not leaked");
    assert_eq!(n, 0, "end of stream");
    lp.close().unwrap();
}

/// The loop's quiet-op API: a send that fully succeeds is not dispatched; `reclaim_op` hands
/// its completion back, `resend_op` reuses it in place, and a second reclaim finds nothing.
#[test]
fn quiet_sends_are_kept_for_their_owner_through_the_loop() {
    let (lp, reports) = recording_loop();
    let (rd, wr) = pipe();
    let calls = Rc::new(RefCell::new(0));
    struct Count(Rc<RefCell<usize>>);
    impl IoHandler for Count {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {
            *self.0.borrow_mut() += 1;
        }
    }
    let token = lp.register_io(Rc::new(Count(calls.clone()))).unwrap();
    let id = lp
        .submit_quiet(op::Write::new(wr.as_raw_fd(), b"one".to_vec()), token)
        .unwrap();
    support::run_once(&lp);
    support::run_once(&lp);
    assert_eq!(*calls.borrow(), 0, "a quiet success is not dispatched");
    let mut buf = b"two".to_vec();
    assert!(lp.resend_op(id, &mut buf), "finished: sent again");
    assert_eq!(buf, b"one", "the sent buffer comes back");
    support::run_once(&lp);
    support::run_once(&lp);
    let done = lp.reclaim_op(id).expect("finished again");
    assert_eq!(*done.result.as_ref().unwrap(), 3);
    assert!(lp.reclaim_op(id).is_none(), "only once");
    assert_eq!(lp.ops_in_flight(), 0);
    assert_eq!(*calls.borrow(), 0);
    let mut got = [0u8; 6];
    std::io::Read::read_exact(&mut std::fs::File::from(rd), &mut got).unwrap();
    assert_eq!(&got, b"onetwo");
    assert_no_reports(&reports);
}

/// `resends` lends the proactor for a run of resends: each behaves as `resend_op`; while
/// it lives, other uses of the proactor panic; a closed loop lends nothing.
#[test]
fn resends_share_one_borrow_of_the_proactor() {
    let (lp, reports) = recording_loop();
    struct Ignore;
    impl IoHandler for Ignore {
        fn complete(&self, _: &EventLoop, _: &mut Completion) {}
    }
    let token = lp.register_io(Rc::new(Ignore)).unwrap();
    let pipes = [pipe(), pipe()];
    let ids: Vec<_> = pipes
        .iter()
        .map(|(_, wr)| {
            lp.submit_quiet(op::Write::new(wr.as_raw_fd(), b"one".to_vec()), token)
                .unwrap()
        })
        .collect();
    support::run_once(&lp);
    support::run_once(&lp);
    {
        let mut resends = lp.resends().expect("an open loop lends its proactor");
        for &id in &ids {
            let mut buf = b"two".to_vec();
            assert!(resends.resend(id, &mut buf), "finished: sent again");
            assert_eq!(buf, b"one", "the sent buffer comes back");
        }
        let nested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.submit(op::Nop, token);
        }));
        assert!(nested.is_err(), "the proactor is borrowed meanwhile");
    }
    support::run_once(&lp);
    support::run_once(&lp);
    for (id, (rd, _)) in ids.into_iter().zip(pipes) {
        let done = lp.reclaim_op(id).expect("finished again");
        assert_eq!(*done.result.as_ref().unwrap(), 3);
        let mut got = [0u8; 6];
        std::io::Read::read_exact(&mut std::fs::File::from(rd), &mut got).unwrap();
        assert_eq!(&got, b"onetwo");
    }
    assert_eq!(lp.ops_in_flight(), 0);
    lp.close().unwrap();
    assert!(lp.resends().is_none(), "a closed loop lends nothing");
    assert_no_reports(&reports);
}
