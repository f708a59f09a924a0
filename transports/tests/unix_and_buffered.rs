//! Unix-domain stream sockets, and BufferedProtocol reads (section L).

mod support;

use ringloop_runtime::LoopError;
use ringloop_transports::{BufferedProtocol, EventLoopExt, Protocol, ServerOptions, Transport};
use support::{new_loop, recorder, run, Event, Recorder};

#[test]
fn unix_server_and_connection_echo() {
    let (lp, reports) = new_loop();
    let dir = std::env::temp_dir().join(format!("ringloop-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let lp2 = lp.clone();
    let p2 = path.clone();
    run(&lp, 10, async move {
        let server = lp2
            .create_unix_server(
                Recorder::echoing,
                Some(p2.clone()),
                ServerOptions::default(),
            )
            .await?;
        let (proto, lost) = recorder(&lp2);
        let (t, p) = lp2.create_unix_connection(move || proto, p2).await?;
        t.write(b"over a unix socket").unwrap();
        t.write_eof().unwrap();
        lost.await?;
        assert_eq!(p.borrow().data(), b"over a unix socket");
        server.close();
        server.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

/// Reads through small buffers of its own.
struct Small {
    buf: [u8; 5],
    got: Vec<u8>,
    calls: Vec<&'static str>,
    lost: Option<ringloop_runtime::Future<()>>,
}

impl Protocol for Small {
    fn connection_made(&mut self, t: &Transport) {
        self.calls.push("CM");
        let _ = t;
    }
    fn eof_received(&mut self) -> bool {
        self.calls.push("ER");
        false
    }
    fn connection_lost(&mut self, _e: Option<std::io::Error>) {
        self.calls.push("CL");
        if let Some(l) = self.lost.take() {
            let _ = l.set_result(());
        }
    }
    fn as_buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
        Some(self)
    }
}

impl BufferedProtocol for Small {
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        assert!(size_hint > 0);
        self.calls.push("GB");
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.calls.push("BU");
        self.got.extend_from_slice(&self.buf[..n]);
    }
}

#[test]
fn buffered_protocol_reads_into_its_own_buffer() {
    // semantics 142: CM [GB BU]* ER CL, data split across small buffers.
    let (lp, _) = new_loop();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let lp2 = lp.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut b = b;
        b.write_all(b"twelve bytes").unwrap();
    });
    run(&lp, 10, async move {
        let lost = lp2.create_future::<()>();
        let small = Small {
            buf: [0; 5],
            got: Vec::new(),
            calls: Vec::new(),
            lost: Some(lost.clone()),
        };
        let sock = socket2::Socket::from(std::os::fd::OwnedFd::from(a));
        let options = ringloop_transports::ConnectOptions {
            sock: Some(sock),
            ..Default::default()
        };
        let (_t, p) = lp2
            .create_connection(move || small, "", None::<u16>, options)
            .await?;
        lost.await?;
        let p = p.borrow();
        assert_eq!(p.got, b"twelve bytes");
        assert_eq!(p.calls.first(), Some(&"CM"));
        assert_eq!(&p.calls[p.calls.len() - 2..], ["ER", "CL"]);
        let middle = &p.calls[1..p.calls.len() - 2];
        assert!(middle.chunks(2).all(|c| c == ["GB", "BU"]), "{middle:?}");
        Ok::<_, LoopError>(())
    })
    .unwrap();
    writer.join().unwrap();
    let _ = Event::Made;
}

/// Returns an empty buffer: a fatal error.
struct Empty {
    lost: Option<ringloop_runtime::Future<Option<std::io::ErrorKind>>>,
    updated: bool,
}

impl Protocol for Empty {
    fn connection_lost(&mut self, e: Option<std::io::Error>) {
        if let Some(l) = self.lost.take() {
            let _ = l.set_result(e.map(|e| e.kind()));
        }
    }
    fn as_buffered(&mut self) -> Option<&mut dyn BufferedProtocol> {
        Some(self)
    }
}

impl BufferedProtocol for Empty {
    fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
        &mut []
    }
    fn buffer_updated(&mut self, _n: usize) {
        self.updated = true;
    }
}

#[test]
fn an_empty_buffer_from_get_buffer_is_fatal() {
    // semantics 143
    let (lp, reports) = new_loop();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    {
        use std::io::Write;
        let mut b = &b;
        b.write_all(b"data").unwrap();
    }
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let lost = lp2.create_future::<Option<std::io::ErrorKind>>();
        let proto = Empty {
            lost: Some(lost.clone()),
            updated: false,
        };
        let sock = socket2::Socket::from(std::os::fd::OwnedFd::from(a));
        let options = ringloop_transports::ConnectOptions {
            sock: Some(sock),
            ..Default::default()
        };
        let (_t, p) = lp2
            .create_connection(move || proto, "", None::<u16>, options)
            .await?;
        assert!(lost.await?.is_some(), "connection_lost with the error");
        assert!(!p.borrow().updated, "buffer_updated is not called");
        Ok::<_, LoopError>(())
    })
    .unwrap();
    drop(b);
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].contains("get_buffer() returned an empty buffer"),
        "{reports:?}"
    );
}
