//! The task factory (SEMANTICS section F, item 61): `set_task_factory`/`get_task_factory`
//! and the hook `create_task` passes every task's future through.

mod support;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use ringloop_runtime::{EventLoop, LoopError, TaskFuture};
use support::{assert_no_reports, new_loop, recording_loop, run_once, Log};

/// A factory wrapper that counts the polls of the task's future.
struct CountPolls {
    inner: TaskFuture,
    polls: Rc<Cell<usize>>,
}

impl std::future::Future for CountPolls {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn semantics_61_no_factory_by_default_and_none_restores_the_default() {
    let lp = new_loop();
    assert!(lp.get_task_factory().is_none());
    lp.set_task_factory(Some(|_: &EventLoop, _: &str, fut: TaskFuture| fut));
    assert!(lp.get_task_factory().is_some());
    lp.set_task_factory(None::<fn(&EventLoop, &str, TaskFuture) -> TaskFuture>);
    assert!(lp.get_task_factory().is_none());
    // Without a factory, tasks run as before.
    let task = lp.create_task(async { Ok::<_, LoopError>(1) }).unwrap();
    assert_eq!(lp.run_until_complete(task).unwrap(), 1);
}

#[test]
fn semantics_61_create_task_calls_the_factory_synchronously_with_the_task_name() {
    let (lp, reports) = recording_loop();
    let calls = Log::new();
    let c = calls.clone();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    lp.set_task_factory(Some(move |_: &EventLoop, name: &str, fut: TaskFuture| {
        c.push(name.to_owned());
        Box::pin(CountPolls {
            inner: fut,
            polls: p.clone(),
        }) as TaskFuture
    }));
    let lp2 = lp.clone();
    let task = lp
        .create_task(async move {
            ringloop_runtime::sleep(0).await?;
            lp2.sleep(0.001).await?;
            Ok::<_, LoopError>("done")
        })
        .unwrap();
    // Called inside create_task, but nothing of the future ran yet (semantics 55).
    assert_eq!(calls.get(), vec![task.get_name()]);
    assert_eq!(polls.get(), 0);
    assert_eq!(lp.run_until_complete(task.clone()).unwrap(), "done");
    // Every step went through the wrapper: the first, after sleep(0), after the sleep.
    assert!(polls.get() >= 3, "only {} polls seen", polls.get());
    // run_until_complete of a plain future makes a task, so it goes through the factory.
    let before = calls.len();
    lp.run_until_complete(async { Ok::<_, LoopError>(()) })
        .unwrap();
    assert_eq!(calls.len(), before + 1);
    assert_no_reports(&reports);
}

#[test]
fn semantics_61_results_errors_and_cancellation_pass_through_the_factory() {
    let (lp, reports) = recording_loop();
    lp.set_task_factory(Some(|_: &EventLoop, _: &str, fut: TaskFuture| fut));
    // An error is the task's exception.
    let failing = lp
        .create_task(async { Err::<u8, _>(LoopError::invalid_argument("boom")) })
        .unwrap();
    let err = lp.run_until_complete(failing).unwrap_err();
    assert_eq!(err.to_string(), "boom");
    // cancel() still reaches the future the task awaits (semantics 57).
    let inner = lp.create_future::<u8>();
    let awaited = inner.clone();
    #[allow(clippy::redundant_async_block)]
    let task = lp.create_task(async move { awaited.await }).unwrap();
    run_once(&lp);
    assert!(task.cancel());
    assert!(inner.cancelled());
    assert!(lp
        .run_until_complete(task.clone())
        .unwrap_err()
        .is_cancelled());
    assert!(task.cancelled());
    assert_no_reports(&reports);
}

#[test]
fn semantics_61_a_factory_that_drops_the_future_leaves_the_task_cancelled() {
    let (lp, reports) = recording_loop();
    let ran = Rc::new(Cell::new(false));
    lp.set_task_factory(Some(|_: &EventLoop, _: &str, fut: TaskFuture| {
        drop(fut);
        Box::pin(async {}) as TaskFuture
    }));
    let r = ran.clone();
    let task = lp
        .create_task(async move {
            r.set(true);
            Ok::<_, LoopError>(())
        })
        .unwrap();
    assert!(lp
        .run_until_complete(task.clone())
        .unwrap_err()
        .is_cancelled());
    assert!(task.cancelled());
    assert!(!ran.get(), "the dropped future ran");
    assert_no_reports(&reports);
}

#[test]
fn semantics_61_the_factory_may_create_tasks_itself() {
    let (lp, reports) = recording_loop();
    let siblings = Log::new();
    let s = siblings.clone();
    lp.set_task_factory(Some(move |lp: &EventLoop, name: &str, fut: TaskFuture| {
        // Only the first task spawns a sibling (the sibling goes through here too).
        if s.len() == 0 {
            s.push(name.to_owned());
            let sibling = lp.create_task(async { Ok::<_, LoopError>(2) }).unwrap();
            s.push(sibling.get_name());
        }
        fut
    }));
    let task = lp.create_task(async { Ok::<_, LoopError>(1) }).unwrap();
    assert_eq!(lp.run_until_complete(task).unwrap(), 1);
    let names = siblings.get();
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1]);
    run_once(&lp);
    assert_eq!(lp.pending_tasks(), 0);
    assert_no_reports(&reports);
}
