//! The io_uring backend. (Being written.)

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::completion::RawCompletion;
use crate::error::{SetupError, SetupErrorKind};
use crate::sys::{Backend, Config};
use crate::table::{OpId, OpTable};
use crate::{BackendKind, Features};

/// The io_uring driver.
pub(crate) struct Driver {
    features: Features,
}

impl Driver {
    /// Sets up a ring per `config`, probing what the kernel offers.
    pub(crate) fn new(_config: &Config) -> Result<Driver, SetupError> {
        Err(SetupError::new(
            SetupErrorKind::Other,
            "the io_uring backend is not built yet",
            None,
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
        BackendKind::IoUring
    }
}
