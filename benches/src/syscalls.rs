//! Syscalls made by the server, counted by `perf stat -e raw_syscalls:sys_enter -p PID`.
//!
//! perf starts with counting disabled (`-D -1`) and is switched on and off through its
//! control FIFO, so the count covers exactly the window the load generator measures.
//! Where perf is missing or not permitted, the figure is reported as null.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENT: &str = "raw_syscalls:sys_enter";

/// Whether `perf stat -e raw_syscalls:sys_enter` works here (checked once by the caller).
pub(crate) fn perf_usable() -> bool {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", EVENT, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output();
    match out {
        Ok(o) => o.status.success() && parse_count(&String::from_utf8_lossy(&o.stderr)).is_some(),
        Err(_) => false,
    }
}

/// A perf process attached to one server, counting while enabled.
#[derive(Debug)]
pub(crate) struct SyscallCounter {
    perf: Child,
    ctl: File,
    ack: File,
    dir: PathBuf,
}

impl SyscallCounter {
    /// Attaches perf to `pid` with counting disabled.
    pub(crate) fn attach(pid: u32) -> io::Result<SyscallCounter> {
        let dir =
            std::env::temp_dir().join(format!("ringloop-bench-perf-{}-{pid}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let (ctl_path, ack_path) = (dir.join("ctl"), dir.join("ack"));
        for p in [&ctl_path, &ack_path] {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Open our read end first (non-blocking open of a FIFO for reading succeeds at once).
        let ack = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&ack_path)?;
        let mut cmd = Command::new("perf");
        cmd.args(["stat", "-x,", "-e", EVENT, "-D", "-1", "-o"])
            .arg(dir.join("out"))
            .arg(format!(
                "--control=fifo:{},{}",
                ctl_path.display(),
                ack_path.display()
            ))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let perf = crate::server::spawn_bound(&mut cmd, None)?;
        let mut counter = SyscallCounter {
            perf,
            ctl: File::open("/dev/null")?,
            ack,
            dir,
        };
        // The write end can only be opened once perf holds the read end: poll for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        counter.ctl = loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&ctl_path)
            {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                    if counter.perf.try_wait()?.is_some() {
                        return Err(io::Error::other("perf exited at start"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(counter)
    }

    /// Starts counting.
    pub(crate) fn enable(&mut self) -> io::Result<()> {
        self.command("enable")
    }

    /// Stops counting.
    pub(crate) fn disable(&mut self) -> io::Result<()> {
        self.command("disable")
    }

    fn command(&mut self, cmd: &str) -> io::Result<()> {
        self.ctl.write_all(format!("{cmd}\n").as_bytes())?;
        let mut pfd = libc::pollfd {
            fd: self.ack.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        // perf answers "ack\n" followed by a NUL byte.
        while !got.windows(4).any(|w| w == b"ack\n") {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as i32;
            if left == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("perf did not ack {cmd}"),
                ));
            }
            // SAFETY: `pfd` is one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left) };
            let mut buf = [0u8; 64];
            match self.ack.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stops perf and returns the number of syscalls counted while enabled.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
        unsafe { libc::kill(self.perf.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.perf.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "perf did not exit on SIGINT",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = fs::read_to_string(self.dir.join("out"))?;
        parse_count(&out).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no count in {out:?}"))
        })
    }
}

impl Drop for SyscallCounter {
    fn drop(&mut self) {
        let _ = self.perf.kill();
        let _ = self.perf.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The count of `perf stat -x,` output: the first field of the line naming the event.
fn parse_count(out: &str) -> Option<u64> {
    out.lines()
        .filter(|l| l.contains(EVENT))
        .find_map(|l| l.split(',').next()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn parses_csv_count() {
        let out = "# started on Wed\n\n12345,,raw_syscalls:sys_enter,1000,100.00,,\n";
        assert_eq!(parse_count(out), Some(12345));
        assert_eq!(
            parse_count("<not counted>,,raw_syscalls:sys_enter,0,0,,"),
            None
        );
    }
}
