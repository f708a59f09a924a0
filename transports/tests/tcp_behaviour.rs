//! Stream transport behaviour over loopback TCP: half-close, close and abort, resets,
//! pausing, misuse (section J), servers (section I) and connection options (section H).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringloop_transports::{
    errno_of, ConnectOptions, EventLoopExt, ExtraInfo, Protocol, ServerOptions, Transport,
    TransportError,
};
use support::{
    closed_port, connect, echo_server, listener, new_loop, peer, recorder, run, Event, Recorder,
};

#[test]
fn half_close_keeps_the_other_direction_open() {
    // semantics 113, 129, 208: eof_received() -> true keeps the connection half-open.
    let (lp, reports) = new_loop();
    let (port, peer) = peer(move |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap(); // until our write_eof
        s.write_all(b"reply after your eof").unwrap();
        got
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, proto).await?;
        assert!(t.can_write_eof());
        t.write(b"request").unwrap();
        t.write_eof().unwrap();
        t.write_eof().unwrap(); // a second write_eof is a no-op
        assert_eq!(t.write(b"x"), Err(TransportError::WriteAfterEof("write")));
        assert_eq!(
            t.writelines([b"x"]),
            Err(TransportError::WriteAfterEof("writelines"))
        );
        lost.await?;
        assert_eq!(
            p.borrow().shape(),
            vec![
                Event::Made,
                Event::Data(b"reply after your eof".to_vec()),
                Event::Eof,
                Event::Lost(None)
            ]
        );
        // Still an error after close (semantics 124).
        assert_eq!(t.write(b"x"), Err(TransportError::WriteAfterEof("write")));
        Ok(())
    })
    .unwrap();
    assert_eq!(peer.join().unwrap(), b"request");
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn close_flushes_then_loses_the_connection_later() {
    // semantics 119: close() flushes; connection_lost(None) is never synchronous.
    let (lp, _) = new_loop();
    let (port, peer) = peer(move |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let lp2 = lp.clone();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, proto).await?;
        t.write(&payload).unwrap();
        t.close();
        assert!(t.is_closing());
        assert!(!t.is_reading());
        assert!(
            !p.borrow()
                .events
                .iter()
                .any(|e| matches!(e, Event::Lost(_))),
            "not synchronous"
        );
        t.close(); // idempotent
        t.write(b"dropped").unwrap(); // silently dropped (semantics 125)
        lost.await?;
        // 300 kB is above the high mark: one pause, one resume, then the end.
        assert_eq!(
            p.borrow().shape(),
            vec![
                Event::Made,
                Event::PauseWriting,
                Event::ResumeWriting,
                Event::Lost(None)
            ]
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(peer.join().unwrap(), expected);
}

#[test]
fn writes_go_out_at_once_on_epoll_and_with_the_iteration_on_io_uring() {
    // asyncio leaves when a write reaches the socket to the transport (its selector
    // transports send inside write(), its proactor ones start an overlapped send). Here: on
    // epoll a write is sent there and then; on io_uring an iteration's writes go out
    // together when the loop next enters the kernel.
    let (lp, reports) = new_loop();
    let (l, port) = listener();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, _p) = connect(&lp2, port, proto).await?;
        let (mut s, _) = l.accept().unwrap();
        let epoll = lp2.backend() == ringloop_runtime::proactor::BackendKind::Epoll;
        let wait = Duration::from_millis(if epoll { 5_000 } else { 200 });
        s.set_read_timeout(Some(wait)).unwrap();
        t.write(b"ping").unwrap();
        t.write(b"pong").unwrap();
        // The loop is held here, inside this task: only bytes already sent can arrive.
        let mut got = [0u8; 8];
        let read = s.read(&mut got);
        let mut seen = if epoll {
            let n = read.unwrap();
            assert!(n >= 4, "the first write was sent inside write(): {n} bytes");
            got[..n].to_vec()
        } else {
            assert!(
                read.is_err(),
                "sent before the loop entered the kernel: {read:?}"
            );
            Vec::new()
        };
        lp2.sleep(0.05).await?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while seen.len() < 8 {
            let n = s.read(&mut got).unwrap();
            assert!(n > 0, "end of stream after {seen:?}");
            seen.extend_from_slice(&got[..n]);
        }
        assert_eq!(seen, b"pingpong");
        t.close();
        lost.await?;
        Ok(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn abort_discards_and_loses_once() {
    // semantics 121, 122
    let (lp, _) = new_loop();
    let (port, peer) = peer(move |mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let lp2 = lp.clone();
    // More than the socket takes at once: most of it is still buffered at the abort.
    let payload: Vec<u8> = (0..32 << 20).map(|i: u32| (i % 251) as u8).collect();
    let written = payload.clone();
    let epoll = lp.backend() == ringloop_runtime::proactor::BackendKind::Epoll;
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, proto).await?;
        t.set_write_buffer_limits(Some(0), None).unwrap();
        t.write(&written).unwrap();
        assert!(t.is_writing_paused());
        t.close();
        t.abort();
        t.abort();
        lost.await?;
        // No resume_writing after abort; exactly one connection_lost.
        assert_eq!(
            p.borrow().shape(),
            vec![Event::Made, Event::PauseWriting, Event::Lost(None)]
        );
        Ok(())
    })
    .unwrap();
    let got = peer.join().unwrap();
    // On io_uring nothing was sent before the abort (writes go out when the loop next
    // enters the kernel); on epoll `write()` sent what the socket took at once. The rest
    // was discarded either way.
    if !epoll {
        assert_eq!(got.len(), 0);
    }
    assert!(got.len() < payload.len(), "{} bytes arrived", got.len());
    assert_eq!(got[..], payload[..got.len()]);
}

#[test]
fn peer_reset_gives_connection_reset() {
    // semantics 117, 51: ECONNRESET reaches connection_lost, not the exception handler.
    let (lp, reports) = new_loop();
    let (connected, wait_connected) = std::sync::mpsc::channel::<()>();
    let (port, peer) = peer(move |s| {
        // Reset only once our side saw the connect complete.
        wait_connected.recv().unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (_t, p) = connect(&lp2, port, proto).await?;
        connected.send(()).unwrap();
        lost.await?;
        assert_eq!(
            p.borrow().events.last(),
            Some(&Event::Lost(Some(std::io::ErrorKind::ConnectionReset)))
        );
        Ok(())
    })
    .unwrap();
    peer.join().unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn pause_reading_in_connection_made_loses_nothing() {
    // semantics 111, 131
    struct PausedAtStart(Recorder);
    impl Protocol for PausedAtStart {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t);
            t.pause_reading();
            t.pause_reading();
            assert!(!t.is_reading());
        }
        fn data_received(&mut self, d: &[u8]) {
            self.0.data_received(d)
        }
        fn eof_received(&mut self) -> bool {
            self.0.eof_received()
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.0.connection_lost(e)
        }
    }
    let (lp, _) = new_loop();
    let (port, peer) = peer(move |mut s| {
        s.write_all(b"sent while paused").unwrap();
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, PausedAtStart(proto)).await?;
        lp2.sleep(0.2).await?;
        assert_eq!(
            p.borrow().0.events,
            vec![Event::Made],
            "nothing delivered while paused"
        );
        t.resume_reading();
        t.resume_reading();
        assert!(t.is_reading());
        lost.await?;
        assert_eq!(
            p.borrow().0.shape(),
            vec![
                Event::Made,
                Event::Data(b"sent while paused".to_vec()),
                Event::Eof,
                Event::Lost(None)
            ]
        );
        assert!(!t.is_reading());
        t.pause_reading(); // no-ops after close
        t.resume_reading();
        Ok(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn server_close_leaves_connections_working() {
    // semantics 98, 103, 104
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = echo_server(&lp2, "127.0.0.1").await?;
        assert!(server.is_serving());
        let port = server.sockets()[0].port().unwrap();
        let (proto, lost) = recorder(&lp2);
        let (t, p) = connect(&lp2, port, proto).await?;
        server.close();
        // Listening stops at once (semantics 104): a connect right now is refused.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        server.close();
        assert!(server.sockets().is_empty());
        assert!(!server.is_serving());
        // The live connection still echoes.
        t.write(b"still here").unwrap();
        for _ in 0..100 {
            if p.borrow().data() == b"still here" {
                break;
            }
            lp2.sleep(0.01).await?;
        }
        assert_eq!(p.borrow().data(), b"still here");
        // New connections are refused.
        let refused = connect(&lp2, port, Recorder::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            refused.as_io().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        // wait_closed returns only once the connection is gone.
        let waiter = lp2.create_task({
            let server = server.clone();
            async move { server.wait_closed().await }
        })?;
        lp2.sleep(0.05).await?;
        assert!(!waiter.done());
        t.close();
        lost.await?;
        waiter.await?;
        server.wait_closed().await?;
        Ok(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn start_serving_false_does_not_listen() {
    // semantics 100
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = lp2
            .create_server(
                Recorder::default,
                "127.0.0.1",
                0,
                ServerOptions {
                    start_serving: false,
                    ..Default::default()
                },
            )
            .await?;
        assert!(!server.is_serving());
        let port = server.sockets()[0].port().unwrap();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "not listening yet"
        );
        server.start_serving()?;
        server.start_serving()?;
        assert!(server.is_serving());
        let (t, _p) = connect(&lp2, port, Recorder::default()).await?;
        t.close();
        server.close();
        server.wait_closed().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn empty_host_binds_every_family_v6_only() {
    // semantics 88, 89, 91
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = echo_server(&lp2, "").await?;
        let sockets = server.sockets();
        assert!(!sockets.is_empty());
        for s in &sockets {
            let addr = s.sockname.clone().unwrap();
            assert_ne!(addr.port(), Some(0));
            let host = if addr.as_inet().unwrap().is_ipv6() {
                "::1"
            } else {
                "127.0.0.1"
            };
            let (proto, lost) = recorder(&lp2);
            let (t, p) = lp2
                .create_connection(
                    move || proto,
                    host,
                    addr.port().unwrap(),
                    ConnectOptions::default(),
                )
                .await?;
            t.write(b"x").unwrap();
            t.write_eof().unwrap();
            lost.await?;
            assert_eq!(p.borrow().data(), b"x");
        }
        server.close();
        Ok(())
    })
    .unwrap();
}

#[test]
fn local_addr_is_bound_and_conflicts_are_reported() {
    // semantics 79, 83
    let (lp, _) = new_loop();
    let (port, accepter) = peer(move |s| s);
    let (_taken, taken_port) = listener();
    let free_port = closed_port();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let options = ConnectOptions {
            local_addr: Some(("127.0.0.1".into(), free_port)),
            ..Default::default()
        };
        let (t, _) = lp2
            .create_connection(Recorder::default, "127.0.0.1", port, options)
            .await?;
        assert_eq!(t.sockname().and_then(|a| a.port()), Some(free_port));
        let fd = match t.get_extra_info("socket") {
            Some(ExtraInfo::Fd(fd)) => fd,
            other => panic!("{other:?}"),
        };
        assert!(fd >= 0);
        t.close();
        let options = ConnectOptions {
            local_addr: Some(("127.0.0.1".into(), taken_port)),
            ..Default::default()
        };
        let err = lp2
            .create_connection(Recorder::default, "127.0.0.1", port, options)
            .await
            .map(|_| ())
            .unwrap_err();
        let io = err.as_io().unwrap();
        assert_eq!(errno_of(io), Some(libc::EADDRINUSE));
        assert!(
            io.to_string().starts_with(&format!(
                "error while attempting to bind on address ('127.0.0.1', {taken_port}): address"
            )),
            "{io}"
        );
        Ok(())
    })
    .unwrap();
    let s = accepter.join().unwrap();
    // TCP_NODELAY was set on our side; check that the peer sees a connection.
    assert!(s.peer_addr().is_ok());
}

#[test]
fn nodelay_is_set_and_sock_option_is_used() {
    // semantics 83, 75
    let (lp, _) = new_loop();
    let (l, port) = listener();
    let std_sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_peer, _) = l.accept().unwrap();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let sock = socket2::Socket::from(std_sock);
        let options = ConnectOptions {
            sock: Some(sock),
            ..Default::default()
        };
        let (t, _) = lp2
            .create_connection(Recorder::default, "", None::<u16>, options)
            .await?;
        let fd = t.fileno();
        let nodelay = {
            let std = TcpStream::connect(("127.0.0.1", port)); // unrelated; keeps the listener busy
            drop(std);
            // Read TCP_NODELAY through a borrowed view of the transport's fd.
            let mut val: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: fd is the transport's open socket; val/len are valid out-pointers.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&mut val as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            val
        };
        assert_ne!(nodelay, 0, "TCP_NODELAY set");
        t.close();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let options = ConnectOptions {
            sock: Some(sock),
            ..Default::default()
        };
        let err = lp2
            .create_connection(Recorder::default, "127.0.0.1", port, options)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host/port and sock can not be specified at the same time"
        );
        let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let options = ConnectOptions {
            sock: Some(udp),
            ..Default::default()
        };
        let err = lp2
            .create_connection(Recorder::default, "", None::<u16>, options)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().starts_with("A Stream Socket was expected"),
            "{err}"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn exception_in_data_received_is_fatal_and_reported() {
    // semantics 116 (selector behaviour): handler called, connection_lost(error).
    struct Boom(Recorder);
    impl Protocol for Boom {
        fn connection_made(&mut self, t: &Transport) {
            self.0.connection_made(t)
        }
        fn data_received(&mut self, _d: &[u8]) {
            panic!("boom");
        }
        fn connection_lost(&mut self, e: Option<std::io::Error>) {
            self.0.connection_lost(e)
        }
    }
    let (lp, reports) = new_loop();
    let (port, peer) = peer(move |mut s| {
        s.write_all(b"trigger").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (_t, p) = connect(&lp2, port, Boom(proto)).await?;
        lost.await?;
        assert!(matches!(
            p.borrow().0.events.last(),
            Some(Event::Lost(Some(_)))
        ));
        Ok(())
    })
    .unwrap();
    peer.join().unwrap();
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with("Fatal error: protocol.data_received() call failed."),
        "{reports:?}"
    );
}
