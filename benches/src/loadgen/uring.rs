//! The completion-based load generator: per connection a `Send` of the request and a `Recv`
//! of the response are in flight together; completions are reaped in batches and the next
//! requests go out in the same `io_uring_enter` that waits for more.
//!
//! Soundness: every buffer an operation points to (the shared request, each connection's
//! response buffer) lives in `self` and is not moved or freed while an operation is in
//! flight. On drop, the sockets are shut down so pending receives complete, and the ring is
//! drained; if it cannot be drained in time, the buffers are leaked rather than freed.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::common::{closed, next_wait, ClosedLoop, Exchange};
use super::Window;

const OP_SEND: u64 = 0;
const OP_RECV: u64 = 1;

struct Conn {
    stream: TcpStream,
    /// Response bytes land here (their content is not inspected, only counted).
    buf: Vec<u8>,
    ex: Exchange,
}

/// io_uring closed-loop client.
pub(super) struct UringLoad {
    ring: IoUring,
    conns: Vec<Conn>,
    request: Vec<u8>,
    response_len: usize,
    /// Requests whose response is not complete.
    outstanding: usize,
    /// Operations submitted whose completion has not been reaped.
    in_flight: usize,
    cqes: Vec<(u64, i32)>,
}

impl std::fmt::Debug for UringLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringLoad")
            .field("conns", &self.conns.len())
            .field("outstanding", &self.outstanding)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl UringLoad {
    /// A ring big enough for two operations per connection.
    pub(super) fn new(conns: usize) -> io::Result<UringLoad> {
        let entries = (2 * conns + 64).next_power_of_two().clamp(256, 32_768) as u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no IORING_FEAT_EXT_ARG (bounded waits)",
            ));
        }
        Ok(UringLoad {
            ring,
            conns: Vec::new(),
            request: Vec::new(),
            response_len: 0,
            outstanding: 0,
            in_flight: 0,
            cqes: Vec::with_capacity(4096),
        })
    }

    /// Opens `n` connections, each completing one round trip.
    pub(super) fn connect(
        mut self,
        addr: SocketAddr,
        n: usize,
        request: Vec<u8>,
        response_len: usize,
        timeout: Duration,
    ) -> io::Result<UringLoad> {
        self.request = request;
        self.response_len = response_len;
        self.conns.reserve_exact(n); // never reallocated afterwards (buffers are heap anyway)
        self.open(addr, n, timeout)?;
        Ok(self)
    }

    fn send_entry(&self, idx: usize) -> squeue::Entry {
        let c = &self.conns[idx];
        let rest = &self.request[c.ex.sent..];
        opcode::Send::new(
            types::Fd(c.stream.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data((idx as u64) << 1 | OP_SEND)
    }

    fn recv_entry(&mut self, idx: usize) -> squeue::Entry {
        let want = self.response_len - self.conns[idx].ex.received;
        let c = &mut self.conns[idx];
        let len = want.min(c.buf.capacity()) as u32;
        opcode::Recv::new(types::Fd(c.stream.as_raw_fd()), c.buf.as_mut_ptr(), len)
            .build()
            .user_data((idx as u64) << 1 | OP_RECV)
    }

    /// Queues `entry`, submitting first when the submission queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the entry points into `self.request` or a connection's `buf`, heap
            // buffers that are neither moved nor freed while an operation is in flight (see
            // the module doc and `Drop`).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits and waits for at least one completion, at most `wait`.
    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn complete(
        &mut self,
        key: u64,
        res: i32,
        keep_going: bool,
        win: &mut Window,
    ) -> io::Result<()> {
        let idx = (key >> 1) as usize;
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            return Err(io::Error::new(e.kind(), format!("connection {idx}: {e}")));
        }
        let n = res as usize;
        if key & 1 == OP_SEND {
            self.conns[idx].ex.sent += n;
            if self.conns[idx].ex.sent < self.request.len() {
                let e = self.send_entry(idx);
                return self.push(&e);
            }
        } else {
            if n == 0 {
                return Err(closed(idx));
            }
            self.conns[idx].ex.received += n;
            if self.conns[idx].ex.received < self.response_len {
                let e = self.recv_entry(idx);
                return self.push(&e);
            }
        }
        let ex = &mut self.conns[idx].ex;
        if ex.busy && ex.sent == self.request.len() && ex.received == self.response_len {
            ex.finish(win);
            self.outstanding -= 1;
            if keep_going {
                self.start(idx)?;
            }
        }
        Ok(())
    }
}

impl ClosedLoop for UringLoad {
    fn conns(&self) -> usize {
        self.conns.len()
    }

    fn is_busy(&self, idx: usize) -> bool {
        self.conns[idx].ex.busy
    }

    fn add(&mut self, stream: TcpStream) -> io::Result<()> {
        let buf = Vec::with_capacity(self.response_len.min(64 * 1024));
        self.conns.push(Conn {
            stream,
            buf,
            ex: Exchange::idle(),
        });
        Ok(())
    }

    /// Begins the request: its send and the receive of its response go in flight together.
    fn start(&mut self, idx: usize) -> io::Result<()> {
        self.conns[idx].ex.begin();
        self.outstanding += 1;
        let send = self.send_entry(idx);
        let recv = self.recv_entry(idx);
        self.push(&send)?;
        self.push(&recv)
    }

    fn pump(&mut self, until: Instant, keep_going: bool, win: &mut Window) -> io::Result<()> {
        while let Some(wait) = next_wait(until, keep_going, self.outstanding, self.conns.len())? {
            self.enter(wait)?;
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            self.in_flight -= cqes.len();
            let result = cqes
                .drain(..)
                .try_for_each(|(key, res)| self.complete(key, res, keep_going, win));
            self.cqes = cqes;
            result?;
        }
        Ok(())
    }
}

impl Drop for UringLoad {
    fn drop(&mut self) {
        for c in &self.conns {
            // Completes pending receives (with 0) and sends (with an error).
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.enter(Duration::from_millis(50)).is_err() {
                break;
            }
            let reaped = self.ring.completion().count();
            self.in_flight -= reaped;
        }
        if self.in_flight > 0 {
            // The kernel may still write into these buffers: leak them rather than free them.
            std::mem::forget(std::mem::take(&mut self.conns));
            std::mem::forget(std::mem::take(&mut self.request));
        }
    }
}
