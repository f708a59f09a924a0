//! add_signal_handler / remove_signal_handler with real signals (SEMANTICS section Q).
//!
//! Signal dispositions are process-wide, so every test that installs a handler runs in a
//! child process (a re-run of this binary filtered to the one test).

mod support;

use std::time::Duration;

use ringloop_runtime::{EventLoop, LoopError, NSIG};
use support::{in_child_process, new_loop, Log};

// Every blocking run has a guard timer, so a lost signal fails the test instead of
// hanging it.

fn raise(sig: i32) {
    // SAFETY: sending a signal to our own process; the caller installed a handler or a
    // disposition that does not kill the test.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

/// Runs `then` from a timer callback once `seen()` holds, looking every 10 ms.
///
/// Tests that raise a signal more than once wait with this until the handler has run for
/// the previous one: the kernel keeps at most one pending instance of a standard signal, so
/// raising it again while the first is still pending merges the two into one delivery. A
/// process-directed signal stays pending until the thread the kernel picked for it runs
/// (here the test harness's main thread, not the loop's), which on a loaded machine can
/// take longer than any fixed delay between the raises.
fn once_seen(lp: &EventLoop, seen: impl Fn() -> bool + 'static, then: impl FnOnce() + 'static) {
    let lp2 = lp.clone();
    lp.call_later(0.01, move || {
        if seen() {
            then();
        } else {
            once_seen(&lp2, seen, then);
        }
    })
    .unwrap();
}

/// Installs a handler for `sig` that records the delivery and stops `lp`; the flag says
/// whether it came.
fn stop_on_first(lp: &EventLoop, sig: i32) -> std::rc::Rc<std::cell::Cell<bool>> {
    let got = std::rc::Rc::new(std::cell::Cell::new(false));
    let (g, stopper) = (got.clone(), lp.clone());
    lp.add_signal_handler(sig, move || {
        g.set(true);
        stopper.stop();
    })
    .unwrap();
    got
}

fn disposition(sig: i32) -> libc::sighandler_t {
    // SAFETY: queries the current action into a zeroed, live struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[test]
fn semantics_188_a_signal_wakes_a_blocked_loop_and_runs_as_a_callback() {
    in_child_process(
        "semantics_188_a_signal_wakes_a_blocked_loop_and_runs_as_a_callback",
        || {
            let lp = new_loop();
            let log = Log::new();
            let (l, lp2) = (log.clone(), lp.clone());
            let loop_thread = std::thread::current().id();
            lp.add_signal_handler(libc::SIGUSR1, move || {
                l.push(std::thread::current().id() == loop_thread && lp2.is_running());
                lp2.stop();
            })
            .unwrap();
            let sender = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                raise(libc::SIGUSR1);
            });
            // Nothing scheduled: the loop blocks until the signal wakes it.
            support::guard(&lp, 20.0);
            lp.run_forever().unwrap();
            sender.join().unwrap();
            assert_eq!(log.get(), vec![true]);
            lp.close().unwrap();
        },
    );
}

#[test]
fn semantics_188_each_delivered_signal_runs_the_handler_once() {
    in_child_process(
        "semantics_188_each_delivered_signal_runs_the_handler_once",
        || {
            let lp = new_loop();
            let count = std::rc::Rc::new(std::cell::Cell::new(0));
            let (c, lp2) = (count.clone(), lp.clone());
            lp.add_signal_handler(libc::SIGUSR2, move || {
                c.set(c.get() + 1);
                if c.get() == 3 {
                    lp2.stop();
                }
            })
            .unwrap();
            // Raised from a callback, from a timer, and from a timer scheduled by a timer
            // callback; each once the one before was handled (see `once_seen`). After the
            // third, nothing but the signal can wake the loop before the guard.
            let (lp3, c) = (lp.clone(), count.clone());
            lp.call_soon(move || {
                raise(libc::SIGUSR2);
                let (lp4, c2) = (lp3.clone(), c.clone());
                once_seen(
                    &lp3,
                    move || c.get() == 1,
                    move || {
                        raise(libc::SIGUSR2);
                        once_seen(&lp4, move || c2.get() == 2, || raise(libc::SIGUSR2));
                    },
                );
            })
            .unwrap();
            support::guard(&lp, 20.0);
            lp.run_forever().unwrap();
            assert_eq!(count.get(), 3);
        },
    );
}

/// Blocks (`how` = `SIG_BLOCK`) or unblocks (`SIG_UNBLOCK`) `sig` in this thread. Unblocking
/// a pending signal delivers it to this thread before the call returns.
fn mask(how: libc::c_int, sig: i32) {
    // SAFETY: `set` is a live local initialised by `sigemptyset` before use; the old mask
    // is not asked for.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

/// Whether `sig` is pending (and blocked) for this thread.
fn pending(sig: i32) -> bool {
    // SAFETY: `set` is a live local the kernel fills.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        assert_eq!(libc::sigpending(&mut set), 0);
        libc::sigismember(&set, sig) == 1
    }
}

#[test]
fn semantics_188_a_signal_raised_again_before_its_delivery_is_handled_once() {
    // The handler runs per delivery, not per raise: the kernel keeps one pending instance
    // of a standard signal. (This is what made a test that raised a signal at fixed
    // intervals fail under load; see `once_seen`.)
    in_child_process(
        "semantics_188_a_signal_raised_again_before_its_delivery_is_handled_once",
        || {
            let lp = new_loop();
            let count = std::rc::Rc::new(std::cell::Cell::new(0));
            let c = count.clone();
            lp.add_signal_handler(libc::SIGUSR2, move || c.set(c.get() + 1))
                .unwrap();
            let stopper = lp.clone();
            lp.add_signal_handler(libc::SIGUSR1, move || stopper.stop())
                .unwrap();
            let raise_here = |sig| {
                // SAFETY: signals this thread, whose process handles `sig`.
                assert_eq!(unsafe { libc::pthread_kill(libc::pthread_self(), sig) }, 0);
            };
            lp.call_soon(move || {
                mask(libc::SIG_BLOCK, libc::SIGUSR2);
                raise_here(libc::SIGUSR2);
                raise_here(libc::SIGUSR2);
                assert!(pending(libc::SIGUSR2));
                mask(libc::SIG_UNBLOCK, libc::SIGUSR2);
                assert!(!pending(libc::SIGUSR2));
                // Its byte follows SIGUSR2's in the pipe: when SIGUSR1 stops the loop, every
                // SIGUSR2 delivery has been handled.
                raise_here(libc::SIGUSR1);
            })
            .unwrap();
            support::guard(&lp, 20.0);
            lp.run_forever().unwrap();
            assert_eq!(count.get(), 1);
        },
    );
}

#[test]
fn semantics_189_190_invalid_and_uncatchable_signals() {
    // Validation happens before any process state is touched, so this runs in-process.
    let lp = new_loop();
    for sig in [0, -1, NSIG, NSIG + 1] {
        let err = lp.add_signal_handler(sig, || ()).unwrap_err();
        assert!(
            matches!(err, LoopError::InvalidSignal(s) if s == sig),
            "{sig}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("invalid signal number {sig}"));
        assert!(lp.remove_signal_handler(sig).is_err());
    }
    for sig in [libc::SIGKILL, libc::SIGSTOP] {
        let err = lp.add_signal_handler(sig, || ()).unwrap_err();
        assert_eq!(err.to_string(), format!("sig {sig} cannot be caught"));
        assert!(!lp.remove_signal_handler(sig).unwrap());
    }
    assert!(lp.signal_handlers().is_empty());
}

#[test]
fn semantics_191_closed_loop_is_checked_after_the_signal_number() {
    let lp = new_loop();
    lp.close().unwrap();
    assert!(matches!(
        lp.add_signal_handler(0, || ()),
        Err(LoopError::InvalidSignal(0))
    ));
    assert!(matches!(
        lp.add_signal_handler(libc::SIGUSR1, || ()),
        Err(LoopError::LoopClosed)
    ));
}

#[test]
fn semantics_193_removal_restores_the_default_and_adding_replaces() {
    in_child_process(
        "semantics_193_removal_restores_the_default_and_adding_replaces",
        || {
            let lp = new_loop();
            let log = Log::new();
            let l = log.clone();
            lp.add_signal_handler(libc::SIGUSR1, move || l.push("first"))
                .unwrap();
            let (l, lp2) = (log.clone(), lp.clone());
            lp.add_signal_handler(libc::SIGUSR1, move || {
                l.push("second");
                lp2.stop();
            })
            .unwrap();
            assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);
            lp.call_soon(|| raise(libc::SIGUSR1)).unwrap();
            support::guard(&lp, 20.0);
            lp.run_forever().unwrap();
            assert_eq!(log.get(), vec!["second"]);
            assert!(lp.remove_signal_handler(libc::SIGUSR1).unwrap());
            assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
            assert!(!lp.remove_signal_handler(libc::SIGUSR1).unwrap());
        },
    );
}

#[test]
fn semantics_194_close_removes_every_handler() {
    in_child_process("semantics_194_close_removes_every_handler", || {
        let lp = new_loop();
        lp.add_signal_handler(libc::SIGUSR1, || ()).unwrap();
        lp.add_signal_handler(libc::SIGUSR2, || ()).unwrap();
        assert_eq!(lp.signal_handlers(), vec![libc::SIGUSR1, libc::SIGUSR2]);
        lp.close().unwrap();
        assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
        assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
        assert!(lp.signal_handlers().is_empty());
        // Dropping an unclosed loop does the same.
        let lp = new_loop();
        lp.add_signal_handler(libc::SIGUSR1, || ()).unwrap();
        drop(lp);
        assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
    });
}

#[test]
fn semantics_195_a_handler_may_remove_handlers() {
    in_child_process("semantics_195_a_handler_may_remove_handlers", || {
        let lp = new_loop();
        let log = Log::new();
        let l = log.clone();
        lp.add_signal_handler(libc::SIGUSR1, move || l.push("GOTIT"))
            .unwrap();
        let (l, lp2) = (log.clone(), lp.clone());
        lp.add_signal_handler(libc::SIGUSR2, move || {
            assert!(lp2.remove_signal_handler(libc::SIGUSR1).unwrap());
            // The test's own "custom handler" for what follows: ignore SIGUSR1.
            // SAFETY: sets a standard disposition for a signal nobody else handles now.
            unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
            l.push("REMOVED");
        })
        .unwrap();
        // Each signal is raised once the one before was handled (see `once_seen`).
        let (lp3, l) = (lp.clone(), log.clone());
        let seen = move |n: usize| {
            let l = l.clone();
            move || l.len() == n
        };
        lp.call_soon(move || {
            raise(libc::SIGUSR1);
            let lp4 = lp3.clone();
            once_seen(&lp3, seen(1), move || {
                raise(libc::SIGUSR1);
                let lp5 = lp4.clone();
                once_seen(&lp4, seen(2), move || {
                    raise(libc::SIGUSR2);
                    let lp6 = lp5.clone();
                    once_seen(&lp5, seen(3), move || {
                        raise(libc::SIGUSR1);
                        raise(libc::SIGUSR1);
                        let lp7 = lp6.clone();
                        lp6.call_later(0.05, move || lp7.stop()).unwrap();
                    });
                });
            });
        })
        .unwrap();
        support::guard(&lp, 20.0);
        lp.run_forever().unwrap();
        assert_eq!(log.get(), vec!["GOTIT", "GOTIT", "REMOVED"]);
    });
}

#[test]
fn semantics_196_a_loop_without_handlers_never_touches_signal_state() {
    in_child_process(
        "semantics_196_a_loop_without_handlers_never_touches_signal_state",
        || {
            let watched = [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGUSR1,
                libc::SIGCHLD,
                libc::SIGPIPE,
            ];
            let before: Vec<_> = watched.iter().map(|&s| disposition(s)).collect();
            let lp = new_loop();
            let lp2 = lp.clone();
            lp.call_later(0.01, move || lp2.stop()).unwrap();
            support::guard(&lp, 20.0);
            lp.run_forever().unwrap();
            lp.close().unwrap();
            let after: Vec<_> = watched.iter().map(|&s| disposition(s)).collect();
            assert_eq!(before, after);
        },
    );
}

#[test]
fn a_signal_taken_over_by_another_loop_survives_the_first_loops_removal() {
    in_child_process(
        "a_signal_taken_over_by_another_loop_survives_the_first_loops_removal",
        || {
            let first = new_loop();
            first.add_signal_handler(libc::SIGUSR1, || ()).unwrap();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                let lp = new_loop();
                let got = stop_on_first(&lp, libc::SIGUSR1);
                ready_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                raise(libc::SIGUSR1);
                support::guard(&lp, 20.0);
                lp.run_forever().unwrap();
                got.get()
            });
            ready_rx.recv().unwrap();
            // The first loop gives the signal up: the other loop's handler stays installed.
            assert!(first.remove_signal_handler(libc::SIGUSR1).unwrap());
            assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);
            first.close().unwrap();
            assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);
            go_tx.send(()).unwrap();
            assert!(
                other.join().unwrap(),
                "the other loop did not get its signal"
            );
        },
    );
}

#[test]
fn semantics_197_signals_work_in_a_child_forked_from_a_non_main_thread() {
    in_child_process(
        "semantics_197_signals_work_in_a_child_forked_from_a_non_main_thread",
        || {
            // The parent has a loop with a handler, so the child inherits that state too.
            let parent_loop = new_loop();
            parent_loop
                .add_signal_handler(libc::SIGUSR1, || ())
                .unwrap();
            let status = std::thread::spawn(|| {
                // SAFETY: the child runs only this closure's code and ends with `_exit`; the
                // process's other threads are idle (the test harness waits on this test).
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0);
                if pid == 0 {
                    let ok = std::panic::catch_unwind(|| {
                        let lp = new_loop();
                        let got = stop_on_first(&lp, libc::SIGUSR1);
                        lp.call_soon(|| raise(libc::SIGUSR1)).unwrap();
                        let guard = lp.clone();
                        lp.call_later(5.0, move || guard.stop()).unwrap();
                        lp.run_forever().unwrap();
                        got.get()
                    })
                    .unwrap_or(false);
                    // SAFETY: ends the forked child without running the parent's destructors.
                    unsafe { libc::_exit(if ok { 0 } else { 1 }) };
                }
                let mut status = 0;
                // SAFETY: waits for our own child into a live local.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                status
            })
            .join()
            .unwrap();
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
            parent_loop.close().unwrap();
        },
    );
}
