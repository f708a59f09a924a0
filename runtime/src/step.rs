//! The *step context*: which task is being polled on this thread, and what it blocks on.
//!
//! While a task's step polls its future, a thread-local names the task's loop and the
//! task. A loop [`Future`](crate::Future) or [`Task`](crate::Task) that returns `Pending`
//! records itself here ([`note_waiter`]) as the thing the task waits on (asyncio's
//! `_fut_waiter`), which `Task::cancel` then cancels; and it refuses to be awaited from a
//! task of another loop. The context is saved and restored around each step, so it is
//! correct even if a future polls another executor's futures inside a step.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::error::LoopError;
use crate::future::Cancel;

struct StepContext {
    /// The loop of the task being stepped; 0 outside any step.
    loop_id: Cell<u64>,
    /// The address of the task being stepped (identity only, never dereferenced).
    task: Cell<usize>,
    /// What the task blocked on during this step.
    waiter: RefCell<Option<Rc<dyn Cancel>>>,
}

thread_local! {
    static STEP: StepContext = const {
        StepContext { loop_id: Cell::new(0), task: Cell::new(0), waiter: RefCell::new(None) }
    };
}

/// Records `waiter` as what the current task waits on. Fails when the current task
/// belongs to another loop than `loop_id`.
pub(crate) fn note_waiter(
    loop_id: u64,
    waiter: impl FnOnce() -> Rc<dyn Cancel>,
) -> Result<(), LoopError> {
    STEP.try_with(|step| {
        let current = step.loop_id.get();
        if current == 0 {
            return Ok(());
        }
        if current != loop_id {
            return Err(LoopError::WrongLoop);
        }
        let old = step.waiter.replace(Some(waiter()));
        drop(old);
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// The identity of the task being stepped on this thread, 0 if none.
pub(crate) fn current_task() -> usize {
    STEP.try_with(|step| step.task.get()).unwrap_or(0)
}

/// Marks a step in progress; restores the previous context when dropped.
pub(crate) struct StepGuard {
    saved: (u64, usize, Option<Rc<dyn Cancel>>),
}

impl StepGuard {
    pub(crate) fn enter(loop_id: u64, task: usize) -> StepGuard {
        let saved = STEP
            .try_with(|step| {
                (
                    step.loop_id.replace(loop_id),
                    step.task.replace(task),
                    step.waiter.take(),
                )
            })
            .unwrap_or((0, 0, None));
        StepGuard { saved }
    }

    /// Ends the step; returns what the task blocked on.
    pub(crate) fn exit(mut self) -> Option<Rc<dyn Cancel>> {
        let saved = std::mem::take(&mut self.saved);
        let waiter = STEP.try_with(|step| step.waiter.take()).ok().flatten();
        restore(saved);
        std::mem::forget(self);
        waiter
    }
}

fn restore((loop_id, task, waiter): (u64, usize, Option<Rc<dyn Cancel>>)) {
    let _ = STEP.try_with(|step| {
        step.loop_id.set(loop_id);
        step.task.set(task);
        let old = step.waiter.replace(waiter);
        drop(old);
    });
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        restore(std::mem::take(&mut self.saved));
    }
}
