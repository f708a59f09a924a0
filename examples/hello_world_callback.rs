//! asyncio's "Hello World with call_soon()/call_later()" example: a callback prints
//! `Hello World` and re-schedules itself with `call_later` every two seconds, until the
//! process is interrupted.
//!
//! ```text
//! cargo run --example hello_world_callback
//! cargo run --example hello_world_callback -- --count 3   # stop after three greetings
//! ```

use ringloop::runtime::{new_event_loop, EventLoop, LoopError};

fn hello_world(lp: EventLoop, remaining: Option<u64>) {
    println!("Hello World");
    match remaining {
        Some(1) => lp.stop(),
        _ => {
            let next = lp.clone();
            let remaining = remaining.map(|n| n - 1);
            lp.call_later(2, move || hello_world(next, remaining))
                .expect("the loop is open while it runs");
        }
    }
}

fn main() -> Result<(), LoopError> {
    let count = parse_count();
    let lp = new_event_loop()?;
    let first = lp.clone();
    lp.call_soon(move || hello_world(first, count))?;
    let outcome = lp.run_forever();
    lp.close()?;
    outcome
}

/// `--count N`: stop after N greetings (default: run forever, as asyncio's example does).
fn parse_count() -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
}
