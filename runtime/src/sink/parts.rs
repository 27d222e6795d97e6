//! An exactly-once file sink: one part file per epoch, published by rename.
//!
//! Layout of the sink's directory:
//!
//! ```text
//! <dir>/part-<epoch, 20 digits>.<ext>   published: committed output, complete
//! <dir>/.weir/in-progress               outputs of the current epoch
//! <dir>/.weir/prepared-<epoch>          an epoch made durable, not yet visible
//! ```
//!
//! A reader that lists `part-*` in name order and concatenates them reads
//! exactly the committed output: every part appears by an atomic rename of a
//! complete, fsynced file, and only after the checkpoint covering it
//! committed. Epochs with no output have no part file.
//!
//! Recovering to a checkpoint older than the newest published part (the
//! newer checkpoint was damaged) keeps what readers have seen: the replay
//! from the older checkpoint must reproduce the published outputs byte for
//! byte, which the sink checks and skips, and only what follows is written
//! to new parts. A replay that produces something else is an error.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{EpochSink, Sink, SinkError};
use crate::record::Output;

/// See the [module docs](self).
pub struct PartFileSink {
    describe: String,
    dir: PathBuf,
    extension: String,
    in_progress: Option<BufWriter<File>>,
    written: u64,
    /// Outputs published after the checkpoint recovered to, which the
    /// replay must reproduce before anything new is written.
    republished: Option<Republished>,
}

struct Republished {
    bytes: Vec<u8>,
    checked: usize,
    epochs: (u64, u64),
}

const STAGING: &str = ".weir";
const IN_PROGRESS: &str = "in-progress";
const PREPARED_PREFIX: &str = "prepared-";

impl PartFileSink {
    /// Opens (creating if needed) the sink directory. Call
    /// [`EpochSink::recover`] before writing.
    pub fn open(name: &str, dir: &Path, extension: &str) -> Result<PartFileSink, SinkError> {
        let sink = PartFileSink {
            describe: format!("sink {name} (parts in {})", dir.display()),
            dir: dir.to_owned(),
            extension: extension.to_owned(),
            in_progress: None,
            written: 0,
            republished: None,
        };
        fs::create_dir_all(sink.staging()).map_err(|e| sink.io("create directory", e))?;
        Ok(sink)
    }

    fn io(&self, operation: &'static str, error: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.describe.clone(),
            operation,
            error,
        }
    }

    fn staging(&self) -> PathBuf {
        self.dir.join(STAGING)
    }

    fn prepared(&self, epoch: u64) -> PathBuf {
        self.staging().join(format!("{PREPARED_PREFIX}{epoch:020}"))
    }

    /// The published part of an epoch.
    pub fn part(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("part-{epoch:020}.{}", self.extension))
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), SinkError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io("sync directory", e))
    }

    /// Epochs with a prepared (durable, unpublished) file.
    fn prepared_epochs(&self) -> Result<Vec<u64>, SinkError> {
        let mut epochs = Vec::new();
        for entry in fs::read_dir(self.staging()).map_err(|e| self.io("list", e))? {
            let entry = entry.map_err(|e| self.io("list", e))?;
            let name = entry.file_name();
            if let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREPARED_PREFIX))
                .and_then(|n| n.parse().ok())
            {
                epochs.push(epoch);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Deletes every part and everything staged: the sink's directory is as
    /// if nothing had ever been written (a run from scratch).
    pub fn discard_all(&mut self) -> Result<(), SinkError> {
        self.in_progress = None;
        for epoch in self.published_epochs()? {
            fs::remove_file(self.part(epoch)).map_err(|e| self.io("discard part", e))?;
        }
        for entry in fs::read_dir(self.staging()).map_err(|e| self.io("list", e))? {
            let entry = entry.map_err(|e| self.io("list", e))?;
            fs::remove_file(entry.path()).map_err(|e| self.io("discard staged file", e))?;
        }
        self.sync_dir(&self.dir)?;
        self.sync_dir(&self.staging())
    }

    /// Whether outputs published after the recovered checkpoint are still
    /// being reproduced (see the module docs).
    pub fn replaying_published(&self) -> bool {
        self.republished.is_some()
    }

    /// Epochs with a published part, in order.
    pub fn published_epochs(&self) -> Result<Vec<u64>, SinkError> {
        let mut epochs = Vec::new();
        let suffix = format!(".{}", self.extension);
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io("list", e))? {
            let entry = entry.map_err(|e| self.io("list", e))?;
            let name = entry.file_name();
            if let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix("part-"))
                .and_then(|n| n.strip_suffix(&suffix))
                .and_then(|n| n.parse().ok())
            {
                epochs.push(epoch);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }
}

impl Sink for PartFileSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        let outputs = self.skip_republished(outputs)?;
        if outputs.is_empty() {
            return Ok(());
        }
        if self.in_progress.is_none() {
            let path = self.staging().join(IN_PROGRESS);
            let file = File::create(&path).map_err(|e| self.io("create", e))?;
            self.in_progress = Some(BufWriter::with_capacity(1 << 16, file));
        }
        let Some(writer) = self.in_progress.as_mut() else {
            unreachable!("created above");
        };
        super::line::write_lines(writer, outputs, &self.describe, &mut self.written)
    }

    /// Writes buffered outputs to the in-progress file; they stay invisible
    /// until their epoch is published.
    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(writer) = self.in_progress.as_mut() {
            let result = writer.flush();
            result.map_err(|e| self.io("flush", e))?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn as_epoch_sink(&mut self) -> Option<&mut dyn EpochSink> {
        Some(self)
    }
}

/// The start of an output line, for an error message.
fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    if line.len() > MAX {
        format!("{text}...")
    } else {
        text.into_owned()
    }
}

impl PartFileSink {
    /// Checks the leading outputs against what was published already and
    /// returns the rest.
    fn skip_republished<'a>(&mut self, outputs: &'a [Output]) -> Result<&'a [Output], SinkError> {
        let Some(republished) = self.republished.as_mut() else {
            return Ok(outputs);
        };
        let mut skipped = 0;
        for output in outputs {
            let rest = &republished.bytes[republished.checked..];
            if rest.is_empty() {
                break;
            }
            let line_end = output.value.len();
            let matches = rest.len() > line_end
                && rest[..line_end] == output.value[..]
                && rest[line_end] == b'\n';
            if !matches {
                let (first, last) = republished.epochs;
                return Err(SinkError::Inconsistent {
                    sink: self.describe.clone(),
                    reason: format!(
                        "replaying from the checkpoint before epoch {first} did not reproduce the output already published in epochs {first}..={last}: at byte {} of it, published `{}`, replayed `{}`; an operator is not deterministic",
                        republished.checked,
                        excerpt(rest.split(|&b| b == b'\n').next().unwrap_or_default()),
                        excerpt(&output.value),
                    ),
                });
            }
            republished.checked += line_end + 1;
            skipped += 1;
        }
        self.written += skipped as u64;
        if republished.checked == republished.bytes.len() {
            self.republished = None;
        }
        Ok(&outputs[skipped..])
    }
}

impl EpochSink for PartFileSink {
    fn prepare(&mut self, epoch: u64) -> Result<(), SinkError> {
        let Some(writer) = self.in_progress.take() else {
            return Ok(()); // nothing written in this epoch: no part
        };
        let file = writer
            .into_inner()
            .map_err(|e| self.io("flush", e.into_error()))?;
        file.sync_all().map_err(|e| self.io("sync", e))?;
        drop(file);
        fs::rename(self.staging().join(IN_PROGRESS), self.prepared(epoch))
            .map_err(|e| self.io("rename to prepared", e))?;
        self.sync_dir(&self.staging())
    }

    fn publish(&mut self, epoch: u64) -> Result<(), SinkError> {
        let prepared = self.prepared(epoch);
        if !prepared.exists() {
            return Ok(()); // empty epoch, or published already
        }
        fs::rename(&prepared, self.part(epoch)).map_err(|e| self.io("publish (rename)", e))?;
        self.sync_dir(&self.dir)?;
        self.sync_dir(&self.staging())
    }

    fn newest_epoch(&self) -> Result<u64, SinkError> {
        let published = self.published_epochs()?.last().copied().unwrap_or(0);
        let prepared = self.prepared_epochs()?.last().copied().unwrap_or(0);
        Ok(published.max(prepared))
    }

    fn recover(&mut self, committed: u64) -> Result<(), SinkError> {
        self.in_progress = None;
        let in_progress = self.staging().join(IN_PROGRESS);
        match fs::remove_file(&in_progress) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("discard in-progress", e)),
        }
        let ahead: Vec<u64> = self
            .published_epochs()?
            .into_iter()
            .filter(|&e| e > committed)
            .collect();
        self.republished = None;
        if let (Some(&first), Some(&last)) = (ahead.first(), ahead.last()) {
            let mut bytes = Vec::new();
            for epoch in &ahead {
                let part = fs::read(self.part(*epoch)).map_err(|e| self.io("read part", e))?;
                bytes.extend_from_slice(&part);
            }
            tracing::warn!(
                sink = %self.describe,
                "epochs {first}..={last} were published after checkpoint {committed}; the replay must reproduce them, and is checked against them"
            );
            self.republished = Some(Republished {
                bytes,
                checked: 0,
                epochs: (first, last),
            });
        }
        for epoch in self.prepared_epochs()? {
            if epoch <= committed {
                self.publish(epoch)?;
            } else {
                fs::remove_file(self.prepared(epoch))
                    .map_err(|e| self.io("discard uncommitted epoch", e))?;
            }
        }
        self.sync_dir(&self.staging())
    }
}
