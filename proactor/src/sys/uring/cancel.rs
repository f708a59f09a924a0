//! Cancelling ops: by `user_data`, in submission order, without ever losing the final CQE.
//!
//! - An op still in the user-space backlog never reaches the kernel: it is marked done and
//!   completes at once with `ECANCELED`.
//! - An op in the SQ or the kernel gets an `AsyncCancel` keyed by its `user_data` (internal
//!   `user_data` of its own, generation 0, whose CQE is ignored). It goes through the SQ
//!   (or, when that is full, the backlog) *after* the op's own SQE, so it cannot overtake
//!   it. The op's final CQE then reports `-ECANCELED`, or its real result if it won the
//!   race; an accepted fd that wins the race after a detach is closed by the front end.
//! - A multishot op between two kernel requests is not re-armed once its state says
//!   cancelled or detached (see [`multishot`](super::multishot)).

use super::multishot::last;
use super::submit::{cancel_sqe, Queued};
use super::Driver;
use crate::table::{OpId, OpTable, Stage};

impl Driver {
    /// The backend's `cancel`.
    pub(super) fn cancel_op(&mut self, table: &mut OpTable, id: OpId) {
        let Some(entry) = table.get_mut(id) else {
            return;
        };
        match entry.stage {
            Stage::Backlog => {
                entry.stage = Stage::Done;
                self.queue_back(last(id, -libc::ECANCELED));
            }
            Stage::Kernel => {
                if self.backlog.is_empty() && self.push_sqe(&cancel_sqe(id)) {
                    return;
                }
                self.backlog.push_back(Queued::Cancel(id));
            }
            Stage::Idle | Stage::Done => {}
        }
    }
}
