//! Newline-framed values to a file or to standard output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{Sink, SinkError};
use crate::record::Output;

/// Writes each output's value followed by `\n`. Keys and headers are not
/// written. A value containing `\n` cannot be framed and is refused.
pub struct LineSink<W: Write + Send> {
    name: String,
    writer: BufWriter<W>,
    written: u64,
}

impl LineSink<File> {
    /// Creates (or truncates) the file, and its directory if missing.
    pub fn create_file(name: &str, path: &Path) -> Result<LineSink<File>, SinkError> {
        LineSink::open_file(name, path, true)
    }

    /// Opens the file for appending (creating it and its directory if
    /// missing); with `truncate`, empties it first.
    pub fn open_file(name: &str, path: &Path, truncate: bool) -> Result<LineSink<File>, SinkError> {
        let describe = format!("sink {name} (file {})", path.display());
        let io = |operation, error| SinkError::Io {
            sink: describe.clone(),
            operation,
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(path)
            .map_err(|e| io("open", e))?;
        Ok(LineSink::new(describe, file))
    }
}

impl LineSink<std::io::Stdout> {
    /// Writes to the process's standard output.
    pub fn stdout(name: &str) -> LineSink<std::io::Stdout> {
        LineSink::new(format!("sink {name} (stdout)"), std::io::stdout())
    }
}

impl<W: Write + Send> LineSink<W> {
    /// Wraps any writer; `describe` names it in errors.
    pub fn new(describe: String, writer: W) -> LineSink<W> {
        LineSink {
            name: describe,
            writer: BufWriter::with_capacity(1 << 16, writer),
            written: 0,
        }
    }

    /// Flushes and returns the writer.
    pub fn into_inner(self) -> Result<W, SinkError> {
        let name = self.name;
        self.writer.into_inner().map_err(|e| SinkError::Io {
            sink: name,
            operation: "flush",
            error: e.into_error(),
        })
    }

    fn io(&self, operation: &'static str, error: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            operation,
            error,
        }
    }
}

impl<W: Write + Send> Sink for LineSink<W> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        write_lines(&mut self.writer, outputs, &self.name, &mut self.written)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|e| self.io("flush", e))
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// Writes each output's value and `\n`, counting into `written`; a value
/// with a newline cannot be framed and fails with its index, nothing after
/// it written. Shared by every line-framed sink.
pub(super) fn write_lines(
    writer: &mut impl Write,
    outputs: &[Output],
    sink: &str,
    written: &mut u64,
) -> Result<(), SinkError> {
    for (index, output) in outputs.iter().enumerate() {
        if output.value.contains(&b'\n') {
            return Err(SinkError::Unrepresentable {
                sink: sink.to_owned(),
                index,
                reason: "the value contains a newline, which this line-framed sink cannot write"
                    .into(),
            });
        }
        let result = writer
            .write_all(&output.value)
            .and_then(|()| writer.write_all(b"\n"));
        result.map_err(|error| SinkError::Io {
            sink: sink.to_owned(),
            operation: "write",
            error,
        })?;
        *written += 1;
    }
    Ok(())
}
