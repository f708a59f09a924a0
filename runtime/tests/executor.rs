//! run_in_executor and the default executor (SEMANTICS section G).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ringloop_runtime::{Executor, Job, LoopError, ThreadPool};
use support::{assert_no_reports, new_loop, recording_loop};

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
    lp.close().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(lp.is_closed());
    assert_no_reports(&reports);
}

#[test]
fn semantics_65_shutdown_and_close_errors() {
    let lp = new_loop();
    lp.shutdown_default_executor();
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
