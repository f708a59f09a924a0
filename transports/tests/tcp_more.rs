//! More pinned behaviours: protocol failures (semantics 82, 115, 140), `set_protocol`,
//! servers kept alive by the loop (99), `serve_forever` (104), closing the loop during a
//! lookup (69).

mod support;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, LoopError};
use ringloop_transports::{
    AddrInfoHints, ConnectOptions, EventLoopExt, Protocol, ProtocolRef, ServerOptions, Transport,
};
use support::{connect, echo_server, new_loop, peer, recorder, run, Event, Recorder};

#[test]
fn panic_in_connection_made_is_reported_and_the_connection_stays() {
    // semantics 82
    struct Bad(Recorder);
    impl Protocol for Bad {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t);
            panic!("connection_made failed");
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.0.connection_lost(e)
        }
    }
    let (lp, reports) = new_loop();
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let (port, peer) = peer(move |_s| {
        let _ = wait_done.recv();
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, Bad(proto)).await?;
        assert!(!t.is_closing());
        t.close();
        done.send(()).unwrap();
        lost.await?;
        assert_eq!(p.borrow().0.shape(), vec![Event::Made, Event::Lost(None)]);
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
    assert_eq!(reports.borrow().len(), 1, "{:?}", reports.borrow());
}

#[test]
fn panic_in_eof_received_is_fatal() {
    // semantics 115
    struct Bad(Recorder);
    impl Protocol for Bad {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t)
        }
        fn eof_received(&mut self) -> bool {
            panic!("eof_received failed");
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.0.connection_lost(e)
        }
    }
    let (lp, reports) = new_loop();
    let (port, peer) = peer(drop);
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (_t, p) = connect(&lp2, port, Bad(proto)).await?;
        lost.await?;
        assert!(matches!(
            p.borrow().0.events.last(),
            Some(Event::Lost(Some(_)))
        ));
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].starts_with("Fatal error: protocol.eof_received() call failed."),
        "{reports:?}"
    );
}

#[test]
fn panic_in_pause_writing_is_reported_and_the_transport_carries_on() {
    // semantics 140
    struct Bad(Option<Transport>);
    impl Protocol for Bad {
        fn connection_made(&mut self, t: &Transport) {
            self.0 = Some(t.clone());
        }
        fn pause_writing(&mut self) {
            panic!("pause_writing failed");
        }
    }
    let (lp, reports) = new_loop();
    let (port, peer) = peer(move |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (t, _p) = lp2
            .create_connection(|| Bad(None), "127.0.0.1", port, ConnectOptions::default())
            .await?;
        t.write(&vec![1u8; 100_000]).unwrap();
        assert!(!t.is_closing());
        t.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(peer.join().unwrap(), 100_000);
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].starts_with("protocol.pause_writing() failed"),
        "{reports:?}"
    );
}

#[test]
fn set_protocol_switches_the_receiver() {
    let (lp, _) = new_loop();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (port, peer) = peer(move |mut s| {
        wait_go.recv().unwrap();
        s.write_all(b"for the second protocol").unwrap();
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (t, first) = lp2
            .create_connection(
                Recorder::default,
                "127.0.0.1",
                port,
                ConnectOptions::default(),
            )
            .await?;
        let (mut second, lost) = recorder(&lp2);
        // set_protocol does not call connection_made; the recorder expects it first.
        second.events.push(Event::Made);
        let second = Rc::new(RefCell::new(second));
        t.set_protocol(second.clone() as ProtocolRef);
        assert!(Rc::ptr_eq(
            &(t.get_protocol().unwrap()),
            &(second.clone() as ProtocolRef)
        ));
        go.send(()).unwrap();
        lost.await?;
        assert_eq!(first.borrow().events, vec![Event::Made]);
        assert_eq!(second.borrow().data(), b"for the second protocol");
        assert!(t.get_protocol().is_none(), "released after connection_lost");
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn set_protocol_inside_data_received_switches_every_later_event() {
    // A protocol hands over to another from inside its own data_received: get_protocol
    // answers the new one at once; the pause_writing() raised by a write in that same call,
    // the next data, the end of stream and connection_lost all go to the new one.
    struct First {
        inner: Recorder,
        next: ProtocolRef,
        switched: Option<ringloop_runtime::Future<()>>,
    }
    impl Protocol for First {
        fn connection_made(&mut self, t: &Transport) {
            self.inner.connection_made(t)
        }
        fn data_received(&mut self, data: &[u8]) {
            self.inner.data_received(data);
            let t = self.inner.transport.clone().unwrap();
            t.set_protocol(self.next.clone());
            assert!(Rc::ptr_eq(&t.get_protocol().unwrap(), &self.next));
            // Above the 64 KiB high mark: pauses the protocol, which is now the second.
            t.write(&vec![7u8; 100_000]).unwrap();
            if let Some(switched) = self.switched.take() {
                let _ = switched.set_result(());
            }
        }
        fn eof_received(&mut self) -> bool {
            self.inner.eof_received()
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.inner.connection_lost(e)
        }
        fn pause_writing(&mut self) {
            self.inner.pause_writing()
        }
        fn resume_writing(&mut self) {
            self.inner.resume_writing()
        }
    }
    let (lp, reports) = new_loop();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (port, peer) = peer(move |mut s| {
        s.write_all(b"one").unwrap();
        wait_go.recv().unwrap();
        s.write_all(b"two").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (mut second, lost) = recorder(&lp2);
        // set_protocol does not call connection_made; the recorder expects it first.
        second.events.push(Event::Made);
        let second = Rc::new(RefCell::new(second));
        let switched = lp2.create_future::<()>();
        let first = First {
            inner: Recorder::default(),
            next: second.clone() as ProtocolRef,
            switched: Some(switched.clone()),
        };
        let (t, first) = connect(&lp2, port, first).await?;
        switched.await?;
        go.send(()).unwrap();
        lost.await?;
        assert_eq!(
            first.borrow().inner.events,
            vec![Event::Made, Event::Data(b"one".to_vec())]
        );
        let second = second.borrow();
        assert_eq!(second.events[..2], [Event::Made, Event::PauseWriting]);
        assert_eq!(second.data(), b"two");
        let shape: Vec<Event> = second
            .shape()
            .into_iter()
            .filter(|e| *e != Event::ResumeWriting)
            .collect();
        assert_eq!(
            shape,
            vec![
                Event::Made,
                Event::PauseWriting,
                Event::Data(b"two".to_vec()),
                Event::Eof,
                Event::Lost(None)
            ]
        );
        assert!(t.get_protocol().is_none(), "released after connection_lost");
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(peer.join().unwrap(), 100_000);
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn the_loop_keeps_a_serving_server_alive() {
    // semantics 99
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = echo_server(&lp2, "127.0.0.1").await?;
        let port = server.sockets()[0].port().unwrap();
        drop(server);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"ping").unwrap();
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4];
        for _ in 0..200 {
            lp2.sleep(0.005).await?;
            if s.read_exact(&mut buf).is_ok() {
                break;
            }
        }
        assert_eq!(&buf, b"ping");
        Ok::<_, LoopError>(())
    })
    .unwrap();
}

#[test]
fn serve_forever_rules() {
    // semantics 104
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = lp2
            .create_server(Recorder::default, "127.0.0.1", 0, ServerOptions::default())
            .await?;
        let s2 = server.clone();
        let forever = lp2.create_task(async move { s2.serve_forever().await })?;
        lp2.sleep(0.01).await?;
        let again = server.serve_forever().await.unwrap_err();
        assert!(
            again
                .to_string()
                .contains("is already being awaited on serve_forever()"),
            "{again}"
        );
        forever.cancel();
        assert!(matches!(forever.await, Err(LoopError::Cancelled)));
        assert!(!server.is_serving());
        assert!(server.sockets().is_empty());
        let closed = server.serve_forever().await.unwrap_err();
        assert!(closed.to_string().contains("is closed"), "{closed}");
        Ok::<_, LoopError>(())
    })
    .unwrap();
}

#[test]
fn closing_the_loop_during_a_lookup_does_not_hang() {
    // semantics 69
    let lp = EventLoop::new().unwrap();
    let hints = AddrInfoHints {
        socktype: libc::SOCK_STREAM,
        ..Default::default()
    };
    let lookup = lp.getaddrinfo(Some("localhost"), 80, hints);
    let _task = lp
        .create_task(async move { lookup.await.map(|_| ()) })
        .unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    lp.close().unwrap();
}

#[test]
fn async_lookups_equal_the_blocking_calls() {
    // semantics 67: a differential oracle against libc.
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 30, async move {
        let hints = AddrInfoHints {
            socktype: libc::SOCK_STREAM,
            ..Default::default()
        };
        for host in ["localhost", "127.0.0.1", "::1"] {
            let got = lp2.getaddrinfo(Some(host), 80, hints).await?;
            let want = ringloop_transports::getaddrinfo_blocking(Some(host), &80.into(), &hints)?;
            assert_eq!(
                got.iter().map(|a| a.addr).collect::<Vec<_>>(),
                want.iter().map(|a| a.addr).collect::<Vec<_>>()
            );
        }
        let err = lp2
            .getaddrinfo(Some("nonexistent.invalid"), 80, hints)
            .await
            .unwrap_err();
        let want = ringloop_transports::getaddrinfo_blocking(
            Some("nonexistent.invalid"),
            &80.into(),
            &hints,
        )
        .unwrap_err();
        let got = err
            .as_io()
            .and_then(ringloop_transports::ResolveError::find)
            .cloned();
        assert_eq!(got.as_ref(), ringloop_transports::ResolveError::find(&want));
        let addr: std::net::SocketAddr = "127.0.0.1:22".parse().unwrap();
        let got = lp2.getnameinfo(addr, libc::NI_NUMERICHOST).await?;
        assert_eq!(
            got,
            ringloop_transports::getnameinfo_blocking(&addr, libc::NI_NUMERICHOST)?
        );
        Ok::<_, LoopError>(())
    })
    .unwrap();
}

fn sockopt(fd: i32, level: i32, name: i32) -> i32 {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket of the server under test; val/len are valid out-pointers.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    val
}

#[test]
fn reuse_address_by_default_reuse_port_on_request() {
    // semantics 92, 93, 94
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let a = lp2
            .create_server(Recorder::default, "127.0.0.1", 0, ServerOptions::default())
            .await?;
        let fd = a.sockets()[0].fd;
        assert_ne!(sockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR), 0);
        assert_eq!(sockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT), 0);
        a.close();
        let shared = ServerOptions {
            reuse_port: true,
            ..Default::default()
        };
        let b = lp2
            .create_server(Recorder::default, "127.0.0.1", 0, shared)
            .await?;
        let port = b.sockets()[0].port().unwrap();
        assert_ne!(
            sockopt(b.sockets()[0].fd, libc::SOL_SOCKET, libc::SO_REUSEPORT),
            0
        );
        let shared = ServerOptions {
            reuse_port: true,
            ..Default::default()
        };
        let c = lp2
            .create_server(Recorder::default, "127.0.0.1", port, shared)
            .await?;
        assert_eq!(c.sockets()[0].port(), Some(port));
        b.close();
        c.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
}

#[test]
fn set_protocol_inside_data_received_keeps_the_old_protocol_until_it_returns() {
    // The transport holds the only `Rc` of the first protocol: it lets go of it (and so
    // drops it) only once the data_received that replaced it has returned, and the next
    // data goes to the second protocol.
    type Log = Rc<RefCell<Vec<String>>>;
    struct First {
        log: Log,
        transport: Option<Transport>,
        next: Option<ProtocolRef>,
        switched: Option<ringloop_runtime::Future<()>>,
    }
    impl Drop for First {
        fn drop(&mut self) {
            self.log.borrow_mut().push("first dropped".into());
        }
    }
    impl Protocol for First {
        fn connection_made(&mut self, t: &Transport) {
            self.transport = Some(t.clone());
        }
        fn data_received(&mut self, data: &[u8]) {
            let got = format!("first got {}", String::from_utf8_lossy(data));
            self.log.borrow_mut().push(got);
            if let (Some(t), Some(next)) = (&self.transport, self.next.take()) {
                t.set_protocol(next);
            }
            // Still alive: its fields are there to use.
            self.log.borrow_mut().push("first returns".into());
            if let Some(switched) = self.switched.take() {
                let _ = switched.set_result(());
            }
        }
    }
    struct Second {
        log: Log,
        lost: Option<ringloop_runtime::Future<()>>,
    }
    impl Protocol for Second {
        fn data_received(&mut self, data: &[u8]) {
            let got = format!("second got {}", String::from_utf8_lossy(data));
            self.log.borrow_mut().push(got);
        }
        fn connection_lost(&mut self, _e: Option<std::io::Error>) {
            if let Some(lost) = self.lost.take() {
                let _ = lost.set_result(());
            }
        }
    }
    let (lp, reports) = new_loop();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (port, peer) = peer(move |mut s| {
        s.write_all(b"one").unwrap();
        wait_go.recv().unwrap();
        s.write_all(b"two").unwrap();
    });
    let log: Log = Rc::default();
    let lp2 = lp.clone();
    let log2 = log.clone();
    run(&lp, 10, async move {
        let lost = lp2.create_future::<()>();
        let second = Second {
            log: log2.clone(),
            lost: Some(lost.clone()),
        };
        let switched = lp2.create_future::<()>();
        let first = First {
            log: log2,
            transport: None,
            next: Some(Rc::new(RefCell::new(second)) as ProtocolRef),
            switched: Some(switched.clone()),
        };
        let (t, first) = connect(&lp2, port, first).await?;
        drop(first);
        switched.await?;
        go.send(()).unwrap();
        lost.await?;
        assert!(t.get_protocol().is_none(), "released after connection_lost");
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "first got one",
            "first returns",
            "first dropped",
            "second got two"
        ]
    );
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn an_over_aligned_protocol_gets_its_data() {
    // The transport finds the protocol inside its `Rc<RefCell<..>>` once, for every later
    // call: an alignment above the `Rc`'s own must not throw it off.
    #[repr(align(128))]
    struct Aligned(Recorder);
    impl Protocol for Aligned {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t)
        }
        fn data_received(&mut self, data: &[u8]) {
            assert_eq!(self as *const Aligned as usize % 128, 0);
            self.0.data_received(data)
        }
        fn eof_received(&mut self) -> bool {
            self.0.eof_received()
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.0.connection_lost(e)
        }
    }
    let (lp, reports) = new_loop();
    let (port, peer) = peer(move |mut s| {
        s.write_all(b"aligned").unwrap();
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (_t, p) = connect(&lp2, port, Aligned(proto)).await?;
        lost.await?;
        assert_eq!(p.borrow().0.data(), b"aligned");
        assert_eq!(
            p.borrow().0.shape(),
            vec![
                Event::Made,
                Event::Data(b"aligned".to_vec()),
                Event::Eof,
                Event::Lost(None)
            ]
        );
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
