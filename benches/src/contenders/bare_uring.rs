//! The floor for completion-based loops: an echo loop written directly on the `io-uring`
//! crate. Each connection has exactly one operation in flight (a `Recv` or a `Send`) and the
//! loop makes one `io_uring_enter` per iteration, submitting and reaping in the same call.

use std::io;
use std::os::fd::IntoRawFd;

use io_uring::{opcode, squeue, types, IoUring};

use super::http::{push_responses, RequestCounter};
use super::{set_nodelay, Mode, READ_BUF};

const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const ACCEPT_KEY: u64 = u64::MAX << 2;

struct Conn {
    fd: i32,
    buf: Vec<u8>,
    /// HTTP responses being sent (echo sends from `buf`).
    out: Vec<u8>,
    sent: usize,
    send_len: usize,
    requests: RequestCounter,
}

impl Conn {
    fn send_ptr(&self, mode: Mode) -> *const u8 {
        let base = match mode {
            Mode::Echo => self.buf.as_ptr(),
            Mode::Http => self.out.as_ptr(),
        };
        // SAFETY: `sent <= send_len <= len` of the buffer `base` points into.
        unsafe { base.add(self.sent) }
    }
}

/// Serves `mode` on `listener` forever.
pub(super) fn serve(listener: std::net::TcpListener, mode: Mode) -> io::Result<()> {
    let (mut ring, flags) = build_ring()?;
    super::ready(&listener, &format!("io_uring, setup {flags}"))?;
    let lfd = listener.into_raw_fd();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(8192);
    push(&mut ring, &accept(lfd))?;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (key, res) in cqes.drain(..) {
            if key == ACCEPT_KEY {
                if res >= 0 {
                    set_nodelay(res);
                    let conn = Conn {
                        fd: res,
                        // Capacity only: pages are touched by what the kernel writes, not by us.
                        buf: Vec::with_capacity(READ_BUF),
                        out: Vec::new(),
                        sent: 0,
                        send_len: 0,
                        requests: RequestCounter::default(),
                    };
                    let idx = match free.pop() {
                        Some(i) => {
                            conns[i] = Some(conn);
                            i
                        }
                        None => {
                            conns.push(Some(conn));
                            conns.len() - 1
                        }
                    };
                    push(
                        &mut ring,
                        &recv(conns[idx].as_mut().expect("just stored"), idx),
                    )?;
                }
                push(&mut ring, &accept(lfd))?;
                continue;
            }
            let idx = (key >> 2) as usize;
            let Some(conn) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let next = match key & 3 {
                OP_RECV if res > 0 => {
                    let n = res as usize;
                    // SAFETY: the kernel initialised the first `n` bytes of the capacity it was
                    // given, and `n` does not exceed that capacity.
                    unsafe { conn.buf.set_len(n) };
                    if mode == Mode::Http {
                        conn.out.clear();
                        push_responses(&mut conn.out, conn.requests.feed(&conn.buf[..n]));
                        conn.send_len = conn.out.len();
                    } else {
                        conn.send_len = n;
                    }
                    conn.sent = 0;
                    Some(if conn.send_len == 0 {
                        recv(conn, idx)
                    } else {
                        send(conn, idx, mode)
                    })
                }
                OP_SEND if res >= 0 => {
                    conn.sent += res as usize;
                    Some(if conn.sent < conn.send_len {
                        send(conn, idx, mode)
                    } else {
                        recv(conn, idx)
                    })
                }
                _ => None, // EOF or error: the connection's only op is done, so close it
            };
            match next {
                Some(entry) => push(&mut ring, &entry)?,
                None => {
                    // SAFETY: no operation on this fd is in flight (one op per connection).
                    unsafe { libc::close(conn.fd) };
                    conns[idx] = None;
                    free.push(idx);
                }
            }
        }
    }
}

/// A ring with the flags a single-threaded server benefits from, where the kernel has them,
/// and the names of the flags it got.
fn build_ring() -> io::Result<(IoUring, &'static str)> {
    let entries = 4096;
    if let Ok(ring) = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(entries)
    {
        return Ok((ring, "SINGLE_ISSUER|COOP_TASKRUN|DEFER_TASKRUN"));
    }
    if let Ok(ring) = IoUring::builder().setup_coop_taskrun().build(entries) {
        return Ok((ring, "COOP_TASKRUN"));
    }
    Ok((IoUring::new(entries)?, "default"))
}

fn accept(lfd: i32) -> squeue::Entry {
    opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT_KEY | OP_ACCEPT)
}

fn recv(conn: &mut Conn, idx: usize) -> squeue::Entry {
    conn.buf.clear();
    opcode::Recv::new(
        types::Fd(conn.fd),
        conn.buf.as_mut_ptr(),
        conn.buf.capacity() as u32,
    )
    .build()
    .user_data((idx as u64) << 2 | OP_RECV)
}

fn send(conn: &Conn, idx: usize, mode: Mode) -> squeue::Entry {
    let len = (conn.send_len - conn.sent) as u32;
    opcode::Send::new(types::Fd(conn.fd), conn.send_ptr(mode), len)
        .build()
        .user_data((idx as u64) << 2 | OP_SEND)
}

/// Queues `entry`, submitting first when the submission queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points to is owned by a `Conn` in `conns`, whose heap
        // allocation stays put (moving a `Conn` does not move its `Vec`'s buffer) and which
        // is dropped only after its one in-flight operation has completed.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
