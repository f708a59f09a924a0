//! Task wakers: `std::task::Waker`s that schedule a loop task from any thread, soundly.
//!
//! A waker must be `Send + Sync`, but a task lives in its loop's `!Send` state. So the
//! waker holds no pointer to the task: only the loop's id, the task's slot and generation,
//! and the loop's thread-safe queue. Woken on the loop's own thread (found through a
//! thread-local registry of the loops created on this thread), it pushes the task onto the
//! ready queue directly, exactly like `call_soon` (asyncio schedules a task's wake-up with
//! `call_soon`); woken on any other thread, it sends the slot through the thread-safe queue.
//! A stale wake-up (task finished, slot reused) is recognised by its generation and
//! ignored.

use std::cell::RefCell;
use std::rc::Weak;
use std::sync::Arc;
use std::task::Wake;

use crate::event_loop::{EventLoop, Inner};
use crate::threadsafe::{Remote, Shared};

thread_local! {
    /// The loops created on this thread (usually one), by id.
    static LOCAL_LOOPS: RefCell<Vec<(u64, Weak<Inner>)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn register_local_loop(id: u64, inner: Weak<Inner>) {
    let _ = LOCAL_LOOPS.try_with(|loops| loops.borrow_mut().push((id, inner)));
}

pub(crate) fn unregister_local_loop(id: u64) {
    let _ = LOCAL_LOOPS.try_with(|loops| loops.borrow_mut().retain(|(other, _)| *other != id));
}

/// The loop with `id` if it was created on the current thread and is alive.
fn local_loop(id: u64) -> Option<EventLoop> {
    LOCAL_LOOPS
        .try_with(|loops| {
            let loops = loops.borrow();
            loops
                .iter()
                .find(|(other, _)| *other == id)
                .and_then(|(_, inner)| inner.upgrade())
                .map(|inner| EventLoop { inner })
        })
        .ok()
        .flatten()
}

/// The waker of one task.
pub(crate) struct TaskWaker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: usize,
    pub(crate) generation: u64,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match local_loop(self.shared.loop_id) {
            Some(lp) => lp.schedule_task(self.key, self.generation),
            None => {
                // The loop may be closed: then there is nothing left to wake.
                let _ = self.shared.push(Remote::WakeTask {
                    key: self.key,
                    generation: self.generation,
                });
            }
        }
    }
}
