//! A loopback echo server on the bare proactor: one multishot accept, one multishot receive
//! per connection (into the shared provided-buffer pool), a send per received chunk. A client
//! thread does `ROUNDS` request/response round trips and the server reports the rate and the
//! features in use.
//!
//! ```text
//! cargo run --release -p ringloop-proactor --example echo [ROUNDS]
//! RINGLOOP_BACKEND=epoll cargo run --release -p ringloop-proactor --example echo
//! ```

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use ringloop_proactor::op::{AcceptMulti, RecvMulti, Send};
use ringloop_proactor::{Op, Proactor};

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let mut proactor = Proactor::new()?;
    println!(
        "backend: {}",
        proactor.features().describe(proactor.backend())
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    proactor.push(AcceptMulti::new(listener.as_raw_fd()), ACCEPT);

    let client = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let request = [7u8; 64];
        let mut response = [0u8; 64];
        for _ in 0..rounds {
            stream.write_all(&request)?;
            stream.read_exact(&mut response)?;
        }
        Ok(())
    });

    let start = Instant::now();
    let mut turns = 0u64;
    let mut conn = None;
    'serve: loop {
        proactor.poll(None)?;
        turns += 1;
        while let Some(done) = proactor.pop() {
            match (done.token, done.result) {
                (ACCEPT, Ok(fd)) if done.more => {
                    let fd = fd as i32;
                    conn = Some(fd);
                    proactor.push(RecvMulti::new(fd), RECV);
                }
                (RECV, Ok(n)) if done.more && n > 0 => {
                    let chunk = done.buf.map(|b| b.to_vec()).unwrap_or_default();
                    if let Some(fd) = conn {
                        proactor.push(Send::new(fd, chunk), SEND);
                    }
                }
                (RECV, _) if !done.more => break 'serve,
                (SEND, Ok(_)) => {
                    if let Some(Op::Send(send)) = done.op {
                        debug_assert_eq!(send.start, 0);
                    }
                }
                (_, Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
    }
    let elapsed = start.elapsed();
    client.join().map_err(|_| "client thread panicked")??;
    if let Some(fd) = conn {
        proactor.close_fd(fd)?;
    }
    println!(
        "{rounds} round trips in {elapsed:.2?}: {:.0}/s, {turns} loop turns",
        rounds as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
