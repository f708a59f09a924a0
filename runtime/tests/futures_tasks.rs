//! Futures and tasks (SEMANTICS section F) and the reports they make (section E, 50).

mod support;

use std::cell::Cell;
use std::rc::Rc;

use ringloop_runtime::{sleep, LoopError};
use support::{assert_no_reports, new_loop, recording_loop, run_once, Log};

#[test]
fn semantics_53_done_callbacks_are_scheduled_in_order_never_synchronous() {
    let (lp, reports) = recording_loop();
    let fut = lp.create_future::<i32>();
    let log = Log::new();
    let l = log.clone();
    fut.add_done_callback(move |f| l.push(f.result().unwrap() + 1));
    let l = log.clone();
    fut.add_done_callback(move |f| l.push(f.result().unwrap() * 2));
    fut.set_result(21).unwrap();
    assert!(log.get().is_empty(), "a callback ran inside set_result");
    run_once(&lp);
    assert_eq!(log.take(), vec![22, 42]);
    // Added to a done future: scheduled, not called.
    let l = log.clone();
    fut.add_done_callback(move |_| l.push(0));
    assert!(log.get().is_empty());
    run_once(&lp);
    assert_eq!(log.take(), vec![0]);
    assert_no_reports(&reports);
}

#[test]
fn semantics_53_remove_done_callback() {
    let lp = new_loop();
    let fut = lp.create_future::<()>();
    let log = Log::new();
    let l = log.clone();
    let id = fut.add_done_callback(move |_| l.push("removed"));
    let l = log.clone();
    fut.add_done_callback(move |_| l.push("kept"));
    assert_eq!(fut.remove_done_callback(id), 1);
    assert_eq!(fut.remove_done_callback(id), 0);
    assert!(fut.cancel());
    run_once(&lp);
    assert_eq!(log.get(), vec!["kept"]);
}

#[test]
fn future_states_and_invalid_state_errors() {
    let lp = new_loop();
    let fut = lp.create_future::<u8>();
    assert_eq!(
        fut.result().unwrap_err().to_string(),
        "Result is not ready."
    );
    assert_eq!(
        fut.exception().unwrap_err().to_string(),
        "Exception is not set."
    );
    fut.set_result(1).unwrap();
    let err = fut.set_result(2).unwrap_err();
    assert!(
        matches!(&err, LoopError::InvalidState(m) if m.starts_with("FINISHED: <Future")),
        "{err}"
    );
    assert!(!fut.cancel());
    assert_eq!(fut.result().unwrap(), 1);
    assert_eq!(fut.exception().unwrap().map(|e| e.to_string()), None);
    assert_eq!(fut.take_result().unwrap(), 1);
    assert!(fut.take_result().is_err());

    let cancelled = lp.create_future::<u8>();
    assert!(cancelled.cancel());
    assert!(cancelled.cancelled() && cancelled.done());
    assert!(cancelled.result().unwrap_err().is_cancelled());
    assert!(cancelled.exception().unwrap_err().is_cancelled());
    let err = cancelled.set_exception(LoopError::LoopClosed).unwrap_err();
    assert!(err.to_string().starts_with("CANCELLED: "), "{err}");

    let failed = lp.create_future::<u8>();
    failed
        .set_exception(LoopError::invalid_argument("nope"))
        .unwrap();
    assert_eq!(failed.exception().unwrap().unwrap().to_string(), "nope");
}

#[test]
fn semantics_55_a_task_does_not_start_synchronously() {
    let lp = new_loop();
    let log = Log::new();
    let l = log.clone();
    lp.call_soon({
        let l = log.clone();
        move || l.push("callback before")
    })
    .unwrap();
    let task = lp
        .create_task(async move {
            l.push("task body");
            Ok::<_, LoopError>(())
        })
        .unwrap();
    assert!(log.get().is_empty());
    run_once(&lp);
    assert_eq!(log.get(), vec!["callback before", "task body"]);
    assert!(task.done());
}

#[test]
fn semantics_56_sleep_zero_yields_exactly_one_iteration() {
    let (lp, reports) = recording_loop();
    let log = Log::new();
    let (l, lp2) = (log.clone(), lp.clone());
    let result = lp.run_until_complete(async move {
        let l2 = l.clone();
        lp2.call_soon(move || l2.push("callback")).unwrap();
        l.push("before sleep");
        sleep(0).await?;
        l.push("after sleep");
        // A negative delay behaves the same.
        let l3 = l.clone();
        lp2.call_soon(move || l3.push("callback 2")).unwrap();
        lp2.sleep(-1.0).await?;
        l.push("after sleep 2");
        Ok::<_, LoopError>(5)
    });
    assert_eq!(result.unwrap(), 5);
    assert_eq!(
        log.get(),
        vec![
            "before sleep",
            "callback",
            "after sleep",
            "callback 2",
            "after sleep 2"
        ]
    );
    assert_no_reports(&reports);
}

#[test]
fn semantics_56_sleep_nan_is_an_error_and_sleep_waits() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let err = lp
        .run_until_complete(async move { lp2.sleep(f64::NAN).await })
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid delay: NaN (not a number)");
    let lp2 = lp.clone();
    let started = lp.time();
    lp.run_until_complete(async move { lp2.sleep(0.03).await })
        .unwrap();
    assert!(lp.time() - started >= 0.03);
    // Outside a running loop, sleep() has no loop to use.
    let lp3 = new_loop();
    let not_running = sleep(0.0);
    let err = lp3.run_until_complete(not_running).unwrap_err();
    assert!(matches!(err, LoopError::NoRunningLoop), "{err:?}");
}

#[test]
fn semantics_57_cancel_reaches_the_awaited_future_and_may_be_ignored() {
    let (lp, reports) = recording_loop();
    let inner = lp.create_future::<u8>();
    let seen = Rc::new(Cell::new(false));
    let (awaited, s) = (inner.clone(), seen.clone());
    let task = lp
        .create_task(async move {
            match awaited.await {
                Err(LoopError::Cancelled) => s.set(true),
                other => panic!("expected a cancellation, got {other:?}"),
            }
            // Carry on after catching it: the task does not end cancelled.
            Ok::<_, LoopError>("carried on")
        })
        .unwrap();
    run_once(&lp); // the task now waits on `inner`
    assert!(task.cancel());
    assert!(
        inner.cancelled(),
        "cancel() did not reach the awaited future"
    );
    let out = lp.run_until_complete(task.clone()).unwrap();
    assert_eq!(out, "carried on");
    assert!(seen.get());
    assert!(!task.cancelled());
    assert_no_reports(&reports);
}

#[test]
fn semantics_57_cancellation_propagates_through_awaited_tasks() {
    let lp = new_loop();
    let lp2 = lp.clone();
    let child = lp
        .create_task(async move { lp2.sleep(3600.0).await.map(|_| 1) })
        .unwrap();
    let awaited = child.clone();
    // The parent is a task of its own that awaits the child (not the child re-wrapped).
    #[allow(clippy::redundant_async_block)]
    let parent = lp.create_task(async move { awaited.await }).unwrap();
    run_once(&lp);
    run_once(&lp);
    assert!(parent.cancel());
    let err = lp.run_until_complete(parent.clone()).unwrap_err();
    assert!(err.is_cancelled());
    assert!(child.cancelled(), "the awaited task was not cancelled");
    assert!(parent.cancelled());
}

#[test]
fn semantics_58_cancel_rules() {
    let lp = new_loop();
    // cancel() on a done task is false.
    let done = lp.create_task(async { Ok::<_, LoopError>(()) }).unwrap();
    lp.run_until_complete(done.clone()).unwrap();
    assert!(!done.cancel());

    // Cancelled right before its future returns: ends cancelled.
    let me: Rc<Cell<Option<ringloop_runtime::Task<u8>>>> = Rc::new(Cell::new(None));
    let me2 = me.clone();
    let task = lp
        .create_task(async move {
            let this = me2.take().unwrap();
            assert!(this.cancel());
            Ok::<_, LoopError>(12)
        })
        .unwrap();
    me.set(Some(task.clone()));
    let err = lp.run_until_complete(task.clone()).unwrap_err();
    assert!(err.is_cancelled() && task.cancelled());

    // Cancels itself, then awaits a sleep: cancelled at once.
    let me: Rc<Cell<Option<ringloop_runtime::Task<u8>>>> = Rc::new(Cell::new(None));
    let (me2, lp2) = (me.clone(), lp.clone());
    let task = lp
        .create_task(async move {
            me2.take().unwrap().cancel();
            lp2.sleep(3600.0).await?;
            Ok::<_, LoopError>(0)
        })
        .unwrap();
    me.set(Some(task.clone()));
    let started = lp.time();
    assert!(lp
        .run_until_complete(task.clone())
        .unwrap_err()
        .is_cancelled());
    assert!(lp.time() - started < 5.0);

    // Cancelled before its first step: the body never runs.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let task = lp
        .create_task(async move {
            r.set(true);
            Ok::<_, LoopError>(())
        })
        .unwrap();
    assert!(task.cancel());
    assert!(lp
        .run_until_complete(task.clone())
        .unwrap_err()
        .is_cancelled());
    assert!(!ran.get());
}

#[test]
fn semantics_59_awaiting_itself_or_another_loops_future_is_an_error() {
    let lp = new_loop();
    let me: Rc<Cell<Option<ringloop_runtime::Task<()>>>> = Rc::new(Cell::new(None));
    let me2 = me.clone();
    let task = lp
        .create_task(async move {
            let this = me2.take().unwrap();
            this.await
        })
        .unwrap();
    me.set(Some(task.clone()));
    let err = lp.run_until_complete(task).unwrap_err();
    assert!(
        err.to_string().starts_with("Task cannot await on itself"),
        "{err}"
    );

    let other = new_loop();
    let foreign = other.create_future::<()>();
    // Awaited from inside a task of `lp`, as asyncio's test does.
    #[allow(clippy::redundant_async_block)]
    let err = lp
        .run_until_complete(async move { foreign.await })
        .unwrap_err();
    assert!(matches!(err, LoopError::WrongLoop));

    let task = lp.create_task(async { Ok::<_, LoopError>(1u8) }).unwrap();
    assert!(task.set_result(2).is_err());
}

#[test]
fn tasks_are_driven_by_wakers_from_other_threads() {
    // A task awaiting a non-loop future woken from another thread.
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};
    struct Shared {
        done: bool,
        waker: Option<Waker>,
    }
    let shared = Arc::new(Mutex::new(Shared {
        done: false,
        waker: None,
    }));
    let s2 = shared.clone();
    let lp = new_loop();
    let task = lp
        .create_task(async move {
            std::future::poll_fn(|cx| {
                let mut s = s2.lock().unwrap();
                if s.done {
                    Poll::Ready(())
                } else {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            Ok::<_, LoopError>("woken")
        })
        .unwrap();
    run_once(&lp);
    let thread = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let waker = {
            let mut s = shared.lock().unwrap();
            s.done = true;
            s.waker.take()
        };
        waker.unwrap().wake();
    });
    support::guard(&lp, 20.0);
    assert_eq!(lp.run_until_complete(task).unwrap(), "woken");
    thread.join().unwrap();
}

#[test]
fn semantics_50_unretrieved_errors_and_pending_tasks_are_reported() {
    let (lp, reports) = recording_loop();
    // A future with an error nobody looked at.
    let fut = lp.create_future::<()>();
    fut.set_exception(LoopError::invalid_argument("lost"))
        .unwrap();
    drop(fut);
    let got = reports.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, "Future exception was never retrieved");
    assert_eq!(got[0].error.as_ref().unwrap().to_string(), "lost");

    // A task that failed, dropped without anyone asking.
    let task = lp
        .create_task(async { Err::<(), _>(LoopError::invalid_argument("task lost")) })
        .unwrap();
    drop(task);
    run_once(&lp);
    let got = reports.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].message, "Task exception was never retrieved");

    // A retrieved error is not reported.
    let fut = lp.create_future::<()>();
    fut.set_exception(LoopError::invalid_argument("seen"))
        .unwrap();
    assert!(fut.exception().unwrap().is_some());
    drop(fut);
    assert!(reports.get().is_empty());

    // A task still pending when the loop closes.
    let lp2 = lp.clone();
    let pending = lp
        .create_task(async move { lp2.sleep(3600.0).await })
        .unwrap();
    run_once(&lp);
    drop(pending);
    lp.close().unwrap();
    let got = reports.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].message, "Task was destroyed but it is pending!");
}

#[test]
fn semantics_52_clean_paths_report_nothing() {
    let (lp, reports) = recording_loop();
    let lp2 = lp.clone();
    let out = lp
        .run_until_complete(async move {
            let a = lp2.create_task({
                let lp3 = lp2.clone();
                async move {
                    lp3.sleep(0.001).await?;
                    Ok::<_, LoopError>(1)
                }
            })?;
            let b = lp2.create_task(async { Ok::<_, LoopError>(2) })?;
            let cancelled = lp2.create_task({
                let lp3 = lp2.clone();
                async move { lp3.sleep(10.0).await }
            })?;
            cancelled.cancel();
            let _ = cancelled.await;
            Ok::<_, LoopError>(a.await? + b.await?)
        })
        .unwrap();
    assert_eq!(out, 3);
    lp.close().unwrap();
    assert_no_reports(&reports);
}

#[test]
fn panics_in_tasks_become_the_task_error() {
    let (lp, reports) = recording_loop();
    let task = lp
        .create_task(async {
            support::fail("in a task");
            Ok::<_, LoopError>(())
        })
        .unwrap();
    let err = lp.run_until_complete(task).unwrap_err();
    assert!(matches!(&err, LoopError::Panicked(m) if m == "in a task"));
    assert_no_reports(&reports);
}

#[test]
fn many_tasks_run_to_completion() {
    let lp = new_loop();
    let count = Rc::new(Cell::new(0));
    for _ in 0..10_000 {
        let (c, lp2) = (count.clone(), lp.clone());
        lp.create_task(async move {
            lp2.sleep(0).await?;
            c.set(c.get() + 1);
            Ok::<_, LoopError>(())
        })
        .unwrap();
    }
    support::run_until(&lp, || count.get() == 10_000);
    assert_eq!(lp.pending_tasks(), 0);
}
