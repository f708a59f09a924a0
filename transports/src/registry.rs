//! What happens to transports and servers still open when their loop closes.
//!
//! A loop's `close()` drops its I/O handlers and then its per-loop values, and only then
//! drains the proactor. A transport whose protocol holds a clone of it is a reference cycle
//! that dropping the handlers does not free, so without help its fd would stay open until
//! the process exits. This per-loop registry, dropped with the loop's other values, lets go
//! of every live transport's protocol (breaking the cycle) and moves its fd to a
//! thread-local graveyard. The fds are closed at the next call into this crate on this
//! thread (or at thread exit): always **after** the proactor has drained, so no op still
//! queued for the kernel can ever reach an fd number that was closed and reused.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};

use ringloop_runtime::EventLoop;

use crate::flush::FlushList;

/// Something that can let go of its protocol and fds when its loop closes.
pub(crate) trait Abandon {
    /// Drops the protocol and hands over the fds this object owns.
    fn abandon(&self, graveyard: &mut Vec<OwnedFd>);
}

thread_local! {
    static GRAVEYARD: RefCell<Vec<OwnedFd>> = const { RefCell::new(Vec::new()) };
}

/// Closes the fds left by loops that closed earlier on this thread.
pub(crate) fn bury() {
    let fds = GRAVEYARD
        .try_with(|g| std::mem::take(&mut *g.borrow_mut()))
        .unwrap_or_default();
    drop(fds);
}

/// The live transports and servers of one loop, held weakly.
pub(crate) struct Registry {
    live: RefCell<Vec<Weak<dyn Abandon>>>,
    prune_at: Cell<usize>,
    /// The loop's flush list, emptied on close: transports listed for a flush that never
    /// comes would otherwise keep themselves alive through it.
    flush: Rc<FlushList>,
}

impl Registry {
    /// This loop's registry.
    pub(crate) fn of(lp: &EventLoop) -> Rc<Registry> {
        bury();
        lp.loop_local(|lp| Registry {
            live: RefCell::new(Vec::new()),
            prune_at: Cell::new(0),
            flush: FlushList::of(lp),
        })
    }

    /// Remembers `item` until it is dropped or the loop closes.
    pub(crate) fn add(&self, item: Weak<dyn Abandon>) {
        let mut live = self.live.borrow_mut();
        if live.len() >= self.prune_at.get() {
            live.retain(|w| w.strong_count() > 0);
            self.prune_at.set((live.len() * 2).max(64));
        }
        live.push(item);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.flush.clear();
        let live = std::mem::take(&mut *self.live.borrow_mut());
        let mut fds = Vec::new();
        for item in live.iter().filter_map(Weak::upgrade) {
            item.abandon(&mut fds);
        }
        if !fds.is_empty() {
            tracing::debug!(
                fds = fds.len(),
                "loop closed with transports open; closing their fds"
            );
        }
        let _ = GRAVEYARD.try_with(|g| g.borrow_mut().extend(fds));
        drop(live);
    }
}
