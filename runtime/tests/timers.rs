//! call_later, call_at and time (SEMANTICS section D).

mod support;

use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop_runtime::LoopError;
use support::{assert_no_reports, new_loop, recording_loop, run_once, Log};

#[test]
fn semantics_34_time_is_monotonic_seconds_and_call_at_uses_it() {
    let lp = new_loop();
    let t0 = lp.time();
    std::thread::sleep(Duration::from_millis(20));
    let t1 = lp.time();
    assert!(t1 - t0 >= 0.019 && t1 - t0 < 5.0, "{t0} → {t1}");
    let log = Log::new();
    let (l, lp2) = (log.clone(), lp.clone());
    let when = lp.time() + 0.03;
    lp.call_at(when, move || {
        l.push(lp2.time());
        lp2.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(
        log.get()[0] >= when,
        "fired at {} before {when}",
        log.get()[0]
    );
}

#[test]
fn semantics_35_when_is_time_plus_delay_and_never_changes() {
    let lp = new_loop();
    let before = lp.time();
    let timer = lp.call_later(0.01, || ()).unwrap();
    let after = lp.time();
    assert!(timer.when() >= before + 0.01 && timer.when() <= after + 0.01);
    let when = timer.when();
    timer.cancel();
    assert_eq!(timer.when(), when);
    let fired = lp.call_later(0.0, || ()).unwrap();
    let fired_when = fired.when();
    run_once(&lp);
    assert_eq!(fired.when(), fired_when);
    assert!(!fired.cancelled());
}

#[test]
fn semantics_37_negative_delays_run_next_iteration_ordered_by_deadline() {
    let lp = new_loop();
    let log = Log::new();
    let l = log.clone();
    lp.call_soon(move || l.push("soon")).unwrap();
    let l = log.clone();
    lp.call_later(-1.0, move || l.push("a")).unwrap();
    let l = log.clone();
    lp.call_later(-2.0, move || l.push("b")).unwrap();
    run_once(&lp);
    // Due timers run after the callbacks already ready, earliest deadline first.
    assert_eq!(log.get(), vec!["soon", "b", "a"]);
}

#[test]
fn semantics_38_and_39_equal_deadlines_run_once_and_cancelled_never_runs() {
    let lp = new_loop();
    let log = Log::new();
    let when = lp.time() + 0.01;
    let l = log.clone();
    lp.call_at(when, move || l.push(1)).unwrap();
    let l = log.clone();
    let cancelled = lp.call_at(when, move || l.push(2)).unwrap();
    let l = log.clone();
    lp.call_at(when, move || l.push(3)).unwrap();
    cancelled.cancel();
    assert!(cancelled.cancelled());
    let stopper = lp.clone();
    lp.call_at(when + 0.01, move || stopper.stop()).unwrap();
    lp.run_forever().unwrap();
    let mut got = log.get();
    got.sort_unstable();
    assert_eq!(got, vec![1, 3]);
}

#[test]
fn semantics_40_cancelled_head_does_not_shorten_the_wait() {
    // A cancelled 10 ms timer at the head, a live 150 ms one behind it: the loop must not
    // wake at 10 ms and find nothing (it would not be wrong, but the head must be dropped
    // before the wait is computed). Observable effect: the cancelled entry is gone after
    // one blocking iteration, and the live timer fires on time, not early.
    let lp = new_loop();
    let head = lp
        .call_later(0.01, || support::fail("cancelled timer ran"))
        .unwrap();
    let log = Log::new();
    let (l, lp2) = (log.clone(), lp.clone());
    let start = lp.time();
    lp.call_later(0.15, move || {
        l.push(lp2.time() - start);
        lp2.stop();
    })
    .unwrap();
    head.cancel();
    assert_eq!(lp.cancelled_timers(), 1);
    lp.run_forever().unwrap();
    assert!(log.get()[0] >= 0.15);
    assert_eq!(lp.cancelled_timers(), 0);
    assert_eq!(lp.scheduled_timers(), 0);
}

#[test]
fn semantics_40_heap_compacts_when_most_timers_are_cancelled() {
    let lp = new_loop();
    let timers: Vec<_> = (0..1000)
        .map(|i| lp.call_later(100.0 + f64::from(i), || ()).unwrap())
        .collect();
    assert_eq!(lp.scheduled_timers(), 1000);
    for timer in &timers[..400] {
        timer.cancel();
    }
    // 40 % cancelled: no compaction yet.
    run_once(&lp);
    assert_eq!(lp.scheduled_timers(), 1000);
    for timer in &timers[400..600] {
        timer.cancel();
    }
    run_once(&lp);
    // 60 % cancelled in a heap of > 100: rebuilt without them.
    assert_eq!(lp.scheduled_timers(), 400);
    assert_eq!(lp.cancelled_timers(), 0);
    // Small heaps are left alone.
    let small = new_loop();
    let few: Vec<_> = (0..50)
        .map(|_| small.call_later(100.0, || ()).unwrap())
        .collect();
    few.iter().for_each(|t| t.cancel());
    run_once(&small);
    assert!(small.scheduled_timers() <= 50);
}

/// The scale: 1,000,000 timers scheduled, half cancelled. Memory stays bounded:
/// cancelled entries never outnumber live ones by more than the compaction threshold, and
/// once most are cancelled the heap is rebuilt without them (semantics 40).
#[test]
fn one_million_timers_half_cancelled_stay_bounded() {
    let lp = new_loop();
    let mut live = Vec::with_capacity(500_000);
    for i in 0..1_000_000u32 {
        let timer = lp
            .call_later(3600.0 + f64::from(i % 1000), || support::fail("fired"))
            .unwrap();
        if i % 2 == 1 {
            timer.cancel();
        } else {
            live.push(timer);
        }
        // The invariant that bounds memory: at most about as many cancelled entries as
        // live ones (every push checks and compacts).
        if i % 1000 == 0 {
            assert!(lp.cancelled_timers() * 2 <= lp.scheduled_timers() + 2);
        }
    }
    assert_eq!(lp.scheduled_timers(), 1_000_000);
    assert_eq!(lp.cancelled_timers(), 500_000);
    // Cancel a fifth of the live ones: now most of the heap is cancelled, and the next
    // iteration rebuilds it with the 400,000 live timers only.
    for timer in live.iter().step_by(5) {
        timer.cancel();
    }
    run_once(&lp);
    assert_eq!(lp.scheduled_timers(), 400_000);
    assert_eq!(lp.cancelled_timers(), 0);
    live.iter().for_each(|t| t.cancel());
    run_once(&lp);
    assert_eq!(
        lp.scheduled_timers(),
        0,
        "a heap of cancelled timers was kept"
    );
}

/// 1,000,000 due timers, half cancelled: each live one fires exactly once, none of the
/// cancelled ones does, and the heap ends empty.
#[test]
fn one_million_timers_half_cancelled_fire_exactly_once() {
    let lp = new_loop();
    let fired = Rc::new(std::cell::Cell::new(0usize));
    for i in 0..1_000_000u32 {
        let f = fired.clone();
        let timer = lp
            .call_later(f64::from(i % 1000) * 1e-6, move || f.set(f.get() + 1))
            .unwrap();
        if i % 2 == 1 {
            timer.cancel();
        }
    }
    support::run_until(&lp, || fired.get() == 500_000);
    run_once(&lp);
    assert_eq!(fired.get(), 500_000);
    assert_eq!(lp.scheduled_timers(), 0);
}

#[test]
fn semantics_40_cancel_heavy_churn_keeps_the_heap_small() {
    // Many cancelled timers far in the future: without compaction the heap would hold
    // 200,000 entries.
    let lp = new_loop();
    for _ in 0..200_000 {
        lp.call_later(3600.0, || ()).unwrap().cancel();
    }
    assert!(lp.scheduled_timers() <= 201, "{}", lp.scheduled_timers());
}

#[test]
fn semantics_41_huge_and_infinite_delays_are_accepted_and_cancellable() {
    let (lp, reports) = recording_loop();
    let inf = lp
        .call_later(f64::INFINITY, || support::fail("inf fired"))
        .unwrap();
    let big = lp
        .call_later(2f64.powi(55), || support::fail("2**55 fired"))
        .unwrap();
    let max = lp
        .call_later(i64::MAX, || support::fail("maxsize fired"))
        .unwrap();
    let dur = lp
        .call_later(Duration::MAX, || support::fail("Duration::MAX fired"))
        .unwrap();
    assert_eq!(inf.when(), f64::INFINITY);
    // The loop still runs (the wait is clamped to 24 h, and ready work makes it 0).
    run_once(&lp);
    for timer in [&inf, &big, &max, &dur] {
        timer.cancel();
        assert!(timer.cancelled());
    }
    run_once(&lp);
    assert_no_reports(&reports);
    // A wait on an infinite sleep, cancelled, ends promptly.
    let lp2 = lp.clone();
    let task = lp
        .create_task(async move { lp2.sleep(f64::INFINITY).await })
        .unwrap();
    let canceller = task.clone();
    lp.call_later(0.01, move || {
        canceller.cancel();
    })
    .unwrap();
    let err = lp.run_until_complete(task).unwrap_err();
    assert!(err.is_cancelled());
}

#[test]
fn semantics_43_timers_never_fire_early() {
    let lp = new_loop();
    for delay_ms in [1u64, 7, 70] {
        let log = Log::new();
        let (l, lp2) = (log.clone(), lp.clone());
        let started = Instant::now();
        lp.call_later(Duration::from_millis(delay_ms), move || {
            l.push(started.elapsed());
            lp2.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        let took = log.get()[0];
        assert!(
            took >= Duration::from_millis(delay_ms),
            "{delay_ms} ms timer fired after {took:?}"
        );
    }
}

#[test]
fn semantics_44_time_is_fresh_after_blocking_work() {
    let lp = new_loop();
    let log = Log::new();
    let (l, lp2) = (log.clone(), lp.clone());
    lp.call_soon(move || {
        let before = lp2.time();
        std::thread::sleep(Duration::from_millis(30));
        let after = lp2.time();
        l.push(after - before);
        // call_later computes from a fresh time too.
        let timer = lp2.call_later(0.0, || ()).unwrap();
        l.push(timer.when() - after);
    })
    .unwrap();
    run_once(&lp);
    let got = log.get();
    assert!(got[0] >= 0.029, "{got:?}");
    assert!(got[1] >= 0.0 && got[1] < 0.01, "{got:?}");
}

#[test]
fn semantics_45_nan_delays_and_deadlines_are_invalid() {
    // `None` cannot be passed in Rust; NaN is the remaining meaningless value.
    let lp = new_loop();
    assert!(matches!(
        lp.call_later(f64::NAN, || ()),
        Err(LoopError::InvalidArgument { .. })
    ));
    assert!(matches!(
        lp.call_at(f64::NAN, || ()),
        Err(LoopError::InvalidArgument { .. })
    ));
}

#[test]
fn integer_and_duration_delays_are_accepted() {
    let lp = new_loop();
    let a = lp.call_later(2, || ()).unwrap();
    let b = lp.call_later(Duration::from_millis(2500), || ()).unwrap();
    assert!((b.when() - a.when() - 0.5).abs() < 0.1);
}

#[test]
fn precise_timers_lower_the_thread_timer_slack_only_while_running() {
    fn slack() -> i32 {
        // SAFETY: PR_GET_TIMERSLACK reads this thread's slack; no pointers involved.
        unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) }
    }
    let before = slack();
    let lp = new_loop();
    assert!(lp.precise_timers());
    let seen = Log::new();
    let s = seen.clone();
    lp.call_soon(move || s.push(slack())).unwrap();
    run_once(&lp);
    assert_eq!(seen.take(), vec![1]);
    assert_eq!(slack(), before, "the slack was not restored");
    lp.set_precise_timers(false);
    let s = seen.clone();
    lp.call_soon(move || s.push(slack())).unwrap();
    run_once(&lp);
    assert_eq!(seen.take(), vec![before]);
}
