//! Scenarios that count open file descriptors (`/proc/self/fd`). They run one after another
//! in this binary's single test, so no other test opens or closes fds meanwhile.

mod support;

use std::cell::Cell;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, Future, LoopError};
use ringloop_transports::{ConnectOptions, EventLoopExt, Protocol, ServerOptions, Transport};
use support::{new_loop, open_fds, run, Recorder};

/// Echoes, pausing its reads while its own writes are paused (proper backpressure).
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data).unwrap();
        }
    }
    fn pause_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.pause_reading();
        }
    }
    fn resume_writing(&mut self) {
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }
}

/// A tiny deterministic generator (xorshift) for chunk sizes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The payload: a 251-byte cycle (prime, so chunk boundaries never line up with it),
/// shifted per connection; connection `c`'s byte `i` is `PATTERN[(c + i) % 251]`.
fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..(2usize << 20) + 251).map(|i| (i % 251) as u8).collect())
}

fn expected(conn: usize, from: usize, len: usize) -> &'static [u8] {
    let start = (conn + from) % 251 + (from / 251) * 251;
    &pattern()[start..start + len]
}

/// Sends `total` bytes in random chunks while not paused; checks the echo byte by byte.
struct Client {
    conn: usize,
    total: usize,
    sent: usize,
    received: usize,
    paused: bool,
    rng: Rng,
    transport: Option<Transport>,
    done: Future<()>,
    ok: Rc<Cell<usize>>,
}

impl Client {
    fn pump(&mut self) {
        let Some(t) = self.transport.clone() else {
            return;
        };
        while !self.paused && self.sent < self.total {
            let n = (1 + self.rng.next() as usize % 65536).min(self.total - self.sent);
            t.write(expected(self.conn, self.sent, n)).unwrap();
            self.sent += n;
            // The pause for this write arrives once this method returns; stop early then.
            if t.is_writing_paused() {
                break;
            }
        }
    }
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
        self.pump();
    }
    fn data_received(&mut self, data: &[u8]) {
        assert!(
            data == expected(self.conn, self.received, data.len()),
            "conn {}: wrong bytes at {}",
            self.conn,
            self.received
        );
        self.received += data.len();
        if self.received == self.total {
            if let Some(t) = &self.transport {
                t.close();
            }
        }
    }
    fn pause_writing(&mut self) {
        self.paused = true;
    }
    fn resume_writing(&mut self) {
        self.paused = false;
        self.pump();
    }
    fn connection_lost(&mut self, error: Option<std::io::Error>) {
        assert!(error.is_none(), "conn {}: {error:?}", self.conn);
        if self.received == self.total {
            self.ok.set(self.ok.get() + 1);
        }
        let _ = self.done.set_result(());
    }
}

fn stress(lp: &EventLoop, host: &'static str, connections: usize, total: usize) {
    let lp2 = lp.clone();
    let ok = Rc::new(Cell::new(0));
    let ok2 = ok.clone();
    run(lp, 120, async move {
        let options = ServerOptions {
            backlog: 2048,
            ..Default::default()
        };
        let server = lp2.create_server(Echo::default, host, 0, options).await?;
        let port = server.sockets()[0].port().unwrap();
        let mut waits = Vec::new();
        let mut connects = Vec::new();
        for conn in 0..connections {
            let done = lp2.create_future::<()>();
            waits.push(done.clone());
            let client = Client {
                conn,
                total,
                sent: 0,
                received: 0,
                paused: false,
                rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1)),
                transport: None,
                done,
                ok: ok2.clone(),
            };
            let fut = lp2.create_connection(move || client, host, port, ConnectOptions::default());
            connects.push(lp2.create_task(async move { fut.await.map(|_| ()) })?);
        }
        for c in connects {
            c.await?;
        }
        for w in waits {
            w.await?;
        }
        server.close();
        server.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(
        ok.get(),
        connections,
        "every connection echoed every byte in order"
    );
}

fn cancelled_connect(lp: &EventLoop) {
    // semantics 81: a pending connect, cancelled, closes its socket. A loopback listener
    // that never accepts, with its queue filled, leaves new connects pending.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    full.listen(0).unwrap();
    let port = full.local_addr().unwrap().as_socket().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into());
        fillers.push(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = open_fds();
    let lp2 = lp.clone();
    let pending = run(lp, 10, async move {
        let lp3 = lp2.clone();
        let task = lp2.create_task(async move {
            lp3.create_connection(
                Recorder::default,
                "127.0.0.1",
                port,
                ConnectOptions::default(),
            )
            .await
            .map(|(t, _)| t.abort())
        })?;
        lp2.sleep(0.1).await?;
        let pending = !task.done();
        if pending {
            assert!(task.cancel());
            assert!(matches!(task.await, Err(LoopError::Cancelled)));
        }
        lp2.sleep(0.05).await?;
        Ok(pending)
    })
    .unwrap();
    assert_eq!(
        open_fds(),
        before,
        "no fd leaked (the connect was pending: {pending})"
    );
    drop(fillers);
}

/// A loop closed with a server, a connection and a datagram endpoint still open leaves no
/// fd behind once the crate is next used (semantics 134's spirit: the loop's close releases
/// what it owned).
fn loop_closed_with_open_transports(main: &EventLoop) {
    let before = open_fds();
    let lp = EventLoop::new().unwrap();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = lp2
            .create_server(Echo::default, "127.0.0.1", 0, ServerOptions::default())
            .await?;
        let port = server.sockets()[0].port().unwrap();
        let (t, _) = lp2
            .create_connection(Echo::default, "127.0.0.1", port, ConnectOptions::default())
            .await?;
        t.write(b"left open").unwrap();
        let options = ringloop_transports::DatagramOptions {
            local_addr: Some(("127.0.0.1".into(), 0)),
            ..Default::default()
        };
        let _udp = lp2.create_datagram_endpoint(|| Udp, options).await?;
        lp2.sleep(0.02).await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    lp.close().unwrap();
    drop(lp);
    // The next use of the crate closes what the closed loop left.
    let main2 = main.clone();
    run(main, 10, async move {
        let server = main2
            .create_server(Echo::default, "127.0.0.1", 0, ServerOptions::default())
            .await?;
        server.close();
        server.wait_closed().await?;
        main2.sleep(0.01).await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(
        open_fds(),
        before,
        "the closed loop's transports closed their fds"
    );
}

struct Udp;
impl ringloop_transports::DatagramProtocol for Udp {}

/// 1,000 connections need ~2,000 fds: raise the soft limit to the hard one if it is lower.
fn raise_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct; raising the soft limit of this
    // test process up to its hard limit affects nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < 4096 {
            rl.rlim_cur = rl.rlim_max.min(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

#[test]
fn no_fd_leaks() {
    raise_nofile_limit();
    let (lp, reports) = new_loop();
    // Warm up: the loop's executor threads, the flush hook, …
    stress(&lp, "127.0.0.1", 2, 1000);
    let before = open_fds();
    // The scale: 1,000 connections each echoing 1 MiB, IPv4; a smaller IPv6 round.
    stress(&lp, "127.0.0.1", 1000, 1 << 20);
    stress(&lp, "::1", 50, 256 * 1024);
    assert_eq!(open_fds(), before, "every connection's fds are closed");
    cancelled_connect(&lp);
    loop_closed_with_open_transports(&lp);
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
    lp.close().unwrap();
}
