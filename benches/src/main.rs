//! The ringloop benchmark harness (io_uring vs epoll vs peers). Under construction.

fn main() {
    println!("ringloop-bench: the harness is not built yet");
}
