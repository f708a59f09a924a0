//! Receive buffers the proactor provides for multishot receives.
//!
//! A [`BufPool`] is one allocation cut into equal buffers. On io_uring it is registered as a
//! provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks a free buffer for
//! each chunk it receives and the completion names it. On epoll (or kernels without buffer
//! rings) the backend picks from a free list itself. Either way a chunk reaches the caller as
//! a [`RecvBuf`], and the buffer goes back to the pool the moment the `RecvBuf` is dropped.
//!
//! # Resident memory
//! The pool is allocated zeroed and untouched, so a buffer costs resident memory only once
//! something is written into it. The kernel takes ring entries first in, first out: were
//! every free buffer published, a few thousand receives would touch all of them (at least a
//! page each, 2 MiB for the default 512 buffers) however few were ever in use at once. So the
//! ring holds only [`RingShared::depth`] buffers (16 at first); the others wait in a stack of
//! spares, most recently freed on top. A dropped chunk's buffer goes straight back to the
//! ring while it holds fewer than `depth`, else onto that stack, so the buffers the kernel
//! gets are the ones already resident and in cache. When the kernel finds the ring empty
//! (`ENOBUFS`: chunks are held, or a burst outran it), [`BufPool::ran_dry`] tops it up from
//! the spares and, after a whole ring's worth of receives since it last grew, doubles the
//! depth (up to every buffer), so a busy proactor soon keeps as many published as its bursts
//! need. Per chunk this costs one comparison more than publishing every buffer.
//!
//! A buffer is in exactly one place at a time: published in the ring, on the spare stack, or
//! held by a `RecvBuf` (or a single receive). Only the last two are ever published, so the
//! kernel never writes a buffer anyone still reads, and the ring never holds more than
//! `count` entries.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// How many buffers a ring starts with published (fewer when the pool is smaller).
pub(crate) const INITIAL_RING_DEPTH: u16 = 16;

/// The bookkeeping of a provided-buffer ring beyond what the per-chunk path uses (which
/// is in [`PoolInner`]): which buffers are published, and the ring's memory.
pub(crate) struct RingShared {
    /// The memory layout used to allocate [`PoolInner::ring_base`].
    pub(crate) layout: std::alloc::Layout,
    /// How many buffers to keep published; grows when the kernel runs dry.
    depth: Cell<u16>,
    /// [`PoolInner::consumed`] when the depth last grew: it grows again only once a whole
    /// ring's worth was received since, so one burst of `ENOBUFS` (one per receive that
    /// found the ring empty) doubles it once, not once per receive.
    consumed_at_growth: Cell<u16>,
    /// Free buffers not published, most recently freed last.
    spare: RefCell<Vec<u16>>,
}

enum Recycler {
    /// Buffers return to a kernel ring.
    Ring(RingShared),
    /// Buffers return to a free list the backend draws from.
    FreeList(RefCell<Vec<u16>>),
}

struct PoolInner {
    /// `count * size` bytes from `Box::into_raw`; buffer `id` starts at `mem + id * size`.
    /// A raw pointer, not a `Box`, because the kernel and the backends write through it
    /// while `RecvBuf`s hold shared views of other buffers.
    mem: *mut u8,
    size: usize,
    count: u16,
    /// What keeps the pool alive: one for the `BufPool` while it lives, plus one per buffer
    /// handed out as a `RecvBuf` and not yet dropped. Whoever takes it to 0 frees the pool;
    /// so the per-chunk path tells an orphaned pool's last chunk with the one test of the
    /// count it does anyway. (`u32`: `count` buffers plus the `BufPool`.)
    refs: Cell<u32>,
    /// A recycled buffer is published when `refs` (after the recycle) is at least this,
    /// i.e. when the ring holds fewer than its depth; else it becomes a spare (or, for free
    /// lists, which never publish, `u32::MAX`, goes to the free list). Derived from the
    /// depth and the number of spares by [`PoolInner::retune`], so that the per-chunk path
    /// compares one counter instead of counting ring entries, and tells ring from free list
    /// by the same comparison.
    publish_from: Cell<u32>,
    /// Ring pools: page-aligned array of `ring_mask + 1` `io_uring_buf` structs, registered
    /// with the kernel (null for free lists). Here rather than in [`RingShared`], as are
    /// `ring_mask`, so that publishing needs no look at the recycler's kind.
    ring_base: *mut io_uring::types::BufRingEntry,
    /// The number of ring entries (a power of two) less one.
    ring_mask: usize,
    recycler: Recycler,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if let Recycler::Ring(ring) = &self.recycler {
            // The ring is unregistered (or the ring fd closed) before the pool is freed, and
            // `RecvBuf`s outlive neither the pool memory nor this (see `BufPool`).
            // SAFETY: `ring_base` was allocated with `layout` by `BufPool::with_ring` and is
            // freed only here, when the pool is freed.
            unsafe { std::alloc::dealloc(self.ring_base.cast(), ring.layout) };
        }
        let len = usize::from(self.count) * self.size;
        // SAFETY: `mem` came from `Box::<[u8]>::into_raw` of exactly `len` bytes in
        // `BufPool::build` and is freed only here, once neither the `BufPool` nor any
        // `RecvBuf` refers to the pool (see `BufPool`).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.mem, len)) });
    }
}

impl PoolInner {
    /// The address of buffer `id`.
    fn buf_ptr(&self, id: u16) -> *mut u8 {
        debug_assert!(id < self.count);
        // SAFETY: `id < count`, so the offset stays inside the `count * size` allocation.
        unsafe { self.mem.add(usize::from(id) * self.size) }
    }

    /// Buffers held by `RecvBuf`s (or single receives). Only while the `BufPool` lives,
    /// which holds one of `refs`.
    fn held(&self) -> u16 {
        self.refs.get().saturating_sub(1) as u16
    }

    /// Returns buffer `id`; `refs` is the pool's count after the chunk's went.
    #[inline]
    fn recycle(&self, id: u16, refs: u32) {
        if refs >= self.publish_from.get() {
            self.publish(id, self.buf_ptr(id));
            return;
        }
        match &self.recycler {
            Recycler::FreeList(free) => push_free(free, id),
            Recycler::Ring(ring) => self.keep_spare(ring, id),
        }
    }

    /// The ring is full: keeps `id` on top of the spares (the next to be published).
    #[cold]
    #[inline(never)]
    fn keep_spare(&self, ring: &RingShared, id: u16) {
        ring.spare.borrow_mut().push(id);
        self.retune(ring);
    }

    /// Buffers in the ring as far as reaped completions tell: neither held nor spare. The
    /// kernel may have taken some of them already (completions not reaped yet).
    fn in_ring(&self, ring: &RingShared) -> u16 {
        let spare = ring.spare.borrow().len() as u16;
        self.count.saturating_sub(self.held()).saturating_sub(spare)
    }

    /// Buffers the kernel took so far, as far as reaped completions tell (wrapping): every
    /// buffer ever published, less those still in the ring.
    fn consumed(&self, ring: &RingShared) -> u16 {
        self.tail().wrapping_sub(self.in_ring(ring))
    }

    /// Where the kernel's ring tail is (ring pools only): the first entry's reserved
    /// bytes, 2-byte aligned.
    fn tail_ptr(&self) -> *const AtomicU16 {
        debug_assert!(matches!(self.recycler, Recycler::Ring(_)));
        // SAFETY: a ring pool's `ring_base` points to its ring; this computes the address
        // of a field of the first entry, without reading it.
        unsafe { io_uring::types::BufRingEntry::tail(self.ring_base).cast::<AtomicU16>() }
    }

    /// The ring's tail: every buffer ever published, wrapping (ring pools only). Read
    /// back from the ring rather than kept in a copy of our own, which every publish would
    /// store to as well: we are its only writer (the kernel only reads it).
    fn tail(&self) -> u16 {
        // SAFETY: `tail_ptr` is valid and aligned for the ring's lifetime, the pool's.
        unsafe { (*self.tail_ptr()).load(Ordering::Relaxed) }
    }

    /// Recomputes [`PoolInner::publish_from`] after the depth or the number of spares
    /// changed.
    ///
    /// With `S` spares, the ring holds `count - u - S` buffers when `u` are held (less
    /// those the kernel took and we have not reaped). A buffer recycled when the held ones
    /// have dropped to `u` finds `count - u - S - 1` in the ring: it is published if that
    /// is below `depth`, i.e. if `u >= count - depth - S`; `refs` is then `u + 1` (the
    /// `BufPool`'s). An orphaned pool (`refs == u`) publishes one buffer fewer, harmlessly:
    /// its ring is no longer registered.
    #[cold]
    fn retune(&self, ring: &RingShared) {
        let spare = ring.spare.borrow().len() as u16;
        let depth = ring.depth.get();
        let from = self.count.saturating_sub(depth).saturating_sub(spare);
        self.publish_from.set(u32::from(from) + 1);
    }

    /// Hands free buffer `id` to the kernel at the ring's tail (ring pools only: only they
    /// have a `publish_from` that `refs` can reach).
    #[inline]
    fn publish(&self, id: u16, addr: *mut u8) {
        debug_assert_eq!(addr, self.buf_ptr(id));
        debug_assert!(matches!(self.recycler, Recycler::Ring(_)));
        // Read before the stores below, through which the compiler would otherwise load it
        // again.
        let base = self.ring_base;
        let tail_ptr = self.tail_ptr();
        // SAFETY: as in `tail`. Only we store to it, so this is what we last stored.
        let tail = unsafe { (*tail_ptr).load(Ordering::Relaxed) };
        // The kernel reads only entries between its head and the published tail; this
        // slot is past the published tail, so no one reads it while we write. The ring never
        // holds more than `count == entries` buffers (each buffer is in one place at a time),
        // so the slot is not one the kernel has yet to consume.
        // SAFETY: a ring pool's `ring_base` points to `ring_mask + 1` entries owned by the
        // pool; the index is masked into range.
        let entry = unsafe { &mut *base.add(usize::from(tail) & self.ring_mask) };
        // `len` is the same for every entry and was written when the ring was made; the
        // kernel does not change it (no incremental consumption).
        entry.set_addr(addr as u64);
        entry.set_bid(id);
        // The release store publishes the entry written above before the kernel can
        // see the new tail, which it reads atomically.
        // SAFETY: as in `tail`.
        unsafe { (*tail_ptr).store(tail.wrapping_add(1), Ordering::Release) };
    }

    /// Publishes spares (most recently freed first) until the ring holds `depth` buffers;
    /// returns how many it published.
    #[cold]
    fn top_up(&self, ring: &RingShared) -> u16 {
        let mut added = 0;
        while self.in_ring(ring) < ring.depth.get() {
            let Some(id) = ring.spare.borrow_mut().pop() else {
                break;
            };
            self.publish(id, self.buf_ptr(id));
            added += 1;
        }
        self.retune(ring);
        added
    }
}

/// Returns buffer `id` to a free list: out of line, so that its callers need no registers
/// saved for it.
#[inline(never)]
fn push_free(free: &RefCell<Vec<u16>>, id: u16) {
    free.borrow_mut().push(id);
}

/// A pool of equal receive buffers shared by all multishot receives of one proactor.
///
/// The backend owns it; every [`RecvBuf`] of it points to it too, counted (as the
/// `BufPool` is) by `PoolInner::refs` rather than by an `Rc` (which would cost a count up
/// and down per chunk on top of the count of buffers held). The pool is freed by whichever
/// goes last: the `BufPool`, or the last `RecvBuf` out when the `BufPool` is already gone.
pub(crate) struct BufPool {
    inner: NonNull<PoolInner>,
}

impl Drop for BufPool {
    fn drop(&mut self) {
        let inner = self.inner();
        let refs = inner.refs.get() - 1;
        inner.refs.set(refs);
        if refs > 0 {
            // The last `RecvBuf` dropped frees it.
            return;
        }
        // SAFETY: `inner` came from `Box::leak` in `BufPool::build`; no `RecvBuf` points to
        // it (only this `BufPool` counted in `refs`) and this sole `BufPool` is going, so
        // nothing refers to it after.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

impl BufPool {
    /// A pool of `count` buffers of `size` bytes recycled to a free list.
    pub(crate) fn with_free_list(count: u16, size: usize) -> BufPool {
        let free = (0..count).rev().collect();
        BufPool::build(
            count,
            size,
            std::ptr::null_mut(),
            0,
            Recycler::FreeList(RefCell::new(free)),
        )
    }

    /// A pool of `count` buffers (a power of two) of `size` bytes whose ring of `count`
    /// entries lives at a fresh page-aligned allocation, the first [`INITIAL_RING_DEPTH`]
    /// buffers (or all, if fewer) already published and the rest spare. Register
    /// [`BufPool::ring_addr`] with the kernel before the first receive.
    pub(crate) fn with_ring(count: u16, size: usize) -> std::io::Result<BufPool> {
        if !count.is_power_of_two() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "buffer ring size must be a power of two",
            ));
        }
        let bytes = usize::from(count) * std::mem::size_of::<io_uring::types::BufRingEntry>();
        let layout = std::alloc::Layout::from_size_align(bytes.max(4096), 4096)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let base =
            unsafe { std::alloc::alloc_zeroed(layout) }.cast::<io_uring::types::BufRingEntry>();
        if base.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        let depth = count.min(INITIAL_RING_DEPTH);
        let ring = RingShared {
            layout,
            depth: Cell::new(depth),
            consumed_at_growth: Cell::new(0),
            // Popped from the end: the lowest ids go out first.
            spare: RefCell::new((depth..count).rev().collect()),
        };
        let len = match u32::try_from(size) {
            Ok(len) => len,
            Err(_) => {
                // SAFETY: allocated above with `layout`, not yet known to anyone.
                unsafe { std::alloc::dealloc(base.cast(), layout) };
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "receive buffers must be under 4 GiB",
                ));
            }
        };
        for i in 0..usize::from(count) {
            // SAFETY: `i < count`, inside the allocation of `count` entries; the kernel does
            // not know the ring yet.
            unsafe { (*base.add(i)).set_len(len) };
        }
        let pool = BufPool::build(
            count,
            size,
            base,
            usize::from(count) - 1,
            Recycler::Ring(ring),
        );
        if let Recycler::Ring(ring) = &pool.inner().recycler {
            for id in 0..depth {
                pool.inner().publish(id, pool.inner().buf_ptr(id));
            }
            pool.inner().retune(ring);
        }
        Ok(pool)
    }

    fn build(
        count: u16,
        size: usize,
        ring_base: *mut io_uring::types::BufRingEntry,
        ring_mask: usize,
        recycler: Recycler,
    ) -> BufPool {
        let mem =
            Box::into_raw(vec![0u8; usize::from(count) * size].into_boxed_slice()).cast::<u8>();
        BufPool {
            inner: NonNull::from(Box::leak(Box::new(PoolInner {
                mem,
                size,
                count,
                refs: Cell::new(1),
                // Ring pools set theirs (`retune`) before the first recycle.
                publish_from: Cell::new(u32::MAX),
                ring_base,
                ring_mask,
                recycler,
            }))),
        }
    }

    #[inline]
    fn inner(&self) -> &PoolInner {
        // SAFETY: the pool lives at least as long as its `BufPool` (see the type's docs).
        unsafe { self.inner.as_ref() }
    }

    /// The ring's base address, for `register_buf_ring` (ring pools only).
    pub(crate) fn ring_addr(&self) -> Option<u64> {
        match &self.inner().recycler {
            Recycler::Ring(_) => Some(self.inner().ring_base as u64),
            Recycler::FreeList(_) => None,
        }
    }

    /// Whether buffers return to a kernel-registered ring.
    pub(crate) fn is_ring(&self) -> bool {
        matches!(self.inner().recycler, Recycler::Ring(_))
    }

    /// How many buffers are held by `RecvBuf`s right now.
    pub(crate) fn in_use(&self) -> u16 {
        self.inner().held()
    }

    /// The buffers' memory (base and length), for the buffer audit.
    pub(crate) fn memory(&self) -> (*const u8, usize) {
        (
            self.inner().mem,
            usize::from(self.inner().count) * self.inner().size,
        )
    }

    /// The number of buffers.
    pub(crate) fn count(&self) -> u16 {
        self.inner().count
    }

    /// The size of each buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.inner().size
    }

    /// Takes a free buffer (free-list pools only): its id and writable memory.
    pub(crate) fn take(&self) -> Option<(u16, *mut u8)> {
        match &self.inner().recycler {
            Recycler::FreeList(free) => {
                let id = free.borrow_mut().pop()?;
                Some((id, self.inner().buf_ptr(id)))
            }
            Recycler::Ring(_) => None,
        }
    }

    /// Returns an unused buffer taken with [`BufPool::take`].
    pub(crate) fn give_back(&self, id: u16) {
        // Not a `RecvBuf`: `refs` does not count it.
        self.inner().recycle(id, self.inner().refs.get());
    }

    /// Wraps buffer `id`, into which the kernel (or the backend) wrote `len` bytes.
    ///
    /// `len` is at most the buffer size: the backend read at most that much into it (the
    /// epoll backend's read is given that length, and the kernel fills a ring buffer up to
    /// the entry's `len`, which is the size, and reports what it wrote), as `id` is one of
    /// the pool's (trusted alike: no check per chunk).
    ///
    /// The chunk carries the buffer's address, worked out here, once, where the pool is
    /// at hand: its handler reads the bytes, and its drop publishes the buffer, without.
    #[inline]
    pub(crate) fn filled(&self, id: u16, len: usize) -> RecvBuf {
        self.filled_at(id, self.inner().buf_ptr(id), len)
    }

    /// [`BufPool::filled`] for a caller that has buffer `id`'s address already (from
    /// [`BufPool::take`]).
    #[inline]
    pub(crate) fn filled_at(&self, id: u16, data: *mut u8, len: usize) -> RecvBuf {
        debug_assert!(id < self.inner().count && len <= self.inner().size);
        debug_assert_eq!(data, self.inner().buf_ptr(id));
        self.inner().refs.set(self.inner().refs.get() + 1);
        RecvBuf {
            // SAFETY: a buffer's address is inside the pool's allocation, never null.
            data: unsafe { NonNull::new_unchecked(data) },
            len,
            pool: Some(self.inner),
            id,
        }
    }

    /// The kernel reported the ring empty (`ENOBUFS`): deepens it if a whole ring's worth
    /// was received since it last grew, and publishes spares up to the depth. Returns
    /// whether it published any, i.e. whether a receive re-armed now finds a buffer.
    pub(crate) fn ran_dry(&self) -> bool {
        let Recycler::Ring(ring) = &self.inner().recycler else {
            return false;
        };
        let depth = ring.depth.get();
        let received = self
            .inner()
            .consumed(ring)
            .wrapping_sub(ring.consumed_at_growth.get());
        if received >= depth && depth < self.inner().count {
            let deeper = depth.saturating_mul(2).min(self.inner().count);
            tracing::debug!(
                from = depth,
                to = deeper,
                "provided-buffer ring ran dry; keeping more buffers published"
            );
            ring.depth.set(deeper);
            ring.consumed_at_growth.set(self.inner().consumed(ring));
        }
        self.inner().top_up(ring) > 0
    }

    /// How many buffers the ring keeps published (`None` for free-list pools).
    #[cfg(test)]
    pub(crate) fn ring_depth(&self) -> Option<u16> {
        match &self.inner().recycler {
            Recycler::Ring(ring) => Some(ring.depth.get()),
            Recycler::FreeList(_) => None,
        }
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("count", &self.inner().count)
            .field("size", &self.inner().size)
            .finish()
    }
}

/// One received chunk. Derefs to its bytes; dropping it recycles the buffer at once.
///
/// Where the bytes are is kept as a pointer and a length, wherever they live, so that
/// reading them (once per chunk, by whoever handles it) is two loads, with neither a test
/// of where they live nor the buffer's address worked out from the pool and the id; that
/// matters only when the chunk is dropped.
pub struct RecvBuf {
    /// The first byte: of buffer `id` of `pool`, or of a boxed slice the chunk owns.
    data: NonNull<u8>,
    /// The bytes received (pooled: at most the buffer size), or the boxed slice's length.
    len: usize,
    /// The pool that buffer `id` returns to, kept alive by this chunk's count in its
    /// `refs` (see `BufPool`). `None`: `data` and `len` are a `Box<[u8]>` the chunk owns
    /// (the fallback when the pool is dry).
    pool: Option<NonNull<PoolInner>>,
    /// The buffer's index in `pool` (unused for owned chunks).
    id: u16,
}

impl RecvBuf {
    /// A chunk in a buffer of its own (the fallback when the pool is dry). Spare
    /// capacity, if any, is given back.
    pub(crate) fn owned(data: Vec<u8>) -> RecvBuf {
        let data = Box::into_raw(data.into_boxed_slice());
        RecvBuf {
            // SAFETY: `Box::into_raw` never returns null (a dangling, non-null pointer for
            // an empty slice).
            data: unsafe { NonNull::new_unchecked(data.cast::<u8>()) },
            len: data.len(),
            pool: None,
            id: 0,
        }
    }

    /// Whether the chunk lives in the proactor's shared receive pool (`false`: in a buffer
    /// of its own, the fallback when the pool ran dry). A pooled chunk returns its buffer
    /// when dropped; chunks kept for long are better turned into vectors with
    /// [`RecvBuf::into_vec`], so that later receives still find pooled buffers.
    pub fn is_pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// The bytes as an owned vector (copies when the chunk lives in the pool).
    pub fn into_vec(self) -> Vec<u8> {
        if self.pool.is_some() {
            return self.to_vec();
        }
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: an owned chunk's `data` and `len` came from `Box::into_raw` of a boxed
        // slice (`RecvBuf::owned`), which only this chunk holds; `this` is never dropped
        // (`ManuallyDrop`), so the box is taken back exactly once, here.
        unsafe { this.take_owned() }.into_vec()
    }

    /// The boxed slice of an owned chunk, taken back.
    ///
    /// # Safety
    /// The chunk is owned (`pool` is `None`), and neither it nor a copy of its fields is
    /// used again (dropped, read) after this.
    unsafe fn take_owned(&self) -> Box<[u8]> {
        debug_assert!(self.pool.is_none());
        // SAFETY: per the caller, `data` and `len` are those `Box::into_raw` gave for a
        // boxed slice in `RecvBuf::owned`, taken back only this once.
        unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.data.as_ptr(),
                self.len,
            ))
        }
    }
}

impl Deref for RecvBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // Pooled: buffer `id` of the pool, which outlives its chunks (see `BufPool`), holds
        // `len <= size` bytes written before the chunk was made, and is held by this chunk
        // alone: a buffer is filled (by the kernel or a backend) only while published or
        // taken off the free list, which it rejoins only when this chunk drops
        // (`recycle_pooled`). Owned: the boxed slice this chunk owns.
        // SAFETY: so `data` points to `len` initialised bytes that stay put and unwritten
        // while this chunk lives, as long as the returned slice (which borrows `self`).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl RecvBuf {
    /// Drops the chunk where the caller is rather than through the drop glue (an
    /// out-of-line call): for the per-message path, which drops one chunk per message.
    #[inline(always)]
    pub(crate) fn release(self) {
        let this = std::mem::ManuallyDrop::new(self);
        match this.pool {
            Some(pool) => recycle_pooled(pool, this.id, this.data),
            // SAFETY: owned (`pool` is `None`); `this` is never used again nor dropped
            // (`ManuallyDrop`).
            None => drop(unsafe { this.take_owned() }),
        }
    }
}

/// What dropping a pooled chunk does: its buffer back to the pool, or the pool freed if
/// it was the last thing keeping an orphaned pool alive. `data` is buffer `id`'s address,
/// which the chunk carries: publishing it again needs no address worked out.
#[inline(always)]
fn recycle_pooled(ptr: NonNull<PoolInner>, id: u16, data: NonNull<u8>) {
    // SAFETY: the dropped chunk's count in `refs` keeps the pool alive (see `BufPool`).
    let pool = unsafe { ptr.as_ref() };
    debug_assert_eq!(data.as_ptr(), pool.buf_ptr(id));
    let refs = pool.refs.get().wrapping_sub(1);
    pool.refs.set(refs);
    // The per-chunk case first, on one comparison: `publish_from` is at least 1, so an
    // orphaned pool (`refs == 0`) never takes it.
    if refs >= pool.publish_from.get() {
        // The chunk is going (its caller never reads its bytes again), so the kernel may
        // write the buffer from now on.
        pool.publish(id, data.as_ptr());
        return;
    }
    recycle_unpublished(ptr, id, refs);
}

/// [`recycle_pooled`] of a buffer that is not published: kept spare or on the free list,
/// or, if it was the last thing keeping an orphaned pool alive, freed with the pool.
#[inline(never)]
fn recycle_unpublished(ptr: NonNull<PoolInner>, id: u16, refs: u32) {
    if refs == 0 {
        // The `BufPool` is gone (it holds a count while it lives): nothing to recycle to.
        free_orphaned(ptr);
        return;
    }
    // SAFETY: `refs > 0`: the `BufPool` (or another chunk) keeps the pool alive.
    let pool = unsafe { ptr.as_ref() };
    match &pool.recycler {
        // Calls alone (tail calls), so that this needs no registers saved.
        Recycler::FreeList(free) => push_free(free, id),
        Recycler::Ring(ring) => pool.keep_spare(ring, id),
    }
}

impl Drop for RecvBuf {
    #[inline]
    fn drop(&mut self) {
        match self.pool {
            Some(pool) => recycle_pooled(pool, self.id, self.data),
            // SAFETY: owned (`pool` is `None`), and the chunk is being dropped: never used
            // again.
            None => drop(unsafe { self.take_owned() }),
        }
    }
}

/// Frees a pool whose `BufPool` is gone, once its last `RecvBuf` went too.
#[cold]
fn free_orphaned(pool: NonNull<PoolInner>) {
    // SAFETY: the pool came from `Box::leak` in `BufPool::build`; its `BufPool` is gone and
    // the last `RecvBuf` of it is being dropped (`refs` is 0), so nothing refers to it after
    // this.
    drop(unsafe { Box::from_raw(pool.as_ptr()) });
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecvBuf({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_list_buffers_come_back_on_drop() {
        let pool = BufPool::with_free_list(2, 8);
        let (a, ptr) = pool.take().unwrap();
        // SAFETY: the pool handed out buffer `a` of 8 bytes.
        unsafe { ptr.copy_from(b"hi".as_ptr(), 2) };
        let (_b, _) = pool.take().unwrap();
        assert!(pool.take().is_none());
        let chunk = pool.filled(a, 2);
        assert_eq!(&*chunk, b"hi");
        drop(chunk);
        assert_eq!(pool.take().map(|(id, _)| id), Some(a));
    }

    fn ring(pool: &BufPool) -> &RingShared {
        match &pool.inner().recycler {
            Recycler::Ring(ring) => ring,
            Recycler::FreeList(_) => unreachable!("a ring pool"),
        }
    }

    /// What the kernel does: takes the buffer at the ring's head.
    fn kernel_take(pool: &BufPool, head: &mut u16) -> u16 {
        let inner = pool.inner();
        assert_ne!(*head, inner.tail(), "the kernel would find the ring empty");
        // SAFETY: `head & mask` indexes one of the ring's `ring_mask + 1` entries.
        let entry = unsafe { &*inner.ring_base.add(usize::from(*head) & inner.ring_mask) };
        *head = head.wrapping_add(1);
        entry.bid()
    }

    #[test]
    fn ring_pool_publishes_only_the_initial_depth() {
        let pool = BufPool::with_ring(64, 16).unwrap();
        assert_eq!(pool.inner().tail(), INITIAL_RING_DEPTH);
        assert_eq!(ring(&pool).spare.borrow().len(), 64 - 16);
        let small = BufPool::with_ring(4, 16).unwrap();
        assert_eq!(
            small.inner().tail(),
            4,
            "a small pool publishes every buffer"
        );
        assert!(BufPool::with_ring(3, 16).is_err());
    }

    #[test]
    fn recycled_buffers_refill_the_ring_and_spares_stay_cold() {
        // One chunk at a time, dropped at once: the ring cycles through its own buffers and
        // never reaches for a spare, so no other buffer's memory is ever touched.
        let pool = BufPool::with_ring(64, 16).unwrap();
        let mut head = 0;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = kernel_take(&pool, &mut head);
            seen.insert(id);
            drop(pool.filled(id, 1));
        }
        assert_eq!(seen.len(), usize::from(INITIAL_RING_DEPTH));
        assert!(seen.iter().all(|&id| id < INITIAL_RING_DEPTH));
        assert_eq!(pool.inner().in_ring(ring(&pool)), INITIAL_RING_DEPTH);
    }

    #[test]
    fn held_chunks_draw_spares_and_the_latest_freed_go_out_first() {
        let pool = BufPool::with_ring(64, 16).unwrap();
        let mut head = 0;
        let mut held = Vec::new();
        // Hold a whole ring's worth: the kernel finds it empty, and the spares refill it.
        for _ in 0..INITIAL_RING_DEPTH {
            held.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        assert_eq!(pool.inner().tail(), head, "the ring is empty");
        assert!(pool.ran_dry());
        for _ in 0..24 {
            held.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        let mut ids: Vec<u16> = held.iter().map(pooled_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 40, "a buffer handed out twice");
        // Release them: the ring fills to its depth, the rest go onto the spare stack with
        // the last one dropped on top.
        let depth = pool.ring_depth().unwrap();
        let last = pooled_id(held.last().unwrap());
        drop(held);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.inner().in_ring(ring(&pool)), depth);
        assert_eq!(ring(&pool).spare.borrow().last(), Some(&last));
        // Empty the ring again: the next buffer the kernel gets is the last one freed.
        let mut again = Vec::new();
        while pool.inner().tail() != head {
            again.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        assert!(pool.ran_dry());
        assert_eq!(kernel_take(&pool, &mut head), last);
    }

    #[test]
    fn a_dry_ring_deepens_once_per_ring_full_of_receives() {
        let pool = BufPool::with_ring(64, 16).unwrap();
        let mut head = 0;
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        // Many receives report ENOBUFS from one burst: the depth doubles once.
        assert!(pool.ran_dry(), "spares were published");
        assert_eq!(pool.ring_depth(), Some(32));
        assert_eq!(pool.inner().in_ring(ring(&pool)), 32);
        assert!(!pool.ran_dry(), "the ring is full: nothing more to publish");
        assert_eq!(pool.ring_depth(), Some(32), "grew twice for one burst");
        // Another ring's worth received, and dry again: it doubles again, up to the count.
        for _ in 0..32 {
            held.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        pool.ran_dry();
        assert_eq!(pool.ring_depth(), Some(64));
        while pool.inner().tail() != head {
            held.push(pool.filled(kernel_take(&pool, &mut head), 1));
        }
        assert_eq!(pool.in_use(), 64);
        assert!(!pool.ran_dry(), "every buffer is held: nothing to publish");
        assert_eq!(pool.ring_depth(), Some(64));
    }

    #[test]
    fn chunks_outlive_their_pool_and_the_last_one_frees_it() {
        for pool in [
            BufPool::with_free_list(4, 8),
            BufPool::with_ring(4, 8).unwrap(),
        ] {
            let mut head = 0;
            let mut take = || match pool.take() {
                Some((id, _)) => id,
                None => kernel_take(&pool, &mut head),
            };
            let (a, b) = (take(), take());
            let (a, b) = (pool.filled(a, 1), pool.filled(b, 2));
            assert_eq!(pool.in_use(), 2);
            drop(pool);
            // Each still reads its buffer; the last one out frees the pool.
            assert_eq!(a.len(), 1);
            drop(a);
            assert_eq!(b.len(), 2);
            drop(b);
        }
    }

    #[test]
    fn an_owned_chunk_keeps_its_bytes_only() {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(b"hello");
        let chunk = RecvBuf::owned(data);
        assert!(!chunk.is_pooled());
        assert_eq!(&*chunk, b"hello");
        assert_eq!(chunk.into_vec(), b"hello");
        let mut slot = Some(RecvBuf::owned(b"bye".to_vec()));
        if let Some(chunk) = slot.take() {
            chunk.release();
        }
        assert!(slot.is_none());
    }

    fn pooled_id(buf: &RecvBuf) -> u16 {
        assert!(buf.is_pooled(), "a pooled chunk");
        buf.id
    }
}
