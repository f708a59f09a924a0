//! Reporting errors nobody else can handle: the loop's exception handler and the context
//! it receives (asyncio's `call_exception_handler`, semantics 46–52).
//!
//! Who reports: a callback that panics or returns an error, a task or future dropped with
//! an error nobody retrieved, a task dropped while pending, an I/O handler that panics, and
//! the transports (for non-OS errors). Clean paths never report (semantics 52).

use std::fmt;
use std::rc::Rc;

use crate::error::LoopError;
use crate::event_loop::EventLoop;

/// A custom exception handler: called on the loop thread with the loop and the context.
pub type ExceptionHandler = Rc<dyn Fn(&EventLoop, &ExceptionContext)>;

/// What is reported to the exception handler (asyncio's context dict).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// What happened, e.g. `Exception in callback <Handle …>`.
    pub message: String,
    /// The error, if there is one.
    pub error: Option<LoopError>,
    /// The callback involved (its description).
    pub handle: Option<String>,
    /// The future involved (its description).
    pub future: Option<String>,
    /// The task involved (its description).
    pub task: Option<String>,
    /// Other keys (`transport`, `protocol`, `socket`, …), in insertion order.
    pub extra: Vec<(String, String)>,
}

impl ExceptionContext {
    /// A context with `message` and nothing else.
    pub fn new(message: impl Into<String>) -> Self {
        ExceptionContext {
            message: message.into(),
            ..ExceptionContext::default()
        }
    }

    /// Adds the error.
    pub fn with_error(mut self, error: LoopError) -> Self {
        self.error = Some(error);
        self
    }

    /// Adds the callback's description.
    pub fn with_handle(mut self, handle: impl Into<String>) -> Self {
        self.handle = Some(handle.into());
        self
    }

    /// Adds the future's description.
    pub fn with_future(mut self, future: impl Into<String>) -> Self {
        self.future = Some(future.into());
        self
    }

    /// Adds the task's description.
    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Adds another key.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The text the default handler logs: the message (or `Unhandled exception in event
    /// loop` when empty, semantics 49), then every other key sorted by name, one per line.
    pub fn render(&self) -> String {
        let mut out = if self.message.is_empty() {
            "Unhandled exception in event loop".to_owned()
        } else {
            self.message.clone()
        };
        let mut keys: Vec<(&str, String)> = Vec::new();
        if let Some(error) = &self.error {
            keys.push(("error", error.to_string()));
        }
        if let Some(handle) = &self.handle {
            keys.push(("handle", handle.clone()));
        }
        if let Some(future) = &self.future {
            keys.push(("future", future.clone()));
        }
        if let Some(task) = &self.task {
            keys.push(("task", task.clone()));
        }
        for (key, value) in &self.extra {
            keys.push((key.as_str(), value.clone()));
        }
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in keys {
            out.push('\n');
            out.push_str(key);
            out.push_str(": ");
            out.push_str(&value);
        }
        out
    }
}

impl fmt::Display for ExceptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// The default handler: logs the context at ERROR through `tracing`.
pub(crate) fn log_context(context: &ExceptionContext) {
    tracing::error!(target: "ringloop::runtime", "{}", context.render());
}

impl EventLoop {
    /// Installs `handler` as the loop's exception handler, or restores the default with
    /// `None` (semantics 47).
    pub fn set_exception_handler<H>(&self, handler: Option<H>)
    where
        H: Fn(&EventLoop, &ExceptionContext) + 'static,
    {
        let handler = handler.map(|h| Rc::new(h) as ExceptionHandler);
        let old = self.inner.exception_handler.replace(handler);
        drop(old);
    }

    /// The custom exception handler, or `None` when the default is in use (semantics 47).
    pub fn get_exception_handler(&self) -> Option<ExceptionHandler> {
        self.inner.exception_handler.borrow().clone()
    }

    /// The default handler: logs `context` at ERROR through `tracing` (semantics 49).
    pub fn default_exception_handler(&self, context: &ExceptionContext) {
        log_context(context);
    }

    /// Reports `context` to the exception handler: the custom one if set, else the default.
    /// A custom handler that panics is itself reported to the default handler, as
    /// `Unhandled error in exception handler`.
    pub fn call_exception_handler(&self, context: ExceptionContext) {
        let handler = self.inner.exception_handler.borrow().clone();
        match handler {
            None => self.default_exception_handler(&context),
            Some(handler) => {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler(self, &context)
                }));
                if let Err(payload) = outcome {
                    let report = ExceptionContext::new("Unhandled error in exception handler")
                        .with_error(LoopError::from_panic(&*payload))
                        .with_extra("context", context.render());
                    self.default_exception_handler(&report);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_defaults_the_message_and_sorts_keys() {
        // semantics 49
        let ctx = ExceptionContext::new("")
            .with_extra("zeta", "z")
            .with_error(LoopError::LoopClosed)
            .with_handle("<Handle f>");
        assert_eq!(
            ctx.render(),
            "Unhandled exception in event loop\nerror: Event loop is closed\nhandle: <Handle f>\nzeta: z"
        );
    }
}
