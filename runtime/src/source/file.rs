//! A newline-delimited local file. Positions are line numbers with byte
//! offsets, so replay seeks straight to the byte.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{ReadOutcome, Source, SourceError};
use crate::config::LineFormat;
use crate::record::{Header, Malformed, Position, Record, SourceBatch};

/// Bytes of a malformed line kept for the dead-letter record.
const MALFORMED_RAW_BYTES_MAX: usize = 4096;

/// Reads records from a file, one per line. Empty lines are skipped; a
/// trailing `\r` is removed; a last line without `\n` is a record.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    format: LineFormat,
    max_line_bytes: usize,
    /// Position of the next unread line.
    line: u64,
    byte: u64,
    buf: Vec<u8>,
}

impl FileSource {
    /// Opens `path` at its first line.
    pub fn open(
        path: &Path,
        format: LineFormat,
        max_line_bytes: usize,
    ) -> Result<FileSource, SourceError> {
        let file = File::open(path).map_err(|error| SourceError::Io {
            source_name: format!("file {}", path.display()),
            operation: "open",
            error,
        })?;
        Ok(FileSource {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file),
            format,
            max_line_bytes,
            line: 1,
            byte: 0,
            buf: Vec::new(),
        })
    }

    /// Reads the next line into `self.buf` (without its terminator). Returns
    /// `None` at end of file, `Some(true)` when the line was longer than
    /// allowed (then `buf` holds its start and the rest was skipped).
    fn next_line(&mut self) -> Result<Option<bool>, SourceError> {
        self.buf.clear();
        let limit = self.max_line_bytes as u64 + 2; // room for "\r\n"
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| io_error(&self.path, "read", e))?;
        if n == 0 {
            return Ok(None);
        }
        let mut consumed = n as u64;
        let too_long;
        if self.buf.last() != Some(&b'\n') && n as u64 == limit {
            too_long = true;
            consumed += self.skip_rest_of_line()?;
            self.buf.truncate(MALFORMED_RAW_BYTES_MAX);
        } else {
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            too_long = self.buf.len() > self.max_line_bytes;
        }
        self.byte += consumed;
        self.line += 1;
        Ok(Some(too_long))
    }

    fn skip_rest_of_line(&mut self) -> Result<u64, SourceError> {
        let mut skipped = 0u64;
        loop {
            let chunk = self
                .reader
                .fill_buf()
                .map_err(|e| io_error(&self.path, "read", e))?;
            if chunk.is_empty() {
                return Ok(skipped);
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(skipped + i as u64 + 1);
                }
                None => {
                    let len = chunk.len();
                    self.reader.consume(len);
                    skipped += len as u64;
                }
            }
        }
    }

    fn decode(&self, line: &[u8]) -> Result<Record, String> {
        match self.format {
            LineFormat::Lines => Ok(Record::from_value(line.to_vec())),
            LineFormat::Jsonl => decode_json_line(line),
        }
    }
}

/// The JSON-lines record envelope.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    key: Option<String>,
    value: String,
    timestamp_ms: Option<i64>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

fn decode_json_line(line: &[u8]) -> Result<Record, String> {
    let parsed: JsonLine =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
    Ok(Record {
        key: parsed.key.map(String::into_bytes),
        value: parsed.value.into_bytes(),
        timestamp_ms: parsed.timestamp_ms,
        headers: parsed
            .headers
            .into_iter()
            .map(|(name, value)| Header {
                name,
                value: value.into_bytes(),
            })
            .collect(),
    })
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn read(&mut self, max: usize, batch: &mut SourceBatch) -> Result<ReadOutcome, SourceError> {
        let mut appended = 0;
        while appended < max {
            let position = self.position();
            let Some(too_long) = self.next_line()? else {
                return Ok(ReadOutcome::End);
            };
            if too_long {
                return Ok(ReadOutcome::Malformed(Malformed {
                    position,
                    raw: std::mem::take(&mut self.buf),
                    reason: format!(
                        "line is longer than max_line_bytes = {}",
                        self.max_line_bytes
                    ),
                }));
            }
            if self.buf.is_empty() {
                continue;
            }
            match self.decode(&self.buf) {
                Ok(record) => {
                    batch.push(record, position);
                    appended += 1;
                }
                Err(reason) => {
                    return Ok(ReadOutcome::Malformed(Malformed {
                        position,
                        raw: std::mem::take(&mut self.buf),
                        reason,
                    }));
                }
            }
        }
        Ok(ReadOutcome::More)
    }

    fn position(&self) -> Position {
        Position::File {
            line: self.line,
            byte: self.byte,
        }
    }

    fn seek(&mut self, position: &Position) -> Result<(), SourceError> {
        let source_name = self.describe();
        let invalid = |reason: String| SourceError::InvalidPosition {
            source_name: source_name.clone(),
            position: position.clone(),
            reason,
        };
        let &Position::File { line, byte } = position else {
            return Err(invalid("not a file position".into()));
        };
        let file = self.reader.get_mut();
        let len = file
            .metadata()
            .map_err(|e| io_error(&self.path, "stat", e))?
            .len();
        if byte > len || line == 0 {
            return Err(invalid(format!("the file has {len} bytes")));
        }
        // Every line starts after a newline, except the first; the end of a
        // file whose last line lacks a newline is valid too.
        if byte > 0 && byte < len {
            let mut prev = [0u8; 1];
            let file = self.reader.get_mut();
            file.seek(SeekFrom::Start(byte - 1))
                .map_err(|e| io_error(&self.path, "seek", e))?;
            file.read_exact(&mut prev)
                .map_err(|e| io_error(&self.path, "read", e))?;
            if prev[0] != b'\n' {
                return Err(invalid("byte offset is not at the start of a line".into()));
            }
        }
        self.reader
            .seek(SeekFrom::Start(byte))
            .map_err(|e| io_error(&self.path, "seek", e))?;
        self.line = line;
        self.byte = byte;
        Ok(())
    }
}

fn io_error(path: &Path, operation: &'static str, error: std::io::Error) -> SourceError {
    SourceError::Io {
        source_name: format!("file {}", path.display()),
        operation,
        error,
    }
}
