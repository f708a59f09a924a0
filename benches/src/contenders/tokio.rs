//! tokio's current-thread runtime, written as its users write it: a task per connection,
//! `AsyncReadExt::read_buf` into a `Vec` (no zeroing) and `AsyncWriteExt::write_all` (epoll underneath, via mio).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{push_responses, RequestCounter};
use super::{Mode, READ_BUF};

/// Serves `mode` on `listener` forever on a current-thread runtime.
pub(super) fn serve(listener: std::net::TcpListener, mode: Mode) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    super::ready(&listener, "tokio current_thread (epoll via mio)")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
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
        buf.clear();
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        stream.write_all(&buf).await?;
    }
}

async fn http(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(READ_BUF);
    let mut out = Vec::new();
    let mut requests = RequestCounter::default();
    loop {
        buf.clear();
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        out.clear();
        push_responses(&mut out, requests.feed(&buf));
        stream.write_all(&out).await?;
    }
}
