//! `weir checkpoints gc`: the garbage collection a run does after each
//! commit ([`collect_garbage`]: keep the newest N committed epochs, delete
//! older epochs and the pages only they reference), plus a sweep of pages
//! no manifest references (left by a crashed attempt), which a run does not
//! do.
//!
//! Safe while a pipeline writes to the same store: epochs newer than the
//! newest committed one are never touched, and a page no manifest
//! references is deleted only once it is older than a grace period, since
//! it may belong to an epoch whose pages are uploaded and whose manifest is
//! not written yet. A run uploads only pages that changed since its
//! previous capture, so the pages an epoch being written relies on are
//! those of the newest committed epoch (kept, since `keep` is at least 1)
//! and its own fresh uploads (young).
//!
//! One window remains, because pages are content-addressed: if an epoch
//! being written changes a page back to content that only epochs this
//! collection deletes still reference, its upload finds the object present
//! and does not write it again, and this collection may delete it before
//! that epoch's manifest appears. Closing it needs the writer's help (for
//! example, rewriting a page found present, so its age shows it is in use,
//! and applying the grace period to every page deleted), which is not done
//! yet.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::{CONCURRENT_READS, InspectError, Target, units};
use crate::checkpoint::uploader::{Collected, collect_garbage};
use crate::checkpoint::{EpochEntry, StoreError, StoredPage};

/// How many times a collection starts over when another collector (the
/// running pipeline's) deletes an epoch it wanted to keep.
const ATTEMPTS: usize = 5;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Committed epochs kept (the newest ones; at least 1).
    pub keep: usize,
    /// A page no manifest references is deleted only if it was written at
    /// least this long ago (by the store's clock, compared with ours).
    pub grace: Duration,
}

/// What a collection deleted.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// The store's location.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// Committed epochs kept.
    pub keep: usize,
    /// The grace period for unreferenced pages, e.g. `10m`.
    pub grace: String,
    /// Epochs deleted, oldest first.
    pub epochs_deleted: Vec<u64>,
    /// Epochs left, oldest first.
    pub epochs_left: Vec<u64>,
    /// Pages deleted because only deleted epochs referenced them.
    pub pages_deleted: u64,
    /// Pages deleted because no manifest referenced them and they were
    /// older than the grace period.
    pub unreferenced_pages_deleted: u64,
    /// Pages no manifest references yet, younger than the grace period:
    /// left alone (an epoch being written may be about to reference them).
    pub unreferenced_pages_spared: u64,
    /// Bytes of every page deleted.
    pub bytes_deleted: u64,
}

/// Collects the garbage of the target's task.
pub async fn gc(target: &Target, options: &GcOptions) -> Result<GcReport, InspectError> {
    let store = target.store();
    let task = target.task();
    let started = chrono::Utc::now();
    let cutoff = chrono::Duration::from_std(options.grace)
        .ok()
        .and_then(|grace| started.checked_sub_signed(grace))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    // Listed before anything is collected: a page written after this
    // instant is not even seen.
    let listed = store.list_pages(task).await?;
    let collected = collect(target, options.keep).await?;
    let left = target.epochs().await?;
    let referenced = referenced_pages(target, &left).await?;
    let gone: HashSet<_> = collected.pages.iter().copied().collect();
    let (old, young): (Vec<StoredPage>, Vec<StoredPage>) = listed
        .iter()
        .filter(|p| !referenced.contains(&p.hash) && !gone.contains(&p.hash))
        .partition(|p| p.last_modified < cutoff);
    futures::stream::iter(&old)
        .map(|page| store.delete_page(task, &page.hash))
        .buffer_unordered(CONCURRENT_READS)
        .try_collect::<Vec<()>>()
        .await?;
    let bytes_deleted = listed
        .iter()
        .filter(|p| gone.contains(&p.hash))
        .chain(&old)
        .map(|p| p.bytes)
        .sum();
    Ok(GcReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: task.to_owned(),
        keep: options.keep,
        grace: units::duration(options.grace),
        epochs_deleted: collected.epochs,
        epochs_left: left.iter().map(|e| e.epoch).collect(),
        pages_deleted: collected.pages.len() as u64,
        unreferenced_pages_deleted: old.len() as u64,
        unreferenced_pages_spared: young.len() as u64,
        bytes_deleted,
    })
}

/// [`collect_garbage`], started over when a kept epoch disappears under it
/// (another collector deleted it after a newer epoch committed; nothing was
/// deleted by the failed attempt). A kept epoch missing while the committed
/// epochs stay the same is damage, and reported as such.
async fn collect(target: &Target, keep: usize) -> Result<Collected, InspectError> {
    let committed = |epochs: Vec<EpochEntry>| -> Vec<u64> {
        epochs
            .into_iter()
            .filter(|e| e.committed)
            .map(|e| e.epoch)
            .collect()
    };
    for _ in 0..ATTEMPTS {
        let before = committed(target.epochs().await?);
        match collect_garbage(target.store(), target.task(), keep).await {
            Ok(collected) => return Ok(collected),
            Err(e @ StoreError::NotFound { .. }) => {
                if committed(target.epochs().await?) == before {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(InspectError::Contended {
        task: target.task().to_owned(),
        attempts: ATTEMPTS,
    })
}

/// Every page a manifest of `epochs` references, committed or not. A
/// manifest that cannot be read stops the sweep: what it references is
/// unknown, so nothing may be deleted on a guess.
async fn referenced_pages(
    target: &Target,
    epochs: &[EpochEntry],
) -> Result<HashSet<crate::checkpoint::Hash>, InspectError> {
    let mut referenced = HashSet::new();
    for entry in epochs {
        // No manifest yet: the epoch is being written, its pages are young.
        if let Some(manifest) = target
            .store()
            .read_manifest(target.task(), entry.epoch)
            .await?
        {
            referenced.extend(manifest.pages());
        }
    }
    Ok(referenced)
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let epochs = |list: &[u64]| {
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(
            f,
            "pipeline {}, task {}, store {}: keeping the newest {} committed epoch(s)",
            self.pipeline, self.task, self.store, self.keep
        )?;
        writeln!(
            f,
            "deleted epochs: {} ({} page(s) only they referenced)",
            epochs(&self.epochs_deleted),
            self.pages_deleted
        )?;
        writeln!(
            f,
            "deleted {} unreferenced page(s) older than {}; left {} younger one(s) alone",
            self.unreferenced_pages_deleted, self.grace, self.unreferenced_pages_spared
        )?;
        writeln!(
            f,
            "freed {}; epochs left: {}",
            units::bytes(self.bytes_deleted),
            epochs(&self.epochs_left)
        )
    }
}
