//! Write flow control: the high/low water marks of asyncio's `_FlowControlMixin`
//! (semantics 135–141), as pure logic the transports drive.
//!
//! The transport reports its buffered size after every change; [`FlowControl`] answers
//! whether the protocol must now be told to pause or to resume. Pausing happens when the size
//! goes **strictly above** `high`; resuming when it drops to **`low` or below**; the two
//! strictly alternate, so a protocol never sees two pauses in a row.

use std::fmt;

/// asyncio's default high-water mark: 64 KiB.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// asyncio's default low-water mark: a quarter of the high mark, 16 KiB.
pub const DEFAULT_LOW_WATER: usize = DEFAULT_HIGH_WATER / 4;

/// What the protocol must be told after the buffered size changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowSignal {
    /// Nothing: the state did not cross a mark.
    None,
    /// Call `pause_writing()`.
    Pause,
    /// Call `resume_writing()`.
    Resume,
}

/// Invalid write-buffer limits: asyncio's `ValueError('high (H) must be >= low (L) must be
/// >= 0')`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLimits {
    /// The high mark asked for (after defaults were applied).
    pub high: usize,
    /// The low mark asked for (after defaults were applied).
    pub low: usize,
}

impl fmt::Display for InvalidLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "high ({}) must be >= low ({}) must be >= 0",
            self.high, self.low
        )
    }
}

impl std::error::Error for InvalidLimits {}

impl From<InvalidLimits> for std::io::Error {
    fn from(err: InvalidLimits) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}

/// Water marks plus whether the protocol is currently paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowControl {
    high: usize,
    low: usize,
    paused: bool,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
            paused: false,
        }
    }
}

impl FlowControl {
    /// Resolves `(high, low)` as asyncio does (semantics 136): only `high` given sets low to
    /// `high / 4`; only `low` given sets high to `4 * low`; neither gives the defaults.
    pub(crate) fn resolve(
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(usize, usize), InvalidLimits> {
        let (high, low) = match (high, low) {
            (None, None) => (DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER),
            (Some(high), None) => (high, high / 4),
            (None, Some(low)) => (low.saturating_mul(4), low),
            (Some(high), Some(low)) => (high, low),
        };
        if high < low {
            return Err(InvalidLimits { high, low });
        }
        Ok((high, low))
    }

    /// Sets new marks (already resolved); the caller re-checks the buffered size.
    pub(crate) fn set_limits(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low;
    }

    /// `(low, high)`, the order of asyncio's `get_write_buffer_limits()`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    /// Whether the protocol was told to pause and not yet to resume.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Called after the buffered size grew (or the marks changed): pause when strictly above
    /// `high` (semantics 137, 139).
    #[inline]
    pub(crate) fn after_grow(&mut self, size: usize) -> FlowSignal {
        if !self.paused && size > self.high {
            self.paused = true;
            FlowSignal::Pause
        } else {
            FlowSignal::None
        }
    }

    /// Called after the buffered size shrank: resume at `low` or below (semantics 137,
    /// 139).
    #[inline]
    pub(crate) fn after_shrink(&mut self, size: usize) -> FlowSignal {
        if self.paused && size <= self.low {
            self.paused = false;
            FlowSignal::Resume
        } else {
            FlowSignal::None
        }
    }

    /// Forgets a pause without signalling (abort does not resume, semantics 122).
    pub(crate) fn forget_pause(&mut self) {
        self.paused = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_64k_and_16k() {
        // semantics 135
        assert_eq!(FlowControl::default().limits(), (16384, 65536));
        assert_eq!(FlowControl::resolve(None, None), Ok((65536, 16384)));
    }

    #[test]
    fn one_mark_derives_the_other() {
        // semantics 136
        assert_eq!(FlowControl::resolve(Some(100), None), Ok((100, 25)));
        assert_eq!(FlowControl::resolve(None, Some(16385)), Ok((65540, 16385)));
        let err = FlowControl::resolve(Some(0), Some(1)).unwrap_err();
        assert_eq!(err.to_string(), "high (0) must be >= low (1) must be >= 0");
    }

    #[test]
    fn pause_strictly_above_high_resume_at_low_alternating() {
        // semantics 137
        let mut flow = FlowControl::default();
        flow.set_limits(4, 1);
        assert_eq!(flow.after_grow(3), FlowSignal::None);
        assert_eq!(
            flow.after_grow(4),
            FlowSignal::None,
            "equal to high does not pause"
        );
        assert_eq!(flow.after_grow(6), FlowSignal::Pause);
        assert_eq!(flow.after_grow(9), FlowSignal::None, "no second pause");
        assert_eq!(flow.after_shrink(2), FlowSignal::None);
        assert_eq!(flow.after_shrink(1), FlowSignal::Resume);
        assert_eq!(flow.after_shrink(0), FlowSignal::None, "no second resume");
        assert_eq!(flow.after_grow(5), FlowSignal::Pause);
    }

    #[test]
    fn zero_marks_pause_when_non_empty_and_resume_when_empty() {
        // semantics 139
        let mut flow = FlowControl::default();
        flow.set_limits(0, 0);
        assert_eq!(flow.after_grow(1), FlowSignal::Pause);
        assert_eq!(flow.after_shrink(1), FlowSignal::None);
        assert_eq!(flow.after_shrink(0), FlowSignal::Resume);
    }
}
