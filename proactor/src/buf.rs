//! Receive buffers the proactor provides for multishot receives.
//!
//! A [`BufPool`] is one allocation cut into equal buffers. On io_uring it is registered as a
//! provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks a free buffer for
//! each chunk it receives and the completion names it. On epoll (or kernels without buffer
//! rings) the backend picks from a free list itself. Either way a chunk reaches the caller as
//! a [`RecvBuf`], and the buffer goes back to the pool the moment the `RecvBuf` is dropped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

/// The part of a provided-buffer ring the application writes: entries plus a shared tail.
pub(crate) struct RingShared {
    /// Page-aligned array of `entries` `io_uring_buf` structs, registered with the kernel.
    pub(crate) base: *mut io_uring::types::BufRingEntry,
    /// Number of entries (a power of two).
    pub(crate) entries: u16,
    /// Our copy of the tail; published to the kernel on every recycle.
    pub(crate) tail: Cell<u16>,
    /// The memory layout used to allocate `base`.
    pub(crate) layout: std::alloc::Layout,
}

impl Drop for RingShared {
    fn drop(&mut self) {
        // SAFETY: `base` was allocated with `layout` by `BufPool::with_ring` and is freed
        // only here, when the last `Rc` to the pool is gone. The ring is unregistered (or the
        // ring fd closed) before that: `RecvBuf`s outlive neither the pool memory nor this.
        unsafe { std::alloc::dealloc(self.base.cast(), self.layout) };
    }
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
    /// Buffers handed out as `RecvBuf`s and not yet dropped.
    in_use: Cell<u16>,
    recycler: Recycler,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        let len = usize::from(self.count) * self.size;
        // SAFETY: `mem` came from `Box::<[u8]>::into_raw` of exactly `len` bytes in
        // `BufPool::build` and is freed only here, once no `RecvBuf` or backend holds the
        // pool (they all hold an `Rc` to it).
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

    fn recycle(&self, id: u16) {
        match &self.recycler {
            Recycler::FreeList(free) => free.borrow_mut().push(id),
            Recycler::Ring(ring) => {
                let tail = ring.tail.get();
                let mask = ring.entries - 1;
                // The kernel reads only entries between its head and the published tail; this
                // slot is past the published tail, so no one reads it while we write.
                // SAFETY: `base` points to `entries` entries owned by the pool; in range.
                let entry = unsafe { &mut *ring.base.add(usize::from(tail & mask)) };
                entry.set_addr(self.buf_ptr(id) as u64);
                entry.set_len(self.size as u32);
                entry.set_bid(id);
                let new_tail = tail.wrapping_add(1);
                ring.tail.set(new_tail);
                // The release store publishes the entry written above before the kernel can
                // see the new tail, which it reads atomically.
                // SAFETY: the tail lives in the first entry's reserved bytes, 2-byte aligned.
                unsafe {
                    let tail_ptr =
                        io_uring::types::BufRingEntry::tail(ring.base) as *const AtomicU16;
                    (*tail_ptr).store(new_tail, Ordering::Release);
                }
            }
        }
    }
}

/// A pool of equal receive buffers shared by all multishot receives of one proactor.
#[derive(Clone)]
pub(crate) struct BufPool {
    inner: Rc<PoolInner>,
}

impl BufPool {
    /// A pool of `count` buffers of `size` bytes recycled to a free list.
    pub(crate) fn with_free_list(count: u16, size: usize) -> BufPool {
        let free = (0..count).rev().collect();
        BufPool::build(count, size, Recycler::FreeList(RefCell::new(free)))
    }

    /// A pool of `count` buffers (a power of two) of `size` bytes whose ring entries live at
    /// a fresh page-aligned allocation, all buffers already published. Register
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
        let ring = RingShared {
            base,
            entries: count,
            tail: Cell::new(0),
            layout,
        };
        let pool = BufPool::build(count, size, Recycler::Ring(ring));
        for id in 0..count {
            pool.inner.recycle(id);
        }
        Ok(pool)
    }

    fn build(count: u16, size: usize, recycler: Recycler) -> BufPool {
        let mem =
            Box::into_raw(vec![0u8; usize::from(count) * size].into_boxed_slice()).cast::<u8>();
        BufPool {
            inner: Rc::new(PoolInner {
                mem,
                size,
                count,
                in_use: Cell::new(0),
                recycler,
            }),
        }
    }

    /// The ring's base address, for `register_buf_ring` (ring pools only).
    pub(crate) fn ring_addr(&self) -> Option<u64> {
        match &self.inner.recycler {
            Recycler::Ring(ring) => Some(ring.base as u64),
            Recycler::FreeList(_) => None,
        }
    }

    /// Whether buffers return to a kernel-registered ring.
    pub(crate) fn is_ring(&self) -> bool {
        matches!(self.inner.recycler, Recycler::Ring(_))
    }

    /// How many buffers are held by `RecvBuf`s right now.
    pub(crate) fn in_use(&self) -> u16 {
        self.inner.in_use.get()
    }

    /// The buffers' memory (base and length), for the buffer audit.
    pub(crate) fn memory(&self) -> (*const u8, usize) {
        (
            self.inner.mem,
            usize::from(self.inner.count) * self.inner.size,
        )
    }

    /// The number of buffers.
    pub(crate) fn count(&self) -> u16 {
        self.inner.count
    }

    /// The size of each buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.inner.size
    }

    /// Takes a free buffer (free-list pools only): its id and writable memory.
    pub(crate) fn take(&self) -> Option<(u16, *mut u8)> {
        match &self.inner.recycler {
            Recycler::FreeList(free) => {
                let id = free.borrow_mut().pop()?;
                Some((id, self.inner.buf_ptr(id)))
            }
            Recycler::Ring(_) => None,
        }
    }

    /// Returns an unused buffer taken with [`BufPool::take`].
    pub(crate) fn give_back(&self, id: u16) {
        self.inner.recycle(id);
    }

    /// Wraps buffer `id`, into which the kernel (or the backend) wrote `len` bytes.
    pub(crate) fn filled(&self, id: u16, len: usize) -> RecvBuf {
        debug_assert!(id < self.inner.count && len <= self.inner.size);
        self.inner.in_use.set(self.inner.in_use.get() + 1);
        RecvBuf(Repr::Pooled {
            pool: Rc::clone(&self.inner),
            id,
            len: len.min(self.inner.size) as u32,
        })
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("count", &self.inner.count)
            .field("size", &self.inner.size)
            .finish()
    }
}

enum Repr {
    Pooled {
        pool: Rc<PoolInner>,
        id: u16,
        len: u32,
    },
    Owned(Vec<u8>),
}

/// One received chunk. Derefs to its bytes; dropping it recycles the buffer at once.
pub struct RecvBuf(Repr);

impl RecvBuf {
    /// A chunk in a buffer of its own (the fallback when the pool is dry).
    pub(crate) fn owned(data: Vec<u8>) -> RecvBuf {
        RecvBuf(Repr::Owned(data))
    }

    /// The bytes as an owned vector (copies when the chunk lives in the pool).
    pub fn into_vec(mut self) -> Vec<u8> {
        match &mut self.0 {
            Repr::Owned(data) => std::mem::take(data),
            Repr::Pooled { .. } => self.to_vec(),
        }
    }
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: buffer `id` holds `len <= size` bytes written before this `RecvBuf`
            // was made, and nobody writes to it until the `RecvBuf` is dropped and recycles
            // it: the kernel and the backends only fill buffers that are in the free set.
            Repr::Pooled { pool, id, len } => unsafe {
                std::slice::from_raw_parts(pool.buf_ptr(*id), *len as usize)
            },
            Repr::Owned(data) => data,
        }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        if let Repr::Pooled { pool, id, .. } = &self.0 {
            pool.in_use.set(pool.in_use.get().saturating_sub(1));
            pool.recycle(*id);
        }
    }
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

    #[test]
    fn ring_pool_publishes_every_buffer() {
        let pool = BufPool::with_ring(4, 16).unwrap();
        let Recycler::Ring(ring) = &pool.inner.recycler else {
            unreachable!()
        };
        assert_eq!(ring.tail.get(), 4);
        assert!(BufPool::with_ring(3, 16).is_err());
    }
}
