//! Per-loop extension state and **before-poll hooks**, for layers above the loop
//! (transports) that need loop-wide machinery without the runtime knowing about them.
//!
//! - [`EventLoop::loop_local`] gives each loop one lazily created value per type: the
//!   transports keep their per-loop flush list there.
//! - [`EventLoop::add_before_poll_hook`] registers a hook that runs at the start of every
//!   iteration, before the wait is computed and the proactor is polled. That is the point
//!   right after the previous iteration's callbacks (and before the first poll of a run), so
//!   a transport can turn every write queued during an iteration into one vectored send per
//!   connection that goes out with that poll: no extra loop turn, one system call.
//!
//! Values live in a thread-local table keyed by loop id (loops are `!Send`, so their state
//! is always on this thread). The table holds the loop weakly; a loop's entry is released
//! by its `close()` (or drop), and entries of dead loops are also pruned whenever an entry
//! is added. Values are dropped outside the table's borrow, since dropping may run user
//! code. Hooks live in the loop itself (`Inner::before_poll_hooks`), which every iteration
//! reads without a table search, and are dropped by its `close()` (or drop) the same way.

use std::any::Any;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

use crate::event_loop::{EventLoop, Inner};

/// A hook run at the start of each loop iteration; see [`EventLoop::add_before_poll_hook`].
pub type BeforePollHook = Rc<dyn Fn(&EventLoop)>;

/// Identifies a hook registered with [`EventLoop::add_before_poll_hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BeforePollHookId(u64);

struct LoopEntry {
    loop_id: u64,
    lp: Weak<Inner>,
    values: Vec<Rc<dyn Any>>,
}

struct Table {
    loops: Vec<LoopEntry>,
    next_hook: u64,
}

thread_local! {
    static TABLE: RefCell<Table> = const { RefCell::new(Table { loops: Vec::new(), next_hook: 1 }) };
}

impl Table {
    /// The entry of `lp`, created if missing; dead loops' entries are moved to `graveyard`.
    fn entry(&mut self, lp: &EventLoop, graveyard: &mut Vec<LoopEntry>) -> &mut LoopEntry {
        let id = lp.id();
        if let Some(pos) = self.loops.iter().position(|e| e.loop_id == id) {
            return &mut self.loops[pos];
        }
        let mut i = 0;
        while i < self.loops.len() {
            let dead = match self.loops[i].lp.upgrade() {
                Some(inner) => inner.proactor.is_closed(),
                None => true,
            };
            if dead {
                graveyard.push(self.loops.swap_remove(i));
            } else {
                i += 1;
            }
        }
        self.loops.push(LoopEntry {
            loop_id: id,
            lp: Rc::downgrade(&lp.inner),
            values: Vec::new(),
        });
        let last = self.loops.len() - 1;
        &mut self.loops[last]
    }
}

/// Drops the values of loop `loop_id` (its `close()` or drop), outside the
/// table's borrow: they may hold transports, fds or loop handles that must go with the
/// loop rather than linger until another loop touches the table or the thread exits.
pub(crate) fn release_loop_locals(loop_id: u64) {
    let removed = TABLE
        .try_with(|table| {
            let mut table = table.borrow_mut();
            let pos = table.loops.iter().position(|e| e.loop_id == loop_id)?;
            Some(table.loops.swap_remove(pos))
        })
        .ok()
        .flatten();
    drop(removed);
}

impl EventLoop {
    /// This loop's value of type `T`, created with `init` on first use.
    ///
    /// The value lives as long as the loop (it is dropped once the loop is closed or dropped
    /// and another loop state is created on this thread, or when the thread exits). Do not
    /// store a strong [`EventLoop`] in it: that would keep the loop alive.
    pub fn loop_local<T: 'static>(&self, init: impl FnOnce(&EventLoop) -> T) -> Rc<T> {
        let found = TABLE.with(|table| {
            let table = table.borrow();
            let entry = table.loops.iter().find(|e| e.loop_id == self.id())?;
            entry
                .values
                .iter()
                .find_map(|v| v.clone().downcast::<T>().ok())
        });
        if let Some(value) = found {
            return value;
        }
        let value = Rc::new(init(self));
        let mut graveyard = Vec::new();
        TABLE.with(|table| {
            let mut table = table.borrow_mut();
            table.entry(self, &mut graveyard).values.push(value.clone());
        });
        drop(graveyard);
        value
    }

    /// Registers `hook` to run at the start of every iteration of this loop, before the
    /// poll timeout is computed and the proactor polled (so work the hook submits goes out
    /// with that poll, and callbacks it schedules make the poll non-blocking).
    ///
    /// Hooks run in registration order. A panicking hook is reported to the exception
    /// handler and the loop keeps running.
    pub fn add_before_poll_hook(&self, hook: impl Fn(&EventLoop) + 'static) -> BeforePollHookId {
        // Ids are unique per thread, so one of another loop removes nothing here.
        let id = TABLE.with(|table| {
            let mut table = table.borrow_mut();
            let id = BeforePollHookId(table.next_hook);
            table.next_hook += 1;
            id
        });
        self.inner
            .before_poll_hooks
            .borrow_mut()
            .push((id, Rc::new(hook)));
        id
    }

    /// Removes a hook; `false` if it was not registered on this loop.
    pub fn remove_before_poll_hook(&self, id: BeforePollHookId) -> bool {
        let removed = {
            let mut hooks = self.inner.before_poll_hooks.borrow_mut();
            let pos = hooks.iter().position(|(h, _)| *h == id);
            pos.map(|pos| hooks.remove(pos))
        };
        // Dropped outside the borrow: dropping may run user code.
        removed.is_some()
    }

    /// Runs the before-poll hooks (called by the loop at the start of each iteration).
    #[inline]
    pub(crate) fn run_before_poll_hooks(&self) {
        // A snapshot, so hooks may add or remove hooks; the common case is a single hook,
        // cloned without allocating and without the iterator and drop glue of a list.
        let hooks = match self.inner.before_poll_hooks.borrow().as_slice() {
            [] => None,
            [(_, one)] => Some(Hooks::One(one.clone())),
            many => Some(Hooks::Many(many.iter().map(|(_, h)| h.clone()).collect())),
        };
        match hooks {
            None => {}
            Some(Hooks::One(hook)) => self.run_before_poll_hook(&hook),
            Some(Hooks::Many(hooks)) => {
                for hook in &hooks {
                    self.run_before_poll_hook(hook);
                }
            }
        }
    }

    /// Runs one hook, reporting its panic to the exception handler.
    #[inline]
    fn run_before_poll_hook(&self, hook: &BeforePollHook) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(self)));
        if let Err(payload) = outcome {
            self.call_exception_handler(
                crate::exception::ExceptionContext::new("Exception in before-poll hook")
                    .with_error(crate::error::LoopError::from_panic(&*payload)),
            );
        }
    }
}

/// The hooks of one iteration, taken before any runs.
enum Hooks {
    One(BeforePollHook),
    Many(Vec<BeforePollHook>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn loop_local_values_are_per_loop_and_per_type() {
        let a = EventLoop::new().unwrap();
        let b = EventLoop::new().unwrap();
        let x = a.loop_local(|_| Cell::new(1u32));
        x.set(7);
        assert_eq!(a.loop_local(|_| Cell::new(0u32)).get(), 7);
        assert_eq!(b.loop_local(|_| Cell::new(3u32)).get(), 3);
        assert_eq!(*a.loop_local(|_| "other type"), "other type");
    }

    #[test]
    fn hooks_run_before_each_poll_and_can_be_removed() {
        let lp = EventLoop::new().unwrap();
        let runs = Rc::new(Cell::new(0));
        let seen = runs.clone();
        let id = lp.add_before_poll_hook(move |_| seen.set(seen.get() + 1));
        lp.stop();
        lp.run_forever().unwrap();
        assert_eq!(runs.get(), 1, "one iteration, one hook run");
        assert!(lp.remove_before_poll_hook(id));
        assert!(!lp.remove_before_poll_hook(id));
        lp.stop();
        lp.run_forever().unwrap();
        assert_eq!(runs.get(), 1);
    }

    #[test]
    fn hooks_may_add_and_remove_hooks_from_the_next_iteration_on() {
        let lp = EventLoop::new().unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let first_log = log.clone();
        let first = Rc::new(Cell::new(None));
        let first_id = first.clone();
        let id = lp.add_before_poll_hook(move |lp| {
            first_log.borrow_mut().push("first");
            if let Some(id) = first_id.take() {
                assert!(lp.remove_before_poll_hook(id));
                let added_log = first_log.clone();
                lp.add_before_poll_hook(move |_| added_log.borrow_mut().push("added"));
            }
        });
        first.set(Some(id));
        let second_log = log.clone();
        lp.add_before_poll_hook(move |_| second_log.borrow_mut().push("second"));
        for _ in 0..2 {
            lp.stop();
            lp.run_forever().unwrap();
        }
        assert_eq!(
            *log.borrow(),
            ["first", "second", "second", "added"],
            "an iteration runs the hooks registered when it started"
        );
    }

    #[test]
    fn close_releases_the_loops_values_and_hooks() {
        let lp = EventLoop::new().unwrap();
        let value = lp.loop_local(|_| Rc::new(()));
        let probe = Rc::downgrade(&*value);
        drop(value);
        let hook_probe = Rc::new(());
        let held = hook_probe.clone();
        lp.add_before_poll_hook(move |_| {
            let _ = &held;
        });
        assert!(probe.upgrade().is_some());
        lp.close().unwrap();
        assert!(
            probe.upgrade().is_none(),
            "the loop-local value outlived close()"
        );
        assert_eq!(
            Rc::strong_count(&hook_probe),
            1,
            "the hook outlived close()"
        );
    }
}
