//! A TCP echo client built on a Protocol (asyncio's "TCP echo client protocol" example).
//!
//! ```text
//! cargo run --example echo_server &
//! cargo run --example echo_client -- --port 8888 --message 'Hello World!'
//! ```

use std::io;

use ringloop::runtime::Future;
use ringloop::transports::prelude::*;

struct EchoClient {
    message: String,
    received: Vec<u8>,
    on_lost: Future<()>,
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport.write(self.message.as_bytes());
        println!("Data sent: {:?}", self.message);
        // Half-close: the server echoes and then closes its side.
        let _ = transport.write_eof();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.received.extend_from_slice(data);
    }

    fn connection_lost(&mut self, _error: Option<io::Error>) {
        println!(
            "Data received: {:?}",
            String::from_utf8_lossy(&self.received)
        );
        println!("The server closed the connection");
        let _ = self.on_lost.set_result(());
    }

    fn eof_received(&mut self) -> bool {
        false
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
    let message = arg("--message", "Hello World!");
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let on_lost = lp2.create_future::<()>();
        let waiter = on_lost.clone();
        let factory = move || EchoClient {
            message,
            received: Vec::new(),
            on_lost,
        };
        let (_transport, _protocol) = lp2
            .create_connection(factory, &host, port, ConnectOptions::default())
            .await?;
        waiter.await
    })?;
    lp.close()
}
