//! TCP connections over loopback: echo, ordering, extra info, errors (sections H, I, J).

mod support;

use std::rc::Rc;

use ringloop_runtime::LoopError;
use ringloop_transports::{errno_of, ConnectOptions, EventLoopExt, ExtraInfo, ServerOptions};
use support::{closed_port, listener, new_loop, recorder, run, Event, Recorder};

#[test]
fn echo_over_ipv4_and_ipv6() {
    // semantics 70, 101, 109, 110, 113, 119
    let (lp, reports) = new_loop();
    for host in ["127.0.0.1", "::1"] {
        let lp2 = lp.clone();
        let out = run(&lp, 10, async move {
            let server = lp2
                .create_server(Recorder::echoing, host, 0, ServerOptions::default())
                .await?;
            let port = server.sockets()[0].port().unwrap();
            assert_ne!(port, 0);
            let (client, lost) = recorder(&lp2);
            let (transport, proto) = lp2
                .create_connection(move || client, host, port, ConnectOptions::default())
                .await?;
            assert_eq!(
                proto.borrow().events,
                vec![Event::Made],
                "returns after connection_made"
            );
            let peer = transport.peername().unwrap();
            assert_eq!(peer.port(), Some(port));
            // write(b"") does nothing at all (semantics 123).
            transport.write(b"").unwrap();
            assert_eq!(transport.get_write_buffer_size(), 0);
            transport.write(b"hello ").unwrap();
            transport.writelines([b"wor".as_slice(), b"ld"]).unwrap();
            transport.write_eof().unwrap();
            lost.await?;
            let events = proto.borrow().shape();
            assert_eq!(
                events,
                vec![
                    Event::Made,
                    Event::Data(b"hello world".to_vec()),
                    Event::Eof,
                    Event::Lost(None)
                ]
            );
            // sockname/peername stay after close; the fd reads -1 (semantics 130).
            assert_eq!(transport.peername(), Some(peer));
            assert_eq!(transport.get_extra_info("socket"), Some(ExtraInfo::Fd(-1)));
            assert!(transport.get_extra_info("nonsense").is_none());
            server.close();
            server.wait_closed().await?;
            Ok::<_, LoopError>(())
        });
        out.unwrap();
    }
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
    lp.close().unwrap();
}

#[test]
fn connection_refused() {
    // semantics 80
    let (lp, _) = new_loop();
    let port = closed_port();
    let lp2 = lp.clone();
    let err = run(&lp, 10, async move {
        lp2.create_connection(
            Recorder::default,
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        )
        .await
        .map(|_| ())
    })
    .unwrap_err();
    let io = err.as_io().expect("an OS error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(errno_of(io), Some(libc::ECONNREFUSED));
    lp.close().unwrap();
}

#[test]
fn unknown_host() {
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    let err = run(&lp, 30, async move {
        lp2.create_connection(
            Recorder::default,
            "nonexistent.invalid",
            80,
            ConnectOptions::default(),
        )
        .await
        .map(|_| ())
    })
    .unwrap_err();
    let io = err.as_io().expect("an OS error");
    assert!(
        ringloop_transports::ResolveError::find(io).is_some(),
        "{err}"
    );
    lp.close().unwrap();
}

#[test]
fn address_in_use() {
    // semantics 95
    let (lp, _) = new_loop();
    let (_taken, port) = listener();
    let lp2 = lp.clone();
    let err = run(&lp, 10, async move {
        lp2.create_server(
            Recorder::default,
            "127.0.0.1",
            port,
            ServerOptions {
                reuse_address: false,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
    })
    .unwrap_err();
    let io = err.as_io().expect("an OS error");
    assert_eq!(errno_of(io), Some(libc::EADDRINUSE), "{err}");
    assert!(
        io.to_string().contains(&format!("('127.0.0.1', {port})")),
        "{io}"
    );
    lp.close().unwrap();
    drop(Rc::new(()));
}

#[test]
fn write_buffer_size_is_zero_once_the_kernel_took_the_bytes() {
    // semantics 141: bytes handed to the kernel count until the send is confirmed; once
    // the peer has them, nothing is buffered (the send finished unreported, and asking
    // takes it back).
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = lp2
            .create_server(Recorder::echoing, "127.0.0.1", 0, ServerOptions::default())
            .await?;
        let port = server.sockets()[0].port().unwrap();
        let (client, _lost) = recorder(&lp2);
        let (transport, proto) = lp2
            .create_connection(move || client, "127.0.0.1", port, ConnectOptions::default())
            .await?;
        transport.write(b"ping").unwrap();
        assert_eq!(transport.get_write_buffer_size(), 4, "queued");
        while proto.borrow().data() != b"ping" {
            lp2.sleep(0.001).await?;
        }
        assert_eq!(transport.get_write_buffer_size(), 0, "echoed, so sent");
        transport.close();
        server.close();
        server.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
