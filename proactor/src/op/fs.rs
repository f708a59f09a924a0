//! Reads and writes on any fd: files, pipes, character devices, sockets.

use std::fmt;
use std::os::fd::RawFd;

/// Offset meaning "the fd's current position" (pipes, sockets, terminals).
pub(crate) const CURRENT_POSITION: u64 = u64::MAX;

/// `read(2)` into `buf`'s spare capacity; the completion extends `buf.len()`.
#[derive(Debug)]
pub struct Read {
    /// The fd read from.
    pub fd: RawFd,
    /// Receives the data in `len()..capacity()`.
    pub buf: Vec<u8>,
    /// File offset, or `None` for the current position.
    pub offset: Option<u64>,
}

impl Read {
    /// Reads from the current position into `buf`'s spare capacity.
    pub fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        Read {
            fd,
            buf,
            offset: None,
        }
    }

    /// Reads at `offset` (a `pread`).
    pub fn at(fd: RawFd, buf: Vec<u8>, offset: u64) -> Self {
        Read {
            fd,
            buf,
            offset: Some(offset),
        }
    }
}

/// `write(2)` of `buf[start..]`.
#[derive(Debug)]
pub struct Write {
    /// The fd written to.
    pub fd: RawFd,
    /// The data; bytes before `start` were already written and are skipped.
    pub buf: Vec<u8>,
    /// Where in `buf` the bytes to write begin.
    pub start: usize,
    /// File offset, or `None` for the current position.
    pub offset: Option<u64>,
}

impl Write {
    /// Writes all of `buf` at the current position.
    pub fn new(fd: RawFd, buf: Vec<u8>) -> Self {
        Write {
            fd,
            buf,
            start: 0,
            offset: None,
        }
    }

    /// The bytes still to write.
    pub fn remaining(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// Scratch `iovec` array for vectored ops; heap-allocated so the kernel's view stays put.
#[derive(Default)]
pub(crate) struct IoVecs(pub(crate) Vec<libc::iovec>);

impl fmt::Debug for IoVecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IoVecs({})", self.0.len())
    }
}

/// `readv(2)` into the spare capacity of several buffers, in order.
#[derive(Debug)]
pub struct Readv {
    /// The fd read from.
    pub fd: RawFd,
    /// Filled in order; each receives data in its `len()..capacity()`.
    pub bufs: Vec<Vec<u8>>,
    /// File offset, or `None` for the current position.
    pub offset: Option<u64>,
    pub(crate) iovecs: IoVecs,
}

impl Readv {
    /// Reads from the current position into `bufs`.
    pub fn new(fd: RawFd, bufs: Vec<Vec<u8>>) -> Self {
        Readv {
            fd,
            bufs,
            offset: None,
            iovecs: IoVecs::default(),
        }
    }

    pub(crate) fn complete(&mut self, mut n: usize) {
        for buf in &mut self.bufs {
            let take = n.min(buf.capacity() - buf.len());
            extend_by(buf, take);
            n -= take;
        }
    }

    /// Points the scratch iovecs at the buffers' spare capacity (at most `IOV_MAX` of them);
    /// returns them.
    pub(crate) fn prepare(&mut self) -> &[libc::iovec] {
        self.iovecs.0.clear();
        for buf in self.bufs.iter_mut().take(libc::UIO_MAXIOV as usize) {
            let spare = buf.spare_capacity_mut();
            self.iovecs.0.push(libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len(),
            });
        }
        &self.iovecs.0
    }
}

/// `writev(2)` of several buffers, skipping the first `start` bytes of their concatenation.
#[derive(Debug)]
pub struct Writev {
    /// The fd written to.
    pub fd: RawFd,
    /// The data, in order.
    pub bufs: Vec<Vec<u8>>,
    /// Bytes of the concatenation already written.
    pub start: usize,
    /// File offset, or `None` for the current position.
    pub offset: Option<u64>,
    pub(crate) iovecs: IoVecs,
}

impl Writev {
    /// Writes all of `bufs` at the current position.
    pub fn new(fd: RawFd, bufs: Vec<Vec<u8>>) -> Self {
        Writev {
            fd,
            bufs,
            start: 0,
            offset: None,
            iovecs: IoVecs::default(),
        }
    }

    /// Points the scratch iovecs at the unwritten bytes; returns them.
    pub(crate) fn prepare(&mut self) -> &[libc::iovec] {
        fill_write_iovecs(&mut self.iovecs.0, &self.bufs, self.start);
        &self.iovecs.0
    }
}

/// Fills `iovecs` with the parts of `bufs` past the first `skip` bytes, leaving out empty
/// slices and capping the count at `IOV_MAX`.
pub(crate) fn fill_write_iovecs(iovecs: &mut Vec<libc::iovec>, bufs: &[Vec<u8>], mut skip: usize) {
    iovecs.clear();
    for buf in bufs {
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        let rest = &buf[skip..];
        skip = 0;
        iovecs.push(libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        });
        if iovecs.len() == libc::UIO_MAXIOV as usize {
            break;
        }
    }
}

/// Marks `n` more bytes of `buf`'s spare capacity as initialised, as the kernel reported.
pub(crate) fn extend_by(buf: &mut Vec<u8>, n: usize) {
    let new_len = buf.len() + n.min(buf.capacity() - buf.len());
    // SAFETY: the kernel wrote `n` bytes into the spare capacity starting at `buf.len()`
    // (the backend passed exactly that region to the read), and `new_len` never exceeds the
    // capacity, so `0..new_len` is initialised.
    unsafe { buf.set_len(new_len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_iovecs_skip_what_was_written() {
        let bufs = vec![b"abc".to_vec(), Vec::new(), b"defg".to_vec()];
        let mut iov = Vec::new();
        fill_write_iovecs(&mut iov, &bufs, 4);
        assert_eq!(iov.len(), 1);
        assert_eq!(iov[0].iov_len, 3);
        fill_write_iovecs(&mut iov, &bufs, 0);
        assert_eq!(iov.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn readv_completion_fills_buffers_in_order() {
        let mut op = Readv::new(0, vec![Vec::with_capacity(2), Vec::with_capacity(4)]);
        op.complete(5);
        assert_eq!(op.bufs[0].len(), 2);
        assert_eq!(op.bufs[1].len(), 3);
    }
}
