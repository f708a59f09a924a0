//! The floor for readiness-based loops: edge-triggered epoll written directly on `libc`.
//!
//! Each connection is registered once for `EPOLLIN | EPOLLET`; a read shorter than the buffer
//! means the socket is drained (as tokio assumes too), so a message costs one `read`, one
//! `write` and a share of `epoll_wait`. `EPOLLOUT` is added only while a write is pending.

use std::io;
use std::os::fd::IntoRawFd;

use super::http::{push_responses, RequestCounter};
use super::{set_nodelay, Mode, READ_BUF};

const LISTENER: u64 = u64::MAX;

struct Conn {
    buf: Vec<u8>,
    /// Bytes accepted for writing that the socket has not taken yet.
    pending: Vec<u8>,
    requests: RequestCounter,
}

/// Serves `mode` on `listener` forever.
pub(super) fn serve(listener: std::net::TcpListener, mode: Mode) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    super::ready(&listener, "epoll, edge-triggered")?;
    let lfd = listener.into_raw_fd();
    // SAFETY: epoll_create1 has no memory-safety preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: `events` is a writable array of the length passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for ev in &events[..n as usize] {
            let (key, flags) = (ev.u64, ev.events);
            if key == LISTENER {
                accept_all(ep, lfd, &mut conns)?;
                continue;
            }
            let fd = key as i32;
            let Some(conn) = conns.get_mut(fd as usize).and_then(Option::as_mut) else {
                continue;
            };
            let alive = (flags & libc::EPOLLOUT as u32 == 0 || flush(ep, fd, conn))
                && (flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0
                    || on_readable(ep, fd, conn, mode, &mut out));
            if !alive {
                conns[fd as usize] = None;
                // SAFETY: `fd` is a connection this loop accepted and owns; closing it also
                // removes it from the epoll set.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn accept_all(ep: i32, lfd: i32, conns: &mut Vec<Option<Conn>>) -> io::Result<()> {
    loop {
        // SAFETY: null address pointers are allowed by accept4.
        let fd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(()),
                Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE) => Ok(()),
                _ => Err(err),
            };
        }
        set_nodelay(fd);
        let idx = fd as usize;
        if conns.len() <= idx {
            conns.resize_with(idx + 1, || None);
        }
        conns[idx] = Some(Conn {
            buf: Vec::with_capacity(READ_BUF), // capacity only: the kernel touches the pages it writes
            pending: Vec::new(),
            requests: RequestCounter::default(),
        });
        ctl(
            ep,
            libc::EPOLL_CTL_ADD,
            fd,
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            fd as u64,
        )?;
    }
}

/// Reads until drained, answering as it goes. Returns false when the connection is done.
fn on_readable(ep: i32, fd: i32, conn: &mut Conn, mode: Mode, out: &mut Vec<u8>) -> bool {
    loop {
        conn.buf.clear();
        // SAFETY: `conn.buf` has writable capacity of the length passed.
        let n = unsafe { libc::read(fd, conn.buf.as_mut_ptr().cast(), conn.buf.capacity()) };
        if n == 0 {
            return false;
        }
        if n < 0 {
            return io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        }
        let n = n as usize;
        // SAFETY: read() initialised the first `n` bytes, within the capacity.
        unsafe { conn.buf.set_len(n) };
        let alive = match mode {
            Mode::Echo => send(ep, fd, &mut conn.pending, &conn.buf[..n]),
            Mode::Http => {
                out.clear();
                push_responses(out, conn.requests.feed(&conn.buf[..n]));
                send(ep, fd, &mut conn.pending, out)
            }
        };
        if !alive {
            return false;
        }
        if n < conn.buf.capacity() {
            return true; // drained: edge-triggered epoll reports the next arrival
        }
    }
}

/// Writes `data` now, queueing what the socket does not take and arming `EPOLLOUT`.
fn send(ep: i32, fd: i32, pending: &mut Vec<u8>, data: &[u8]) -> bool {
    if !pending.is_empty() {
        pending.extend_from_slice(data);
        return true;
    }
    match write(fd, data) {
        Ok(n) if n == data.len() => true,
        Ok(n) => {
            pending.extend_from_slice(&data[n..]);
            let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32;
            ctl(ep, libc::EPOLL_CTL_MOD, fd, events, fd as u64).is_ok()
        }
        Err(_) => false,
    }
}

/// Writes queued bytes after `EPOLLOUT`; disarms it once empty.
fn flush(ep: i32, fd: i32, conn: &mut Conn) -> bool {
    if conn.pending.is_empty() {
        return true;
    }
    match write(fd, &conn.pending) {
        Ok(n) => {
            conn.pending.drain(..n);
            if conn.pending.is_empty() {
                let events = (libc::EPOLLIN | libc::EPOLLET) as u32;
                ctl(ep, libc::EPOLL_CTL_MOD, fd, events, fd as u64).is_ok()
            } else {
                true
            }
        }
        Err(_) => false,
    }
}

/// One `write`; `Ok(0)` for would-block.
fn write(fd: i32, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a readable buffer of the length passed.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Ok(0),
        _ => Err(err),
    }
}

fn ctl(ep: i32, op: i32, fd: i32, events: u32, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: key };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
