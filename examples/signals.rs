//! asyncio's "Set signal handlers for SIGINT and SIGTERM" example: the loop runs forever
//! until SIGINT (Ctrl+C) or SIGTERM arrives; the handler says which and stops the loop, and
//! the process exits with status 0.
//!
//! ```text
//! cargo run --example signals
//! kill -TERM <pid>        # from another terminal
//! ```

use ringloop::runtime::{new_event_loop, LoopError};

fn main() -> Result<(), LoopError> {
    let lp = new_event_loop()?;
    for (signame, sig) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM)] {
        let handler_loop = lp.clone();
        lp.add_signal_handler(sig, move || {
            println!("got signal {signame}: exit");
            handler_loop.stop();
        })?;
    }
    println!("Event loop running forever, press CTRL+c to interrupt.");
    println!(
        "pid {}: send SIGINT or SIGTERM to exit.",
        std::process::id()
    );
    let outcome = lp.run_forever();
    lp.close()?;
    outcome
}
