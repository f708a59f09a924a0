//! EMFILE during accept (semantics 105, 106): the server reports it, backs off, and accepts
//! again once fds free up. `RLIMIT_NOFILE` is process-wide, so the scenario runs in a child
//! process (this test binary re-executed with an env var).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

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

/// Clients the peer connects while the server is out of fds.
const CLIENTS: usize = 4;

/// Fds freed once EMFILE was reported: room for every client's connection, and to spare.
const FREED: usize = 2 * CLIENTS;

fn child() {
    let (lp, reports) = new_loop();
    let lp2 = lp.clone();
    let server = run(&lp, 10, async move {
        lp2.create_server(
            Recorder::echoing,
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
    // Client sockets are made before the limit drops: the peer needs no fd of its own later.
    let clients: Vec<socket2::Socket> = (0..CLIENTS)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    // Lower the limit to just above the current highest fd, then fill every free slot: the
    // server's accepts fail with EMFILE until fillers are closed. Nothing here depends on how
    // many fds the runtime holds, nor on fds the process inherited: the limit leaves room
    // for at least `FREED` fillers even when no slot below the highest fd is free (without
    // inherited high fds, the table below it is dense).
    let max_fd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    set_nofile_limit(max_fd + 1 + FREED as u64);
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "the fd table is full"
    );
    assert!(
        fillers.len() >= FREED,
        "{} fillers, {FREED} to free later",
        fillers.len()
    );
    // io_uring captures RLIMIT_NOFILE when an accept is submitted: start accepting now.
    server.start_serving().unwrap();
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let peer = std::thread::spawn(move || {
        let outcome = (|| -> Result<(), String> {
            let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut streams = Vec::new();
            for sock in clients {
                sock.connect(&addr.into())
                    .map_err(|e| format!("connect: {e}"))?;
                let mut s: TcpStream = sock.into();
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"ping").map_err(|e| format!("write: {e}"))?;
                streams.push(s);
            }
            for (i, s) in streams.iter_mut().enumerate() {
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf)
                    .map_err(|e| format!("client {i}: no echo: {e}"))?;
                if &buf != b"ping" {
                    return Err(format!("client {i}: echoed {buf:?}"));
                }
            }
            Ok(())
        })();
        let _ = tx.send(outcome);
    });
    // Wait for the server to report EMFILE (the first accept fails at once) …
    let lp3 = lp.clone();
    let seen = reports.clone();
    run(&lp, 20, async move {
        while seen.borrow().is_empty() {
            lp3.sleep(0.01).await?;
        }
        Ok::<_, LoopError>(())
    })
    .unwrap_or_else(|e| panic!("no EMFILE report: {e:?}"));
    assert!(server.is_serving(), "the server survived EMFILE");
    // … then free fds: accepting resumes after the back-off and every client is echoed.
    fillers.truncate(fillers.len() - FREED);
    let lp4 = lp.clone();
    let outcome = run(&lp, 30, async move {
        loop {
            if let Ok(outcome) = rx.try_recv() {
                return Ok::<_, LoopError>(outcome);
            }
            lp4.sleep(0.01).await?;
        }
    });
    let reports = reports.borrow().clone();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(peer_error)) => panic!("{peer_error}; loop reports: {reports:?}"),
        Err(err) => panic!("the peer did not finish: {err:?}; loop reports: {reports:?}"),
    }
    peer.join().unwrap();
    assert!(server.is_serving(), "the server survived");
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
