//! The loop's proactor, in a cell made for it: a `RefCell<Option<Proactor>>` plus the
//! loop's `closed` flag, kept in one byte.
//!
//! Why not the `RefCell<Option<_>>`: the per-message paths borrow the proactor twice per
//! message (the pop in `run_once`, the send in `EventLoop::resend_op`), and each borrow
//! tested a borrow count, then the `Option` (a 64-bit niche constant), then, for the
//! loop's public operations, `closed`. Here, while the loop is open, one comparison of
//! the state byte does all of it, and the borrow is taken and given back with one
//! instruction each.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};

use ringloop_proactor::Proactor;

/// Lent out (a [`ProactorMut`] lives).
const BORROWED: u8 = 1;
/// The loop is closed (or closing): the loop's public operations are refused.
const CLOSED: u8 = 2;
/// The proactor was taken out (and dropped); `value` holds nothing.
const GONE: u8 = 4;

/// The loop's proactor: lent mutably to one caller at a time (a second borrow panics, as
/// with `RefCell`), refused to public operations once the loop is closed, and gone once
/// `close()` takes it out.
pub(crate) struct ProactorCell {
    /// `BORROWED | CLOSED | GONE` bits.
    state: Cell<u8>,
    /// Initialized unless `GONE`.
    value: UnsafeCell<MaybeUninit<Proactor>>,
}

impl ProactorCell {
    pub(crate) fn new(proactor: Proactor) -> ProactorCell {
        ProactorCell {
            state: Cell::new(0),
            value: UnsafeCell::new(MaybeUninit::new(proactor)),
        }
    }

    /// The proactor, unless it is gone. Panics if it is borrowed already.
    #[inline]
    pub(crate) fn borrow_mut(&self) -> Option<ProactorMut<'_>> {
        // The open loop's case (every per-message one) alone inline: one comparison, and
        // the new state is a constant.
        if self.state.get() != 0 {
            return self.borrow_mut_slow();
        }
        self.lend_open()
    }

    /// `borrow_mut` of a closed (or gone, or borrowed) loop's proactor.
    #[cold]
    #[inline(never)]
    fn borrow_mut_slow(&self) -> Option<ProactorMut<'_>> {
        let state = self.state.get();
        if state & (BORROWED | GONE) != 0 {
            return self.refuse();
        }
        self.state.set(state | BORROWED);
        Some(ProactorMut { cell: self })
    }

    /// [`borrow_mut`](Self::borrow_mut) for the loop's public operations: `None` also
    /// once the loop is closed.
    #[inline]
    pub(crate) fn borrow_open(&self) -> Option<ProactorMut<'_>> {
        if self.state.get() != 0 {
            return self.refuse();
        }
        self.lend_open()
    }

    /// Lends the proactor of an open loop that nobody borrows (the state is 0): the new
    /// state is a constant.
    #[inline(always)]
    fn lend_open(&self) -> Option<ProactorMut<'_>> {
        debug_assert_eq!(self.state.get(), 0);
        self.state.set(BORROWED);
        Some(ProactorMut { cell: self })
    }

    /// A borrow refused: `None`, or, if the proactor is borrowed already, the panic
    /// `RefCell::borrow_mut` would raise.
    #[cold]
    #[inline(never)]
    fn refuse(&self) -> Option<ProactorMut<'_>> {
        assert!(
            self.state.get() & BORROWED == 0,
            "the proactor is already borrowed"
        );
        None
    }

    /// Marks the loop closed: [`borrow_open`](Self::borrow_open) refuses from now on.
    pub(crate) fn close(&self) {
        self.state.set(self.state.get() | CLOSED);
    }

    /// Whether the loop was closed (the loop's one record of it).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.get() & CLOSED != 0
    }

    /// Whether the proactor was taken out.
    pub(crate) fn is_gone(&self) -> bool {
        self.state.get() & GONE != 0
    }

    /// Takes the proactor out, once (then `None`). Panics if it is borrowed.
    pub(crate) fn take(&self) -> Option<Proactor> {
        let state = self.state.get();
        assert!(state & BORROWED == 0, "the proactor is already borrowed");
        if state & GONE != 0 {
            return None;
        }
        self.state.set(state | GONE);
        // SAFETY: not `GONE` until now, so `value` is initialized; `GONE` is set, so it is
        // never read again (nor dropped by `Drop`): this moves it out exactly once. Not
        // borrowed, so no reference into it exists.
        Some(unsafe { (*self.value.get()).assume_init_read() })
    }
}

impl Drop for ProactorCell {
    fn drop(&mut self) {
        if !self.is_gone() {
            // SAFETY: not `GONE`, so initialized, and dropped only here.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

/// The proactor, lent by [`ProactorCell`]; lent back when dropped.
pub(crate) struct ProactorMut<'a> {
    cell: &'a ProactorCell,
}

impl Deref for ProactorMut<'_> {
    type Target = Proactor;

    #[inline]
    fn deref(&self) -> &Proactor {
        // SAFETY: lent only while not `GONE` (initialized), and `GONE` is set only when
        // not `BORROWED`; `BORROWED` makes this guard the only way in until it drops.
        unsafe { (*self.cell.value.get()).assume_init_ref() }
    }
}

impl DerefMut for ProactorMut<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Proactor {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique among the guard's.
        unsafe { (*self.cell.value.get()).assume_init_mut() }
    }
}

impl Drop for ProactorMut<'_> {
    #[inline]
    fn drop(&mut self) {
        // `BORROWED` is set (this guard lives): the same as clearing it, in one
        // instruction where the compiler would otherwise keep the loaded state around.
        let state = self.cell.state.get();
        self.cell.state.set(state.wrapping_sub(BORROWED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> Option<ProactorCell> {
        match Proactor::new() {
            Ok(proactor) => Some(ProactorCell::new(proactor)),
            Err(err) => {
                eprintln!("SKIPPED: no proactor here: {err}");
                None
            }
        }
    }

    #[test]
    fn lends_one_borrow_at_a_time_and_takes_it_back() {
        let Some(cell) = cell() else { return };
        {
            let mut proactor = cell.borrow_mut().expect("open");
            assert_eq!(proactor.in_flight(), 0);
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(cell.borrow_mut());
            }));
            assert!(again.is_err(), "a second borrow panics, as with RefCell");
            let open = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(cell.borrow_open());
            }));
            assert!(open.is_err(), "also through borrow_open");
            let _ = proactor.poll(Some(std::time::Duration::ZERO));
        }
        assert!(cell.borrow_mut().is_some(), "lent back");
        assert!(cell.borrow_open().is_some());
    }

    #[test]
    fn a_closed_loop_refuses_public_operations_only() {
        let Some(cell) = cell() else { return };
        cell.close();
        assert!(cell.borrow_open().is_none());
        {
            let _proactor = cell.borrow_mut().expect("still there while closing");
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(cell.borrow_mut());
            }));
            assert!(again.is_err(), "still one borrow at a time");
        }
        assert!(cell.borrow_mut().is_some(), "lent back, still closed");
        assert!(cell.borrow_open().is_none());
        assert!(!cell.is_gone());
        assert!(cell.take().is_some());
        assert!(cell.is_gone());
        assert!(cell.take().is_none(), "once");
        assert!(cell.borrow_mut().is_none());
        assert!(cell.borrow_open().is_none());
    }

    #[test]
    fn a_borrow_that_panics_lends_the_proactor_back() {
        let Some(cell) = cell() else { return };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _proactor = cell.borrow_mut();
            panic!("while borrowed");
        }));
        assert!(panicked.is_err());
        assert!(cell.borrow_open().is_some());
    }

    #[test]
    fn taking_from_a_borrowed_cell_panics() {
        let Some(cell) = cell() else { return };
        let _proactor = cell.borrow_mut();
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cell.take()));
        assert!(taken.is_err());
    }
}
