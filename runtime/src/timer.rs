//! The timer heap: a binary min-heap of deadlines with lazy deletion.
//!
//! Algorithm (asyncio's `base_events`): a cancelled timer stays in the heap, marked, and
//! is dropped when it reaches the head ([`TimerHeap::next_deadline`] pops cancelled heads
//! before the loop computes its wait, so a cancelled timer never shortens it, semantics
//! 40). When more than half of a heap of more than [`COMPACT_MIN_LEN`] entries is cancelled,
//! the heap is rebuilt without them, so memory stays bounded however many timers are
//! cancelled (amortised O(1) per cancel, since each rebuild at least halves the heap).
//! Equal deadlines run in scheduling order (asyncio leaves that order undefined, 38).

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;

use crate::handle::{Runnable, TimerEntry};

/// Heaps no larger than this are never compacted (asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`).
pub(crate) const COMPACT_MIN_LEN: usize = 100;

/// How many due timers [`TimerHeap::pop_due`] pops one by one before it may switch to
/// the bulk path.
pub(crate) const BULK_MIN_POPPED: usize = 1024;

struct Slot {
    when: f64,
    seq: u64,
    timer: Rc<dyn TimerEntry>,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    /// Reversed, so that `BinaryHeap` (a max-heap) yields the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The loop's scheduled timers.
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Slot>,
    next_seq: u64,
    /// How many entries of `heap` are cancelled; cancelled cells increment it themselves.
    cancelled: Rc<Cell<usize>>,
}

impl TimerHeap {
    pub(crate) fn new() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: Rc::new(Cell::new(0)),
        }
    }

    /// The counter a new timer cell must share, so its `cancel()` is counted here.
    pub(crate) fn cancel_counter(&self) -> Rc<Cell<usize>> {
        self.cancelled.clone()
    }

    /// Schedules `timer` at `timer.when()`.
    pub(crate) fn push(&mut self, timer: Rc<dyn TimerEntry>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Slot {
            when: timer.when(),
            seq,
            timer,
        });
        self.compact_if_mostly_cancelled();
    }

    /// The earliest live deadline, after dropping cancelled heads.
    pub(crate) fn next_deadline(&mut self) -> Option<f64> {
        while let Some(head) = self.heap.peek() {
            if !head.timer.is_cancelled() {
                return Some(head.when);
            }
            self.pop_head();
        }
        None
    }

    /// Moves every live timer due at `now` (deadline ≤ `now`) to `ready`, earliest first.
    ///
    /// Timers are popped one by one while few are due. Once an iteration has popped
    /// [`BULK_MIN_POPPED`] timers and at least 1/32 of the heap, the rest is done in
    /// bulk: one linear partition of the heap's array, one sort of the due part, one
    /// linear rebuild of the rest. When a large share of the heap is due at once (a burst
    /// of short timers), that is several times faster than a pop (a sift-down through
    /// cache-cold levels) per timer; the ratio rule keeps a large heap with few due timers
    /// on the cheap path.
    pub(crate) fn pop_due(&mut self, now: f64, mut ready: impl FnMut(Rc<dyn Runnable>)) {
        let mut popped = 0usize;
        while let Some(head) = self.heap.peek() {
            if head.when > now {
                return;
            }
            if popped >= BULK_MIN_POPPED && popped * 32 >= self.heap.len() {
                self.pop_due_bulk(now, ready);
                return;
            }
            if let Some(timer) = self.pop_head() {
                ready(timer.into_runnable());
            }
            popped += 1;
        }
    }

    /// The bulk path of [`pop_due`](TimerHeap::pop_due).
    fn pop_due_bulk(&mut self, now: f64, mut ready: impl FnMut(Rc<dyn Runnable>)) {
        let slots = std::mem::take(&mut self.heap).into_vec();
        let (mut due, rest): (Vec<Slot>, Vec<Slot>) =
            slots.into_iter().partition(|slot| slot.when <= now);
        self.heap = BinaryHeap::from(rest);
        let mut dropped = 0;
        due.retain(|slot| {
            slot.timer.unschedule();
            let live = !slot.timer.is_cancelled();
            dropped += usize::from(!live);
            live
        });
        self.cancelled
            .set(self.cancelled.get().saturating_sub(dropped));
        // The heap's order: deadline, then scheduling order.
        due.sort_unstable_by(|a, b| a.when.total_cmp(&b.when).then(a.seq.cmp(&b.seq)));
        for slot in due {
            ready(slot.timer.into_runnable());
        }
    }

    /// Pops the head; returns it unless it was cancelled.
    fn pop_head(&mut self) -> Option<Rc<dyn TimerEntry>> {
        let slot = self.heap.pop()?;
        slot.timer.unschedule();
        if slot.timer.is_cancelled() {
            self.cancelled.set(self.cancelled.get().saturating_sub(1));
            None
        } else {
            Some(slot.timer)
        }
    }

    /// Rebuilds the heap without its cancelled entries when they are the majority of a
    /// large heap (semantics 40).
    #[inline]
    pub(crate) fn compact_if_mostly_cancelled(&mut self) {
        // The loop checks every iteration: inline, a small or empty heap costs a comparison.
        let len = self.heap.len();
        if len > COMPACT_MIN_LEN && self.cancelled.get() * 2 > len {
            self.compact();
        }
    }

    /// Rebuilds the heap without its cancelled entries.
    #[cold]
    #[inline(never)]
    fn compact(&mut self) {
        let mut slots = std::mem::take(&mut self.heap).into_vec();
        slots.retain(|slot| {
            let keep = !slot.timer.is_cancelled();
            if !keep {
                slot.timer.unschedule();
            }
            keep
        });
        self.heap = BinaryHeap::from(slots);
        self.cancelled.set(0);
    }

    /// How many entries the heap holds, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// How many of them are cancelled.
    pub(crate) fn cancelled_len(&self) -> usize {
        self.cancelled.get()
    }

    /// Removes every timer (loop close), handing them back so the caller can drop them
    /// outside any borrow of the loop.
    pub(crate) fn take_all(&mut self) -> Vec<Rc<dyn TimerEntry>> {
        let slots = std::mem::take(&mut self.heap).into_vec();
        self.cancelled.set(0);
        slots
            .into_iter()
            .map(|slot| {
                slot.timer.unschedule();
                slot.timer
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::TimerCell;

    fn timer(heap: &mut TimerHeap, when: f64) -> Rc<dyn TimerEntry> {
        let cell: Rc<dyn TimerEntry> = Rc::new(TimerCell::new(|| (), when, heap.cancel_counter()));
        heap.push(cell.clone());
        cell
    }

    fn due(heap: &mut TimerHeap, now: f64) -> usize {
        let mut n = 0;
        heap.pop_due(now, |_| n += 1);
        n
    }

    #[test]
    fn due_timers_come_out_earliest_first_and_never_early() {
        let mut heap = TimerHeap::new();
        let late = timer(&mut heap, 3.0);
        let early = timer(&mut heap, 1.0);
        let mut order = Vec::new();
        heap.pop_due(2.0, |r| order.push(r.describe()));
        assert_eq!(order.len(), 1);
        assert!(order[0].contains("when=1"));
        assert_eq!(due(&mut heap, 2.999), 0);
        assert_eq!(due(&mut heap, 3.0), 1);
        drop((late, early));
    }

    #[test]
    fn cancelled_heads_are_skipped_for_the_deadline() {
        // semantics 40
        let mut heap = TimerHeap::new();
        let head = timer(&mut heap, 5.0);
        let _live = timer(&mut heap, 10.0);
        head.cancel();
        assert_eq!(heap.cancelled_len(), 1);
        assert_eq!(heap.next_deadline(), Some(10.0));
        assert_eq!(heap.cancelled_len(), 0);
        assert_eq!(heap.len(), 1);
        // Cancelling a timer that already left the heap does not count.
        assert_eq!(due(&mut heap, 10.0), 1);
        _live.cancel();
        assert_eq!(heap.cancelled_len(), 0);
    }

    #[test]
    fn compaction_only_for_large_mostly_cancelled_heaps() {
        let mut heap = TimerHeap::new();
        let timers: Vec<_> = (0..COMPACT_MIN_LEN)
            .map(|i| timer(&mut heap, i as f64))
            .collect();
        timers.iter().for_each(|t| t.cancel());
        heap.compact_if_mostly_cancelled();
        assert_eq!(
            heap.len(),
            COMPACT_MIN_LEN,
            "a heap of 100 is never compacted"
        );
        let more: Vec<_> = (0..3)
            .map(|i| timer(&mut heap, 1000.0 + i as f64))
            .collect();
        // The push that made the heap exceed 100 entries with > 50 % cancelled compacted it.
        assert_eq!(heap.len(), 3);
        assert_eq!(heap.cancelled_len(), 0);
        drop(more);
    }

    #[test]
    fn equal_deadlines_keep_scheduling_order() {
        let mut heap = TimerHeap::new();
        let first = timer(&mut heap, 1.0);
        let second = timer(&mut heap, 1.0);
        let mut order = Vec::new();
        heap.pop_due(1.0, |r| order.push(Rc::as_ptr(&r) as *const ()));
        let expected = vec![
            Rc::as_ptr(&first) as *const (),
            Rc::as_ptr(&second) as *const (),
        ];
        assert_eq!(order, expected);
    }

    #[test]
    fn bulk_path_keeps_deadline_then_scheduling_order_and_drops_cancelled() {
        let mut heap = TimerHeap::new();
        let n = 5000;
        // Deadlines in a scrambled order, with many ties, every third one cancelled.
        let timers: Vec<_> = (0..n)
            .map(|i| (i, timer(&mut heap, ((i * 7919) % 97) as f64)))
            .collect();
        for (i, t) in &timers {
            if i % 3 == 0 {
                t.cancel();
            }
        }
        let late = timer(&mut heap, 1000.0);
        let mut order = Vec::new();
        heap.pop_due(500.0, |r| order.push(Rc::as_ptr(&r) as *const ()));
        let mut expected: Vec<_> = timers
            .iter()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, t)| (((i * 7919) % 97) as f64, *i, Rc::as_ptr(t) as *const ()))
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let expected: Vec<_> = expected.into_iter().map(|e| e.2).collect();
        assert_eq!(order.len(), expected.len());
        assert!(order == expected, "due timers out of order");
        assert_eq!(heap.len(), 1);
        assert_eq!(heap.cancelled_len(), 0);
        assert_eq!(heap.next_deadline(), Some(1000.0));
        drop(late);
    }
}
