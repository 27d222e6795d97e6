//! `weir checkpoints dump`: one memory of one operator, byte for byte, from
//! verified pages, streamed in address order.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::{CONCURRENT_READS, EpochSelector, InspectError, Progress, Target, units};
use crate::checkpoint::{Hash, MemoryState, StoreError, layout};

/// Where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpTo {
    /// Standard output.
    Stdout,
    /// A file, replaced only once every byte is written and verified (until
    /// then they go to `<file>.partial`).
    File(PathBuf),
}

/// What was dumped.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    /// The store's location.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// The epoch.
    pub epoch: u64,
    /// Whether it is committed.
    pub committed: bool,
    /// The operator.
    pub operator: String,
    /// The memory's index.
    pub memory: usize,
    /// Bytes written: the memory's size.
    pub size_bytes: u64,
    /// Its pages.
    pub pages: u64,
    /// blake3 of the bytes written (hex).
    pub blake3: String,
    /// The file written, or `null` for stdout.
    pub output: Option<PathBuf>,
}

/// Writes memory `memory` of `operator` at `epoch` to `to`. Every page is
/// checked against its hash and its length against the manifest before it
/// is written; a page that repeats is downloaded once.
pub async fn dump(
    target: &Target,
    epoch: EpochSelector,
    operator: &str,
    memory: usize,
    to: &DumpTo,
    progress: &Progress,
) -> Result<DumpReport, InspectError> {
    let loaded = target.load(epoch).await?;
    let m = &loaded.manifest;
    let op = m
        .operators
        .iter()
        .find(|op| op.name == operator)
        .ok_or_else(|| InspectError::NoSuchOperator {
            epoch: m.epoch,
            operator: operator.to_owned(),
            operators: m.operators.iter().map(|op| op.name.clone()).collect(),
        })?;
    let state = op
        .memories
        .get(memory)
        .ok_or_else(|| InspectError::NoSuchMemory {
            epoch: m.epoch,
            operator: operator.to_owned(),
            memory,
            count: op.memories.len(),
        })?;
    let mut output = Output::open(to)?;
    let written = write_memory(target, m.epoch, state, &mut output, progress).await;
    let hash = match written {
        Ok(hash) => output.finish(hash)?,
        Err(e) => {
            output.abandon();
            return Err(e);
        }
    };
    Ok(DumpReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: target.task().to_owned(),
        epoch: m.epoch,
        committed: loaded.committed,
        operator: operator.to_owned(),
        memory,
        size_bytes: state.size_bytes,
        pages: state.pages.len() as u64,
        blake3: hash.to_string(),
        output: match to {
            DumpTo::Stdout => None,
            DumpTo::File(path) => Some(path.clone()),
        },
    })
}

/// Streams the pages of `state` in address order into `output`; returns
/// the blake3 of everything written.
async fn write_memory(
    target: &Target,
    epoch: u64,
    state: &MemoryState,
    output: &mut Output,
    progress: &Progress,
) -> Result<Hash, InspectError> {
    let store = target.store();
    let task = target.task();
    // Each distinct page is fetched once, in order of first use; pages used
    // more than once are kept until the end.
    let mut uses: HashMap<Hash, usize> = HashMap::new();
    let mut distinct = Vec::new();
    for hash in &state.pages {
        let n = uses.entry(*hash).or_insert(0);
        if *n == 0 {
            distinct.push(*hash);
        }
        *n += 1;
    }
    let bar = progress.bar(distinct.len() as u64, "pages");
    let mut fetched = futures::stream::iter(
        distinct
            .iter()
            .map(|hash| async move { store.get_page(task, hash).await }),
    )
    .buffered(CONCURRENT_READS);
    let mut kept: HashMap<Hash, Bytes> = HashMap::new();
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let corrupt = |key: String, reason: String| {
        InspectError::Store(StoreError::Corrupt {
            store: target.location().to_owned(),
            key,
            reason,
        })
    };
    for (i, hash) in state.pages.iter().enumerate() {
        let page = match kept.get(hash) {
            Some(page) => page.clone(),
            None => {
                let Some(page) = fetched.next().await else {
                    break;
                };
                let page = page?;
                bar.inc(1);
                // Not kept, so this is its first use.
                if uses.get(hash).is_some_and(|&n| n > 1) {
                    kept.insert(*hash, page.clone());
                }
                page
            }
        };
        let expected = (state.size_bytes.saturating_sub(written)).min(u64::from(state.page_bytes));
        if page.len() as u64 != expected {
            return Err(corrupt(
                layout::page(store.root(), task, hash).to_string(),
                format!(
                    "it holds {} bytes, page {i} of the memory has {expected}",
                    page.len()
                ),
            ));
        }
        output.write(&page)?;
        hasher.update(&page);
        written += expected;
    }
    bar.finish_and_clear();
    if written != state.size_bytes {
        return Err(corrupt(
            layout::manifest(store.root(), task, epoch).to_string(),
            format!(
                "the memory's pages hold {written} bytes, its size is {}",
                state.size_bytes
            ),
        ));
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

/// The destination being written.
struct Output {
    writer: Box<dyn Write>,
    /// `(partial, final)` for a file.
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn open(to: &DumpTo) -> Result<Output, InspectError> {
        match to {
            DumpTo::Stdout => Ok(Output {
                writer: Box::new(std::io::BufWriter::new(std::io::stdout())),
                file: None,
            }),
            DumpTo::File(path) => {
                let partial = partial_path(path);
                let file = std::fs::File::create(&partial).map_err(|e| output_error(path, e))?;
                Ok(Output {
                    writer: Box::new(std::io::BufWriter::new(file)),
                    file: Some((partial, path.clone())),
                })
            }
        }
    }

    fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, path)| path.as_path())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), InspectError> {
        self.writer.write_all(bytes).map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> InspectError {
        InspectError::Output {
            path: self.path().map(Path::to_owned),
            message: e.to_string(),
        }
    }

    /// Flushes, and moves a file into place.
    fn finish(mut self, hash: Hash) -> Result<Hash, InspectError> {
        if let Err(e) = self.writer.flush() {
            let error = self.error(e);
            self.abandon();
            return Err(error);
        }
        if let Some((partial, path)) = &self.file {
            std::fs::rename(partial, path).map_err(|e| output_error(path, e))?;
        }
        Ok(hash)
    }

    /// Removes a partly written file.
    fn abandon(self) {
        if let Some((partial, _)) = &self.file {
            drop(self.writer);
            let _ = std::fs::remove_file(partial);
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    path.with_file_name(name)
}

fn output_error(path: &Path, e: std::io::Error) -> InspectError {
    InspectError::Output {
        path: Some(path.to_owned()),
        message: e.to_string(),
    }
}

impl fmt::Display for DumpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "epoch {}, operator {}, memory {}: {} bytes ({}, {} page(s), blake3 {}) written to {}",
            self.epoch,
            self.operator,
            self.memory,
            self.size_bytes,
            units::bytes(self.size_bytes),
            self.pages,
            self.blake3,
            self.output
                .as_ref()
                .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string())
        )
    }
}
