//! The epoll backend's `Timeout` ops: a binary min-heap of deadlines.
//!
//! Cancelling a timer does not search the heap: the caller marks the op's slot free, and the
//! heap entry becomes *stale*; stale entries are skipped when they surface and swept out in
//! one pass when they outnumber the live ones, so a workload that cancels most of its
//! timeouts keeps the heap small. Deadlines come from [`Instant`] (`CLOCK_MONOTONIC`), the
//! clock `epoll_wait` measures its timeout on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::table::OpId;

/// Sweep stale entries once there are more than this many and more than live ones.
const SWEEP_MIN: usize = 64;

/// Pending `Timeout` ops ordered by deadline.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// `(deadline, push sequence, user_data)`: the sequence keeps equal deadlines in push
    /// order.
    heap: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    seq: u64,
    stale: usize,
}

impl Timers {
    /// Adds op `id`, due at `deadline`.
    pub(super) fn insert(&mut self, deadline: Instant, id: OpId) {
        self.seq += 1;
        self.heap
            .push(Reverse((deadline, self.seq, id.user_data())));
    }

    /// Notes that one entry became stale (its op was cancelled); sweeps them out when they
    /// dominate, keeping the entries for which `live` holds.
    pub(super) fn cancelled(&mut self, live: impl Fn(OpId) -> bool) {
        self.stale += 1;
        if self.stale > SWEEP_MIN && self.stale * 2 > self.heap.len() {
            self.heap
                .retain(|Reverse((_, _, data))| OpId::from_user_data(*data).is_some_and(&live));
            self.stale = 0;
        }
    }

    /// The earliest deadline, live or stale (a stale one only makes a wait end early, and
    /// the waiter then waits again).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Removes and returns the next entry due at or before `now`. The caller checks that the
    /// op is still a pending timer (and calls [`Timers::stale_seen`] if not).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<OpId> {
        loop {
            let Reverse((deadline, _, data)) = *self.heap.peek()?;
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(id) = OpId::from_user_data(data) {
                return Some(id);
            }
        }
    }

    /// Notes that a popped entry was stale.
    pub(super) fn stale_seen(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// How many entries the heap holds, stale ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Nop;
    use crate::table::OpTable;
    use std::time::Duration;

    #[test]
    fn due_timers_pop_in_deadline_then_push_order() {
        let mut table = OpTable::default();
        let ids: Vec<OpId> = (0..3).map(|t| table.insert(Nop.into(), t)).collect();
        let base = Instant::now();
        let mut timers = Timers::default();
        timers.insert(base + Duration::from_millis(20), ids[0]);
        timers.insert(base + Duration::from_millis(10), ids[1]);
        timers.insert(base + Duration::from_millis(10), ids[2]);
        assert_eq!(
            timers.next_deadline(),
            Some(base + Duration::from_millis(10))
        );
        assert_eq!(
            timers.pop_due(base + Duration::from_millis(9)),
            None,
            "never early"
        );
        let now = base + Duration::from_millis(10);
        assert_eq!(timers.pop_due(now), Some(ids[1]));
        assert_eq!(timers.pop_due(now), Some(ids[2]));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(
            timers.pop_due(base + Duration::from_millis(20)),
            Some(ids[0])
        );
    }

    #[test]
    fn cancelled_timers_are_swept_when_they_dominate() {
        let mut table = OpTable::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut timers = Timers::default();
        let keep = table.insert(Nop.into(), 0);
        timers.insert(far, keep);
        for i in 0..200 {
            let id = table.insert(Nop.into(), i);
            timers.insert(far, id);
            table.remove(id);
            timers.cancelled(|id| table.get(id).is_some());
        }
        assert!(
            timers.len() < 2 * SWEEP_MIN + 2,
            "heap holds {} entries",
            timers.len()
        );
        let due: Vec<OpId> = std::iter::from_fn(|| timers.pop_due(far)).collect();
        assert!(due.contains(&keep), "the live timer survived the sweeps");
    }
}
