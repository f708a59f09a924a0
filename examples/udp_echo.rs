//! A UDP echo server and a client in one program (asyncio's UDP echo examples).
//!
//! ```text
//! cargo run --example udp_echo
//! ```

use std::io;

use ringloop::runtime::Future;
use ringloop::transports::prelude::*;

/// Sends every datagram back where it came from.
#[derive(Default)]
struct EchoServer {
    transport: Option<DatagramTransport>,
}

impl DatagramProtocol for EchoServer {
    fn connection_made(&mut self, transport: &DatagramTransport) {
        self.transport = Some(transport.clone());
    }

    fn datagram_received(&mut self, data: &[u8], addr: Option<&Address>) {
        println!(
            "Server received {:?} from {addr:?}",
            String::from_utf8_lossy(data)
        );
        if let Some(t) = &self.transport {
            let _ = t.sendto(data, addr);
        }
    }
}

/// Sends one message and waits for the echo.
struct EchoClient {
    message: &'static str,
    transport: Option<DatagramTransport>,
    done: Future<()>,
}

impl DatagramProtocol for EchoClient {
    fn connection_made(&mut self, transport: &DatagramTransport) {
        println!("Client sends {:?}", self.message);
        let _ = transport.sendto(self.message.as_bytes(), None);
        self.transport = Some(transport.clone());
    }

    fn datagram_received(&mut self, data: &[u8], _addr: Option<&Address>) {
        println!("Client received {:?}", String::from_utf8_lossy(data));
        if let Some(t) = &self.transport {
            t.close();
        }
    }

    fn error_received(&mut self, error: io::Error) {
        println!("Error received: {error}");
    }

    fn connection_lost(&mut self, _error: Option<io::Error>) {
        let _ = self.done.set_result(());
    }
}

fn main() -> Result<(), LoopError> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let local = DatagramOptions {
            local_addr: Some(("127.0.0.1".into(), 0)),
            ..Default::default()
        };
        let (server, _) = lp2
            .create_datagram_endpoint(EchoServer::default, local)
            .await?;
        let port = server.sockname().and_then(|a| a.port()).unwrap_or(0);
        println!("Server listening on 127.0.0.1:{port}");
        let done = lp2.create_future::<()>();
        let waiter = done.clone();
        let remote = DatagramOptions {
            remote_addr: Some(("127.0.0.1".into(), port)),
            ..Default::default()
        };
        let factory = move || EchoClient {
            message: "Hello World!",
            transport: None,
            done,
        };
        lp2.create_datagram_endpoint(factory, remote).await?;
        waiter.await?;
        server.close();
        Ok(())
    })?;
    lp.close()
}
