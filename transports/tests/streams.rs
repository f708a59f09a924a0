//! Streams (section R): open_connection/start_server, StreamReader and StreamWriter.

mod support;

use std::io::{Read, Write};

use ringloop_runtime::{EventLoop, LoopError};
use ringloop_transports::streams::{
    self, IncompleteReadError, LimitOverrunError, StreamReader, StreamWriter,
};
use ringloop_transports::ServerOptions;
use support::{closed_port, new_loop, peer, run};

/// A peer thread that sends `data` then closes.
fn peer_sending(data: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    peer(move |mut s| {
        s.write_all(data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    })
}

#[test]
fn reads_lines_exactly_until_and_to_eof() {
    // semantics 200, 201, 202, 203, 207
    let (lp, reports) = new_loop();
    let (port, peer) = peer_sending(b"line one\nline two\nABCDEFGH--rest of it\npartial");
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (r, w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        assert_eq!(r.read(0).await?, b"");
        assert_eq!(r.readline().await?, b"line one\n");
        assert_eq!(r.readuntil(b"\n").await?, b"line two\n");
        assert_eq!(r.readexactly(4).await?, b"ABCD");
        assert_eq!(r.readexactly(0).await?, b"");
        assert_eq!(r.readuntil(b"--").await?, b"EFGH--");
        let some = r.read(3).await?;
        assert!(!some.is_empty() && some.len() <= 3);
        let rest = r.readline().await?;
        assert_eq!([some, rest].concat(), b"rest of it\n");
        assert_eq!(
            r.readline().await?,
            b"partial",
            "the partial last line at EOF"
        );
        assert_eq!(r.readline().await?, b"");
        assert!(r.at_eof());
        assert_eq!(r.read(-1).await?, b"");
        let err = r.readexactly(1).await.unwrap_err();
        let incomplete = IncompleteReadError::find(&err).expect("IncompleteReadError");
        assert_eq!(incomplete.expected, Some(1));
        let err = r.readuntil(b"").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Separator should be at least one-byte string"
        );
        w.write(b"bye").unwrap();
        w.close();
        assert!(w.is_closing());
        w.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert_eq!(peer.join().unwrap(), b"bye");
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn readexactly_reports_partial_data_at_eof() {
    // semantics 203
    let (lp, _) = new_loop();
    let (port, peer) = peer_sending(&[b'x'; 18]);
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (r, w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        let err = r.readexactly(36).await.unwrap_err();
        let incomplete = IncompleteReadError::find(&err).expect("IncompleteReadError");
        assert_eq!(incomplete.partial.len(), 18);
        assert_eq!(
            incomplete.to_string(),
            "18 bytes read on a total of 36 expected bytes"
        );
        w.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn limits_and_backpressure() {
    // semantics 199, 201, 202: over-limit lines; reads larger than the limit do not deadlock.
    let (lp, _) = new_loop();
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big: &'static [u8] = BIG.get_or_init(|| {
        let mut v = b"1234567\n12345678\nabcdefghijklmnop".to_vec();
        v.extend(std::iter::repeat_n(b'z', 100_000));
        v
    });
    let (port, peer) = peer_sending(big);
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (r, w) =
            streams::open_connection_with(&lp2, "127.0.0.1", port, 7, Default::default()).await?;
        assert_eq!(
            r.readline().await?,
            b"1234567\n",
            "the limit excludes the separator"
        );
        let err = r.readline().await.unwrap_err();
        assert!(
            err.to_string().contains("chunk is longer than limit"),
            "{err}"
        );
        // The overlong line was consumed; readuntil past the limit keeps data buffered.
        let err = r.readuntil(b"\n").await.unwrap_err();
        let overrun = LimitOverrunError::find(&err).expect("LimitOverrunError");
        assert!(overrun.consumed > 7);
        assert_eq!(r.readexactly(16).await?, b"abcdefghijklmnop");
        let rest = r.readexactly(100_000).await?;
        assert!(rest.iter().all(|&b| b == b'z'));
        w.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn start_server_echoes_and_reports_failures() {
    // semantics 206, 208, 209
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let server = streams::start_server(
            &lp2,
            |r: StreamReader, w: StreamWriter| async move {
                loop {
                    let line = r.readline().await?;
                    if line.is_empty() {
                        break;
                    }
                    if line == b"fail\n" {
                        return Err(LoopError::invalid_argument("handler failed on purpose"));
                    }
                    w.write(&line)?;
                    w.drain().await?;
                }
                // EOF read, but the connection is half-open: we can still write.
                w.write(b"bye\n")?;
                w.close();
                Ok(())
            },
            "127.0.0.1",
            0,
            streams::DEFAULT_LIMIT,
            ServerOptions::default(),
        )
        .await?;
        let port = server.sockets()[0].port().unwrap();
        let (r, w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        for i in 0..50 {
            let line = format!("message {i}\n");
            w.write(line.as_bytes())?;
            w.drain().await?;
            assert_eq!(r.readline().await?, line.as_bytes());
        }
        w.write_eof()?;
        assert_eq!(r.readline().await?, b"bye\n");
        assert_eq!(r.read(-1).await?, b"");
        // Both directions are shut, but a half-open transport stays until close().
        w.close();
        w.wait_closed().await?;
        // A failing handler is reported and its connection closed.
        let (r, w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        w.write(b"fail\n")?;
        assert_eq!(r.read(-1).await?, b"");
        w.close();
        server.close();
        server.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with("Unhandled exception in client_connected_cb"),
        "{reports:?}"
    );
}

#[test]
fn drain_against_a_closed_peer_terminates() {
    // semantics 206
    let (lp, _) = new_loop();
    let (port, peer) = peer(drop);
    let lp2 = lp.clone();
    run(&lp, 20, async move {
        let (_r, w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        let chunk = vec![0u8; 64 * 1024];
        let mut outcome = Ok(());
        for _ in 0..10_000 {
            if let Err(e) = w.write(&chunk) {
                outcome = Err(LoopError::from(e));
                break;
            }
            if let Err(e) = w.drain().await {
                outcome = Err(e);
                break;
            }
        }
        let err = outcome.expect_err("the loop must end with an error");
        let kind = err.as_io().map(|e| e.kind());
        assert!(
            matches!(
                kind,
                Some(
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                )
            ),
            "{err:?}"
        );
        Ok::<_, LoopError>(())
    })
    .unwrap();
    peer.join().unwrap();
}

#[test]
fn open_connection_to_a_closed_port_is_refused() {
    // semantics 209
    let (lp, _) = new_loop();
    let port = closed_port();
    let lp2: EventLoop = lp.clone();
    let err = run(&lp, 10, async move {
        streams::open_connection(&lp2, "127.0.0.1", port)
            .await
            .map(|_| ())
    })
    .unwrap_err();
    assert_eq!(
        err.as_io().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
}

#[test]
fn reader_is_a_futures_stream_of_chunks() {
    use futures_core::Stream;
    let (lp, _) = new_loop();
    let (port, peer) = peer_sending(b"chunked data until eof");
    let lp2 = lp.clone();
    let got = run(&lp, 10, async move {
        let (mut r, w) =
            streams::open_connection_with(&lp2, "127.0.0.1", port, 4, Default::default()).await?;
        let mut all = Vec::new();
        while let Some(chunk) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut r).poll_next(cx)).await
        {
            let chunk = chunk?;
            assert!(
                !chunk.is_empty() && chunk.len() <= 4,
                "chunks are at most the limit"
            );
            all.extend_from_slice(&chunk);
        }
        w.close();
        Ok::<_, LoopError>(all)
    })
    .unwrap();
    assert_eq!(got, b"chunked data until eof");
    peer.join().unwrap();
}

#[test]
fn async_read_and_async_write_round_trip_with_backpressure() {
    use futures_io::{AsyncRead, AsyncWrite};
    use std::future::poll_fn;
    use std::pin::Pin;
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    const TOTAL: usize = 1 << 20;
    run(&lp, 20, async move {
        let server = streams::start_server(
            &lp2,
            |r: StreamReader, w: StreamWriter| async move {
                loop {
                    let data = r.read(65536).await?;
                    if data.is_empty() {
                        break;
                    }
                    w.write(&data)?;
                    w.drain().await?;
                }
                w.close();
                Ok(())
            },
            "127.0.0.1",
            0,
            streams::DEFAULT_LIMIT,
            ServerOptions::default(),
        )
        .await?;
        let port = server.sockets()[0].port().unwrap();
        let (mut r, mut w) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        let reader = lp2.create_task(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 10_000];
            loop {
                let n = poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf))
                    .await
                    .map_err(LoopError::from)?;
                if n == 0 {
                    return Ok(got);
                }
                got.extend_from_slice(&buf[..n]);
            }
        })?;
        let chunk: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0;
        while sent < TOTAL {
            let n = poll_fn(|cx| Pin::new(&mut w).poll_write(cx, &chunk))
                .await
                .map_err(LoopError::from)?;
            sent += n;
        }
        poll_fn(|cx| Pin::new(&mut w).poll_flush(cx))
            .await
            .map_err(LoopError::from)?;
        poll_fn(|cx| Pin::new(&mut w).poll_close(cx))
            .await
            .map_err(LoopError::from)?;
        let got = reader.await?;
        assert_eq!(got.len(), TOTAL);
        assert!(got.chunks(8192).all(|c| c == chunk.as_slice()));
        w.close();
        server.close();
        server.wait_closed().await?;
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
