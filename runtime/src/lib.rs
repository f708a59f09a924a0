//! The ringloop event loop (being written).
