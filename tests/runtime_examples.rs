//! The event-loop chapter's example programs, run as a user would run them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The path of example `name`, (re)building it if this test run did not (a run filtered to
/// this test does not build the examples, and an old build may be stale).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    let modified = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    let stale = match (modified(&path), modified(&exe)) {
        (Some(example), Some(test)) => example < test,
        _ => true,
    };
    if stale {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

#[test]
fn hello_world_callback_reschedules_itself_every_two_seconds() {
    let started = Instant::now();
    let output = Command::new(example("hello_world_callback"))
        .args(["--count", "2"])
        .output()
        .expect("the example runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello World\nHello World\n"
    );
    // The second greeting came from a call_later(2, …), never early.
    assert!(started.elapsed() >= Duration::from_secs(2));
}

fn signals_example_exits_cleanly_on(sig: i32, signame: &str) {
    let mut child = Command::new(example("signals"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("a first line").expect("utf-8");
    assert_eq!(
        first,
        "Event loop running forever, press CTRL+c to interrupt."
    );
    let second = lines.next().expect("a second line").expect("utf-8");
    assert_eq!(
        second,
        format!("pid {}: send SIGINT or SIGTERM to exit.", child.id())
    );
    // The handlers are installed before the lines are printed.
    // SAFETY: signals our own child process, which is alive (we hold its handle).
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let third = lines.next().expect("a third line").expect("utf-8");
    assert_eq!(third, format!("got signal {signame}: exit"));
    let status = child.wait().expect("the example exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn signals_example_exits_with_status_0_on_sigterm() {
    signals_example_exits_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn signals_example_exits_with_status_0_on_sigint() {
    signals_example_exits_cleanly_on(libc::SIGINT, "SIGINT");
}
