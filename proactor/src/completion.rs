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

impl Default for Completion {
    /// An empty completion, of no op: no op, no chunk, `Ok(0)`. A place for
    /// [`Proactor::pop_into`](crate::Proactor::pop_into) to fill.
    fn default() -> Self {
        Completion {
            token: 0,
            id: OpId::NONE,
            result: Ok(0),
            more: false,
            op: None,
            buf: None,
            yields_fd: false,
        }
    }
}

impl Completion {
    /// Makes this completion, which holds nothing (`Proactor::pop_into` cleared it), the
    /// completion of a multishot receive that got `buf` (`result` bytes): a backend's
    /// per-message case, written field by field where the caller's completion is (see
    /// [`Popped::Routed`](crate::sys::Popped::Routed)) rather than built and moved.
    #[inline]
    pub(crate) fn set_chunk(&mut self, token: u64, id: OpId, result: u32, buf: RecvBuf) {
        debug_assert!(self.holds_nothing());
        self.token = token;
        self.id = id;
        self.more = true;
        self.yields_fd = false;
        // Stores alone, without the drop checks of assignments: there is nothing to drop.
        // (Were there, it would leak, not be freed twice.) `op` is `None` already.
        std::mem::forget(std::mem::replace(&mut self.result, Ok(result)));
        std::mem::forget(self.buf.replace(buf));
    }

    /// Makes this completion, which holds nothing (`Proactor::pop_into` cleared it), the
    /// one the front end routed: written field by field where the caller's completion is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set(
        &mut self,
        token: u64,
        id: OpId,
        result: i32,
        more: bool,
        op: Option<Op>,
        buf: Option<RecvBuf>,
        yields_fd: bool,
    ) {
        debug_assert!(self.holds_nothing());
        self.token = token;
        self.id = id;
        self.more = more;
        self.yields_fd = yields_fd;
        // As in `set_chunk`: stores alone, nothing to drop.
        let result = Completion::result_from_raw(result);
        std::mem::forget(std::mem::replace(&mut self.result, result));
        std::mem::forget(std::mem::replace(&mut self.op, op));
        std::mem::forget(std::mem::replace(&mut self.buf, buf));
    }

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
    // Always: it is on the per-message path, where the compiler would not inline it.
    #[inline(always)]
    pub fn clear(&mut self) {
        // Two tests that go to two functions: were they one, the compiler would compute
        // both conditions into a flag and test that.
        if self.op.is_some() {
            self.clear_slow();
        } else if self.result.is_err() {
            self.clear_error();
        } else if let Some(buf) = self.buf.take() {
            buf.release();
        }
        debug_assert!(self.holds_nothing());
    }

    /// [`clear`](Completion::clear) for a completion with an op.
    #[cold]
    #[inline(never)]
    fn clear_slow(&mut self) {
        self.op = None;
        self.buf = None;
        self.result = Ok(0);
    }

    /// [`clear`](Completion::clear) for a completion with an error and no op.
    #[cold]
    #[inline(never)]
    fn clear_error(&mut self) {
        self.result = Ok(0);
        self.buf = None;
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
        }
    }
}
