//! The transports are reachable through the facade: `use ringloop::transports::prelude::*`
//! gives the loop, the networking methods and the protocol traits (issue 4).

use std::cell::RefCell;
use std::rc::Rc;

use ringloop::transports::prelude::*;

#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data).unwrap();
        }
    }
}

#[derive(Default)]
struct Client {
    got: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &Transport) {
        t.write(b"through the facade").unwrap();
        t.write_eof().unwrap();
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
    }
}

#[test]
fn echo_through_the_facade() {
    let lp = EventLoop::new().unwrap();
    let lp2 = lp.clone();
    let got = lp
        .run_until_complete(async move {
            let server = lp2
                .create_server(Echo::default, "127.0.0.1", 0, ServerOptions::default())
                .await?;
            let port = server.sockets()[0].port().unwrap();
            let got = Rc::new(RefCell::new(Vec::new()));
            let sink = got.clone();
            let (t, _) = lp2
                .create_connection(
                    move || Client { got: sink },
                    "127.0.0.1",
                    port,
                    ConnectOptions::default(),
                )
                .await?;
            while got.borrow().len() < 18 {
                lp2.sleep(0.005).await?;
            }
            t.close();
            server.close();
            let out = got.borrow().clone();
            Ok::<_, LoopError>(out)
        })
        .unwrap();
    assert_eq!(got, b"through the facade");
    lp.close().unwrap();
}
