//! The loop's clock and the delay types `call_later`/`sleep` accept.
//!
//! Loop time is monotonic seconds as `f64` since an unspecified epoch (the first reading in
//! the process), read fresh on every call: nothing caches a "now" across callbacks
//! (semantics 34, 44).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::LoopError;

/// Longest single wait in the proactor (asyncio's `MAXIMUM_SELECT_TIMEOUT`, semantics 41).
pub(crate) const MAXIMUM_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Monotonic seconds since the process's clock epoch.
pub(crate) fn monotonic() -> f64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_secs_f64()
}

/// How long the proactor may wait for a deadline `when` seen at `now`: rounded **up** to
/// the next nanosecond so a timer never fires early (semantics 43), clamped to
/// [`MAXIMUM_WAIT`] so huge or infinite deadlines never overflow (semantics 41).
pub(crate) fn wait_until(when: f64, now: f64) -> Duration {
    let delta = when - now;
    if delta.is_nan() || delta <= 0.0 {
        return Duration::ZERO;
    }
    if delta >= MAXIMUM_WAIT.as_secs_f64() {
        return MAXIMUM_WAIT;
    }
    let nanos = (delta * 1e9).ceil();
    Duration::from_nanos(nanos as u64)
}

/// A delay in seconds: a [`Duration`] or a number of seconds (negative delays are legal and
/// mean "already due", semantics 37; `f64::INFINITY` means "never", semantics 41).
pub trait Delay {
    /// The delay in seconds.
    fn as_secs(&self) -> f64;
}

impl Delay for Duration {
    fn as_secs(&self) -> f64 {
        self.as_secs_f64()
    }
}

impl Delay for f64 {
    fn as_secs(&self) -> f64 {
        *self
    }
}

impl Delay for f32 {
    fn as_secs(&self) -> f64 {
        f64::from(*self)
    }
}

impl Delay for i32 {
    fn as_secs(&self) -> f64 {
        f64::from(*self)
    }
}

impl Delay for i64 {
    fn as_secs(&self) -> f64 {
        *self as f64
    }
}

impl Delay for u32 {
    fn as_secs(&self) -> f64 {
        f64::from(*self)
    }
}

impl Delay for u64 {
    fn as_secs(&self) -> f64 {
        *self as f64
    }
}

/// `delay` in seconds, or an error for NaN (asyncio: `Invalid delay: NaN (not a number)`).
pub(crate) fn checked_secs(delay: &dyn Delay) -> Result<f64, LoopError> {
    let secs = delay.as_secs();
    if secs.is_nan() {
        return Err(LoopError::invalid_argument(
            "Invalid delay: NaN (not a number)",
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_and_never_overflow() {
        // semantics 43: never shorter than the real delay.
        let wait = wait_until(1.000_000_000_5, 1.0);
        assert!(wait >= Duration::from_nanos(1));
        assert_eq!(wait_until(1.0, 2.0), Duration::ZERO);
        // semantics 41: infinite and astronomically far deadlines clamp to 24 h.
        assert_eq!(wait_until(f64::INFINITY, 0.0), MAXIMUM_WAIT);
        assert_eq!(wait_until(2f64.powi(55), 0.0), MAXIMUM_WAIT);
        assert_eq!(wait_until(i64::MAX as f64, 0.0), MAXIMUM_WAIT);
        assert_eq!(wait_until(0.07, 0.0), Duration::from_millis(70));
    }

    #[test]
    fn clock_is_monotonic() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
    }

    #[test]
    fn nan_delays_are_rejected() {
        // semantics 56 (sleep(nan)) and 45 (no meaningless delays).
        let err = checked_secs(&f64::NAN).unwrap_err();
        assert_eq!(err.to_string(), "Invalid delay: NaN (not a number)");
        assert_eq!(checked_secs(&-1.5).ok(), Some(-1.5));
        assert_eq!(checked_secs(&Duration::from_millis(1500)).ok(), Some(1.5));
    }
}
