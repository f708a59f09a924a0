//! compio (io_uring), written as its users write it: a task per connection with owned-buffer
//! `read` and `write_all` returning `BufResult`.

use std::io;

use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::BufResult;

use super::http::{push_responses, RequestCounter};
use super::{Mode, READ_BUF};

/// Serves `mode` on `listener` forever on a compio runtime.
pub(super) fn serve(listener: std::net::TcpListener, mode: Mode) -> io::Result<()> {
    let rt = compio::runtime::Runtime::new()?;
    super::ready(&listener, "compio (io_uring driver)")?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            compio::runtime::spawn(async move {
                // A peer reset ends the connection; nothing to report in a benchmark.
                let _ = match mode {
                    Mode::Echo => echo(stream).await,
                    Mode::Http => http(stream).await,
                };
            })
            .detach();
        }
    })
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        let BufResult(res, b) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        let BufResult(res, mut b) = stream.write_all(b).await;
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
        let BufResult(res, mut b) = stream.read(buf).await;
        if res? == 0 {
            return Ok(());
        }
        out.clear();
        push_responses(&mut out, requests.feed(&b));
        b.clear();
        buf = b;
        let BufResult(res, o) = stream.write_all(out).await;
        res?;
        out = o;
    }
}
