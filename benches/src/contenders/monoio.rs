//! monoio (io_uring, thread-per-core), written as its users write it: a task per connection
//! with owned-buffer `read` and `write_all` ("rent" I/O).

use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::http::{push_responses, RequestCounter};
use super::{Mode, READ_BUF};

/// Serves `mode` on `listener` forever on a monoio io_uring runtime.
pub(super) fn serve(listener: std::net::TcpListener, mode: Mode) -> io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(4096)
        .build()?;
    super::ready(&listener, "monoio IoUringDriver")?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            monoio::spawn(async move {
                // A peer reset ends the connection; nothing to report in a benchmark.
                let _ = match mode {
                    Mode::Echo => echo(stream).await,
                    Mode::Http => http(stream).await,
                };
            });
        }
    })
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        let (res, b) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        let (res, mut b) = stream.write_all(b).await;
        res?;
        b.clear();
        buf = b;
    }
}

async fn http(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(READ_BUF);
    let mut out = Vec::new();
    let mut requests = RequestCounter::default();
    loop {
        let (res, mut b) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        out.clear();
        push_responses(&mut out, requests.feed(&b));
        b.clear();
        buf = b;
        let (res, o) = stream.write_all(out).await;
        res?;
        out = o;
    }
}
