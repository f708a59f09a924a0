//! run_in_executor and the default executor (SEMANTICS section G).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ringloop_runtime::{Executor, Job, LoopError, ThreadPool};
use support::{assert_no_reports, capture_logs, new_loop, recording_loop};

#[test]
fn semantics_62_runs_in_another_thread_and_63_threads_are_named() {
    let (lp, reports) = recording_loop();
    let loop_thread = std::thread::current().id();
    let fut = lp
        .run_in_executor(None, move || {
            let me = std::thread::current();
            (me.id() != loop_thread, me.name().map(str::to_owned))
        })
        .unwrap();
    let (other_thread, name) = lp.run_until_complete(fut).unwrap();
    assert!(other_thread);
    assert!(name.unwrap().starts_with("ringloop-executor-"));
    assert_no_reports(&reports);
}

#[test]
fn semantics_62_results_wake_a_blocked_loop() {
    let lp = new_loop();
    let fut = lp
        .run_in_executor(None, || {
            std::thread::sleep(Duration::from_millis(30));
            6 * 7
        })
        .unwrap();
    support::guard(&lp, 20.0);
    assert_eq!(lp.run_until_complete(fut).unwrap(), 42);
}

#[test]
fn semantics_64_a_cancelled_job_that_has_not_started_never_runs() {
    let lp = new_loop();
    let pool = ThreadPool::new(1);
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    // Occupy the only worker.
    let blocker = lp
        .run_in_executor(Some(&pool), move || {
            g.wait();
        })
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let victim = lp
        .run_in_executor(Some(&pool), move || r.store(true, Ordering::SeqCst))
        .unwrap();
    assert!(victim.cancel());
    // Let the cancellation reach the job (a done callback), then free the worker.
    support::run_once(&lp);
    gate.wait();
    lp.run_until_complete(blocker).unwrap();
    // Give the worker time to (not) run the victim.
    let after = lp.run_in_executor(Some(&pool), || ()).unwrap();
    lp.run_until_complete(after).unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a cancelled job ran");
    assert!(lp.run_until_complete(victim).unwrap_err().is_cancelled());
    pool.shutdown();
}

#[test]
fn semantics_64_nothing_calls_back_after_cancel_and_close() {
    let (lp, reports) = recording_loop();
    let fut = lp
        .run_in_executor(None, || std::thread::sleep(Duration::from_millis(50)))
        .unwrap();
    fut.cancel();
    // Shut down without waiting for the join, then close: the joining thread's report
    // finds the loop closed.
    let shut_down = lp.shutdown_default_executor(None);
    lp.close().unwrap();
    assert!(!shut_down.done());
    std::thread::sleep(Duration::from_millis(100));
    assert!(lp.is_closed());
    assert_no_reports(&reports);
}

#[test]
fn semantics_65_shutdown_and_close_errors() {
    let lp = new_loop();
    lp.run_until_complete(lp.shutdown_default_executor(None))
        .unwrap();
    let err = lp.run_in_executor(None, || ()).unwrap_err();
    assert_eq!(err.to_string(), "Executor shutdown has been called");
    // A custom executor still works.
    let pool = ThreadPool::new(2);
    let fut = lp.run_in_executor(Some(&pool), || 1).unwrap();
    assert_eq!(lp.run_until_complete(fut).unwrap(), 1);
    lp.close().unwrap();
    assert!(matches!(
        lp.run_in_executor(Some(&pool), || ()),
        Err(LoopError::LoopClosed)
    ));
    pool.shutdown();
    assert!(matches!(
        pool.submit(Job::new(|| ())),
        Err(LoopError::ExecutorShutdown)
    ));
}

#[test]
fn semantics_65_shutdown_default_executor_waits_for_jobs_and_joins_the_threads() {
    let (lp, reports) = recording_loop();
    let pool = ThreadPool::new(2);
    lp.set_default_executor(Arc::new(pool.clone()));
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let job = lp
        .run_in_executor(None, move || {
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(pool.workers(), 1);
    let shut_down = lp.shutdown_default_executor(Some(Duration::from_secs(60)));
    // Refused from the call on, before the future is awaited.
    assert!(matches!(
        lp.run_in_executor(None, || ()),
        Err(LoopError::ExecutorShutdown)
    ));
    let logs = capture_logs(|| lp.run_until_complete(shut_down).unwrap());
    assert!(
        finished.load(Ordering::SeqCst),
        "completed before the job ran"
    );
    assert_eq!(pool.workers(), 0, "a worker thread is still alive");
    assert!(logs.is_empty(), "unexpected logs: {logs:?}");
    // The queued job's result still came back.
    lp.run_until_complete(job).unwrap();
    // The timeout's timer was cancelled once the threads were joined.
    assert_eq!(lp.scheduled_timers(), lp.cancelled_timers());
    assert_no_reports(&reports);
}

#[test]
fn semantics_65_shutdown_default_executor_timeout_warns() {
    let (lp, reports) = recording_loop();
    let (release, wait) = mpsc::channel::<()>();
    let job = lp
        .run_in_executor(None, move || wait.recv().is_ok())
        .unwrap();
    // The timeout runs from the call (which also starts the joining thread).
    let start = std::time::Instant::now();
    let shut_down = lp.shutdown_default_executor(Some(Duration::from_millis(50)));
    let logs = capture_logs(|| lp.run_until_complete(shut_down).unwrap());
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(50),
        "done after {elapsed:?}: {logs:?}"
    );
    let warnings: Vec<_> = logs
        .iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .map(|(_, message)| message.as_str())
        .collect();
    assert_eq!(
        warnings,
        ["The executor did not finishing joining its threads within 0.05 seconds."]
    );
    assert!(!job.done(), "the blocked job finished early");
    assert!(matches!(
        lp.run_in_executor(None, || ()),
        Err(LoopError::ExecutorShutdown)
    ));
    // The job still runs to the end once released, and its result arrives.
    release.send(()).unwrap();
    assert!(lp.run_until_complete(job).unwrap());
    assert_no_reports(&reports);
}

#[test]
fn semantics_65_shutdown_without_a_default_executor_is_done_at_once() {
    let lp = new_loop();
    let shut_down = lp.shutdown_default_executor(Some(Duration::from_millis(1)));
    assert!(shut_down.done());
    assert_eq!(lp.scheduled_timers(), 0);
    let logs = capture_logs(|| lp.run_until_complete(shut_down).unwrap());
    assert!(logs.is_empty(), "unexpected logs: {logs:?}");
    assert!(matches!(
        lp.run_in_executor(None, || ()),
        Err(LoopError::ExecutorShutdown)
    ));
}

#[test]
fn semantics_65_run_joins_the_default_executor_before_returning() {
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    ringloop_runtime::run(async move {
        let lp = ringloop_runtime::get_running_loop()?;
        // Not awaited: run() itself must wait for it while joining the threads.
        let _job = lp.run_in_executor(None, move || {
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::SeqCst);
        })?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "run() returned before the job ended"
    );
}

#[test]
fn panics_in_jobs_become_the_future_error() {
    let lp = new_loop();
    let fut = lp
        .run_in_executor(None, || -> u8 { panic!("job panicked") })
        .unwrap();
    let err = lp.run_until_complete(fut).unwrap_err();
    assert!(
        matches!(&err, LoopError::Panicked(m) if m == "job panicked"),
        "{err:?}"
    );
}

#[test]
fn set_default_executor_is_used() {
    struct Counting {
        pool: ThreadPool,
        submitted: AtomicUsize,
    }
    impl Executor for Counting {
        fn submit(&self, job: Job) -> Result<(), LoopError> {
            self.submitted.fetch_add(1, Ordering::SeqCst);
            self.pool.submit(job)
        }
        fn shutdown(&self) {
            self.pool.shutdown();
        }
    }
    let lp = new_loop();
    let counting = Arc::new(Counting {
        pool: ThreadPool::new(1),
        submitted: AtomicUsize::new(0),
    });
    lp.set_default_executor(counting.clone());
    let fut = lp.run_in_executor(None, || 5).unwrap();
    assert_eq!(lp.run_until_complete(fut).unwrap(), 5);
    assert_eq!(counting.submitted.load(Ordering::SeqCst), 1);
    // close() shuts the default executor down even when the user set it (semantics 22).
    lp.close().unwrap();
    assert!(counting.pool.submit(Job::new(|| ())).is_err());
}

#[test]
fn the_pool_grows_lazily_up_to_its_limit() {
    let pool = ThreadPool::new(3);
    assert_eq!(pool.workers(), 0);
    let gate = Arc::new(Barrier::new(4));
    for _ in 0..3 {
        let g = gate.clone();
        pool.submit(Job::new(move || {
            g.wait();
        }))
        .unwrap();
    }
    gate.wait();
    assert_eq!(pool.workers(), 3);
    pool.shutdown();
}

#[test]
fn dropping_the_last_pool_handle_lets_its_threads_exit() {
    let pool = ThreadPool::new(2);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let probe = Arc::new(());
    let held = probe.clone();
    pool.submit(Job::new(move || {
        std::thread::sleep(Duration::from_millis(20));
        r.fetch_add(1, Ordering::SeqCst);
        drop(held);
    }))
    .unwrap();
    let clone = pool.clone();
    drop(pool);
    assert!(
        clone.submit(Job::new(|| ())).is_ok(),
        "a clone keeps the pool open"
    );
    drop(clone);
    // The queued job still runs, then the worker exits (dropping its captures).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&probe) > 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
