//! Buffer-ownership audit for tests: checks that no memory lent to the kernel is freed (or
//! handed out again by the allocator) before its op's final completion.
//!
//! Compiled to no-ops unless the `buffer-audit` feature is on. With it, the proactor records
//! every heap allocation an op lends to the kernel when the op is pushed ([`Op`] buffers'
//! whole capacity, boxed scratch headers, addresses, timespecs, `siginfo`s and `iovec`
//! arrays; the backend adds its own fallback receive buffers and the provided-buffer pool),
//! and forgets them at the op's final completion. `AuditAllocator`, installed as a test
//! binary's `#[global_allocator]`, aborts the process with a message naming the range if
//! any recorded allocation is freed or reallocated in between: with the allocation gone,
//! the kernel would write into memory someone else may own.
//!
//! The registry is a fixed-size open-addressing table (65,536 slots) behind a spin lock, so
//! checking a free never allocates (the allocator calls it). When more than ¾ of the slots
//! are in use, further ranges go unrecorded and are counted instead ([`unrecorded`]).

use crate::op::Op;

/// Records the memory `op` lends to the kernel.
#[inline]
pub(crate) fn lend(op: &Op) {
    if cfg!(feature = "buffer-audit") {
        op.for_each_lent(lend_range);
    }
}

/// Forgets the memory `op` lent, at its final completion.
#[inline]
pub(crate) fn reclaim(op: &Op) {
    if cfg!(feature = "buffer-audit") {
        op.for_each_lent(reclaim_range);
    }
}

/// [`lend`] for the one buffer of a send or write (what `for_each_lent` gives for it).
#[inline]
pub(crate) fn lend_vec(buf: &Vec<u8>) {
    if cfg!(feature = "buffer-audit") && buf.capacity() > 0 {
        lend_range(buf.as_ptr(), buf.capacity());
    }
}

/// [`reclaim`] for the one buffer of a send or write.
#[inline]
pub(crate) fn reclaim_vec(buf: &Vec<u8>) {
    if cfg!(feature = "buffer-audit") && buf.capacity() > 0 {
        reclaim_range(buf.as_ptr(), buf.capacity());
    }
}

/// Records that the allocation starting at `base` (`len` bytes) is lent to the kernel: with
/// the `buffer-audit` feature, freeing it before [`reclaim_range`] aborts the process (under
/// `AuditAllocator`). A no-op without the feature.
///
/// The proactor calls this for everything it lends; it is public so that tests can check
/// the audit itself.
#[inline]
pub fn lend_range(base: *const u8, len: usize) {
    #[cfg(feature = "buffer-audit")]
    registry::insert(base as usize, len);
    #[cfg(not(feature = "buffer-audit"))]
    let _ = (base, len);
}

/// Forgets one [`lend_range`] of the allocation at `base`. A no-op without the feature.
#[inline]
pub fn reclaim_range(base: *const u8, len: usize) {
    #[cfg(feature = "buffer-audit")]
    registry::remove(base as usize);
    let _ = (base, len);
}

/// How many ranges are recorded as lent right now (0 without the feature).
pub fn lent() -> usize {
    #[cfg(feature = "buffer-audit")]
    return registry::live();
    #[cfg(not(feature = "buffer-audit"))]
    0
}

/// How many ranges could not be recorded because the table was full (0 without the
/// feature).
pub fn unrecorded() -> usize {
    #[cfg(feature = "buffer-audit")]
    return registry::unrecorded();
    #[cfg(not(feature = "buffer-audit"))]
    0
}

#[cfg(feature = "buffer-audit")]
pub use registry::AuditAllocator;

#[cfg(feature = "buffer-audit")]
mod registry {
    //! The table of lent allocations and the allocator that checks it.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Slots in the table (a power of two).
    const CAPACITY: usize = 1 << 16;
    const MASK: usize = CAPACITY - 1;
    /// Above this many live entries new ranges are counted, not recorded, so probes stay
    /// short and always find an empty slot.
    const LIMIT: usize = CAPACITY / 4 * 3;

    /// Base addresses (0 = empty slot) and lengths; only touched under `LOCK`.
    static KEYS: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
    static LENS: [AtomicUsize; CAPACITY] = [const { AtomicUsize::new(0) }; CAPACITY];
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static UNRECORDED: AtomicUsize = AtomicUsize::new(0);
    static LOCK: AtomicBool = AtomicBool::new(false);

    struct Guard;

    fn lock() -> Guard {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        Guard
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            LOCK.store(false, Ordering::Release);
        }
    }

    fn home(key: usize) -> usize {
        (key >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 16) & MASK
    }

    /// The slot holding `key`, under the lock.
    fn find(key: usize) -> Option<usize> {
        let mut i = home(key);
        loop {
            match KEYS[i].load(Ordering::Relaxed) {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & MASK,
            }
        }
    }

    pub(super) fn insert(key: usize, len: usize) {
        if key == 0 || len == 0 {
            return;
        }
        let _guard = lock();
        if LIVE.load(Ordering::Relaxed) >= LIMIT {
            UNRECORDED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut i = home(key);
        while KEYS[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & MASK;
        }
        KEYS[i].store(key, Ordering::Relaxed);
        LENS[i].store(len, Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Release);
    }

    pub(super) fn remove(key: usize) {
        if key == 0 {
            return;
        }
        let _guard = lock();
        let Some(mut hole) = find(key) else { return };
        // Backward-shift deletion keeps every remaining key reachable from its home slot
        // without tombstones.
        let mut i = hole;
        loop {
            i = (i + 1) & MASK;
            let k = KEYS[i].load(Ordering::Relaxed);
            if k == 0 {
                break;
            }
            let h = home(k);
            // `k` may move into the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < h && h <= i
            } else {
                hole < h || h <= i
            };
            if !stays {
                KEYS[hole].store(k, Ordering::Relaxed);
                LENS[hole].store(LENS[i].load(Ordering::Relaxed), Ordering::Relaxed);
                hole = i;
            }
        }
        KEYS[hole].store(0, Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Release);
    }

    pub(super) fn live() -> usize {
        LIVE.load(Ordering::Acquire)
    }

    pub(super) fn unrecorded() -> usize {
        UNRECORDED.load(Ordering::Relaxed)
    }

    /// The length recorded for the allocation at `ptr`, if it is lent.
    fn lent_len(ptr: *mut u8) -> Option<usize> {
        if LIVE.load(Ordering::Acquire) == 0 {
            return None;
        }
        let _guard = lock();
        find(ptr as usize).map(|i| LENS[i].load(Ordering::Relaxed))
    }

    /// Writes the diagnosis to stderr without allocating and aborts.
    #[cold]
    fn violation(what: &str, ptr: *mut u8, len: usize) -> ! {
        let mut msg = [0u8; 256];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            let n = bytes.len().min(msg.len() - at);
            msg[at..at + n].copy_from_slice(&bytes[..n]);
            at += n;
        };
        put(b"ringloop buffer audit: memory lent to the kernel was ");
        put(what.as_bytes());
        put(b" before its op's final completion (allocation at 0x");
        let mut digits = [0u8; 16];
        let mut v = ptr as usize;
        for d in digits.iter_mut().rev() {
            *d = b"0123456789abcdef"[v & 0xf];
            v >>= 4;
        }
        put(&digits);
        put(b", ");
        let mut dec = [0u8; 20];
        let mut n = len;
        let mut start = dec.len();
        loop {
            start -= 1;
            dec[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        put(&dec[start..]);
        put(b" bytes)\n");
        // SAFETY: writes `at` initialised bytes of a live stack buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), at) };
        std::process::abort()
    }

    /// A global allocator (over [`System`]) that aborts with a message when memory lent to
    /// the kernel is freed or reallocated before its op's final completion.
    ///
    /// ```ignore
    /// #[global_allocator]
    /// static ALLOC: ringloop_proactor::audit::AuditAllocator =
    ///     ringloop_proactor::audit::AuditAllocator;
    /// ```
    #[derive(Debug, Default, Clone, Copy)]
    pub struct AuditAllocator;

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
    // audit only reads its own table (never allocating) before forwarding or aborting.
    unsafe impl GlobalAlloc for AuditAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; forwarded as is.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if let Some(len) = lent_len(ptr) {
                violation("freed", ptr, len);
            }
            // SAFETY: `ptr` was allocated by `System` with `layout` (we forward every
            // allocation to it); the caller upholds the rest of the contract.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if let Some(len) = lent_len(ptr) {
                violation("reallocated", ptr, len);
            }
            // SAFETY: as for `dealloc`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn insert_find_remove_with_collisions() {
            // Keys sharing a home slot exercise probing and backward-shift deletion.
            let base = 0x7000_0000_0000usize;
            let keys: Vec<usize> = (0..64).map(|i| base + i * (CAPACITY << 4)).collect();
            let before = live();
            for &k in &keys {
                insert(k, 8);
            }
            assert_eq!(live(), before + keys.len());
            for &k in keys.iter().step_by(2) {
                remove(k);
            }
            for (i, &k) in keys.iter().enumerate() {
                let found = {
                    let _g = lock();
                    find(k).is_some()
                };
                assert_eq!(found, i % 2 == 1, "key {i}");
            }
            for &k in keys.iter().skip(1).step_by(2) {
                remove(k);
            }
            assert_eq!(live(), before);
        }
    }
}
