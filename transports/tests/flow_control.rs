//! Write flow control on a real connection (section K): a writer outpacing a slow reader.

mod support;

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;

use ringloop_runtime::LoopError;
use ringloop_transports::{ConnectOptions, EventLoopExt, Protocol, Transport};
use support::{new_loop, peer, run};

#[derive(Default)]
struct FlowRecorder {
    transport: Option<Transport>,
    /// (paused?, buffer size when told)
    signals: Vec<(bool, usize)>,
}

impl Protocol for FlowRecorder {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
    }
    fn pause_writing(&mut self) {
        let size = self
            .transport
            .as_ref()
            .map_or(0, Transport::get_write_buffer_size);
        self.signals.push((true, size));
    }
    fn resume_writing(&mut self) {
        let size = self
            .transport
            .as_ref()
            .map_or(0, Transport::get_write_buffer_size);
        self.signals.push((false, size));
    }
}

#[test]
fn pause_above_high_resume_at_low_alternating() {
    // semantics 135, 136, 137, 141
    let (lp, reports) = new_loop();
    const TOTAL: usize = 8 << 20;
    let (port, reader) = peer(|mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got += n,
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let lp2 = lp.clone();
    let signals = run(&lp, 60, async move {
        let (t, p) = lp2
            .create_connection(
                FlowRecorder::default,
                "127.0.0.1",
                port,
                ConnectOptions::default(),
            )
            .await?;
        assert_eq!(t.get_write_buffer_limits(), (16384, 65536));
        t.set_write_buffer_limits(Some(128 * 1024), None).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (32768, 131072));
        assert!(t.set_write_buffer_limits(Some(1), Some(2)).is_err());
        let chunk = vec![7u8; 48 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            if t.is_writing_paused() {
                lp2.sleep(0.001).await?;
                continue;
            }
            t.write(&chunk).unwrap();
            sent += chunk.len();
        }
        t.close();
        while !t.is_closing() || t.fileno() != -1 {
            lp2.sleep(0.01).await?;
        }
        let signals = p.borrow().signals.clone();
        Ok::<_, LoopError>(signals)
    })
    .unwrap();
    assert_eq!(
        reader.join().unwrap(),
        TOTAL.div_ceil(48 * 1024) * 48 * 1024
    );
    assert!(
        signals.len() >= 4,
        "several pause/resume rounds: {signals:?}"
    );
    for (i, (paused, size)) in signals.iter().enumerate() {
        assert_eq!(
            *paused,
            i % 2 == 0,
            "strict alternation starting with a pause: {signals:?}"
        );
        if *paused {
            assert!(
                *size > 128 * 1024,
                "paused only strictly above high: {signals:?}"
            );
        } else {
            assert!(*size <= 32 * 1024, "resumed at low or below: {signals:?}");
        }
    }
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
    let _ = Rc::new(RefCell::new(()));
}

/// Writes from inside a protocol method past the high mark: `pause_writing` comes once,
/// right after the method returns, and the method's later writes still queue and go out.
#[derive(Default)]
struct BurstWriter {
    transport: Option<Transport>,
    events: Vec<&'static str>,
}

impl Protocol for BurstWriter {
    fn connection_made(&mut self, t: &Transport) {
        self.transport = Some(t.clone());
    }
    fn data_received(&mut self, _: &[u8]) {
        let Some(t) = self.transport.clone() else {
            return;
        };
        let chunk = vec![3u8; 48 * 1024];
        for _ in 0..4 {
            t.write(&chunk).unwrap();
            self.events.push("write");
        }
        self.events.push("returned");
    }
    fn pause_writing(&mut self) {
        self.events.push("pause");
    }
    fn resume_writing(&mut self) {
        self.events.push("resume");
    }
}

#[test]
fn writes_past_the_high_mark_inside_a_method_pause_once_after_it() {
    // semantics 137: a busy protocol is told once its current method returns
    let (lp, reports) = new_loop();
    let (port, reader) = peer(|mut s| {
        std::io::Write::write_all(&mut s, b"go").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    });
    let lp2 = lp.clone();
    let events = run(&lp, 30, async move {
        let (t, p) = lp2
            .create_connection(
                BurstWriter::default,
                "127.0.0.1",
                port,
                ConnectOptions::default(),
            )
            .await?;
        while !p.borrow().events.contains(&"returned") {
            lp2.sleep(0.001).await?;
        }
        t.close();
        while t.fileno() != -1 {
            lp2.sleep(0.01).await?;
        }
        let events = p.borrow().events.clone();
        Ok::<_, LoopError>(events)
    })
    .unwrap();
    assert_eq!(
        reader.join().unwrap(),
        4 * 48 * 1024,
        "every write went out"
    );
    assert_eq!(
        &events[..6],
        ["write", "write", "write", "write", "returned", "pause"],
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "pause").count(),
        1,
        "{events:?}"
    );
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
