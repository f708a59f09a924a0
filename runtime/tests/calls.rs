//! call_soon, call_soon_threadsafe and Handle (SEMANTICS section C).

mod support;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{assert_no_reports, new_loop, recording_loop, run_once, Log};

#[test]
fn semantics_25_callbacks_scheduled_by_callbacks_run_next_iteration() {
    let lp = new_loop();
    let log = Log::new();
    let (l1, lp1) = (log.clone(), lp.clone());
    lp.call_soon(move || {
        l1.push("first");
        let l3 = l1.clone();
        lp1.call_soon(move || l3.push("scheduled by first"))
            .unwrap();
    })
    .unwrap();
    let l2 = log.clone();
    lp.call_soon(move || l2.push("second")).unwrap();
    run_once(&lp);
    assert_eq!(log.take(), vec!["first", "second"]);
    run_once(&lp);
    assert_eq!(log.take(), vec!["scheduled by first"]);
}

#[test]
fn semantics_26_ready_callbacks_make_the_poll_non_blocking() {
    // A callback that re-schedules itself 100 times next to a timer an hour away: if any
    // poll blocked, this would take an hour.
    let lp = new_loop();
    lp.call_later(3600.0, || ()).unwrap();
    let count = Rc::new(std::cell::Cell::new(0));
    fn again(lp: ringloop_runtime::EventLoop, count: Rc<std::cell::Cell<u32>>) {
        count.set(count.get() + 1);
        if count.get() == 100 {
            lp.stop();
        } else {
            let lp2 = lp.clone();
            lp.call_soon(move || again(lp2, count)).unwrap();
        }
    }
    let (lp2, c2) = (lp.clone(), count.clone());
    lp.call_soon(move || again(lp2, c2)).unwrap();
    let started = Instant::now();
    lp.run_forever().unwrap();
    assert_eq!(count.get(), 100);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn semantics_27_cancel_prevents_the_callback_and_keeps_the_order() {
    let (lp, reports) = recording_loop();
    let log = Log::new();
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let l = log.clone();
            lp.call_soon(move || l.push(i)).unwrap()
        })
        .collect();
    handles[1].cancel();
    handles[1].cancel(); // idempotent
    handles[3].cancel();
    assert!(handles[1].cancelled());
    run_once(&lp);
    assert_eq!(log.get(), vec![0, 2, 4]);
    // cancelled() stays false for a callback that ran, and cancelling it later is harmless.
    assert!(!handles[0].cancelled());
    assert!(format!("{:?}", handles[0]).contains("Handle"));
    assert_no_reports(&reports);
}

#[test]
fn semantics_28_running_or_cancelling_drops_the_captures() {
    let lp = new_loop();
    let ran = Rc::new(());
    let cancelled = Rc::new(());
    let (r, c) = (ran.clone(), cancelled.clone());
    let h_ran = lp.call_soon(move || drop(r)).unwrap();
    let h_cancelled = lp.call_soon(move || drop(c)).unwrap();
    let t_cancelled = {
        let c = cancelled.clone();
        lp.call_later(10.0, move || drop(c)).unwrap()
    };
    assert_eq!(Rc::strong_count(&cancelled), 3);
    h_cancelled.cancel();
    t_cancelled.cancel();
    // Freed at cancel time, while the handles are still alive.
    assert_eq!(Rc::strong_count(&cancelled), 1);
    run_once(&lp);
    assert_eq!(Rc::strong_count(&ran), 1);
    drop((h_ran, h_cancelled, t_cancelled));
}

#[test]
fn semantics_29_threadsafe_call_wakes_a_blocked_loop_and_shares_the_fifo() {
    let lp = new_loop();
    let handle = lp.handle();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l1 = log.clone();
    let started = Instant::now();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let l2 = l1.clone();
        handle
            .call_soon_threadsafe(move || l2.lock().unwrap().push("hello"))
            .unwrap();
        handle
            .call_soon_threadsafe(move || l1.lock().unwrap().push("world"))
            .unwrap();
        handle.stop().unwrap();
    });
    // Nothing else to do: the loop blocks in the kernel until the thread wakes it.
    let guard = support::guard(&lp, 20.0);
    lp.run_forever().unwrap();
    guard.cancel();
    thread.join().unwrap();
    assert_eq!(*log.lock().unwrap(), vec!["hello", "world"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn semantics_29_same_thread_threadsafe_calls_share_the_call_soon_fifo() {
    let lp = new_loop();
    let log = Log::new();
    let l1 = log.clone();
    lp.call_soon(move || l1.push("hello")).unwrap();
    let l2 = log.clone();
    lp.call_soon_threadsafe(move || l2.push("world")).unwrap();
    run_once(&lp);
    assert_eq!(log.get(), vec!["hello", "world"]);
}

#[test]
fn semantics_27_threadsafe_handle_cancel_prevents_the_call_and_keeps_the_order() {
    let (lp, reports) = recording_loop();
    let handle = lp.handle();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let handles = std::thread::spawn(move || {
        let a = handle
            .call_soon_threadsafe(move || l1.lock().unwrap().push("a"))
            .unwrap();
        let b = handle
            .call_soon_threadsafe(move || l2.lock().unwrap().push("b"))
            .unwrap();
        let c = handle
            .call_soon_threadsafe(move || l3.lock().unwrap().push("c"))
            .unwrap();
        // Cancelled on the scheduling thread, before the loop drains its queue.
        b.cancel();
        b.cancel(); // idempotent
        (a, b, c)
    })
    .join()
    .unwrap();
    let (a, b, c) = handles;
    assert!(b.cancelled());
    assert!(format!("{b:?}").ends_with("(cancelled)"));
    run_once(&lp);
    assert_eq!(*log.lock().unwrap(), vec!["a", "c"]);
    // Running does not mark a handle cancelled.
    assert!(!a.cancelled());
    assert!(!c.cancelled());
    assert_no_reports(&reports);
}

#[test]
fn semantics_27_28_threadsafe_handle_is_send_and_cancel_drops_the_callback() {
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    let lp = new_loop();
    let captured = Arc::new(());
    let held = captured.clone();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let handle = lp
        .handle()
        .call_soon_threadsafe(move || {
            let _keep = &held;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    send_sync(&handle);
    // Cancelled from another thread; the captures are dropped at once (semantics 28).
    let remote = handle.clone();
    std::thread::spawn(move || remote.cancel()).join().unwrap();
    assert!(handle.cancelled());
    assert_eq!(
        Arc::strong_count(&captured),
        1,
        "the callback was not dropped"
    );
    run_once(&lp);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled callback ran");
    assert_eq!(lp.ready_len(), 0);
    // Cancelled after reaching the loop's ready queue, by a callback ahead of it.
    let r = ran.clone();
    let late = lp
        .handle()
        .call_soon_threadsafe(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let canceller = late.clone();
    lp.call_soon(move || canceller.cancel()).unwrap();
    run_once(&lp);
    assert!(late.cancelled());
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled callback ran");
    // After the callback ran, cancel() does not run or undo anything.
    let r = ran.clone();
    let handle = lp
        .handle()
        .call_soon_threadsafe(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    run_once(&lp);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!handle.cancelled());
    handle.cancel();
    run_once(&lp);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// Semantics 31, at the scale: 8 threads × 100,000 `call_soon_threadsafe` calls,
/// interleaved with timer creation and cancellation on the loop. Every call is delivered
/// exactly once, and each thread's calls run in the order it made them.
#[test]
fn semantics_31_threadsafe_stress_8_threads_100k_each() {
    const THREADS: usize = 8;
    const CALLS: usize = 100_000;
    let (lp, reports) = recording_loop();
    let handle = lp.handle();
    let seen: Arc<Vec<AtomicUsize>> =
        Arc::new((0..THREADS * CALLS).map(|_| AtomicUsize::new(0)).collect());
    let delivered = Arc::new(AtomicUsize::new(0));
    let next: Arc<Vec<AtomicUsize>> = Arc::new((0..THREADS).map(|_| AtomicUsize::new(0)).collect());
    let out_of_order = Arc::new(AtomicUsize::new(0));

    // Loop-side churn: timers created and cancelled every iteration.
    let timers_fired = Rc::new(std::cell::Cell::new(0usize));
    fn churn(lp: ringloop_runtime::EventLoop, fired: Rc<std::cell::Cell<usize>>, round: usize) {
        let keep = lp.call_later(0.0, {
            let fired = fired.clone();
            move || fired.set(fired.get() + 1)
        });
        let cancel = lp.call_later(0.0005, || support::fail("a cancelled timer ran"));
        cancel.unwrap().cancel();
        drop(keep);
        if round < 2000 {
            let lp2 = lp.clone();
            let _ = lp.call_later(0.0, move || churn(lp2, fired, round + 1));
        }
    }
    {
        let (lp2, f2) = (lp.clone(), timers_fired.clone());
        lp.call_soon(move || churn(lp2, f2, 0)).unwrap();
    }

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, seen, delivered) = (handle.clone(), seen.clone(), delivered.clone());
            let (next, out_of_order) = (next.clone(), out_of_order.clone());
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    let (seen, delivered) = (seen.clone(), delivered.clone());
                    let (next, out_of_order) = (next.clone(), out_of_order.clone());
                    handle
                        .call_soon_threadsafe(move || {
                            seen[t * CALLS + i].fetch_add(1, Ordering::Relaxed);
                            delivered.fetch_add(1, Ordering::Relaxed);
                            // Each thread's calls run in the order it made them (FIFO).
                            if next[t].swap(i + 1, Ordering::Relaxed) != i {
                                out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let total = THREADS * CALLS;
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "only {} delivered",
            delivered.load(Ordering::Relaxed)
        );
        let stopper = lp.clone();
        lp.call_later(0.001, move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    // Let the churn finish too.
    support::run_until(&lp, || timers_fired.get() > 2000);
    assert!(
        seen.iter().all(|n| n.load(Ordering::Relaxed) == 1),
        "a call was lost or duplicated"
    );
    assert_eq!(delivered.load(Ordering::Relaxed), total);
    assert_eq!(
        out_of_order.load(Ordering::Relaxed),
        0,
        "a thread's calls ran out of order"
    );
    assert_no_reports(&reports);
}

#[test]
fn threadsafe_calls_from_one_thread_keep_their_order() {
    let lp = new_loop();
    let handle = lp.handle();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for i in 0..10_000 {
            let l = l.clone();
            handle
                .call_soon_threadsafe(move || l.lock().unwrap().push(i))
                .unwrap();
        }
        handle.stop().unwrap();
    })
    .join()
    .unwrap();
    lp.run_forever().unwrap();
    let got = log.lock().unwrap().clone();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

#[test]
fn semantics_46_failing_and_panicking_callbacks_are_reported_and_the_loop_goes_on() {
    let (lp, reports) = recording_loop();
    let log = Log::new();
    lp.call_soon(|| -> Result<(), ringloop_runtime::LoopError> {
        Err(ringloop_runtime::LoopError::invalid_argument("bad input"))
    })
    .unwrap();
    lp.call_soon(|| support::fail("callback panicked")).unwrap();
    lp.call_later(-1.0, || support::fail("timer panicked"))
        .unwrap();
    let l = log.clone();
    lp.call_soon(move || l.push("still running")).unwrap();
    run_once(&lp);
    assert_eq!(log.get(), vec!["still running"]);
    let got = reports.take();
    assert_eq!(got.len(), 3);
    assert!(
        got[0].message.starts_with("Exception in callback <Handle"),
        "{}",
        got[0].message
    );
    assert_eq!(got[0].error.as_ref().unwrap().to_string(), "bad input");
    assert!(got[0].handle.is_some());
    assert!(
        matches!(&got[1].error, Some(ringloop_runtime::LoopError::Panicked(m)) if m == "callback panicked")
    );
    assert!(
        got[2]
            .message
            .starts_with("Exception in callback <TimerHandle"),
        "{}",
        got[2].message
    );
}
