//! The epoll backend. (Being written.)

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::completion::RawCompletion;
use crate::sys::{Backend, Config};
use crate::table::{OpId, OpTable};
use crate::{BackendKind, Features};

/// The epoll driver.
pub(crate) struct Driver {
    features: Features,
}

impl Driver {
    /// Creates the epoll instance per `config`.
    pub(crate) fn new(_config: &Config) -> io::Result<Driver> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the epoll backend is not built yet",
        ))
    }
}

impl Backend for Driver {
    fn push(&mut self, _table: &mut OpTable, _id: OpId) {}
    fn cancel(&mut self, _table: &mut OpTable, _id: OpId) {}
    fn poll(&mut self, _table: &mut OpTable, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn pop(&mut self, _table: &mut OpTable) -> Option<RawCompletion> {
        None
    }
    fn forget_fd(&mut self, _fd: RawFd) {}
    fn features(&self) -> &Features {
        &self.features
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Epoll
    }
}
