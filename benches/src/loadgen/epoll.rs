//! The readiness-based load generator: edge-triggered epoll over nonblocking sockets, a
//! `write` and a `read` per message. The fallback where io_uring is not allowed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::common::{closed, next_wait, ClosedLoop, Exchange};
use super::Window;

struct Conn {
    stream: TcpStream,
    ex: Exchange,
}

/// A closed-loop client over a fixed set of connections.
pub(super) struct EpollLoad {
    ep: OwnedFd,
    conns: Vec<Conn>,
    request: Vec<u8>,
    response_len: usize,
    scratch: Vec<u8>,
    events: Vec<libc::epoll_event>,
    outstanding: usize,
}

impl std::fmt::Debug for EpollLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpollLoad")
            .field("conns", &self.conns.len())
            .field("request_len", &self.request.len())
            .field("response_len", &self.response_len)
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

impl EpollLoad {
    /// Opens `n` connections to `addr`, each completing one round trip before returning.
    ///
    /// # Errors
    /// A refused or failed connection, a wrong response, or `timeout` elapsing.
    pub(super) fn connect(
        addr: SocketAddr,
        n: usize,
        request: Vec<u8>,
        response_len: usize,
        timeout: Duration,
    ) -> io::Result<EpollLoad> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh descriptor owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut lg = EpollLoad {
            ep,
            conns: Vec::with_capacity(n),
            request,
            response_len,
            scratch: vec![0; 64 * 1024],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            outstanding: 0,
        };
        lg.open(addr, n, timeout)?;
        Ok(lg)
    }

    fn ctl(&self, op: i32, fd: i32, idx: usize, want_write: bool) -> io::Result<()> {
        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if want_write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events,
            u64: idx as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Writes what the socket takes of the current request; arms `EPOLLOUT` if it is full.
    fn write_some(&mut self, idx: usize) -> io::Result<()> {
        let c = &mut self.conns[idx];
        while c.ex.sent < self.request.len() {
            match c.stream.write(&self.request[c.ex.sent..]) {
                Ok(n) => c.ex.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = c.stream.as_raw_fd();
                    return self.ctl(libc::EPOLL_CTL_MOD, fd, idx, true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("write on connection {idx}: {e}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Reads the response in progress on `idx`; on completion records it and, when
    /// `keep_going`, starts the next request.
    fn read_some(&mut self, idx: usize, keep_going: bool, win: &mut Window) -> io::Result<()> {
        loop {
            let c = &mut self.conns[idx];
            let want = if c.ex.busy {
                (self.response_len - c.ex.received).min(self.scratch.len())
            } else {
                1
            };
            match c.stream.read(&mut self.scratch[..want]) {
                Ok(0) => return Err(closed(idx)),
                Ok(n) if !c.ex.busy => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{n} unexpected bytes on idle connection {idx}"),
                    ))
                }
                Ok(n) => {
                    c.ex.received += n;
                    if c.ex.received == self.response_len {
                        c.ex.finish(win);
                        self.outstanding -= 1;
                        if keep_going {
                            self.start(idx)?;
                        }
                        return Ok(());
                    }
                    if n < want {
                        return Ok(()); // drained; edge-triggered epoll reports the next bytes
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("read on connection {idx}: {e}"),
                    ))
                }
            }
        }
    }
}

impl ClosedLoop for EpollLoad {
    fn conns(&self) -> usize {
        self.conns.len()
    }

    fn is_busy(&self, idx: usize) -> bool {
        self.conns[idx].ex.busy
    }

    fn add(&mut self, stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.ctl(
            libc::EPOLL_CTL_ADD,
            stream.as_raw_fd(),
            self.conns.len(),
            false,
        )?;
        self.conns.push(Conn {
            stream,
            ex: Exchange::idle(),
        });
        Ok(())
    }

    /// Begins the request and writes what the socket takes of it.
    fn start(&mut self, idx: usize) -> io::Result<()> {
        self.conns[idx].ex.begin();
        self.outstanding += 1;
        self.write_some(idx)
    }

    fn pump(&mut self, until: Instant, keep_going: bool, win: &mut Window) -> io::Result<()> {
        while let Some(wait) = next_wait(until, keep_going, self.outstanding, self.conns.len())? {
            let wait_ms = wait.as_millis().max(1) as i32;
            let ep = self.ep.as_raw_fd();
            // SAFETY: `events` is a writable array of the length passed.
            let n = unsafe {
                libc::epoll_wait(
                    ep,
                    self.events.as_mut_ptr(),
                    self.events.len() as i32,
                    wait_ms,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for i in 0..n as usize {
                let ev = self.events[i];
                let (idx, flags) = (ev.u64 as usize, ev.events);
                if flags & libc::EPOLLOUT as u32 != 0 && self.conns[idx].ex.busy {
                    let fd = self.conns[idx].stream.as_raw_fd();
                    self.ctl(libc::EPOLL_CTL_MOD, fd, idx, false)?;
                    self.write_some(idx)?;
                }
                if flags & !(libc::EPOLLOUT as u32) != 0 {
                    self.read_some(idx, keep_going, win)?;
                }
            }
        }
        Ok(())
    }
}
