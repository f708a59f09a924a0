//! EMFILE during accept (semantics 105, 106): the server reports it, backs off, and accepts
//! again once fds free up. `RLIMIT_NOFILE` is process-wide, so the scenario runs in a child
//! process (this test binary re-executed with an env var).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;

use ringloop_runtime::LoopError;
use ringloop_transports::{EventLoopExt, ServerOptions};
use support::{new_loop, run, Recorder};

const CHILD_ENV: &str = "RINGLOOP_TEST_EMFILE_CHILD";

#[test]
fn emfile_during_accept_backs_off_and_recovers() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "emfile_during_accept_backs_off_and_recovers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("EMFILE-SCENARIO-DONE"),
        "the child ran the scenario:\n{text}"
    );
}

fn set_nofile_limit(limit: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct; this child process is ours.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = limit;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
}

fn child() {
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    let server = run(&lp, 10, async move {
        lp2.create_server(
            || Recorder {
                echo: true,
                ..Recorder::default()
            },
            "127.0.0.1",
            0,
            ServerOptions {
                start_serving: false,
                ..Default::default()
            },
        )
        .await
    })
    .unwrap();
    let port = server.sockets()[0].port().unwrap();
    // Six client sockets made before the limit drops; room for three accepted ones.
    let clients: Vec<socket2::Socket> = (0..6)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    // Fill the fd table up to a lowered limit, then free exactly three slots.
    let max_fd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    set_nofile_limit(max_fd + 1);
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    fillers.truncate(fillers.len().saturating_sub(3));
    // io_uring captures RLIMIT_NOFILE when an accept is submitted: start accepting now.
    server.start_serving().unwrap();
    let (tx, rx) = mpsc::channel::<&'static str>();
    let peer = std::thread::spawn(move || {
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut streams: Vec<Option<TcpStream>> = Vec::new();
        for sock in clients {
            sock.connect(&addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.write_all(b"ping").unwrap();
            streams.push(Some(s));
        }
        let echo = |s: &mut TcpStream| {
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
        };
        // The first three are accepted; the rest wait in the backlog (EMFILE).
        for s in streams.iter_mut().take(3) {
            echo(s.as_mut().unwrap());
        }
        // Free fds on the server side, one connection at a time, until all are served.
        for i in 0..3 {
            streams[i] = None;
            echo(streams[3 + i].as_mut().unwrap());
        }
        tx.send("all echoed").unwrap();
    });
    let lp3 = lp.clone();
    run(&lp, 30, async move {
        loop {
            if rx.try_recv().is_ok() {
                return Ok::<_, LoopError>(());
            }
            lp3.sleep(0.01).await?;
        }
    })
    .unwrap();
    peer.join().unwrap();
    assert!(server.is_serving(), "the server survived");
    let reports = reports.borrow();
    assert!(!reports.is_empty(), "EMFILE was reported");
    assert!(
        reports
            .iter()
            .all(|r| r.starts_with("socket.accept() out of system resource")),
        "{reports:?}"
    );
    server.close();
    drop(fillers);
    println!("EMFILE-SCENARIO-DONE ({} reports)", reports.len());
}
