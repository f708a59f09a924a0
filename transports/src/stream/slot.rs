//! The protocol slot of a stream transport, with a protocol call that costs a few
//! instructions (one per received chunk).
//!
//! The slot holds the protocol as an `Rc<RefCell<dyn Protocol>>`. Reaching the protocol
//! through it finds the `RefCell` inside the `Rc`, and the value inside the `RefCell`, from
//! the alignment in the vtable, at run time, on every call. The slot finds both places once,
//! when it takes a protocol, and a call uses them. They stay valid while the slot holds that
//! protocol's `Rc`, so the slot does not let go of it while a call runs: a `replace` meanwhile
//! is refused (the transport then leaves the new protocol in `protocol_next`).
//!
//! The transports crate keeps its unsafe code here, behind this safe interface: the
//! fields are private, so the places and the `Rc` change only together, and never during a
//! call.
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::Rc;

use crate::flow_signal::CurrentProtocol;

/// A protocol as a transport holds it.
type Shared<P> = Rc<RefCell<P>>;

/// A transport's protocol (or none, once `connection_lost` took it), and where to call it.
pub(crate) struct ProtocolSlot<P: ?Sized> {
    protocol: Cell<Option<Shared<P>>>,
    /// The places of the protocol in `protocol`: `Some` exactly while `protocol` is.
    places: Cell<Option<Places<P>>>,
    /// Whether [`call`](ProtocolSlot::call) runs a method of the protocol. It holds no
    /// `Rc` of its own: `protocol` keeps the protocol alive, so it must stay until the call
    /// returns.
    calling: Cell<bool>,
}

/// Where a protocol the slot holds lies.
struct Places<P: ?Sized> {
    /// The protocol's `RefCell`: its borrow flag guards a call.
    cell: NonNull<RefCell<P>>,
    /// The protocol inside it (`RefCell::as_ptr`).
    value: NonNull<P>,
}

impl<P: ?Sized> Clone for Places<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: ?Sized> Copy for Places<P> {}

impl<P: ?Sized> Places<P> {
    /// The places of `protocol`. Valid while an `Rc` of it lives.
    fn of(protocol: &Shared<P>) -> Places<P> {
        let cell = Rc::as_ptr(protocol).cast_mut();
        // SAFETY: `cell` points to the value of the live `Rc` `protocol`, so it is valid
        // for this read; `RefCell::as_ptr` borrows nothing, it only says where the value
        // lies inside. Neither pointer is null: both point into the `Rc`'s allocation.
        unsafe {
            let value = (*cell).as_ptr();
            Places {
                cell: NonNull::new_unchecked(cell),
                value: NonNull::new_unchecked(value),
            }
        }
    }
}

impl<P: ?Sized> ProtocolSlot<P> {
    /// A slot holding `protocol`.
    pub(crate) fn new(protocol: Option<Shared<P>>) -> Self {
        ProtocolSlot {
            places: Cell::new(protocol.as_ref().map(Places::of)),
            protocol: Cell::new(protocol),
            calling: Cell::new(false),
        }
    }

    /// The protocol (a new `Rc` of it).
    pub(crate) fn get(&self) -> Option<Shared<P>> {
        let protocol = self.protocol.take();
        let clone = protocol.clone();
        self.protocol.set(protocol);
        clone
    }

    /// Puts `protocol` in the slot and gives back the one it held; `Err(protocol)`, the slot
    /// untouched, while a [`call`](ProtocolSlot::call) runs (its protocol must stay).
    pub(crate) fn replace(
        &self,
        protocol: Option<Shared<P>>,
    ) -> Result<Option<Shared<P>>, Option<Shared<P>>> {
        if self.calling.get() {
            return Err(protocol);
        }
        self.places.set(protocol.as_ref().map(Places::of));
        Ok(self.protocol.replace(protocol))
    }

    /// Runs `f` on the protocol, catching a panic (`Some(Err(payload))`). `None`, with `f`
    /// not run, when the slot is empty or the protocol is busy (its `RefCell` borrowed: one
    /// of its methods runs).
    ///
    /// Always inlined: it runs once per chunk, and it is a handful of instructions.
    #[inline(always)]
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&mut P) -> R,
    ) -> Option<Result<R, Box<dyn Any + Send>>> {
        let places = self.places.get()?;
        // `places` are those of the protocol in `protocol` (`new` and `replace` set both
        // together). It stays there until this call returns: `calling` is set below, before
        // anything else runs, and `replace`, the only other way to change `protocol`,
        // refuses while it is. (A `call` from inside `f` finds the same `cell` borrowed and
        // returns at the next line.)
        // SAFETY: so `cell` points into the allocation of the `Rc` the slot holds, alive
        // for as long as the reference is used (this call).
        let cell = unsafe { places.cell.as_ref() };
        let guard = cell.try_borrow_mut().ok()?;
        self.calling.set(true);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `value` is `cell.as_ptr()`, alive as `cell` is (above), and `guard`,
            // the cell's mutable borrow, makes this the only reference to it until the
            // guard drops, after the call.
            let protocol = unsafe { &mut *places.value.as_ptr() };
            f(protocol)
        }));
        self.calling.set(false);
        drop(guard);
        Some(outcome)
    }
}

impl<P: ?Sized> CurrentProtocol for ProtocolSlot<P> {
    type Protocol = P;

    fn current(&self) -> Option<Shared<P>> {
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Named {
        fn name(&self) -> &'static str;
    }

    struct A(&'static str);

    impl Named for A {
        fn name(&self) -> &'static str {
            self.0
        }
    }

    fn shared(name: &'static str) -> Rc<RefCell<dyn Named>> {
        Rc::new(RefCell::new(A(name)))
    }

    #[test]
    fn a_call_reaches_the_protocol_held_now() {
        let slot = ProtocolSlot::new(Some(shared("first")));
        assert_eq!(slot.call(|p| p.name()).map(|r| r.ok()), Some(Some("first")));
        let old = slot.replace(Some(shared("second"))).ok().flatten();
        assert_eq!(old.map(|p| p.borrow().name()), Some("first"));
        assert_eq!(
            slot.call(|p| p.name()).map(|r| r.ok()),
            Some(Some("second"))
        );
        assert!(slot.replace(None).is_ok());
        assert!(
            slot.call(|p| p.name()).is_none(),
            "an empty slot calls nothing"
        );
    }

    #[test]
    fn the_slot_keeps_its_protocol_while_a_call_runs() {
        let slot = ProtocolSlot::new(Some(shared("first")));
        let outcome = slot.call(|p| {
            // Refused: the running call reaches its protocol through the slot's `Rc`.
            let refused = slot.replace(Some(shared("second")));
            assert!(matches!(&refused, Err(Some(_))));
            // A nested call finds the protocol busy.
            assert!(slot.call(|q| q.name()).is_none());
            // Its `Rc` can still be had, and is borrowed.
            let rc = slot.get().map(|rc| rc.try_borrow().is_err());
            assert_eq!(rc, Some(true));
            p.name()
        });
        assert_eq!(outcome.map(|r| r.ok()), Some(Some("first")));
        // Done: the slot lets go again.
        let old = slot.replace(Some(shared("second"))).ok().flatten();
        assert_eq!(old.map(|p| p.borrow().name()), Some("first"));
    }

    #[test]
    fn a_panic_is_caught_and_leaves_the_slot_usable() {
        let slot = ProtocolSlot::new(Some(shared("first")));
        let outcome = slot.call(|_| -> () { panic!("boom") });
        assert!(matches!(outcome, Some(Err(_))));
        // The protocol is no longer borrowed, nor the slot locked.
        assert_eq!(slot.call(|p| p.name()).map(|r| r.ok()), Some(Some("first")));
        assert!(slot.replace(None).is_ok());
    }

    #[test]
    fn an_outside_borrow_makes_the_protocol_busy() {
        let protocol = shared("first");
        let slot = ProtocolSlot::new(Some(protocol.clone()));
        let held = protocol.borrow();
        assert!(slot.call(|p| p.name()).is_none());
        drop(held);
        assert!(slot.call(|p| p.name()).is_some());
    }
}
