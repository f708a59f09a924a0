//! The minimal HTTP/1.1 keep-alive workload shared by every contender: one fixed request,
//! one fixed response, and a counter that finds request ends across read boundaries.

/// The request the load generator sends (also what `wrk` sends, modulo headers).
pub(crate) const REQUEST: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The response every contender sends per request.
pub(crate) const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// Counts complete requests (`\r\n\r\n` terminators) in a byte stream fed in arbitrary chunks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestCounter {
    /// How many bytes of `\r\n\r\n` the stream currently ends with.
    matched: u8,
}

impl RequestCounter {
    /// Feeds `bytes`; returns how many requests ended inside them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> usize {
        const END: &[u8; 4] = b"\r\n\r\n";
        let mut ends = 0;
        for &b in bytes {
            self.matched = if b == END[self.matched as usize] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == 4 {
                ends += 1;
                self.matched = 0;
            }
        }
        ends
    }
}

/// Appends `n` responses to `out`.
pub(crate) fn push_responses(out: &mut Vec<u8>, n: usize) {
    for _ in 0..n {
        out.extend_from_slice(RESPONSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_split_anywhere() {
        let two = [REQUEST, REQUEST].concat();
        for cut in 0..two.len() {
            let mut c = RequestCounter::default();
            assert_eq!(c.feed(&two[..cut]) + c.feed(&two[cut..]), 2, "cut at {cut}");
        }
        let mut c = RequestCounter::default();
        assert_eq!(c.feed(b"\r\r\n\r\n"), 1);
    }
}
