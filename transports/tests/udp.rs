//! Datagram endpoints over loopback (section N).

mod support;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use ringloop_runtime::{EventLoop, Future, LoopError};
use ringloop_transports::{
    Address, DatagramOptions, DatagramProtocol, DatagramTransport, EventLoopExt,
};
use support::{new_loop, run};

#[derive(Default)]
struct Udp {
    transport: Option<DatagramTransport>,
    received: Vec<(Vec<u8>, Option<Address>)>,
    errors: Vec<io::ErrorKind>,
    echo: bool,
    lost: Vec<Option<io::ErrorKind>>,
    wake: Option<Future<()>>,
}

impl Udp {
    fn poke(&mut self) {
        if let Some(w) = self.wake.take() {
            let _ = w.set_result(());
        }
    }
}

impl DatagramProtocol for Udp {
    fn connection_made(&mut self, t: &DatagramTransport) {
        self.transport = Some(t.clone());
    }
    fn datagram_received(&mut self, data: &[u8], addr: Option<&Address>) {
        self.received.push((data.to_vec(), addr.cloned()));
        if self.echo {
            if let Some(t) = &self.transport {
                t.sendto(data, addr).unwrap();
            }
        }
        self.poke();
    }
    fn error_received(&mut self, error: io::Error) {
        self.errors.push(error.kind());
        self.poke();
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        self.lost.push(error.map(|e| e.kind()));
        self.poke();
    }
}

async fn wait_until(
    lp: &EventLoop,
    p: &Rc<RefCell<Udp>>,
    cond: impl Fn(&Udp) -> bool,
) -> Result<(), LoopError> {
    for _ in 0..500 {
        if cond(&p.borrow()) {
            return Ok(());
        }
        let w = lp.create_future::<()>();
        p.borrow_mut().wake = Some(w.clone());
        let timer = {
            let w = w.clone();
            lp.call_later(0.01, move || {
                let _ = w.set_result(());
            })?
        };
        w.await?;
        timer.cancel();
    }
    panic!("condition never held");
}

/// A loopback endpoint with protocol `P`, sent one "ping" from a second endpoint; returns
/// `(server, its protocol, client)` once `done` holds (or after about a second).
async fn pinged_endpoint<P: DatagramProtocol + 'static>(
    lp: &EventLoop,
    factory: impl FnOnce() -> P + 'static,
    done: impl Fn(&P) -> bool,
) -> Result<(DatagramTransport, Rc<RefCell<P>>, DatagramTransport), LoopError> {
    let local = || DatagramOptions {
        local_addr: Some(("127.0.0.1".into(), 0)),
        ..Default::default()
    };
    let (server, sp) = lp.create_datagram_endpoint(factory, local()).await?;
    let (client, _cp) = lp.create_datagram_endpoint(Udp::default, local()).await?;
    client.sendto(b"ping", server.sockname().as_ref()).unwrap();
    for _ in 0..200 {
        if done(&sp.borrow()) {
            break;
        }
        lp.sleep(0.005).await?;
    }
    Ok((server, sp, client))
}

#[test]
fn datagrams_with_addresses_both_ways() {
    // semantics 157, 160: addresses both ways, empty datagrams delivered.
    let (lp, reports) = new_loop();
    for host in ["127.0.0.1", "::1"] {
        let lp2 = lp.clone();
        run(&lp, 10, async move {
            let (server, sp) = lp2
                .create_datagram_endpoint(
                    || Udp {
                        echo: true,
                        ..Udp::default()
                    },
                    DatagramOptions {
                        local_addr: Some((host.into(), 0)),
                        ..Default::default()
                    },
                )
                .await?;
            let server_addr = server.sockname().unwrap();
            let (client, cp) = lp2
                .create_datagram_endpoint(
                    Udp::default,
                    DatagramOptions {
                        local_addr: Some((host.into(), 0)),
                        ..Default::default()
                    },
                )
                .await?;
            let client_addr = client.sockname().unwrap();
            client.sendto(b"one", Some(&server_addr)).unwrap();
            // Queued until the iteration ends: 3 bytes plus 8 per datagram (semantics 161).
            assert_eq!(client.get_write_buffer_size(), 3 + 8);
            client.sendto(b"", Some(&server_addr)).unwrap();
            client.sendto(b"three", Some(&server_addr)).unwrap();
            wait_until(&lp2, &cp, |u| u.received.len() == 3).await?;
            let got: Vec<Vec<u8>> = cp
                .borrow()
                .received
                .iter()
                .map(|(d, _)| d.clone())
                .collect();
            assert_eq!(got, vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]);
            assert!(cp
                .borrow()
                .received
                .iter()
                .all(|(_, a)| a.as_ref() == Some(&server_addr)));
            assert!(sp
                .borrow()
                .received
                .iter()
                .all(|(_, a)| a.as_ref() == Some(&client_addr)));
            client.close();
            server.close();
            wait_until(&lp2, &cp, |u| u.lost == vec![None]).await?;
            wait_until(&lp2, &sp, |u| u.lost == vec![None]).await?;
            assert!(client.is_closing());
            Ok(())
        })
        .unwrap();
    }
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn icmp_errors_reach_error_received_and_the_endpoint_survives() {
    // semantics 158, 159
    let (lp, reports) = new_loop();
    let dead_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (t, p) = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    remote_addr: Some(("127.0.0.1".into(), dead_port)),
                    ..Default::default()
                },
            )
            .await?;
        t.sendto(b"anyone?", None).unwrap();
        wait_until(&lp2, &p, |u| !u.errors.is_empty()).await?;
        assert_eq!(p.borrow().errors[0], io::ErrorKind::ConnectionRefused);
        assert!(!t.is_closing(), "the endpoint stays open");
        // A wrong explicit address on a connected endpoint is an argument error.
        let other = Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(t.sendto(b"x", Some(&other)).is_err());
        // It can still receive (gh-91227).
        let (peer, _pp) = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    local_addr: Some(("127.0.0.1".into(), 0)),
                    ..Default::default()
                },
            )
            .await?;
        let me = t.sockname().unwrap();
        peer.sendto(b"still listening", Some(&me)).unwrap();
        lp2.sleep(0.05).await?;
        t.abort();
        peer.close();
        wait_until(&lp2, &p, |u| u.lost.len() == 1).await?;
        Ok(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn argument_errors() {
    // semantics 155, 163
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let err = lp2
            .create_datagram_endpoint(Udp::default, DatagramOptions::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), "unexpected address family");
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let err = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    sock: Some(sock),
                    allow_broadcast: true,
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "socket modifier keyword arguments can not be used when sock is specified."
            ),
            "{err}"
        );
        let stream =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let err = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    sock: Some(stream),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("A datagram socket was expected"),
            "{err}"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn unix_socketpair_datagrams_have_no_address() {
    // semantics 160: AF_UNIX socketpair datagrams carry addr None.
    let (lp, _) = new_loop();
    let (a, b) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::DGRAM, None).unwrap();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (ta, _pa) = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    sock: Some(a),
                    ..Default::default()
                },
            )
            .await?;
        let (tb, pb) = lp2
            .create_datagram_endpoint(
                Udp::default,
                DatagramOptions {
                    sock: Some(b),
                    ..Default::default()
                },
            )
            .await?;
        ta.sendto(b"hi", None).unwrap();
        wait_until(&lp2, &pb, |u| !u.received.is_empty()).await?;
        assert_eq!(pb.borrow().received[0], (b"hi".to_vec(), None));
        ta.close();
        tb.close();
        Ok(())
    })
    .unwrap();
}

#[derive(Default)]
struct FlowUdp {
    transport: Option<DatagramTransport>,
    signals: Vec<&'static str>,
}

impl DatagramProtocol for FlowUdp {
    fn connection_made(&mut self, t: &DatagramTransport) {
        t.set_write_buffer_limits(Some(0), None).unwrap();
        self.transport = Some(t.clone());
    }
    fn datagram_received(&mut self, data: &[u8], addr: Option<&Address>) {
        // This send goes above high = 0 while we are busy: the pause comes right after.
        self.transport.as_ref().unwrap().sendto(data, addr).unwrap();
        self.signals.push("sent");
    }
    fn pause_writing(&mut self) {
        self.signals.push("pause");
    }
    fn resume_writing(&mut self) {
        self.signals.push("resume");
    }
}

#[test]
fn datagram_flow_control_pauses_and_resumes_in_order() {
    // semantics 137, 161: a pause raised inside datagram_received arrives after it returns.
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (server, sp, client) =
            pinged_endpoint(&lp2, FlowUdp::default, |p| p.signals.len() >= 3).await?;
        assert_eq!(sp.borrow().signals, vec!["sent", "pause", "resume"]);
        server.close();
        client.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

struct PanicsWhenLost;

impl DatagramProtocol for PanicsWhenLost {
    fn connection_lost(&mut self, _error: Option<io::Error>) {
        panic!("lost on purpose");
    }
}

#[test]
fn a_panic_in_connection_lost_is_reported_and_the_loop_goes_on() {
    // semantics 82, as for stream transports: the panic reaches the exception handler.
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (t, _p) = lp2
            .create_datagram_endpoint(
                || PanicsWhenLost,
                DatagramOptions {
                    local_addr: Some(("127.0.0.1".into(), 0)),
                    ..Default::default()
                },
            )
            .await?;
        t.close();
        lp2.sleep(0.05).await?;
        Ok(())
    })
    .unwrap();
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with("Exception in callback connection_lost"),
        "{reports:?}"
    );
    assert!(reports[0].contains("lost on purpose"), "{reports:?}");
}

/// Inside `datagram_received`: looks itself up through the transport, then aborts it.
#[derive(Default)]
struct AbortsInside {
    transport: Option<DatagramTransport>,
    me_while_running: Option<bool>,
    lost: usize,
}

impl DatagramProtocol for AbortsInside {
    fn connection_made(&mut self, t: &DatagramTransport) {
        self.transport = Some(t.clone());
    }
    fn datagram_received(&mut self, _data: &[u8], _addr: Option<&Address>) {
        let t = self.transport.clone().unwrap();
        // The protocol running now is still the transport's while it runs.
        self.me_while_running = Some(t.get_protocol().is_some());
        t.abort();
    }
    fn connection_lost(&mut self, _error: Option<io::Error>) {
        self.lost += 1;
    }
}

#[test]
fn abort_inside_datagram_received_loses_the_connection_after_it_returns() {
    // semantics 212 for datagrams: the protocol stays installed while its method runs;
    // `connection_lost` comes once, later, and the transport lets go of the protocol.
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (server, sp, client) =
            pinged_endpoint(&lp2, AbortsInside::default, |p| p.lost > 0).await?;
        assert_eq!(sp.borrow().me_while_running, Some(true));
        assert_eq!(sp.borrow().lost, 1);
        assert!(server.is_closing());
        assert!(server.get_protocol().is_none());
        client.close();
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
