//! Per-op backend state, in a side table indexed by the op's slot index.
//!
//! The front end's [`OpTable`](crate::table::OpTable) holds the ops, and where the driver
//! has each ([`Stage`](crate::table::Stage), in the entry that the per-message paths hold
//! anyway); this table holds what only multishot receives running as single receives need:
//! that they do, and the buffer the kernel is filling. A slot is reset when a new op takes
//! its index.

use crate::audit;
use crate::buf::{BufPool, RecvBuf};
use crate::table::OpId;

/// The buffer of a single receive that stands in for a multishot receive.
#[derive(Debug)]
pub(super) enum SingleBuf {
    /// A buffer of the free-list pool.
    Pool(u16),
    /// A buffer of its own (the pool is dry, or a ring pool that only the kernel picks
    /// from).
    Owned(Vec<u8>),
}

impl SingleBuf {
    /// Takes a buffer for one receive: from the free list if it has one, else a fresh one.
    /// Returns the buffer and where the kernel writes (at most the pool's buffer size).
    pub(super) fn take(pool: &BufPool) -> (SingleBuf, *mut u8, usize) {
        if let Some((id, ptr)) = pool.take() {
            return (SingleBuf::Pool(id), ptr, pool.buf_size());
        }
        let mut owned = Vec::with_capacity(pool.buf_size());
        let ptr = owned.as_mut_ptr();
        audit::lend_range(ptr, owned.capacity());
        (SingleBuf::Owned(owned), ptr, pool.buf_size())
    }

    /// The kernel finished with the buffer, having received `res` bytes (or an error): the
    /// chunk to report, if any data arrived.
    pub(super) fn finish(self, pool: &BufPool, res: i32) -> Option<RecvBuf> {
        match self {
            SingleBuf::Pool(id) if res > 0 => Some(pool.filled(id, res as usize)),
            SingleBuf::Pool(id) => {
                pool.give_back(id);
                None
            }
            SingleBuf::Owned(mut owned) => {
                audit::reclaim_range(owned.as_ptr(), owned.capacity());
                if res <= 0 {
                    return None;
                }
                let len = (res as usize).min(owned.capacity());
                // SAFETY: the kernel wrote `res` bytes at the start of this buffer (the
                // receive was given exactly its capacity), so `0..len` is initialised.
                unsafe { owned.set_len(len) };
                Some(RecvBuf::owned(owned))
            }
        }
    }
}

/// The driver's state for one op.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The op this state belongs to.
    id: Option<OpId>,
    /// Multishot receive only: the next arm is a single receive (the ring ran dry).
    pub(super) single: bool,
    /// Multishot receive only: the buffer of the single receive in flight.
    /// Boxed: it is rare (the ring ran dry), and every op's slot would pay for it inline.
    pub(super) buf: Option<Box<SingleBuf>>,
}

/// Side table of [`Slot`]s by op slot index.
#[derive(Debug, Default)]
pub(super) struct Slots(Vec<Slot>);

/// Leaks the receive buffer a reused slot still lends. Unreachable while the front end
/// removes ops only after their final CQE; leaking beats freeing memory the kernel might
/// still write.
#[cold]
fn leak_lent_buffer(slot: &mut Slot, id: OpId) {
    if let Some(buf) = slot.buf.take() {
        tracing::error!(
            ?id,
            "slot reused while a receive buffer was lent; leaking it"
        );
        std::mem::forget(buf);
    }
}

impl Slots {
    /// A fresh slot for the new op `id`.
    #[inline]
    pub(super) fn reset(&mut self, id: OpId) -> &mut Slot {
        let slot = self.entry(id.index());
        if slot.buf.is_some() {
            leak_lent_buffer(slot, id);
        }
        // Field by field: `buf` is `None` here, so nothing needs dropping (a whole-`Slot`
        // assignment would check it again).
        slot.id = Some(id);
        slot.single = false;
        slot
    }

    /// The slot of op `id`.
    #[inline]
    pub(super) fn get(&mut self, id: OpId) -> &mut Slot {
        let slot = self.entry(id.index());
        debug_assert_eq!(
            slot.id,
            Some(id),
            "side table out of step with the op table"
        );
        slot
    }

    /// Whether any slot still holds a buffer lent to the kernel.
    pub(super) fn lends_buffers(&self) -> bool {
        self.0.iter().any(|s| s.buf.is_some())
    }

    #[inline]
    fn entry(&mut self, index: usize) -> &mut Slot {
        // One bounds check on the per-op paths (indexing after a length test would repeat
        // it).
        if index < self.0.len() {
            return &mut self.0[index];
        }
        self.grow(index)
    }

    /// Makes room for slot `index` (a new op took a slot index never used before): out of
    /// line, so that the per-op paths stay small.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, index: usize) -> &mut Slot {
        self.0.resize_with(index + 1, Slot::default);
        &mut self.0[index]
    }
}
