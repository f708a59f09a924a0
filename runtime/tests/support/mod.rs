//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, ExceptionContext};

/// A shared, ordered record of what happened.
#[derive(Clone, Default)]
pub struct Log<T>(pub Rc<RefCell<Vec<T>>>);

impl<T: Clone> Log<T> {
    pub fn new() -> Self {
        Log(Rc::new(RefCell::new(Vec::new())))
    }

    pub fn push(&self, item: T) {
        self.0.borrow_mut().push(item);
    }

    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    pub fn get(&self) -> Vec<T> {
        self.0.borrow().clone()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A fresh loop on the backend `RINGLOOP_BACKEND` selects.
pub fn new_loop() -> EventLoop {
    EventLoop::new().expect("a proactor can be built on this machine")
}

/// A fresh loop whose exception handler records every report (uvloop's harness fails a
/// test whose loop reported anything unexpectedly, semantics 52).
pub fn recording_loop() -> (EventLoop, Log<ExceptionContext>) {
    let lp = new_loop();
    let reports = Log::new();
    let sink = reports.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
        sink.push(ctx.clone())
    }));
    (lp, reports)
}

/// Asserts that nothing was reported, printing what was.
pub fn assert_no_reports(reports: &Log<ExceptionContext>) {
    let got = reports.get();
    assert!(
        got.is_empty(),
        "unexpected exception handler calls: {:#?}",
        got
    );
}

/// Runs `lp` until `cond` holds, one `run_forever` turn at a time (bounded).
pub fn run_until(lp: &EventLoop, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 20 s"
        );
        let stopper = lp.clone();
        lp.call_later(0.001, move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
    }
}

/// Runs exactly one iteration (the `call_soon(stop); run_forever()` idiom, semantics 10).
pub fn run_once(lp: &EventLoop) {
    lp.stop();
    lp.run_forever().unwrap();
}

/// Panics with `msg`; returns `()` as far as the type checker knows, so a callback made of
/// it has a `()` output (a closure that only panics would have the never type).
pub fn fail(msg: &str) {
    panic!("{msg}")
}

/// Runs `body` in a child process (a re-run of this test binary, filtered to `test_name`),
/// for tests that change process-wide state such as signal dispositions. In the parent it
/// asserts the child ran exactly that one test and passed.
pub fn in_child_process(test_name: &str, body: impl FnOnce()) {
    const CHILD: &str = "RINGLOOP_TEST_CHILD";
    if std::env::var(CHILD).as_deref() == Ok(test_name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test_name)
        .output()
        .expect("the test binary re-runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child for {test_name} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "child for {test_name} did not run the test\nstdout:\n{stdout}"
    );
}

/// Every `tracing` event emitted on this thread while `body` runs, as (level, message).
pub fn capture_logs(body: impl FnOnce()) -> Vec<(tracing::Level, String)> {
    use std::sync::{Arc, Mutex};
    use tracing::span::{Attributes, Id, Record};

    struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);
    struct Message(String);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message.0));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Capture(events.clone()), body);
    let got = events.lock().unwrap().clone();
    got
}

/// Stops `lp` after `secs` seconds, so a test whose wake-up never comes fails (with
/// `StoppedBeforeComplete` or a failed assertion) instead of hanging. Cancel the returned
/// handle once the awaited event happened.
pub fn guard(lp: &EventLoop, secs: f64) -> ringloop_runtime::TimerHandle {
    let stopper = lp.clone();
    lp.call_later(secs, move || stopper.stop()).unwrap()
}
