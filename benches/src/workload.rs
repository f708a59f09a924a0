//! The workloads the harness knows, and how `--workload` names them.

use std::fmt;

use crate::contenders::Mode;
use crate::micro::MicroKind;

/// Connection counts of the echo grid.
pub(crate) const GRID_CONNS: [usize; 4] = [1, 100, 1_000, 10_000];
/// Message sizes of the echo grid.
pub(crate) const GRID_SIZES: [usize; 3] = [64, 1024, 16 * 1024];

/// One thing to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// TCP echo: `conns` connections in a closed loop, `size`-byte messages.
    Echo {
        /// Connections.
        conns: usize,
        /// Message size in bytes.
        size: usize,
    },
    /// HTTP/1.1 keep-alive plaintext: `conns` connections, one request in flight on each.
    Http {
        /// Connections.
        conns: usize,
    },
    /// Memory per idle connection: `conns` connections open, each after one echo.
    Idle {
        /// Connections.
        conns: usize,
    },
    /// An event-loop micro-workload.
    Micro(MicroKind),
}

impl Workload {
    /// The default run: fits in about two minutes.
    pub(crate) fn default_set() -> Vec<Workload> {
        let mut v = vec![
            Workload::Echo {
                conns: 100,
                size: 64,
            },
            Workload::Echo {
                conns: 1_000,
                size: 1024,
            },
            Workload::Http { conns: 100 },
            Workload::Idle { conns: 1_000 },
        ];
        v.extend(MicroKind::ALL.map(Workload::Micro));
        v
    }

    /// The `--quick` run: under a minute. The default run without HTTP (the micro-workloads
    /// also run shorter under `--quick`).
    pub(crate) fn quick_set() -> Vec<Workload> {
        let mut v = Workload::default_set();
        v.retain(|w| !matches!(w, Workload::Http { .. }));
        v
    }

    /// The whole echo grid.
    pub(crate) fn grid() -> Vec<Workload> {
        GRID_CONNS
            .iter()
            .flat_map(|&conns| {
                GRID_SIZES
                    .iter()
                    .map(move |&size| Workload::Echo { conns, size })
            })
            .collect()
    }

    /// The workload's name in the table and in JSON records.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Workload::Echo { .. } => "echo",
            Workload::Http { .. } => "http",
            Workload::Idle { .. } => "idle",
            Workload::Micro(k) => k.name(),
        }
    }

    /// The server mode a network workload needs (`None` for micro-workloads).
    pub(crate) fn mode(&self) -> Option<Mode> {
        match self {
            Workload::Echo { .. } | Workload::Idle { .. } => Some(Mode::Echo),
            Workload::Http { .. } => Some(Mode::Http),
            Workload::Micro(_) => None,
        }
    }

    /// Connections, for network workloads.
    pub(crate) fn conns(&self) -> Option<usize> {
        match *self {
            Workload::Echo { conns, .. } | Workload::Http { conns } | Workload::Idle { conns } => {
                Some(conns)
            }
            Workload::Micro(_) => None,
        }
    }

    /// Message size, where it is a parameter.
    pub(crate) fn size(&self) -> Option<usize> {
        match *self {
            Workload::Echo { size, .. } => Some(size),
            Workload::Idle { .. } => Some(64),
            _ => None,
        }
    }

    /// Parses a comma-separated `--workload` list: `default`, `quick`, `grid`, `all`,
    /// `echo[:CONNSxSIZE]`, `http[:CONNS]`, `idle[:CONNS]`, `micro`, or a micro name.
    pub(crate) fn parse_list(spec: &str) -> Result<Vec<Workload>, String> {
        let mut out = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (head, arg) = match item.split_once(':') {
                Some((h, a)) => (h, Some(a)),
                None => (item, None),
            };
            let conns = |default: usize| -> Result<usize, String> {
                arg.map_or(Ok(default), |a| {
                    parse_count(a).ok_or_else(|| format!("bad connection count in {item:?}"))
                })
            };
            match head {
                "default" => out.extend(Workload::default_set()),
                "quick" => out.extend(Workload::quick_set()),
                "grid" => out.extend(Workload::grid()),
                "all" => {
                    out.extend(Workload::grid());
                    out.push(Workload::Http { conns: 100 });
                    out.push(Workload::Idle { conns: 10_000 });
                    out.extend(MicroKind::ALL.map(Workload::Micro));
                }
                "echo" => out.push(match arg {
                    None => Workload::Echo {
                        conns: 100,
                        size: 64,
                    },
                    Some(a) => {
                        let (c, s) = a
                            .split_once('x')
                            .ok_or_else(|| format!("expected echo:CONNSxSIZE, got {item:?}"))?;
                        let conns = parse_count(c)
                            .ok_or_else(|| format!("bad connection count in {item:?}"))?;
                        let size = parse_size(s).ok_or_else(|| format!("bad size in {item:?}"))?;
                        Workload::Echo { conns, size }
                    }
                }),
                "http" => out.push(Workload::Http { conns: conns(100)? }),
                "idle" => out.push(Workload::Idle {
                    conns: conns(1_000)?,
                }),
                "micro" => out.extend(MicroKind::ALL.map(Workload::Micro)),
                other => match MicroKind::parse(other) {
                    Some(k) => out.push(Workload::Micro(k)),
                    None => return Err(format!("unknown workload {item:?}")),
                },
            }
        }
        if out
            .iter()
            .any(|w| w.conns() == Some(0) || w.size() == Some(0))
        {
            return Err("connection counts and sizes must be positive".into());
        }
        out.dedup();
        if out.is_empty() {
            return Err("no workload given".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Workload::Echo { conns, size } => write!(f, "echo {conns} x {}", fmt_size(size)),
            Workload::Http { conns } => write!(f, "http {conns} conns"),
            Workload::Idle { conns } => write!(f, "idle {conns} conns"),
            Workload::Micro(k) => f.write_str(k.name()),
        }
    }
}

/// `64`, `1k`, `1KiB`, `16k`, `16384`.
pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        (n, 1024)
    } else if let Some(n) = lower.strip_suffix('b') {
        (n, 1)
    } else {
        (lower.as_str(), 1)
    };
    num.trim().parse::<usize>().ok().map(|n| n * mult)
}

/// `100`, `1000`, `1_000`, `10k`.
fn parse_count(s: &str) -> Option<usize> {
    let clean: String = s.trim().chars().filter(|&c| c != '_' && c != ',').collect();
    match clean.strip_suffix('k') {
        Some(n) => n.parse::<usize>().ok().map(|n| n * 1000),
        None => clean.parse().ok(),
    }
}

/// `64 B`, `1 KiB`, `16 KiB`.
pub(crate) fn fmt_size(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_lists() {
        assert_eq!(
            Workload::parse_list("echo:1000x1k,http:10,idle").unwrap(),
            vec![
                Workload::Echo {
                    conns: 1000,
                    size: 1024
                },
                Workload::Http { conns: 10 },
                Workload::Idle { conns: 1000 },
            ]
        );
        assert_eq!(Workload::parse_list("grid").unwrap().len(), 12);
        assert_eq!(
            Workload::parse_list("timer_lateness").unwrap(),
            vec![Workload::Micro(MicroKind::TimerLateness)]
        );
        assert!(Workload::parse_list("echo:100").is_err());
        assert!(Workload::parse_list("bogus").is_err());
        assert!(Workload::parse_list("echo:0x64").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("16KiB"), Some(16384));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(fmt_size(16384), "16 KiB");
        assert_eq!(fmt_size(64), "64 B");
        assert_eq!(parse_count("10k"), Some(10_000));
    }
}
