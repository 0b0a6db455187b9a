//! Logs on stderr that can never stop the process (issue 22): a line that cannot be written (stderr
//! on a full disk, `2>/dev/full`, a closed pipe) is dropped and counted, and the count is reported
//! in the next line that can be written. tracing-subscriber's own report of a failed write — an
//! `eprintln!`, which panics when stderr fails — is turned off.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber: stderr, filtered by `filter` (tracing EnvFilter syntax),
/// coloured only on a terminal, lines that cannot be written dropped and counted.
pub fn init(filter: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).context("invalid log filter")?)
        .with_writer(Dropping::stderr())
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// `eprintln!` that never panics: a line for stderr, dropped if stderr cannot be written.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::logging::report(&format!($($arg)*))
    };
}

/// Writes `text` to stderr if it can; never panics (unlike `eprintln!`).
pub fn report(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// Makes writers over `inner()` that drop what cannot be written and count it.
#[derive(Clone)]
pub struct Dropping<F> {
    inner: F,
    dropped: Arc<AtomicU64>,
}

impl Dropping<fn() -> io::Stderr> {
    pub fn stderr() -> Self {
        Dropping { inner: io::stderr, dropped: Arc::default() }
    }
}

impl<F> Dropping<F> {
    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One line's writer (tracing-subscriber writes each event with one `write_all`).
pub struct LineWriter<W> {
    inner: W,
    dropped: Arc<AtomicU64>,
}

impl<'a, F, W> MakeWriter<'a> for Dropping<F>
where
    F: Fn() -> W + 'a,
    W: Write,
{
    type Writer = LineWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { inner: (self.inner)(), dropped: Arc::clone(&self.dropped) }
    }
}

impl<W: Write> Write for LineWriter<W> {
    /// Always takes the whole line: written, or dropped and counted.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let pending = self.dropped.swap(0, Ordering::Relaxed);
        if pending > 0 {
            let note = format!("once: {pending} log line(s) were dropped: the log output could not be written\n");
            if self.inner.write_all(note.as_bytes()).is_err() {
                self.dropped.fetch_add(pending + 1, Ordering::Relaxed);
                return Ok(line.len());
            }
        }
        if self.inner.write_all(line).and_then(|()| self.inner.flush()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A log output that fails while `full` is set, like a full disk.
    #[derive(Clone, Default)]
    struct Output {
        full: Arc<std::sync::atomic::AtomicBool>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.full.load(Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.written.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_and_reported_when_writing_works_again() {
        let output = Output::default();
        let factory = {
            let output = output.clone();
            move || output.clone()
        };
        let dropping = Dropping { inner: factory, dropped: Arc::default() };
        dropping.make_writer().write_all(b"one\n").expect("never an error");
        output.full.store(true, Ordering::Relaxed);
        for line in [&b"two\n"[..], b"three\n"] {
            assert_eq!(dropping.make_writer().write(line).expect("never an error"), line.len(), "taken whole");
        }
        assert_eq!(dropping.dropped(), 2);
        output.full.store(false, Ordering::Relaxed);
        dropping.make_writer().write_all(b"four\n").expect("never an error");
        assert_eq!(dropping.dropped(), 0, "reported");
        let written = String::from_utf8(output.written.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(written, "one\nonce: 2 log line(s) were dropped: the log output could not be written\nfour\n");
    }
}
