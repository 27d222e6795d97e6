//! `weir verify` (and `weir checkpoints verify --deep`): proves checkpoints
//! by deterministic replay.
//!
//! For each committed epoch *M* chosen, with base *N* (the checkpoint its
//! journal says it started from, or fresh instances): restore *N*, replay
//! *M*'s journal (its cuts, times, seed and lookup answers) over the same
//! source records, and compare what the replay reached with what *M*
//! recorded: every operator's memories page by page, globals, held handles
//! and recorded-input positions; the source position; the lookups used;
//! and the outputs — byte for byte against the published part files of a
//! `parts` sink, by count for other sinks (which keep no per-epoch copy).
//! The first difference is named: operator and memory page, global, or
//! sink and output line.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkpoint::recovery::{self, Restorable};
use crate::checkpoint::{CheckpointStore, Hash, Manifest, OperatorState, PAGE_BYTES};
use crate::config::{Pipeline, SinkSpec};
use crate::inspect::{EpochSelector, InspectError, Target};
use crate::operator::{CapturedState, ComponentCache};
use crate::pipeline::PipelineError;
use crate::pipeline::replay::{self, Written};

/// Which epochs to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One epoch.
    Epoch(EpochSelector),
    /// The committed epochs from the first to the second, inclusive.
    Range(u64, u64),
    /// Every committed epoch.
    All,
}

/// Why verification could not run at all (a divergence is a verdict, not
/// an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The checkpoints could not be found or read.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// Nothing to verify.
    #[error("{0}")]
    Nothing(String),
    /// The I/O runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(String),
}

/// The verdict on every epoch verified.
#[derive(Debug, Clone, Serialize)]
pub struct DeepReport {
    /// The store.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// Whether no epoch diverged.
    pub ok: bool,
    /// Per epoch, oldest first.
    pub epochs: Vec<DeepVerdict>,
}

/// The verdict on one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct DeepVerdict {
    /// The epoch.
    pub epoch: u64,
    /// The checkpoint it was replayed from (`None`: fresh instances).
    pub base: Option<u64>,
    /// What the replay found.
    pub verdict: DeepOutcome,
    /// Records replayed.
    pub records: u64,
    /// How long restoring the base and replaying took, in milliseconds.
    pub replay_ms: u64,
    /// Every difference found, the first first (at most
    /// [`DIFFERENCES_SHOWN`]).
    pub differences: Vec<String>,
    /// Why it was not replayed (for `skipped`).
    pub reason: Option<String>,
}

/// At most this many differences are listed per epoch.
pub const DIFFERENCES_SHOWN: usize = 10;

/// What the replay of one epoch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeepOutcome {
    /// The replay reproduced the epoch's state and outputs exactly.
    Identical,
    /// The replay reached something else (see the differences).
    Diverged,
    /// It could not be replayed (see the reason): no journal, base gone.
    Skipped,
}

impl DeepReport {
    /// The first difference of the first diverged epoch.
    pub fn first_divergence(&self) -> Option<(u64, &str)> {
        self.epochs
            .iter()
            .filter(|e| e.verdict == DeepOutcome::Diverged)
            .find_map(|e| e.differences.first().map(|d| (e.epoch, d.as_str())))
    }
}

/// Verifies the epochs `scope` names of `task` of `pipeline` (its
/// `[checkpoint] store`) by replay. Blocking: call it outside an async
/// runtime.
pub fn verify(
    pipeline: &Pipeline,
    cache: &ComponentCache,
    task: &str,
    scope: Scope,
) -> Result<DeepReport, VerifyError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| VerifyError::Runtime(e.to_string()))?;
    let target = runtime.block_on(Target::open(
        &pipeline.spec.checkpoint.store,
        Some(&pipeline.spec.name),
        task,
    ))?;
    let epochs = runtime.block_on(target.epochs())?;
    let chosen: Vec<u64> = match scope {
        Scope::Epoch(selector) => vec![target.select(&epochs, selector)?.epoch],
        Scope::Range(from, to) => epochs
            .iter()
            .filter(|e| e.committed && (from..=to).contains(&e.epoch))
            .map(|e| e.epoch)
            .collect(),
        Scope::All => epochs
            .iter()
            .filter(|e| e.committed)
            .map(|e| e.epoch)
            .collect(),
    };
    if chosen.is_empty() {
        return Err(VerifyError::Nothing(format!(
            "pipeline {} task {task} has no committed epoch in the range asked for",
            pipeline.spec.name
        )));
    }
    let store = target.store();
    let mut verdicts = Vec::with_capacity(chosen.len());
    for epoch in chosen {
        let started = Instant::now();
        let mut verdict = DeepVerdict {
            epoch,
            base: None,
            verdict: DeepOutcome::Skipped,
            records: 0,
            replay_ms: 0,
            differences: Vec::new(),
            reason: None,
        };
        match verify_epoch(pipeline, cache, &runtime, store, task, epoch) {
            Ok(EpochCheck::Skipped { base, reason }) => {
                verdict.base = base;
                verdict.reason = Some(reason);
            }
            Ok(EpochCheck::Replayed {
                base,
                records,
                differences,
            }) => {
                verdict.base = base;
                verdict.records = records;
                verdict.verdict = if differences.is_empty() {
                    DeepOutcome::Identical
                } else {
                    DeepOutcome::Diverged
                };
                verdict.differences = differences;
            }
            Err(e) => {
                verdict.verdict = DeepOutcome::Diverged;
                verdict.differences = vec![format!("the replay failed: {e}")];
            }
        }
        verdict.replay_ms = millis(started.elapsed());
        verdicts.push(verdict);
    }
    Ok(DeepReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: task.to_owned(),
        ok: verdicts.iter().all(|v| v.verdict != DeepOutcome::Diverged),
        epochs: verdicts,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

enum EpochCheck {
    Skipped {
        base: Option<u64>,
        reason: String,
    },
    Replayed {
        base: Option<u64>,
        records: u64,
        differences: Vec<String>,
    },
}

fn verify_epoch(
    pipeline: &Pipeline,
    cache: &ComponentCache,
    runtime: &tokio::runtime::Runtime,
    store: &CheckpointStore,
    task: &str,
    epoch: u64,
) -> Result<EpochCheck, PipelineError> {
    let manifest = runtime.block_on(store.read_committed(task, epoch))?;
    if let crate::config::SourceSpec::Kafka(_) = &pipeline.spec.source {
        return Ok(EpochCheck::Skipped {
            base: manifest.journal.as_ref().and_then(|j| j.base_epoch),
            reason: "a Kafka task cannot be replayed by `weir verify` yet".into(),
        });
    }
    let Some(journal) = &manifest.journal else {
        return Ok(EpochCheck::Skipped {
            base: None,
            reason: "no epoch journal (format 1, or recorded without recording)".into(),
        });
    };
    let base_epoch = journal.base_epoch;
    let base = match base_epoch {
        None => None,
        Some(n) => match runtime.block_on(recovery::load(store, task, n)) {
            Ok((manifest, memories)) => Some(Restorable {
                manifest,
                memories,
                skipped: Vec::new(),
            }),
            Err(e) => {
                return Ok(EpochCheck::Skipped {
                    base: base_epoch,
                    reason: format!(
                        "its base, epoch {n}, cannot be restored ({e}); raise [checkpoint] keep to keep the bases of the epochs you want to verify"
                    ),
                });
            }
        },
    };
    let mut differences = Vec::new();
    if let Some(base) = &base
        && base.manifest.source_position != journal.start_position
    {
        differences.push(format!(
            "the journal starts at {}, but its base epoch {} ends at {}",
            journal.start_position, base.manifest.epoch, base.manifest.source_position
        ));
    }
    let components = |hash: &Hash| -> Result<Vec<u8>, PipelineError> {
        Ok(runtime.block_on(store.get_component(hash))?.to_vec())
    };
    let (replayed, written) =
        replay::replay_epoch(pipeline, cache, &manifest, base, &components, store)?;
    let records = journal.reads.iter().map(|r| u64::from(r.records)).sum();
    compare_states(&manifest, &replayed.captured, &mut differences);
    if replayed.position != manifest.source_position {
        differences.push(format!(
            "the source: the checkpoint resumes at {}, the replay stopped at {}",
            manifest.source_position, replayed.position
        ));
    }
    for (original, again) in journal.operators.iter().zip(&replayed.journal.operators) {
        if original.entries.len() != again.entries.len() {
            differences.push(format!(
                "operator `{}`: the epoch made {} lookup(s), the replay {}",
                original.name,
                original.entries.len(),
                again.entries.len()
            ));
        }
    }
    compare_outputs(pipeline, &manifest, base_epoch, &written, &mut differences);
    differences.truncate(DIFFERENCES_SHOWN);
    Ok(EpochCheck::Replayed {
        base: base_epoch,
        records,
        differences,
    })
}

/// Every difference between the operators' states the checkpoint holds
/// and those the replay reached, in chain order, memories before globals.
fn compare_states(manifest: &Manifest, replayed: &[CapturedState], out: &mut Vec<String>) {
    if manifest.operators.len() != replayed.len() {
        out.push(format!(
            "the checkpoint has {} operators, the replay {}",
            manifest.operators.len(),
            replayed.len()
        ));
    }
    let journal = manifest.journal.as_ref();
    for (k, (original, got)) in manifest.operators.iter().zip(replayed).enumerate() {
        compare_operator(original, &got.state, out);
        let recorded = journal
            .and_then(|j| j.operators.get(k))
            .map(|o| o.at_end)
            .unwrap_or_default();
        if recorded != got.recorded {
            out.push(format!(
                "operator `{}`: recorded inputs drawn differ: the checkpoint has {recorded:?}, the replay {:?}",
                original.name, got.recorded
            ));
        }
    }
}

fn compare_operator(original: &OperatorState, got: &OperatorState, out: &mut Vec<String>) {
    let name = &original.name;
    if original.component != got.component {
        out.push(format!("operator `{name}`: a different component"));
        return;
    }
    for (k, (a, b)) in original.memories.iter().zip(&got.memories).enumerate() {
        if a.size_bytes != b.size_bytes {
            out.push(format!(
                "operator `{name}` memory {k}: {} bytes in the checkpoint, {} after the replay",
                a.size_bytes, b.size_bytes
            ));
        }
        if let Some((page, (x, y))) = a
            .pages
            .iter()
            .zip(&b.pages)
            .enumerate()
            .find(|(_, (x, y))| x != y)
        {
            let changed = a.pages.iter().zip(&b.pages).filter(|(x, y)| x != y).count();
            let start = page * PAGE_BYTES;
            out.push(format!(
                "operator `{name}` memory {k} page {page} (bytes {start}..{}) differs: the checkpoint has page {}, the replay reached {} ({changed} page(s) differ)",
                start + PAGE_BYTES,
                short(x),
                short(y)
            ));
        }
    }
    for (k, (a, b)) in original.globals.iter().zip(&got.globals).enumerate() {
        if a != b {
            out.push(format!(
                "operator `{name}` global {k}: {a:?} in the checkpoint, {b:?} after the replay"
            ));
        }
    }
    if original.handles != got.handles {
        out.push(format!(
            "operator `{name}`: held WASI handles {:?} in the checkpoint, {:?} after the replay",
            original.handles, got.handles
        ));
    }
}

fn short(hash: &Hash) -> String {
    hash.to_string()[..16].to_owned()
}

/// Compares what the replay wrote with what the epoch wrote: the part files
/// of a `parts` sink, the journal's count for the others.
fn compare_outputs(
    pipeline: &Pipeline,
    manifest: &Manifest,
    base: Option<u64>,
    written: &[Written],
    out: &mut Vec<String>,
) {
    let journal = manifest.journal.as_ref();
    for w in written {
        let recorded = journal
            .and_then(|j| j.outputs.iter().find(|o| o.sink == w.sink))
            .map_or(0, |o| o.outputs);
        if recorded != w.outputs {
            out.push(format!(
                "sink `{}`: the epoch wrote {recorded} output(s), the replay {}",
                w.sink, w.outputs
            ));
        }
        let Some(SinkSpec::Parts { dir, extension }) = pipeline.spec.sinks.get(&w.sink) else {
            continue;
        };
        let (committed, parts) = match published(dir, extension, base, manifest.epoch) {
            Ok(found) => found,
            Err(e) => {
                out.push(format!("sink `{}`: {e}", w.sink));
                continue;
            }
        };
        if committed != w.bytes {
            out.push(describe_output_difference(
                &w.sink, &parts, &committed, &w.bytes,
            ));
        }
    }
}

/// The published outputs of epochs after `base` up to `epoch` (normally
/// only `epoch`'s part: a run numbers its epochs after every epoch a sink
/// holds), and the part files read.
fn published(
    dir: &std::path::Path,
    extension: &str,
    base: Option<u64>,
    epoch: u64,
) -> Result<(Vec<u8>, Vec<PathBuf>), String> {
    let mut bytes = Vec::new();
    let mut parts = Vec::new();
    let from = base.map_or(1, |b| b + 1);
    for e in from..=epoch {
        // The name `PartFileSink::part` gives an epoch's part.
        let part = dir.join(format!("part-{e:020}.{extension}"));
        match std::fs::read(&part) {
            Ok(content) => {
                bytes.extend_from_slice(&content);
                parts.push(part);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("cannot read {}: {err}", part.display())),
        }
    }
    Ok((bytes, parts))
}

fn describe_output_difference(
    sink: &str,
    parts: &[PathBuf],
    committed: &[u8],
    replayed: &[u8],
) -> String {
    let committed_lines: Vec<&[u8]> = committed.split(|&b| b == b'\n').collect();
    let replayed_lines: Vec<&[u8]> = replayed.split(|&b| b == b'\n').collect();
    let line = committed_lines
        .iter()
        .zip(&replayed_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(committed_lines.len().min(replayed_lines.len()));
    let show = |lines: &[&[u8]]| {
        lines.get(line).map_or("(nothing)".to_owned(), |l| {
            format!("`{}`", String::from_utf8_lossy(l))
        })
    };
    let files = if parts.is_empty() {
        "no part file".to_owned()
    } else {
        parts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "sink `{sink}` output {} differs: committed {} ({files}), the replay wrote {}",
        line + 1,
        show(&committed_lines),
        show(&replayed_lines)
    )
}

impl fmt::Display for DeepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}, task {}, store {}: replaying each epoch from its base",
            self.pipeline, self.task, self.store
        )?;
        for v in &self.epochs {
            let base = v
                .base
                .map_or("fresh instances".to_owned(), |b| format!("epoch {b}"));
            match v.verdict {
                DeepOutcome::Identical => writeln!(
                    f,
                    "epoch {}: identical (from {base}, {} record(s) replayed in {} ms: every page, global and output matches)",
                    v.epoch, v.records, v.replay_ms
                )?,
                DeepOutcome::Skipped => writeln!(
                    f,
                    "epoch {}: skipped: {}",
                    v.epoch,
                    v.reason.as_deref().unwrap_or("")
                )?,
                DeepOutcome::Diverged => {
                    writeln!(f, "epoch {}: DIVERGED (from {base})", v.epoch)?;
                    for d in &v.differences {
                        writeln!(f, "  {d}")?;
                    }
                }
            }
        }
        let count = |outcome| self.epochs.iter().filter(|v| v.verdict == outcome).count();
        writeln!(
            f,
            "{} epoch(s): {} identical, {} diverged, {} skipped",
            self.epochs.len(),
            count(DeepOutcome::Identical),
            count(DeepOutcome::Diverged),
            count(DeepOutcome::Skipped)
        )
    }
}
