//! TLS for ringloop: a rustls transport layered over any ringloop stream transport.
//!
//! Nothing lives here yet; the TLS layer lands after the transports.
#![forbid(unsafe_code)]
