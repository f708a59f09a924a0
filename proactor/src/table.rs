//! The op table: every op in flight, keyed by slot index plus a generation.
//!
//! `user_data` on the ring is `generation << 32 | index`. A stale completion (or a queued
//! cancel) whose generation no longer matches its slot is recognised and ignored, so it can
//! never hit a newer op that reused the slot. Generation 0 is never given to an op: user data
//! with generation 0 marks the proactor's internal entries (cancel requests, wait timeouts).
//! An entry keeps its whole id, which a lookup compares in one go with the one it is given; a
//! vacant slot keeps [`VACANT`], whose index no lookup that passes the bounds check has, so
//! that this one comparison alone tells whether an id names a live op. Internal entries use
//! indices the table never gives out ([`RESERVED_INDEX`] and up), so that a lookup of one
//! fails its bounds check: the io_uring driver looks a CQE up before testing whether it is
//! internal.

use crate::op::{Nop, Op};

/// Identifies one pushed op until its final completion is popped.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    /// `generation << 32 | index`: the ring's `user_data`, and what a table entry keeps, so
    /// that a lookup compares one word.
    bits: u64,
}

impl std::fmt::Debug for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpId")
            .field("index", &(self.bits as u32))
            .field("generation", &self.generation())
            .finish()
    }
}

/// The id a vacant slot keeps: its index, `u32::MAX`, is beyond the table (as
/// [`RESERVED_INDEX`]), so no id a lookup finds in bounds equals it.
const VACANT: OpId = OpId { bits: u64::MAX };

/// The first of the indices the table never gives out: internal `user_data` (generation 0)
/// uses them, and [`OpId::NONE`] the last.
pub(crate) const RESERVED_INDEX: u32 = u32::MAX - 2;

impl OpId {
    /// Names no op: the id of an empty [`Completion`](crate::Completion), and what a field
    /// that may name no op can hold instead of an `Option`. Every method given it acts as
    /// for an op that already completed (e.g. [`Proactor::resend`](crate::Proactor::resend)
    /// returns `false`), at the cost of a lookup, which finds nothing: a caller may pass it
    /// untested.
    ///
    /// Generation 0 is that of vacant slots, so its index must be one the table never
    /// reaches (`insert_with` refuses it): a lookup fails its bounds check instead of
    /// finding a vacant slot as if it were the op.
    pub const NONE: OpId = OpId {
        bits: u32::MAX as u64,
    };

    fn new(index: u32, generation: u32) -> OpId {
        OpId {
            bits: (u64::from(generation) << 32) | u64::from(index),
        }
    }

    fn generation(self) -> u32 {
        (self.bits >> 32) as u32
    }

    /// The value carried in the ring's `user_data`.
    #[inline]
    pub(crate) fn user_data(self) -> u64 {
        self.bits
    }

    /// The op a `user_data` names, or `None` for the proactor's internal entries.
    pub(crate) fn from_user_data(user_data: u64) -> Option<OpId> {
        let id = OpId { bits: user_data };
        (id.generation() != 0).then_some(id)
    }

    /// The id in a `user_data`, internal or not: for a lookup, which finds no entry for an
    /// internal one (its index is reserved), before [`from_user_data`](OpId::from_user_data)
    /// tells which it is.
    #[inline]
    pub(crate) fn from_user_data_any(user_data: u64) -> OpId {
        OpId { bits: user_data }
    }

    /// The slot index, for backends that key per-op state by slot.
    #[inline]
    pub(crate) fn index(self) -> usize {
        self.bits as u32 as usize
    }
}

/// Where an op is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpState {
    /// Submitted (or queued for submission); completions go to the caller.
    Active,
    /// A cancel was requested; the final completion still goes to the caller.
    Cancelling,
    /// The caller gave the op up: its completions are consumed internally and its
    /// resources (buffers, accepted fds) released once the kernel is done.
    Detached,
    /// A quiet op that succeeded in full: the kernel is done with it, and it waits in the
    /// table, unreported, until its owner reclaims it (see `Proactor::push_quiet`).
    Finished,
}

/// Where the backend has an op: the io_uring driver's record, kept in the op's entry (in
/// what would be padding) so that its per-message paths, which hold the entry already,
/// update it without a second lookup. The epoll backend keeps its own per-op places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Stage {
    /// Not started yet.
    #[default]
    Idle,
    /// Waiting in the user-space backlog for room in the submission queue.
    Backlog,
    /// Its SQE is in the submission queue or the kernel: a CQE will come.
    Kernel,
    /// Its final completion is decided (reported, or waiting in the ready queue).
    Done,
}

/// One op in flight.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The op's id ([`VACANT`] for a vacant slot).
    pub(crate) id: OpId,
    /// The result of a [`OpState::Finished`] op (stale in other states: set when the op
    /// finishes, not reset when it restarts).
    pub(crate) result: i32,
    pub(crate) token: u64,
    pub(crate) state: OpState,
    /// Whether a full success goes unreported (`Proactor::push_quiet`).
    pub(crate) quiet: bool,
    /// Where the backend has it (see [`Stage`]).
    pub(crate) stage: Stage,
    pub(crate) op: Op,
}

/// Slab of ops in flight.
///
/// Not a `slab::Slab`: its slots are an enum, vacant or occupied, so a lookup would test
/// which before comparing generations, and lookups are per message. Here a vacant slot is
/// an entry of id [`VACANT`] holding a [`Nop`], with the next free index in its `token`.
#[derive(Debug)]
pub(crate) struct OpTable {
    entries: Vec<Entry>,
    /// The most recently freed slot (reused first), or [`NO_SLOT`].
    free: usize,
    /// Occupied slots.
    len: usize,
    next_generation: u32,
}

/// End of the free list.
const NO_SLOT: usize = usize::MAX;

impl Default for OpTable {
    fn default() -> Self {
        OpTable {
            entries: Vec::new(),
            free: NO_SLOT,
            len: 0,
            next_generation: 0,
        }
    }
}

impl Entry {
    /// Whether the op is quiet and active: what a quiet op's final completion tests first
    /// (the per-message send's). Written so that the compiler, which places the two bytes
    /// side by side, tests them with one comparison of both.
    #[inline]
    pub(crate) fn quiet_and_active(&self) -> bool {
        let both = u16::from_le_bytes([u8::from(self.quiet), self.state as u8]);
        both == u16::from_le_bytes([1, OpState::Active as u8])
    }

    /// A vacant slot, followed in the free list by `next`.
    fn vacant(next: usize) -> Entry {
        Entry {
            id: VACANT,
            result: 0,
            token: next as u64,
            state: OpState::Finished,
            quiet: false,
            stage: Stage::Idle,
            op: Op::Nop(Nop),
        }
    }
}

impl OpTable {
    /// Stores `op` and returns its id.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, op: Op, token: u64) -> OpId {
        self.insert_with(op, token, false)
    }

    /// Stores `op`, quiet or not (see `Proactor::push_quiet`), and returns its id.
    #[inline]
    pub(crate) fn insert_with(&mut self, op: Op, token: u64, quiet: bool) -> OpId {
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let generation = self.next_generation;
        // The index is known only below; `VACANT` meanwhile, which `get` never finds.
        let entry = Entry {
            id: VACANT,
            result: 0,
            token,
            state: OpState::Active,
            quiet,
            stage: Stage::Idle,
            op,
        };
        let (index, slot) = match self.entries.get_mut(self.free) {
            Some(vacant) => {
                let index = self.free;
                self.free = vacant.token as usize;
                *vacant = entry;
                (index, vacant)
            }
            None => {
                self.entries.push(entry);
                let index = self.entries.len() - 1;
                (index, &mut self.entries[index])
            }
        };
        self.len += 1;
        // `RESERVED_INDEX` and up are internal entries' and `OpId::NONE`'s.
        let index = u32::try_from(index)
            .ok()
            .filter(|&index| index < RESERVED_INDEX)
            .unwrap_or_else(|| unreachable!("2^32 - 3 ops in flight"));
        let id = OpId::new(index, generation);
        slot.id = id;
        id
    }

    /// The entry for `id`, unless it already completed.
    #[inline]
    pub(crate) fn get(&self, id: OpId) -> Option<&Entry> {
        // Vacant slots keep `VACANT`, which no id in bounds is.
        self.entries.get(id.index()).filter(|e| e.id == id)
    }

    /// The entry for `id`, unless it already completed.
    #[inline]
    pub(crate) fn get_mut(&mut self, id: OpId) -> Option<&mut Entry> {
        self.entries.get_mut(id.index()).filter(|e| e.id == id)
    }

    /// Removes the entry for `id` (after its final completion).
    pub(crate) fn remove(&mut self, id: OpId) -> Option<Entry> {
        let free = self.free;
        let slot = self.get_mut(id)?;
        let entry = std::mem::replace(slot, Entry::vacant(free));
        self.free = id.index();
        self.len -= 1;
        Some(entry)
    }

    /// How many ops are in flight (including detached ones).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no op is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids of every op in flight.
    pub(crate) fn ids(&self) -> Vec<OpId> {
        self.entries
            .iter()
            .map(|e| e.id)
            .filter(|&id| id != VACANT)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Nop;

    #[test]
    fn quiet_and_active_needs_both() {
        let mut table = OpTable::default();
        let id = table.insert_with(Nop.into(), 0, true);
        let entry = table.get_mut(id).unwrap();
        assert!(entry.quiet_and_active());
        for state in [OpState::Cancelling, OpState::Detached, OpState::Finished] {
            entry.state = state;
            assert!(!entry.quiet_and_active(), "{state:?}");
        }
        entry.state = OpState::Active;
        entry.quiet = false;
        assert!(!entry.quiet_and_active());
    }

    #[test]
    fn freed_slots_are_reused_last_freed_first() {
        let mut table = OpTable::default();
        let ids: Vec<OpId> = (0..4).map(|t| table.insert(Nop.into(), t)).collect();
        assert_eq!(table.len(), 4);
        table.remove(ids[1]);
        table.remove(ids[3]);
        assert_eq!(table.len(), 2);
        assert!(table.remove(ids[3]).is_none(), "removed twice");
        assert_eq!(table.ids(), vec![ids[0], ids[2]]);
        let a = table.insert(Nop.into(), 10);
        let b = table.insert(Nop.into(), 11);
        let c = table.insert(Nop.into(), 12);
        assert_eq!((a.index(), b.index(), c.index()), (3, 1, 4));
        assert_eq!(table.len(), 5);
        for (id, token) in [(ids[0], 0), (ids[2], 2), (a, 10), (b, 11), (c, 12)] {
            assert_eq!(table.get(id).map(|e| e.token), Some(token));
        }
        assert!(table.get(ids[1]).is_none() && table.get(ids[3]).is_none());
    }

    #[test]
    fn the_id_of_no_op_never_finds_a_vacant_slot() {
        let mut table = OpTable::default();
        let id = table.insert(Nop.into(), 1);
        assert!(table.remove(id).is_some());
        // Slot 0 is vacant.
        assert!(table.get(OpId::NONE).is_none());
        assert!(table.get_mut(OpId::NONE).is_none());
        assert!(table.remove(OpId::NONE).is_none());
        assert!(table.is_empty());
        let again = table.insert(Nop.into(), 2);
        assert_eq!(again.index(), id.index(), "the free list is intact");
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn stale_ids_miss_reused_slots() {
        let mut table = OpTable::default();
        let first = table.insert(Nop.into(), 1);
        table.remove(first);
        let second = table.insert(Nop.into(), 2);
        assert_eq!(first.index(), second.index());
        assert!(table.get(first).is_none());
        assert_eq!(table.get(second).map(|e| e.token), Some(2));
        assert_eq!(OpId::from_user_data(second.user_data()), Some(second));
        assert_eq!(OpId::from_user_data(7), None, "generation 0 is internal");
        let internal = OpId::from_user_data_any(u64::from(RESERVED_INDEX));
        assert!(table.get(internal).is_none(), "internal ids find no entry");
    }
}
