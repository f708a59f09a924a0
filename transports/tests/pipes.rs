//! Pipe transports with real child processes (section O).

mod support;

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

use ringloop_runtime::LoopError;
use ringloop_transports::{EventLoopExt, ExtraInfo};
use support::{new_loop, recorder, run, Event, Recorder};

/// Runs `sh -c script` with its stdin on a pipe: the child and our (write) end of the pipe.
fn child_reading(script: &str, stdout: Stdio) -> (Child, OwnedFd) {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap().into();
    (child, stdin)
}

#[test]
fn read_pipe_from_a_child_process() {
    // semantics 166, 167: EOF gives eof_received then connection_lost(None), always.
    let (lp, reports) = new_loop();
    let mut child = Command::new("sh")
        .args([
            "-c",
            "printf 'hello from the child'; sleep 0.05; printf ' and more'",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout: OwnedFd = child.stdout.take().unwrap().into();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        // Returning true from eof_received cannot keep a pipe open.
        let proto = Recorder {
            keep_open_on_eof: true,
            ..proto
        };
        let (t, p) = lp2.connect_read_pipe(move || proto, stdout).await?;
        assert!(matches!(t.get_extra_info("pipe"), Some(ExtraInfo::Fd(fd)) if fd >= 0));
        assert!(!t.can_write_eof());
        assert!(t.write(b"x").is_err());
        lost.await?;
        assert_eq!(
            p.borrow().shape(),
            vec![
                Event::Made,
                Event::Data(b"hello from the child and more".to_vec()),
                Event::Eof,
                Event::Lost(None)
            ]
        );
        Ok::<_, LoopError>(())
    })
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn write_pipe_to_a_child_process() {
    // semantics 170: write_eof() is close(): flush, then connection_lost(None).
    let (lp, _) = new_loop();
    let (child, stdin) = child_reading("wc -c", Stdio::piped());
    let lp2 = lp.clone();
    let payload = vec![b'z'; 200_000];
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = lp2.connect_write_pipe(move || proto, stdin).await?;
        assert!(t.can_write_eof());
        t.write(&payload).unwrap();
        t.write_eof().unwrap();
        lost.await?;
        let shape = p.borrow().shape();
        assert_eq!(shape.first(), Some(&Event::Made));
        assert_eq!(shape.last(), Some(&Event::Lost(None)));
        Ok::<_, LoopError>(())
    })
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200000");
}

#[test]
fn write_pipe_notices_the_reader_closing() {
    // semantics 171: the reader went away with nothing buffered → connection_lost(None).
    write_pipe_ends_cleanly_when_the_reader_leaves("exec 0<&-; sleep 0.05", b"");
}

#[test]
fn write_pipe_whose_reader_took_everything_then_left_closes_cleanly() {
    // semantics 171: everything written was taken by the kernel (the write finished,
    // unreported), so the reader leaving is a clean end, not BrokenPipe.
    write_pipe_ends_cleanly_when_the_reader_leaves("head -c 5 >/dev/null", b"hello");
}

/// A write pipe to a child running `script` (which reads what it wants from stdin, then
/// exits): after writing `data`, the transport ends with `connection_lost(None)`.
fn write_pipe_ends_cleanly_when_the_reader_leaves(script: &str, data: &'static [u8]) {
    let (lp, _) = new_loop();
    let (mut child, stdin) = child_reading(script, Stdio::inherit());
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = lp2.connect_write_pipe(move || proto, stdin).await?;
        t.write(data).unwrap();
        lost.await?;
        assert_eq!(p.borrow().shape(), vec![Event::Made, Event::Lost(None)]);
        Ok::<_, LoopError>(())
    })
    .unwrap();
    child.wait().unwrap();
}

#[test]
fn regular_files_are_rejected() {
    // semantics 166, 170
    let (lp, _) = new_loop();
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let file: OwnedFd = std::fs::File::open("/proc/self/exe").unwrap().into();
        let err = lp2
            .connect_read_pipe(Recorder::default, file)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), "Pipe transport is for pipes/sockets only.");
        let file: OwnedFd = std::fs::File::open("/proc/self/exe").unwrap().into();
        let err = lp2
            .connect_write_pipe(Recorder::default, file)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Pipe transport is only for pipes, sockets and character devices"
        );
        Ok::<_, LoopError>(())
    })
    .unwrap();
}

#[test]
fn paused_write_pipe_learns_quickly_that_the_reader_left() {
    // semantics 172: flow control on a write pipe; the reader exiting while we are paused
    // ends the transport promptly, with BrokenPipe since data was still buffered.
    let (lp, _) = new_loop();
    let (mut child, stdin) = child_reading("sleep 0.2", Stdio::inherit());
    let lp2 = lp.clone();
    run(&lp, 10, async move {
        let (proto, lost) = recorder(&lp2);
        let (t, p) = lp2.connect_write_pipe(move || proto, stdin).await?;
        t.write(&vec![0u8; 1 << 20]).unwrap();
        assert!(t.is_writing_paused());
        let started = std::time::Instant::now();
        lost.await?;
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let shape = p.borrow().shape();
        assert_eq!(
            shape.last(),
            Some(&Event::Lost(Some(std::io::ErrorKind::BrokenPipe))),
            "{shape:?}"
        );
        assert!(shape.contains(&Event::PauseWriting));
        Ok::<_, LoopError>(())
    })
    .unwrap();
    child.wait().unwrap();
}
