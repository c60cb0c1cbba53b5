//! What the application logs, captured in process: a `tracing` subscriber
//! of the test's own on the test's thread (a current-thread runtime runs
//! every task of the test there, the server's included), writing into a
//! buffer the test reads.

#![allow(dead_code, reason = "not every helper is used by every test file")]

use std::sync::{Arc, Mutex};

/// How the captured lines are written: the two formats of
/// `DECNET_LOG_FORMAT`, configured as bins/decnet-events/src/telemetry.rs
/// installs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `text`: tracing-subscriber's default line, no colours.
    Text,
    /// `json`: one object per line, the event's fields flattened in.
    Json,
}

/// What the application logged on this thread.
#[derive(Clone, Default)]
pub(crate) struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Start capturing text at `info` and above; the guard ends it.
    pub(crate) fn start() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        LogCapture::start_with("info", Format::Text)
    }

    /// Start capturing what `filter` (an `EnvFilter` directive, e.g.
    /// `trace`) lets through, in `format`; the guard ends it.
    pub(crate) fn start_with(
        filter: &str,
        format: Format,
    ) -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter));
        let guard = match format {
            Format::Text => tracing::subscriber::set_default(builder.finish()),
            Format::Json => tracing::subscriber::set_default(
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .finish(),
            ),
        };
        (capture, guard)
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// One write into a [`LogCapture`].
pub(crate) struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.0.clone())
    }
}
