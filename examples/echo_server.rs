//! A TCP echo server built on a Protocol (asyncio's "TCP echo server protocol" example).
//!
//! ```text
//! cargo run --example echo_server -- --host 127.0.0.1 --port 8888
//! ```
//! Prints the bound address(es), then echoes every connection until interrupted.

use ringloop::transports::prelude::*;

/// Echoes what it receives; stops reading while its own writes are paused.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &Transport) {
        if let Some(peer) = transport.peername() {
            println!("Connection from {peer}");
        }
        self.transport = Some(transport.clone());
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            // write() only fails after write_eof(), which this protocol never calls.
            let _ = t.write(data);
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

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> Result<(), LoopError> {
    let host = arg("--host", "127.0.0.1");
    let port: u16 = arg("--port", "8888")
        .parse()
        .map_err(|_| LoopError::invalid_argument("--port must be a number"))?;
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    let server = lp.run_until_complete(async move {
        lp2.create_server(Echo::default, &host, port, ServerOptions::default())
            .await
    })?;
    for socket in server.sockets() {
        if let Some(addr) = socket.sockname {
            println!("Serving on {addr}");
        }
    }
    lp.run_until_complete(async move { server.serve_forever().await })
}
