//! The epoll backend's queue of completions for the front end.

use crate::completion::RawCompletion;

/// Completions waiting for the front end, oldest first: queued as ops complete (mostly
/// while polling), taken one at a time by `take_raw` until none is left.
///
/// A `Vec` read from a head that moves, not a `VecDeque`, whose `pop_front` wraps its head
/// around the buffer (a handful of instructions per completion, two completions per
/// echoed message). The queue is drained to empty every loop turn, and the vector starts
/// over from its beginning whenever it is.
#[derive(Default)]
pub(super) struct ReadyQueue {
    /// `None` before `head` (taken), `Some` from `head` on.
    items: Vec<Option<RawCompletion>>,
    head: usize,
}

impl ReadyQueue {
    /// An empty queue with room for `capacity` completions.
    pub(super) fn with_capacity(capacity: usize) -> ReadyQueue {
        ReadyQueue {
            items: Vec::with_capacity(capacity),
            head: 0,
        }
    }

    /// Queues `completion` behind the others.
    #[inline]
    pub(super) fn push_back(&mut self, completion: RawCompletion) {
        self.items.push(Some(completion));
    }

    /// How many completions wait.
    pub(super) fn len(&self) -> usize {
        self.items.len() - self.head
    }

    /// Whether none waits.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }

    /// The completion `at` places behind the first.
    pub(super) fn get(&self, at: usize) -> Option<&RawCompletion> {
        self.items.get(self.head + at)?.as_ref()
    }

    /// Takes the oldest completion.
    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<RawCompletion> {
        let taken = self.items.get_mut(self.head)?.take();
        self.head += 1;
        if self.head == self.items.len() {
            // Every item was taken: the vector holds `None`s alone, which own nothing.
            // Forgotten rather than cleared, which would test each for something to drop.
            // SAFETY: a length of 0 leaves no element to be initialized.
            unsafe { self.items.set_len(0) };
            self.head = 0;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::RecvBuf;
    use crate::table::OpId;

    fn completion(result: i32) -> RawCompletion {
        RawCompletion::new(OpId::NONE, result, true, Some(RecvBuf::owned(vec![1, 2])))
    }

    #[test]
    fn completions_come_out_in_order_and_the_queue_starts_over_when_drained() {
        let mut ready = ReadyQueue::with_capacity(2);
        assert!(ready.is_empty() && ready.pop_front().is_none());
        ready.push_back(completion(1));
        ready.push_back(completion(2));
        assert_eq!(ready.len(), 2);
        assert_eq!(ready.pop_front().map(|c| c.result), Some(1));
        // Queued while draining: behind the rest.
        ready.push_back(completion(3));
        assert_eq!(ready.len(), 2);
        assert_eq!(ready.get(1).map(|c| c.result), Some(3));
        assert_eq!(ready.pop_front().map(|c| c.result), Some(2));
        assert_eq!(ready.pop_front().map(|c| c.result), Some(3));
        assert!(ready.is_empty() && ready.pop_front().is_none());
        assert_eq!((ready.items.len(), ready.head), (0, 0), "started over");
        // What is left when the queue drops is dropped with it.
        ready.push_back(completion(4));
        ready.push_back(completion(5));
        assert!(ready.pop_front().is_some());
        drop(ready);
    }
}
