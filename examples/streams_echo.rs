//! A line echo server and client with streams (asyncio's "TCP echo server/client using
//! streams" examples), both in one program.
//!
//! ```text
//! cargo run --example streams_echo
//! ```

use ringloop::transports::prelude::*;
use ringloop::transports::streams::{self, StreamReader, StreamWriter};

async fn handle_echo(reader: StreamReader, writer: StreamWriter) -> Result<(), LoopError> {
    let data = reader.read(100).await?;
    let peer = writer.transport().peername();
    println!(
        "Server received {:?} from {peer:?}",
        String::from_utf8_lossy(&data)
    );
    writer.write(&data)?;
    writer.drain().await?;
    println!("Server closes the connection");
    writer.close();
    writer.wait_closed().await
}

fn main() -> Result<(), LoopError> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.run_until_complete(async move {
        let server = streams::start_server(
            &lp2,
            handle_echo,
            "127.0.0.1",
            0,
            streams::DEFAULT_LIMIT,
            ServerOptions::default(),
        )
        .await?;
        let port = server.sockets()[0].port().unwrap_or(0);
        println!("Serving on 127.0.0.1:{port}");

        let (reader, writer) = streams::open_connection(&lp2, "127.0.0.1", port).await?;
        let message = "Hello World!";
        println!("Client sends {message:?}");
        writer.write(message.as_bytes())?;
        writer.drain().await?;
        let reply = reader.read(100).await?;
        println!("Client received {:?}", String::from_utf8_lossy(&reply));
        writer.close();
        writer.wait_closed().await?;

        server.close();
        server.wait_closed().await
    })?;
    lp.close()
}
