//! Running, stopping and closing (SEMANTICS section B) and loop acquisition (section A).

mod support;

use std::time::Duration;

use ringloop_runtime::{
    get_event_loop, get_running_loop, new_event_loop, set_event_loop, EventLoop, LoopError,
};
use support::{assert_no_reports, new_loop, recording_loop, run_once, Log};

#[test]
fn semantics_1_new_event_loop_is_fresh_and_not_current() {
    set_event_loop(None);
    let a = new_event_loop().unwrap();
    let b = new_event_loop().unwrap();
    assert!(!a.same_loop(&b));
    assert!(!a.is_running() && !a.is_closed());
    assert!(matches!(
        get_event_loop(),
        Err(LoopError::NoCurrentLoop { .. })
    ));
}

#[test]
fn semantics_2_set_event_loop_is_per_thread() {
    let lp = new_loop();
    set_event_loop(Some(lp.clone()));
    assert!(get_event_loop().unwrap().same_loop(&lp));
    let other_thread = std::thread::spawn(|| match get_event_loop() {
        Err(LoopError::NoCurrentLoop { thread }) => thread,
        other => panic!("another thread saw a loop: {other:?}"),
    })
    .join()
    .unwrap();
    assert!(!other_thread.is_empty());
    set_event_loop(None);
}

#[test]
fn semantics_3_no_current_loop_is_an_error_never_a_new_loop() {
    let name = std::thread::Builder::new()
        .name("no-loop-here".into())
        .spawn(|| {
            let err = get_event_loop().unwrap_err();
            // Still none afterwards: nothing was created or set.
            assert!(get_event_loop().is_err());
            err.to_string()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        name,
        "There is no current event loop in thread 'no-loop-here'."
    );
}

#[test]
fn semantics_4_get_event_loop_inside_a_callback_is_the_running_loop() {
    let lp = new_loop();
    let other = new_loop();
    set_event_loop(Some(other.clone()));
    let seen = Log::new();
    let (sink, l2) = (seen.clone(), lp.clone());
    lp.call_soon(move || {
        sink.push(get_event_loop().unwrap().same_loop(&l2));
        sink.push(get_running_loop().unwrap().same_loop(&l2));
    })
    .unwrap();
    run_once(&lp);
    assert_eq!(seen.get(), vec![true, true]);
    set_event_loop(None);
}

#[test]
fn semantics_5_get_running_loop_only_while_running() {
    let lp = new_loop();
    assert!(matches!(get_running_loop(), Err(LoopError::NoRunningLoop)));
    assert_eq!(
        get_running_loop().unwrap_err().to_string(),
        "no running event loop"
    );
    let seen = Log::new();
    let sink = seen.clone();
    lp.call_soon(move || sink.push(get_running_loop().is_ok()))
        .unwrap();
    run_once(&lp);
    assert_eq!(seen.get(), vec![true]);
    assert!(get_running_loop().is_err());
}

#[test]
fn semantics_8_stop_finishes_the_iteration_and_9_keeps_later_callbacks() {
    let (lp, reports) = recording_loop();
    let log = Log::new();
    let (l1, lp1) = (log.clone(), lp.clone());
    lp.call_soon(move || {
        l1.push("a");
        lp1.stop();
        let l3 = l1.clone();
        lp1.call_soon(move || l3.push("nested")).unwrap();
    })
    .unwrap();
    let l2 = log.clone();
    lp.call_soon(move || l2.push("b")).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(log.take(), vec!["a", "b"]);
    // semantics 9: `nested` was kept and runs on the next run.
    run_once(&lp);
    assert_eq!(log.take(), vec!["nested"]);
    assert_no_reports(&reports);
}

#[test]
fn semantics_10_stop_before_run_forever_runs_one_iteration() {
    let lp = new_loop();
    let log = Log::new();
    let (l1, lp1) = (log.clone(), lp.clone());
    lp.call_soon(move || {
        l1.push(1);
        let l2 = l1.clone();
        lp1.call_soon(move || l2.push(2)).unwrap();
    })
    .unwrap();
    // A far timer must not make the single iteration block.
    lp.call_later(3600.0, || ()).unwrap();
    lp.stop();
    let started = std::time::Instant::now();
    lp.run_forever().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(log.take(), vec![1]);
    assert!(!lp.is_running());
}

#[test]
fn semantics_13_nested_runs_are_errors_and_the_outer_loop_is_unaffected() {
    let (lp, reports) = recording_loop();
    let other = new_loop();
    let seen = Log::new();
    let (sink, inner_lp, outer) = (seen.clone(), other.clone(), lp.clone());
    lp.call_soon(move || {
        sink.push(outer.run_forever().unwrap_err().to_string());
        sink.push(inner_lp.run_forever().unwrap_err().to_string());
        sink.push(
            inner_lp
                .run_until_complete(async { Ok::<_, LoopError>(()) })
                .unwrap_err()
                .to_string(),
        );
        outer.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(
        seen.get(),
        vec![
            "This event loop is already running".to_string(),
            "Cannot run the event loop while another loop is running".to_string(),
            "Cannot run the event loop while another loop is running".to_string(),
        ]
    );
    // The outer loop still works.
    assert_eq!(
        lp.run_until_complete(async { Ok::<_, LoopError>(7) })
            .unwrap(),
        7
    );
    assert_no_reports(&reports);
}

#[test]
fn semantics_14_run_until_complete_returns_the_output_or_the_error() {
    let lp = new_loop();
    assert_eq!(
        lp.run_until_complete(async { Ok::<_, LoopError>("done") })
            .unwrap(),
        "done"
    );
    let err = lp
        .run_until_complete(async { Err::<(), _>(LoopError::invalid_argument("boom")) })
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");
    // A loop future can be passed directly.
    let fut = lp.create_future::<u8>();
    let setter = fut.clone();
    lp.call_soon(move || setter.set_result(3)).unwrap();
    assert_eq!(lp.run_until_complete(fut).unwrap(), 3);
}

#[test]
fn semantics_14_a_future_of_another_loop_is_refused() {
    let lp = new_loop();
    let other = new_loop();
    let foreign = other.create_future::<u8>();
    let err = lp.run_until_complete(foreign).unwrap_err();
    assert!(matches!(err, LoopError::WrongLoop), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("The future belongs to a different loop"));
}

#[test]
fn semantics_15_stopped_before_complete() {
    let lp = new_loop();
    let stopper = lp.clone();
    lp.call_soon(move || stopper.stop()).unwrap();
    let never = lp.create_future::<()>();
    let err = lp.run_until_complete(never.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Event loop stopped before Future completed."
    );
    assert!(matches!(err, LoopError::StoppedBeforeComplete));
}

#[test]
fn semantics_16_no_stop_callback_is_left_behind() {
    let lp = new_loop();
    let fut = lp.create_future::<()>();
    let stopper = lp.clone();
    lp.call_soon(move || stopper.stop()).unwrap();
    assert!(lp.run_until_complete(fut.clone()).is_err());
    // Completing the orphaned future later must not stop an unrelated run early.
    fut.set_result(()).unwrap();
    let log = Log::new();
    let (sink, lp2) = (log.clone(), lp.clone());
    lp.call_later(0.02, move || {
        sink.push("timer");
        lp2.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(log.get(), vec!["timer"]);
}

#[test]
fn semantics_17_a_panicking_task_leaves_no_pending_stop() {
    let (lp, reports) = recording_loop();
    let err = lp
        .run_until_complete(async {
            panic!("task blew up");
            #[allow(unreachable_code)]
            Ok::<(), LoopError>(())
        })
        .unwrap_err();
    assert!(
        matches!(&err, LoopError::Panicked(msg) if msg == "task blew up"),
        "{err:?}"
    );
    // The next run_forever runs normally (it is not stopped at once).
    let log = Log::new();
    let (sink, lp2) = (log.clone(), lp.clone());
    lp.call_later(0.01, move || {
        sink.push("ran");
        lp2.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(log.get(), vec!["ran"]);
    // The error was retrieved: nothing "never retrieved" is reported.
    assert_no_reports(&reports);
}

#[test]
fn semantics_19_is_running_inside_and_outside() {
    let lp = new_loop();
    assert!(!lp.is_running());
    let seen = Log::new();
    let (sink, lp2) = (seen.clone(), lp.clone());
    lp.call_soon(move || sink.push(lp2.is_running())).unwrap();
    run_once(&lp);
    assert_eq!(seen.get(), vec![true]);
    assert!(!lp.is_running());
}

#[test]
fn semantics_20_close_while_running_is_an_error() {
    let lp = new_loop();
    let seen = Log::new();
    let (sink, lp2) = (seen.clone(), lp.clone());
    lp.call_soon(move || sink.push(lp2.close().unwrap_err().to_string()))
        .unwrap();
    run_once(&lp);
    assert_eq!(
        seen.get(),
        vec!["Cannot close a running event loop".to_string()]
    );
    assert!(!lp.is_closed());
}

#[test]
fn semantics_21_close_is_idempotent_and_irreversible() {
    let lp = new_loop();
    lp.close().unwrap();
    lp.close().unwrap();
    lp.close().unwrap();
    assert!(lp.is_closed());
}

#[test]
fn semantics_22_close_discards_pending_callbacks_and_timers() {
    let lp = new_loop();
    let log = Log::new();
    let l1 = log.clone();
    lp.call_soon(move || l1.push("soon")).unwrap();
    let l2 = log.clone();
    lp.call_later(-1.0, move || l2.push("timer")).unwrap();
    assert_eq!(lp.ready_len(), 1);
    lp.close().unwrap();
    assert_eq!(lp.ready_len(), 0);
    assert_eq!(lp.scheduled_timers(), 0);
    assert!(log.get().is_empty());
    // And the captured values were dropped (the log's only owner is us again).
    assert_eq!(std::rc::Rc::strong_count(&log_rc(&log)), 2);
}

fn log_rc<T>(log: &Log<T>) -> std::rc::Rc<std::cell::RefCell<Vec<T>>> {
    log.0.clone()
}

#[test]
fn semantics_23_everything_after_close_is_loop_closed() {
    let lp = new_loop();
    lp.close().unwrap();
    let closed = |r: Result<(), LoopError>| matches!(r, Err(LoopError::LoopClosed));
    assert!(closed(lp.run_forever()));
    assert!(closed(
        lp.run_until_complete(async { Ok::<_, LoopError>(()) })
    ));
    assert!(closed(lp.call_soon(|| ()).map(drop)));
    assert!(closed(lp.call_soon_threadsafe(|| ()).map(drop)));
    assert!(closed(lp.handle().call_soon_threadsafe(|| ()).map(drop)));
    assert!(closed(lp.call_later(1.0, || ()).map(drop)));
    assert!(closed(lp.call_at(lp.time(), || ()).map(drop)));
    assert!(closed(
        lp.create_task(async { Ok::<_, LoopError>(()) }).map(drop)
    ));
    assert!(closed(lp.add_signal_handler(libc::SIGUSR1, || ())));
    assert!(closed(lp.run_in_executor(None, || ()).map(drop)));
    // create_future still works.
    let fut = lp.create_future::<u8>();
    assert!(!fut.done());
    assert!(!lp.remove_signal_handler(libc::SIGUSR1).unwrap());
    assert!(lp.handle().is_closed());
}

#[test]
fn loop_is_not_send_and_handle_is_send_sync() {
    // Compile-time thread affinity (semantics 32 enforced by the type system).
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ringloop_runtime::LoopHandle>();
    send_sync::<LoopError>();
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    // Compiles only if EventLoop is !Send (otherwise the call is ambiguous).
    <EventLoop as AmbiguousIfSend<_>>::some_item();
    <ringloop_runtime::Future<u8> as AmbiguousIfSend<_>>::some_item();
    <ringloop_runtime::Handle as AmbiguousIfSend<_>>::some_item();
}

#[test]
fn semantics_7_a_forked_child_inherits_no_current_or_running_loop() {
    let lp = new_loop();
    set_event_loop(Some(lp.clone()));
    let statuses = Log::new();
    let (sink, stopper) = (statuses.clone(), lp.clone());
    lp.call_soon(move || {
        // Fork from inside a callback: the child sees neither loop.
        // SAFETY: the child only reads thread-locals and calls `_exit`, which are safe
        // after fork in a multi-threaded process.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let clean = get_event_loop().is_err() && get_running_loop().is_err();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if clean { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we just forked, into a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        sink.push(status);
        stopper.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(statuses.get(), vec![0], "the child saw a loop");
    // The parent still has its loop.
    assert!(get_event_loop().unwrap().same_loop(&lp));
    set_event_loop(None);
}

#[test]
fn run_runs_main_then_cancels_leftover_tasks_and_closes() {
    use std::cell::Cell;
    use std::rc::Rc;
    let cancelled_seen = Rc::new(Cell::new(false));
    let seen = cancelled_seen.clone();
    let out = ringloop_runtime::run(async move {
        let lp = get_running_loop()?;
        assert!(
            get_event_loop()?.same_loop(&lp),
            "run() makes its loop current"
        );
        let sleeper = lp.clone();
        lp.create_task(async move {
            if let Err(err) = sleeper.sleep(3600.0).await {
                seen.set(err.is_cancelled());
                return Err(err);
            }
            Ok(())
        })?;
        ringloop_runtime::sleep(0).await?;
        Ok::<_, LoopError>("main done")
    })
    .unwrap();
    assert_eq!(out, "main done");
    assert!(cancelled_seen.get(), "the leftover task was not cancelled");
    assert!(get_event_loop().is_err(), "run() resets the current loop");
    // Errors of main come back; a nested run() is refused.
    let err = ringloop_runtime::run(async { Err::<(), _>(LoopError::invalid_argument("x")) });
    assert_eq!(err.unwrap_err().to_string(), "x");
    let nested = ringloop_runtime::run(async {
        Ok::<_, LoopError>(ringloop_runtime::run(async { Ok::<_, LoopError>(()) }).is_err())
    });
    assert!(nested.unwrap());
}

#[test]
fn loops_run_on_the_backend_the_environment_selects() {
    use ringloop_runtime::proactor::BackendKind;
    let lp = new_loop();
    // So a run on "io_uring" can never silently be an epoll run (or the reverse).
    match std::env::var("RINGLOOP_BACKEND").as_deref() {
        Ok("epoll") => assert_eq!(lp.backend(), BackendKind::Epoll),
        Ok("io_uring" | "io-uring" | "uring") => assert_eq!(lp.backend(), BackendKind::IoUring),
        _ => {}
    }
    eprintln!("event loop backend: {}", lp.backend());
}

#[test]
fn a_loop_can_drive_a_custom_built_proactor() {
    use ringloop_runtime::proactor::{BackendChoice, BackendKind, Proactor};
    let proactor = Proactor::builder()
        .backend(BackendChoice::Epoll)
        .build()
        .expect("epoll is always available");
    let lp = EventLoop::with_proactor(proactor);
    assert_eq!(lp.backend(), BackendKind::Epoll);
    let lp2 = lp.clone();
    let out = lp
        .run_until_complete(async move {
            lp2.sleep(0.001).await?;
            Ok::<_, LoopError>(1)
        })
        .unwrap();
    assert_eq!(out, 1);
    lp.close().unwrap();
}
