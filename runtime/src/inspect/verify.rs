//! `weir checkpoints verify`: checks everything a recovery would read, for
//! one epoch or all of them: the commit marker decodes, the manifest has the
//! hash the marker names and decodes, every page exists with the hash it is
//! named by and the length the manifest implies, every component exists
//! with its hash. A page shared by several epochs is read once.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use futures::StreamExt;
use serde::Serialize;

use super::{CONCURRENT_READS, EpochSelector, InspectError, Progress, Target};
use crate::checkpoint::{EpochEntry, Hash, Manifest, StoreError, layout};

/// Which epochs to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyScope {
    /// One epoch; an uncommitted one fails (it is no recovery point).
    Epoch(EpochSelector),
    /// Every epoch; uncommitted ones are reported and skipped.
    All,
}

/// The verdict on every epoch verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The store's location.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// Whether no epoch failed.
    pub ok: bool,
    /// Per epoch, oldest first.
    pub epochs: Vec<EpochVerdict>,
}

/// The verdict on one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochVerdict {
    /// The epoch.
    pub epoch: u64,
    /// Whether it has a commit marker.
    pub committed: bool,
    /// What was found.
    pub verdict: Verdict,
    /// Distinct pages checked.
    pub pages: u64,
    /// Components checked.
    pub components: u64,
    /// Every object that failed a check, with why.
    pub problems: Vec<Problem>,
}

/// What verification found for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything checks out: a run can resume from it.
    Ok,
    /// Something is missing or damaged (see the problems).
    Failed,
    /// No commit marker: being written or abandoned; skipped by `--all`.
    Uncommitted,
    /// It was deleted (by a garbage collection) while being verified.
    Deleted,
}

/// An object that failed a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Its key in the store.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
}

impl VerifyReport {
    /// The first problem of the first failed epoch.
    pub fn first_failure(&self) -> Option<(u64, &Problem)> {
        self.epochs
            .iter()
            .filter(|e| e.verdict == Verdict::Failed)
            .find_map(|e| e.problems.first().map(|p| (e.epoch, p)))
    }
}

/// Verifies the epochs `scope` names.
pub async fn verify(
    target: &Target,
    scope: VerifyScope,
    progress: &Progress,
) -> Result<VerifyReport, InspectError> {
    let epochs = target.epochs().await?;
    let chosen: Vec<EpochEntry> = match scope {
        VerifyScope::All => epochs,
        VerifyScope::Epoch(selector) => vec![target.select(&epochs, selector)?],
    };
    let mut verdicts = Vec::with_capacity(chosen.len());
    let mut manifests: Vec<(usize, Manifest)> = Vec::new();
    for entry in chosen {
        let mut verdict = EpochVerdict {
            epoch: entry.epoch,
            committed: entry.committed,
            verdict: Verdict::Ok,
            pages: 0,
            components: 0,
            problems: Vec::new(),
        };
        if !entry.committed {
            verdict.verdict = match scope {
                VerifyScope::All => Verdict::Uncommitted,
                VerifyScope::Epoch(_) => Verdict::Failed,
            };
            verdict.problems.push(Problem {
                object: commit_key(target, entry.epoch),
                problem: "does not exist: the epoch is not committed, so no run resumes from it"
                    .to_owned(),
            });
        } else {
            match target
                .store()
                .read_committed(target.task(), entry.epoch)
                .await
            {
                Ok(manifest) => manifests.push((verdicts.len(), manifest)),
                Err(e) => {
                    verdict.verdict = Verdict::Failed;
                    verdict.problems.push(problem(target, &e));
                }
            }
        }
        verdicts.push(verdict);
    }
    let checked = check_objects(target, manifests.iter().map(|(_, m)| m), progress).await;
    for (index, manifest) in &manifests {
        let verdict = &mut verdicts[*index];
        judge(target, manifest, &checked, verdict);
    }
    notice_deletions(target, &mut verdicts).await?;
    Ok(VerifyReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: target.task().to_owned(),
        ok: verdicts.iter().all(|v| v.verdict != Verdict::Failed),
        epochs: verdicts,
    })
}

/// Every distinct page (with its length) and component of `manifests`,
/// read and checked against its hash.
struct Checked {
    pages: HashMap<Hash, Result<u64, StoreError>>,
    components: HashMap<Hash, Result<(), StoreError>>,
}

async fn check_objects<'a>(
    target: &Target,
    manifests: impl Iterator<Item = &'a Manifest>,
    progress: &Progress,
) -> Checked {
    let mut pages = BTreeSet::new();
    let mut components = BTreeSet::new();
    for m in manifests {
        pages.extend(m.pages());
        components.extend(m.operators.iter().map(|op| op.component));
    }
    let bar = progress.bar((pages.len() + components.len()) as u64, "objects");
    let (store, task) = (target.store(), target.task());
    let components = futures::stream::iter(components)
        .map(|hash| async move {
            let read = store.get_component(&hash).await.map(drop);
            (hash, read)
        })
        .buffer_unordered(CONCURRENT_READS)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    let pages = futures::stream::iter(pages)
        .map(|hash| async move {
            let read = store.get_page(task, &hash).await.map(|b| b.len() as u64);
            (hash, read)
        })
        .buffer_unordered(CONCURRENT_READS)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    bar.finish_and_clear();
    Checked { pages, components }
}

/// Fills in the verdict on one committed epoch whose manifest verified.
fn judge(target: &Target, m: &Manifest, checked: &Checked, verdict: &mut EpochVerdict) {
    let mut reported = BTreeSet::new();
    let mut components = BTreeSet::new();
    for op in &m.operators {
        if components.insert(op.component)
            && let Some(Err(e)) = checked.components.get(&op.component)
        {
            verdict.problems.push(problem(target, e));
        }
        for (k, memory) in op.memories.iter().enumerate() {
            let mut covered = 0u64;
            for (i, hash) in memory.pages.iter().enumerate() {
                let expected = memory
                    .size_bytes
                    .saturating_sub(covered)
                    .min(u64::from(memory.page_bytes));
                covered += expected;
                match checked.pages.get(hash) {
                    Some(Err(e)) if reported.insert(*hash) => {
                        verdict.problems.push(problem(target, e));
                    }
                    Some(Ok(len)) if *len != expected && reported.insert(*hash) => {
                        verdict.problems.push(Problem {
                            object: page_key(target, hash),
                            problem: format!(
                                "holds {len} bytes, but page {i} of operator `{}` memory {k} has {expected}",
                                op.name
                            ),
                        });
                    }
                    _ => {}
                }
            }
            if covered != memory.size_bytes {
                verdict.problems.push(Problem {
                    object: manifest_key(target, m.epoch),
                    problem: format!(
                        "operator `{}` memory {k} is {} bytes, but its {} page(s) hold {covered}",
                        op.name,
                        memory.size_bytes,
                        memory.pages.len()
                    ),
                });
            }
        }
    }
    verdict.pages = m.pages().collect::<BTreeSet<_>>().len() as u64;
    verdict.components = components.len() as u64;
    if !verdict.problems.is_empty() {
        verdict.verdict = Verdict::Failed;
    }
}

/// A failed epoch whose commit marker is gone now was deleted while it was
/// being verified (markers are deleted first, then manifests, then pages):
/// that is no damage.
async fn notice_deletions(
    target: &Target,
    verdicts: &mut [EpochVerdict],
) -> Result<(), InspectError> {
    if !verdicts
        .iter()
        .any(|v| v.verdict == Verdict::Failed && v.committed)
    {
        return Ok(());
    }
    let now = target.epochs().await?;
    for v in verdicts
        .iter_mut()
        .filter(|v| v.verdict == Verdict::Failed && v.committed)
    {
        if !now.iter().any(|e| e.epoch == v.epoch && e.committed) {
            v.verdict = Verdict::Deleted;
        }
    }
    Ok(())
}

fn problem(target: &Target, e: &StoreError) -> Problem {
    let (object, problem) = match e {
        StoreError::NotFound { key, .. } => (key.clone(), "does not exist".to_owned()),
        StoreError::Corrupt { key, reason, .. } => (key.clone(), format!("is corrupt: {reason}")),
        StoreError::Format { key, source, .. } => (key.clone(), source.to_string()),
        StoreError::Backend {
            key,
            operation,
            cause,
            ..
        } => (key.clone(), format!("{operation} failed: {cause}")),
        other => (target.location().to_owned(), other.to_string()),
    };
    Problem { object, problem }
}

fn page_key(target: &Target, hash: &Hash) -> String {
    layout::page(target.store().root(), target.task(), hash).to_string()
}

fn manifest_key(target: &Target, epoch: u64) -> String {
    layout::manifest(target.store().root(), target.task(), epoch).to_string()
}

fn commit_key(target: &Target, epoch: u64) -> String {
    layout::commit(target.store().root(), target.task(), epoch).to_string()
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}, task {}, store {}",
            self.pipeline, self.task, self.store
        )?;
        for v in &self.epochs {
            match v.verdict {
                Verdict::Ok => writeln!(
                    f,
                    "epoch {}: ok (commit marker, manifest, {} distinct page(s), {} component(s))",
                    v.epoch, v.pages, v.components
                )?,
                Verdict::Uncommitted => {
                    writeln!(f, "epoch {}: not committed, skipped", v.epoch)?;
                }
                Verdict::Deleted => {
                    writeln!(f, "epoch {}: deleted while being verified", v.epoch)?;
                }
                Verdict::Failed => {
                    writeln!(f, "epoch {}: FAILED", v.epoch)?;
                    for p in &v.problems {
                        writeln!(f, "  {}: {}", p.object, p.problem)?;
                    }
                }
            }
        }
        let count = |verdict| self.epochs.iter().filter(|v| v.verdict == verdict).count();
        writeln!(
            f,
            "{} epoch(s): {} ok, {} failed",
            self.epochs.len(),
            count(Verdict::Ok),
            count(Verdict::Failed)
        )
    }
}
