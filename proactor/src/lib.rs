//! ringloop's completion driver: a single-threaded **proactor** over io_uring, with an
//! epoll emulation behind the same contract.
//!
//! A [`Proactor`] owns one ring. Its user *pushes* typed operations ([`Op`]), each tagged with
//! a caller-chosen `token`, and later *pops* [`Completion`]s that carry the token back, so a
//! caller dispatches completions by a slab key of its own. Nothing here knows about an event
//! loop, transports or protocols.
//!
//! # Ownership
//! An operation owns everything the kernel reads or writes (buffers, address storage,
//! scratch headers) from [`Proactor::push`] until its **final** completion is reaped; the
//! completion hands all of it back, on success and on failure alike. Cancelling an op
//! ([`Proactor::cancel`]) or abandoning it ([`Proactor::detach`]) never frees or reuses that
//! memory early: the proactor keeps it until the kernel has reported the op done. Dropping
//! the proactor cancels every op in flight and waits for all of their completions.
//!
//! File descriptors are passed to ops as raw fds that the *caller* owns: keep an fd open
//! until every op on it has completed, and close it through the proactor
//! ([`op::Close`] or [`Proactor::close_fd`]) so that the epoll backend forgets its
//! registration.
//!
//! # Example
//! ```
//! use ringloop_proactor::{op, Proactor};
//! use std::time::Duration;
//!
//! let mut proactor = Proactor::new()?;
//! proactor.push(op::Timeout::new(Duration::from_millis(1)), 7);
//! proactor.poll(None)?;
//! let done = proactor.pop().expect("the timeout completed");
//! assert_eq!(done.token, 7);
//! assert!(done.result.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod audit;
mod backend;
mod buf;
mod completion;
mod error;
mod features;
pub mod op;
mod proactor;
mod sys;
mod table;
mod waker;

pub use backend::{BackendChoice, BackendKind, BACKEND_ENV};
pub use buf::RecvBuf;
pub use completion::Completion;
pub use error::{SetupError, SetupErrorKind};
pub use features::Features;
pub use op::Op;
pub use proactor::{Builder, Proactor};
pub use table::OpId;
pub use waker::Waker;
