//! The exception handler and debug mode (SEMANTICS section E, 33).

mod support;

use std::time::Duration;

use ringloop_runtime::{EventLoop, ExceptionContext, LoopError};
use support::{new_loop, recording_loop, run_once, Log};

#[test]
fn semantics_47_custom_handler_none_restores_the_default() {
    let (lp, reports) = recording_loop();
    assert!(lp.get_exception_handler().is_some());
    lp.call_exception_handler(ExceptionContext::new("custom"));
    assert_eq!(reports.take().len(), 1);
    lp.set_exception_handler(None::<fn(&EventLoop, &ExceptionContext)>);
    assert!(lp.get_exception_handler().is_none());
    lp.call_exception_handler(ExceptionContext::new("to the log"));
    assert!(reports.get().is_empty());
}

#[test]
fn semantics_46_the_handler_gets_the_loop_and_context() {
    let lp = new_loop();
    let seen = Log::new();
    let (sink, me) = (seen.clone(), lp.clone());
    lp.set_exception_handler(Some(move |got: &EventLoop, ctx: &ExceptionContext| {
        sink.push((
            got.same_loop(&me),
            ctx.message.clone(),
            ctx.error.is_some(),
            ctx.handle.is_some(),
        ));
    }));
    lp.call_soon(|| support::fail("x")).unwrap();
    run_once(&lp);
    let got = seen.get();
    assert_eq!(got.len(), 1);
    assert!(got[0].0);
    assert!(got[0].1.starts_with("Exception in callback"));
    assert!(got[0].2 && got[0].3);
}

#[test]
fn semantics_49_default_handler_renders_message_and_sorted_keys() {
    let ctx = ExceptionContext::new("")
        .with_error(LoopError::invalid_argument("bad"))
        .with_extra("transport", "<Transport>")
        .with_extra("protocol", "<Protocol>");
    assert_eq!(
        ctx.render(),
        "Unhandled exception in event loop\nerror: bad\nprotocol: <Protocol>\ntransport: <Transport>"
    );
    // The default handler never panics, whatever the context.
    new_loop().default_exception_handler(&ctx);
}

#[test]
fn a_panicking_handler_is_reported_and_the_loop_goes_on() {
    let lp = new_loop();
    lp.set_exception_handler(Some(|_: &EventLoop, _: &ExceptionContext| {
        support::fail("handler")
    }));
    let log = Log::new();
    lp.call_soon(|| support::fail("callback")).unwrap();
    let l = log.clone();
    lp.call_soon(move || l.push("after")).unwrap();
    run_once(&lp);
    assert_eq!(log.get(), vec!["after"]);
}

#[test]
fn semantics_33_debug_mode_warns_about_slow_callbacks() {
    let (lp, reports) = recording_loop();
    assert!(!lp.get_debug());
    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(100));
    let slow = |lp: &EventLoop| {
        lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)))
            .unwrap();
        run_once(lp);
    };
    lp.set_slow_callback_duration(Duration::from_millis(5));
    // Debug off: nothing is timed.
    let quiet = support::capture_logs(|| slow(&lp));
    assert!(
        quiet.iter().all(|(_, m)| !m.starts_with("Executing")),
        "{quiet:?}"
    );
    lp.set_debug(true);
    let logs = support::capture_logs(|| slow(&lp));
    let warning = logs
        .iter()
        .find(|(level, m)| *level == tracing::Level::WARN && m.starts_with("Executing <Handle"))
        .unwrap_or_else(|| panic!("no slow-callback warning in {logs:?}"));
    assert!(warning.1.contains(" took 0.0"), "{}", warning.1);
    assert!(warning.1.ends_with(" seconds"), "{}", warning.1);
    // Fast callbacks are not reported.
    let fast = support::capture_logs(|| {
        lp.call_soon(|| ()).unwrap();
        run_once(&lp);
    });
    assert!(
        fast.iter().all(|(_, m)| !m.starts_with("Executing")),
        "{fast:?}"
    );
    support::assert_no_reports(&reports);
}

#[test]
fn semantics_49_default_handler_logs_at_error() {
    let lp = new_loop();
    let logs = support::capture_logs(|| {
        lp.call_soon(|| support::fail("logged")).unwrap();
        run_once(&lp);
    });
    let (level, message) = logs
        .iter()
        .find(|(_, m)| m.starts_with("Exception in callback"))
        .unwrap_or_else(|| panic!("nothing logged: {logs:?}"));
    assert_eq!(*level, tracing::Level::ERROR);
    assert!(
        message.contains("\nerror: panicked: logged\nhandle: <Handle"),
        "{message}"
    );
}
