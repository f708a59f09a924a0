//! Buffer-ownership audit for tests: checks that no memory lent to the kernel is freed (or
//! handed out again by the allocator) before its op's final completion.
//!
//! Compiled to no-ops unless the `buffer-audit` feature is on. With it, [`lend`] records the
//! heap ranges an op gives the kernel, [`reclaim`] forgets them at the op's final completion,
//! and [`AuditAllocator`], installed as a test binary's `#[global_allocator]`, aborts the
//! process with a message if any recorded range is freed in between.
//!
//! TODO(proactor): the recording itself is being written; see the proactor issue.

use crate::op::Op;

/// Records the memory `op` lends to the kernel.
#[inline]
pub(crate) fn lend(_op: &Op) {}

/// Forgets the memory `op` lent, at its final completion.
#[inline]
pub(crate) fn reclaim(_op: &Op) {}
