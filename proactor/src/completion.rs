//! What a finished (or progressing) op reports.

use std::fmt;
use std::io;

use crate::buf::RecvBuf;
use crate::op::Op;
use crate::table::OpId;

/// One completion of a pushed op.
///
/// Single-shot ops complete once, with `more == false` and their [`Op`] handed back in
/// `op`. Multishot ops ([`op::RecvMulti`](crate::op::RecvMulti),
/// [`op::AcceptMulti`](crate::op::AcceptMulti), multishot polls) complete once per event with
/// `more == true`, and a last time with `more == false` (end of stream, error, cancel), which
/// hands the op back.
pub struct Completion {
    /// The token given to [`Proactor::push`](crate::Proactor::push).
    pub token: u64,
    /// The op's id, as `push` returned it.
    pub id: OpId,
    /// The syscall's result: a byte count, a new fd (accept), `revents` (poll), or 0.
    /// A timeout that expired is `Ok(0)`; a cancelled op is `ECANCELED` (unless it finished
    /// before the cancel took effect).
    pub result: io::Result<u32>,
    /// Whether more completions of the same op follow.
    pub more: bool,
    /// The op with its buffers, on the final completion.
    pub op: Option<Op>,
    /// The received chunk of a multishot receive.
    pub buf: Option<RecvBuf>,
    /// Whether a successful result is a new fd (accepts), also on multishot completions
    /// that carry no op.
    pub(crate) yields_fd: bool,
}

impl Completion {
    /// The new fd this completion hands over (a successful accept, single or multishot),
    /// which its receiver must own or close.
    pub fn new_fd(&self) -> Option<std::os::fd::RawFd> {
        match self.result {
            Ok(fd) if self.yields_fd => Some(fd as std::os::fd::RawFd),
            _ => None,
        }
    }

    /// Moves the completion out, leaving an empty one in its place (no op, no buffer,
    /// `Ok(0)`): for handlers that get `&mut Completion` and want to own what it carries.
    pub fn take(&mut self) -> Completion {
        std::mem::replace(
            self,
            Completion {
                token: self.token,
                id: self.id,
                result: Ok(0),
                more: false,
                op: None,
                buf: None,
                yields_fd: false,
            },
        )
    }

    /// Whether dropping the completion frees nothing: no op, no buffer, no error. What
    /// [`clear`](Completion::clear) guarantees.
    fn holds_nothing(&self) -> bool {
        // Exhaustive, so that a field added later is considered here.
        let Completion {
            token: _,
            id: _,
            result,
            more: _,
            op,
            buf,
            yields_fd: _,
        } = self;
        result.is_ok() && op.is_none() && buf.is_none()
    }

    /// Drops what the completion holds (op, chunk, error), leaving nothing for its drop
    /// glue to free: a caller may then `mem::forget` it. The per-message case, a chunk and
    /// nothing else, is handled inline, without the general drop glue.
    #[inline]
    pub fn clear(&mut self) {
        if self.op.is_none() && self.result.is_ok() {
            if let Some(buf) = self.buf.take() {
                buf.release();
            }
        } else {
            self.clear_slow();
        }
        debug_assert!(self.holds_nothing());
    }

    /// [`clear`](Completion::clear) for a completion with an op or an error.
    #[cold]
    #[inline(never)]
    fn clear_slow(&mut self) {
        self.op = None;
        self.buf = None;
        self.result = Ok(0);
    }

    /// Converts a kernel-style result (`-errno` or a value) into `io::Result`.
    pub(crate) fn result_from_raw(raw: i32) -> io::Result<u32> {
        if raw < 0 {
            Err(io::Error::from_raw_os_error(-raw))
        } else {
            Ok(raw as u32)
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("token", &self.token)
            .field("id", &self.id)
            .field("result", &self.result)
            .field("more", &self.more)
            .field("op", &self.op.as_ref().map(Op::name))
            .field("buf", &self.buf)
            .finish()
    }
}

/// A completion as a backend reports it, before the op table is consulted.
#[derive(Debug)]
pub(crate) struct RawCompletion {
    /// The op it belongs to.
    pub(crate) id: OpId,
    /// `-errno` or the result value.
    pub(crate) result: i32,
    /// Whether more completions of the op follow.
    pub(crate) more: bool,
    /// A received chunk (multishot receives).
    pub(crate) buf: Option<RecvBuf>,
    /// Whether the backend found the op in the table and the completion is one the caller
    /// gets as it is: `more` set, a success (`result >= 0`), from a live op (not detached,
    /// not the proactor's wake-up read) that yields no fd. The front end then hands it on,
    /// with `token`, without looking the op up again.
    pub(crate) routed: bool,
    /// The op's token, if `routed` (a separate field, not an `Option`, so that the flag
    /// packs beside `more` and the struct stays small: it is moved per completion).
    pub(crate) token: u64,
}

impl RawCompletion {
    /// A completion for the front end to route (it looks op `id` up in the table).
    #[inline]
    pub(crate) fn new(id: OpId, result: i32, more: bool, buf: Option<RecvBuf>) -> RawCompletion {
        RawCompletion {
            id,
            result,
            more,
            buf,
            routed: false,
            token: 0,
        }
    }
}
