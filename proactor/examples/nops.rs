//! Throughput of the bare machinery: batches of nops pushed, submitted with one poll, popped.
//!
//! ```text
//! cargo run --release -p ringloop-proactor --example nops [TOTAL] [BATCH]
//! ```

use std::time::{Duration, Instant};

use ringloop_proactor::op::Nop;
use ringloop_proactor::Proactor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(2_000_000), |s| s.parse())?;
    let batch: u64 = args.next().map_or(Ok(256), |s| s.parse())?;
    let mut proactor = Proactor::new()?;
    println!(
        "backend: {}",
        proactor.features().describe(proactor.backend())
    );
    let start = Instant::now();
    let (mut done, mut turns) = (0u64, 0u64);
    while done < total {
        for i in 0..batch {
            proactor.push(Nop, i);
        }
        let mut got = 0;
        while got < batch {
            proactor.poll(Some(Duration::from_secs(1)))?;
            turns += 1;
            while proactor.pop().is_some() {
                got += 1;
            }
        }
        done += batch;
    }
    let elapsed = start.elapsed();
    println!(
        "{done} nops in {elapsed:.2?}: {:.1} M ops/s, {:.0} ns/op, {turns} loop turns",
        done as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_nanos() as f64 / done as f64
    );
    Ok(())
}
