//! The driver's own view of the SQ and CQ rings: the kernel-shared head, tail and entry
//! arrays, read and written directly, with both indices cached in user space.
//!
//! The `io-uring` crate's `submission()` / `completion()` build a queue object per call:
//! loads of both indices, a store on drop. Per message (one SQE, two CQEs) that was about 60
//! instructions. Here each index lives in the driver and is exchanged with the kernel only
//! at batch boundaries:
//!
//! - **SQ.** SQEs are written straight into the SQE array at the cached tail. The kernel's
//!   head is read (`Acquire`) only when the cached view says the ring is full; the tail is
//!   published (`Release`, which orders the SQE writes before it) by [`Sq::publish`], which
//!   the driver calls before every `io_uring_enter`. Without `SQPOLL` the kernel reads the
//!   SQ only inside `io_uring_enter`, so that is the only place it needs to be current.
//! - **CQ.** [`Cq::pop_in_run`] reads CQEs between the cached head and the cached tail. Only
//!   when that range is empty does [`Cq::next_run`] publish the head (`Release`: the kernel
//!   may reuse the slots read) and read the kernel's tail again (`Acquire`: the CQEs before
//!   it are visible).
//!   [`Cq::publish`] also runs before every enter, so the kernel never waits, or posts,
//!   against slots it believes unread although they were consumed. (Completions a kernel
//!   posts outside an enter, with neither `DEFER_TASKRUN` nor `COOP_TASKRUN`, may see a
//!   stale head and overflow sooner; `IORING_FEAT_NODROP` keeps them, and the driver flushes
//!   them when the CQ runs empty.)
//!
//! The rings are mapped a second time from the ring fd, at the offsets the kernel returned
//! in `io_uring_params` (one mapping for both rings with `IORING_FEAT_SINGLE_MMAP`, else
//! one each). A second mapping of the same pages is legal and holds its own reference to
//! them, so this view stays valid whatever the crate's `IoUring` does with its own; it is
//! unmapped on drop. The crate still sets the ring up, builds SQEs, registers and enters;
//! nothing else in the driver may touch the SQ or CQ indices through it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::{cqueue, squeue, IoUring};

/// `IORING_OFF_SQ_RING`, `IORING_OFF_CQ_RING`, `IORING_OFF_SQES`: the mmap offsets that
/// select a region of the ring.
const OFF_SQ_RING: libc::off_t = 0;
const OFF_CQ_RING: libc::off_t = 0x800_0000;
const OFF_SQES: libc::off_t = 0x1000_0000;
/// `IORING_FEAT_SINGLE_MMAP`: both rings live in one region, mapped once.
const FEAT_SINGLE_MMAP: u32 = 1 << 0;
/// `IORING_SETUP_SQPOLL`: a kernel thread would read the SQ at any time (never set here).
const SETUP_SQPOLL: u32 = 1 << 1;
/// `IORING_SETUP_NO_SQARRAY`: no SQ index array; the kernel takes SQEs in ring order.
const SETUP_NO_SQARRAY: u32 = 1 << 16;
/// `IORING_SQ_CQ_OVERFLOW` in the SQ flags: the kernel holds completions the CQ had no room
/// for.
const SQ_CQ_OVERFLOW: u32 = 1 << 1;

/// `struct io_uring_params` (the kernel ABI, which `io_uring::Parameters` wraps
/// transparently): only the offsets are read from it.
#[repr(C)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_sqring_offsets`.
#[repr(C)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

const _: () = assert!(mem::size_of::<Params>() == 120);
const _: () = assert!(mem::size_of::<io_uring::Parameters>() == mem::size_of::<Params>());
const _: () = assert!(mem::size_of::<squeue::Entry>() == 64);
const _: () = assert!(mem::size_of::<cqueue::Entry>() == 16);

/// One shared mapping of a ring region, unmapped on drop.
#[derive(Debug)]
struct Map {
    addr: NonNull<u8>,
    len: usize,
}

impl Map {
    /// Maps `len` bytes of region `offset` of ring `fd`.
    fn new(fd: RawFd, offset: libc::off_t, len: usize) -> io::Result<Map> {
        // SAFETY: a fresh shared mapping at an address the kernel picks: it aliases no Rust
        // object. The kernel checks `offset` and `len` against the ring's regions.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Map { addr, len })
    }

    /// The address `offset` bytes into the mapping, as a pointer to the first of `count`
    /// `T`s.
    ///
    /// # Errors
    /// When `count` `T`s at `offset` would not fit in the mapping, or be misaligned (offsets
    /// from the kernel that do not describe this mapping).
    fn at<T>(&self, offset: u32, count: usize) -> io::Result<*mut T> {
        let offset = offset as usize;
        let fits = count
            .checked_mul(mem::size_of::<T>())
            .and_then(|len| len.checked_add(offset))
            .is_some_and(|end| end <= self.len);
        if !fits || offset % mem::align_of::<T>() != 0 {
            return Err(io::Error::other(format!(
                "io_uring ring offset {offset} (for {count} entries) outside its {}-byte mapping",
                self.len
            )));
        }
        // SAFETY: in bounds of the mapping (checked above).
        Ok(unsafe { self.addr.as_ptr().add(offset).cast::<T>() })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are a mapping made in `new` and unmapped only here; the
        // pointers into it live in the same `Rings` and die with it.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// The submission queue, as the driver fills it.
///
/// The tail is kept as a pointer into the SQE array, moving through a *run*: free slots
/// from `run` up to `end`, contiguous (never across the end of the array). A push writes at
/// `next` and bumps it; only at the end of a run are the ring indices looked at again.
#[derive(Debug)]
pub(super) struct Sq {
    /// Where the next SQE goes.
    next: *mut squeue::Entry,
    /// The end of the current run of free slots.
    end: *mut squeue::Entry,
    /// The start of the current run.
    run: *mut squeue::Entry,
    /// The ring index (unmasked) of the slot at `run`.
    run_tail: u32,
    /// The kernel's head as last read: SQEs before it are consumed.
    head: u32,
    mask: u32,
    entries: u32,
    sqes: *mut squeue::Entry,
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    kflags: *const AtomicU32,
}

impl Sq {
    /// The tail: where the next SQE goes, as a ring index.
    #[inline]
    fn tail(&self) -> u32 {
        // SAFETY: `run` and `next` point into the same run of the SQE array, `next` at or
        // after `run`.
        let written = unsafe { self.next.offset_from(self.run) };
        self.run_tail.wrapping_add(written as u32)
    }

    /// Whether there is room for one more SQE (reading the kernel's head only if the
    /// cached one says the SQ is full).
    #[inline]
    pub(super) fn has_room(&mut self) -> bool {
        self.room_in_run() || self.next_run()
    }

    /// Whether the current run has room for one more SQE; if not, [`Sq::next_run`] tells.
    /// (The hot path's half of `has_room`, for a caller that keeps the other half out of
    /// line itself.)
    #[inline]
    pub(super) fn room_in_run(&self) -> bool {
        self.next != self.end
    }

    /// Starts a new run of free slots at the tail; whether it has any.
    #[inline]
    pub(super) fn next_run(&mut self) -> bool {
        let tail = self.tail();
        if tail.wrapping_sub(self.head) >= self.entries {
            // SAFETY: `khead` points into the live SQ ring mapping; the kernel writes it, so
            // it is read atomically. `Acquire`: the kernel is done with the SQEs before it.
            self.head = unsafe { (*self.khead).load(Ordering::Acquire) };
        }
        let free = self.entries - tail.wrapping_sub(self.head);
        let slot = tail & self.mask;
        let len = free.min(self.entries - slot);
        // SAFETY: `slot + len` <= `entries`, the length of the SQE array mapping.
        unsafe {
            self.run = self.sqes.add(slot as usize);
            self.end = self.run.add(len as usize);
        }
        self.next = self.run;
        self.run_tail = tail;
        len > 0
    }

    /// Writes `sqe` at the tail, when [`Sq::has_room`] just said there was room.
    ///
    /// # Safety
    /// [`Sq::has_room`] (or [`Sq::room_in_run`]) returned `true` and nothing was pushed
    /// since: otherwise the write lands on an SQE the kernel has not consumed. Every
    /// pointer in `sqe` must stay valid (and what it points to unmoved) until its final CQE
    /// is reaped.
    #[inline]
    pub(super) unsafe fn push_unchecked(&mut self, sqe: squeue::Entry) {
        debug_assert!(self.next != self.end, "SQ full");
        // SAFETY: `next` is a free slot of the SQE array (`has_room`): the kernel consumed
        // the SQE it held before `head`, and does not read this one before the tail is
        // published past it.
        unsafe {
            self.next.write(sqe);
            self.next = self.next.add(1);
        }
    }

    /// Pushes `sqe` if there is room; `false` (nothing written) when the SQ is full.
    ///
    /// # Safety
    /// As [`Sq::push_unchecked`].
    #[inline]
    pub(super) unsafe fn push(&mut self, sqe: squeue::Entry) -> bool {
        if !self.has_room() {
            return false;
        }
        // SAFETY: there is room (checked above); the caller vouches for `sqe`.
        unsafe { self.push_unchecked(sqe) };
        true
    }

    /// Publishes the tail to the kernel and returns how many SQEs it has not consumed: call
    /// before every `io_uring_enter`, passing that count as `to_submit`.
    #[inline]
    pub(super) fn publish(&mut self) -> u32 {
        let tail = self.tail();
        // SAFETY: `ktail`/`khead` point into the live SQ ring mapping. `Release` orders the
        // SQE writes before the tail that hands them over; `Acquire` on the head, as in
        // `next_run`.
        unsafe {
            (*self.ktail).store(tail, Ordering::Release);
            self.head = (*self.khead).load(Ordering::Acquire);
        }
        tail.wrapping_sub(self.head)
    }

    /// SQEs written and not consumed by the kernel, as last seen.
    #[cfg(test)]
    pub(super) fn len(&self) -> u32 {
        self.tail().wrapping_sub(self.head)
    }

    /// Whether the kernel keeps completions that did not fit in the CQ
    /// (`IORING_SQ_CQ_OVERFLOW`); an enter with `GETEVENTS` flushes them.
    #[inline]
    pub(super) fn cq_overflow(&self) -> bool {
        // SAFETY: `kflags` points into the live SQ ring mapping; the kernel writes it.
        unsafe { (*self.kflags).load(Ordering::Acquire) & SQ_CQ_OVERFLOW != 0 }
    }
}

/// The completion queue, as the driver reaps it.
///
/// Like the SQ's tail, the head is a pointer moving through a run: the CQEs from `run` up
/// to `end`, contiguous, that the kernel had posted when the run began.
#[derive(Debug)]
pub(super) struct Cq {
    /// The next CQE to read.
    next: *const cqueue::Entry,
    /// The end of the current run of CQEs.
    end: *const cqueue::Entry,
    /// The start of the current run.
    run: *const cqueue::Entry,
    /// The ring index (unmasked) of the CQE at `run`.
    run_head: u32,
    mask: u32,
    entries: u32,
    cqes: *const cqueue::Entry,
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
}

impl Cq {
    /// The head: the next CQE to read, as a ring index.
    #[inline]
    fn head(&self) -> u32 {
        // SAFETY: `run` and `next` point into the same run of the CQE array, `next` at or
        // after `run`.
        let read = unsafe { self.next.offset_from(self.run) };
        self.run_head.wrapping_add(read as u32)
    }

    /// The next CQE, if any. (The driver splits this in two: see `Driver::next_cqe_run`.)
    #[cfg(test)]
    pub(super) fn pop(&mut self) -> Option<cqueue::Entry> {
        match self.pop_in_run() {
            Some(cqe) => Some(cqe),
            None if self.next_run() => self.pop_in_run(),
            None => None,
        }
    }

    /// The next CQE of the current run; at its end, [`Cq::next_run`] starts the next one.
    #[inline]
    pub(super) fn pop_in_run(&mut self) -> Option<cqueue::Entry> {
        if self.next == self.end {
            return None;
        }
        // SAFETY: `next` is in the current run: the kernel wrote the CQE before publishing
        // a tail past it (read with `Acquire`), and does not overwrite it before the head
        // is published past it.
        unsafe {
            let cqe = self.next.read();
            self.next = self.next.add(1);
            Some(cqe)
        }
    }

    /// Ends the current run where it is: [`Cq::pop_in_run`] finds nothing more until
    /// [`Cq::next_run`] starts the next run, which begins at the same head and reaches the
    /// kernel's tail, so no CQE is skipped. For the driver, which so sends its per-CQE path
    /// to its slow path when it has completions of its own to report first.
    #[inline]
    pub(super) fn halt(&mut self) {
        self.end = self.next;
    }

    /// Whether the run is at its end (or halted).
    pub(super) fn at_end(&self) -> bool {
        self.next == self.end
    }

    /// Publishes the head and starts a new run at it, up to the kernel's tail; whether it
    /// has any CQEs.
    #[inline]
    pub(super) fn next_run(&mut self) -> bool {
        let head = self.head();
        self.publish();
        // SAFETY: `ktail` points into the live CQ ring mapping; the kernel writes it.
        // `Acquire`: the CQEs before it are visible.
        let tail = unsafe { (*self.ktail).load(Ordering::Acquire) };
        let slot = head & self.mask;
        let len = tail.wrapping_sub(head).min(self.entries - slot);
        // SAFETY: `slot + len` <= `entries`, the length of the CQE array in the mapping.
        unsafe {
            self.run = self.cqes.add(slot as usize);
            self.end = self.run.add(len as usize);
        }
        self.next = self.run;
        self.run_head = head;
        len > 0
    }

    /// Hands the slots read so far back to the kernel: call before every `io_uring_enter`.
    #[inline]
    pub(super) fn publish(&self) {
        // SAFETY: `khead` points into the live CQ ring mapping; only this thread writes it.
        // `Release`: the CQEs read are read before the kernel may reuse their slots.
        unsafe { (*self.khead).store(self.head(), Ordering::Release) };
    }

    /// CQEs ready in the ring (reading the kernel's tail).
    pub(super) fn len(&self) -> usize {
        // SAFETY: as in `next_run`.
        let tail = unsafe { (*self.ktail).load(Ordering::Acquire) };
        tail.wrapping_sub(self.head()) as usize
    }
}

/// Both rings of one `IoUring`, and the mappings they live in.
#[derive(Debug)]
pub(super) struct Rings {
    pub(super) sq: Sq,
    pub(super) cq: Cq,
    /// Declared last: the pointers above die before the memory they point into.
    _maps: Vec<Map>,
}

impl Rings {
    /// Maps the rings of `ring`, as one region if the kernel offers `SINGLE_MMAP`.
    ///
    /// # Errors
    /// A failed `mmap`.
    pub(super) fn new(ring: &IoUring) -> io::Result<Rings> {
        let single = params(ring).features & FEAT_SINGLE_MMAP != 0;
        Rings::map(ring, single)
    }

    /// Maps the rings of `ring`, the SQ and CQ rings as one region when `single` (which
    /// needs `SINGLE_MMAP`), else one each.
    fn map(ring: &IoUring, single: bool) -> io::Result<Rings> {
        let p = params(ring);
        let fd = ring.as_raw_fd();
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * mem::size_of::<u32>();
        let cq_len =
            p.cq_off.cqes as usize + p.cq_entries as usize * mem::size_of::<cqueue::Entry>();
        let sqes_len = p.sq_entries as usize * mem::size_of::<squeue::Entry>();
        let sqe_map = Map::new(fd, OFF_SQES, sqes_len)?;
        let (sq_map, cq_map) = if single {
            (Map::new(fd, OFF_SQ_RING, sq_len.max(cq_len))?, None)
        } else {
            let sq_map = Map::new(fd, OFF_SQ_RING, sq_len)?;
            (sq_map, Some(Map::new(fd, OFF_CQ_RING, cq_len)?))
        };
        let cq_ring = cq_map.as_ref().unwrap_or(&sq_map);
        let at = |map: &Map, offset| map.at::<AtomicU32>(offset, 1).map(<*mut _>::cast_const);
        // SAFETY: the ring masks are written by the kernel at setup and never change.
        let (sq_mask, cq_mask) = unsafe {
            (
                sq_map.at::<u32>(p.sq_off.ring_mask, 1)?.read(),
                cq_ring.at::<u32>(p.cq_off.ring_mask, 1)?.read(),
            )
        };
        // SAFETY: as above.
        let entries = unsafe { sq_map.at::<u32>(p.sq_off.ring_entries, 1)?.read() };
        if entries != p.sq_entries || sq_mask != entries - 1 || cq_mask != p.cq_entries - 1 {
            return Err(io::Error::other(
                "io_uring ring geometry does not match its params",
            ));
        }
        if p.flags & SETUP_SQPOLL != 0 {
            // The SQ tail is published only before an enter: a polling kernel thread would
            // see SQEs late.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the driver's ring view does not support SQPOLL",
            ));
        }
        if p.flags & SETUP_NO_SQARRAY == 0 {
            // SQEs are written in ring order; the index array says so once and for all
            // (the crate wrote the same at setup; rewritten here so that this view relies
            // on nothing but itself).
            let array = sq_map.at::<u32>(p.sq_off.array, entries as usize)?;
            for i in 0..entries {
                // SAFETY: in bounds (checked above). Without SQPOLL (checked above) the kernel
                // reads the array only inside `io_uring_enter`, on this thread, so not now.
                unsafe { array.add(i as usize).write_volatile(i) };
            }
        }
        let sqes = sqe_map.at::<squeue::Entry>(0, entries as usize)?;
        let cqes = cq_ring
            .at::<cqueue::Entry>(p.cq_off.cqes, p.cq_entries as usize)?
            .cast_const();
        let mut sq = Sq {
            next: sqes,
            end: sqes,
            run: sqes,
            run_tail: 0,
            head: 0,
            mask: sq_mask,
            entries,
            sqes,
            khead: at(&sq_map, p.sq_off.head)?,
            ktail: at(&sq_map, p.sq_off.tail)?,
            kflags: at(&sq_map, p.sq_off.flags)?,
        };
        let mut cq = Cq {
            next: cqes,
            end: cqes,
            run: cqes,
            run_head: 0,
            mask: cq_mask,
            entries: p.cq_entries,
            cqes,
            khead: at(cq_ring, p.cq_off.head)?,
            ktail: at(cq_ring, p.cq_off.tail)?,
        };
        // Start from the indices as they are, with empty runs (a ring used before us). The
        // first push or pop starts a real run.
        // SAFETY: pointers into the live mappings; the SQ tail and CQ head are written only
        // by user space, which is this thread.
        unsafe {
            sq.run_tail = (*sq.ktail).load(Ordering::Acquire);
            sq.head = (*sq.khead).load(Ordering::Acquire);
            sq.run = sqes.add((sq.run_tail & sq_mask) as usize);
            sq.next = sq.run;
            sq.end = sq.run;
            cq.run_head = (*cq.khead).load(Ordering::Acquire);
            cq.run = cqes.add((cq.run_head & cq_mask) as usize);
            cq.next = cq.run;
            cq.end = cq.run;
        }
        let mut maps = vec![sqe_map, sq_map];
        maps.extend(cq_map);
        Ok(Rings {
            sq,
            cq,
            _maps: maps,
        })
    }
}

/// The kernel's `io_uring_params` of `ring`.
fn params(ring: &IoUring) -> &Params {
    // SAFETY: `Parameters` is `repr(transparent)` over the kernel's `io_uring_params`
    // (documented by the crate), whose layout `Params` mirrors (sizes checked above).
    unsafe { &*(ring.params() as *const io_uring::Parameters).cast::<Params>() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    /// `io_uring_enter` submitting what the SQ holds and waiting for `want` CQEs.
    fn enter(ring: &IoUring, rings: &mut Rings, want: u32) -> u32 {
        let to_submit = rings.sq.publish();
        rings.cq.publish();
        // SAFETY: the SQEs submitted are nops, which point to nothing.
        let submitted = unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(to_submit, want, 1, None)
                .expect("io_uring_enter")
        };
        submitted as u32
    }

    fn nop(user_data: u64) -> squeue::Entry {
        opcode::Nop::new().build().user_data(user_data)
    }

    fn ring(sq: u32, cq: u32) -> Option<IoUring> {
        match IoUring::builder().setup_cqsize(cq).build(sq) {
            Ok(ring) => Some(ring),
            Err(err) => {
                eprintln!("SKIPPED: io_uring unavailable here ({err})");
                None
            }
        }
    }

    /// Pushes `count` nops (user data from `first`) across as many enters as the SQ needs,
    /// reaping as it goes; returns the user data seen, in order.
    fn round_trip(ring: &IoUring, rings: &mut Rings, first: u64, count: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut next = first;
        while next < first + count {
            // SAFETY: a nop points to nothing.
            while next < first + count && unsafe { rings.sq.push(nop(next)) } {
                next += 1;
            }
            assert!(!rings.sq.has_room() || next == first + count);
            let pending = rings.sq.len();
            assert_eq!(enter(ring, rings, pending), pending);
            while let Some(cqe) = rings.cq.pop() {
                assert_eq!(cqe.result(), 0);
                seen.push(cqe.user_data());
            }
        }
        seen
    }

    fn check(single: bool) {
        let Some(ring) = ring(8, 16) else { return };
        if single && !ring.params().is_feature_single_mmap() {
            eprintln!("SKIPPED: no IORING_FEAT_SINGLE_MMAP");
            return;
        }
        let mut rings = Rings::map(&ring, single).expect("mapping the rings");
        // Many times around both rings (8 and 16 slots), in SQ-sized batches.
        let seen = round_trip(&ring, &mut rings, 0, 5_000);
        assert_eq!(seen, (0..5_000).collect::<Vec<_>>());
        assert_eq!(rings.cq.len(), 0);
        // The crate's own view agrees with ours.
        drop(rings);
        let mut ring = ring;
        assert_eq!(ring.submission().len(), 0);
        assert_eq!(ring.completion().len(), 0);
    }

    #[test]
    fn nops_go_around_both_rings_in_one_mapping() {
        check(true);
    }

    #[test]
    fn nops_go_around_both_rings_in_two_mappings() {
        check(false);
    }

    #[test]
    fn a_full_sq_refuses_until_the_kernel_takes_its_entries() {
        let Some(ring) = ring(4, 8) else { return };
        let mut rings = Rings::new(&ring).expect("mapping the rings");
        for i in 0..4 {
            // SAFETY: a nop points to nothing.
            assert!(unsafe { rings.sq.push(nop(i)) });
        }
        // SAFETY: as above.
        let fifth = unsafe { rings.sq.push(nop(4)) };
        assert!(!fifth, "a fifth SQE in a 4-slot SQ");
        assert_eq!(enter(&ring, &mut rings, 4), 4);
        assert!(rings.sq.has_room());
        assert_eq!(rings.cq.len(), 4);
        let seen: Vec<u64> = std::iter::from_fn(|| rings.cq.pop().map(|c| c.user_data())).collect();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_halted_run_ends_at_once_and_the_next_run_resumes_where_it_stopped() {
        let Some(ring) = ring(4, 8) else { return };
        let mut rings = Rings::new(&ring).expect("mapping the rings");
        for i in 0..4 {
            // SAFETY: a nop points to nothing.
            assert!(unsafe { rings.sq.push(nop(i)) });
        }
        assert_eq!(enter(&ring, &mut rings, 4), 4);
        assert!(rings.cq.next_run());
        assert_eq!(rings.cq.pop_in_run().map(|c| c.user_data()), Some(0));
        rings.cq.halt();
        assert!(rings.cq.at_end());
        assert!(rings.cq.pop_in_run().is_none(), "halted");
        assert_eq!(rings.cq.len(), 3, "nothing skipped");
        let seen: Vec<u64> = std::iter::from_fn(|| rings.cq.pop().map(|c| c.user_data())).collect();
        assert_eq!(seen, vec![1, 2, 3]);
    }

    #[test]
    fn overflowed_completions_are_kept_and_flushed() {
        let Some(ring) = ring(8, 8) else { return };
        if !ring.params().is_feature_nodrop() {
            eprintln!("SKIPPED: no IORING_FEAT_NODROP");
            return;
        }
        let mut rings = Rings::new(&ring).expect("mapping the rings");
        // Three batches of 8 into an 8-slot CQ, nothing reaped between them.
        for batch in 0..3 {
            for i in 0..8 {
                // SAFETY: a nop points to nothing.
                assert!(unsafe { rings.sq.push(nop(batch * 8 + i)) });
            }
            enter(&ring, &mut rings, 0);
        }
        let mut seen = Vec::new();
        loop {
            while let Some(cqe) = rings.cq.pop() {
                seen.push(cqe.user_data());
            }
            if !rings.sq.cq_overflow() {
                break;
            }
            enter(&ring, &mut rings, 0);
        }
        assert_eq!(seen, (0..24).collect::<Vec<_>>());
    }
}
