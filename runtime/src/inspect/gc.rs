//! `weir checkpoints gc`: the garbage collection a run does after each
//! commit (keep the newest N committed epochs, delete older epochs and the
//! pages only they reference), plus a sweep of pages no manifest
//! references (left by a crashed attempt), which a run does not do.
//!
//! Safe while pipelines write to the same store. Each round
//! ([`collect_round`]) holds a lease that writers respect, never deletes an
//! epoch newer than the newest committed one, never deletes a page any
//! manifest there references (committed or not, read after the lease was
//! taken), starts over if an epoch it read disappears under it, and sweeps
//! an unreferenced page only once it is older than the grace period, since
//! an epoch being written uploads its pages before its manifest. Writers do
//! their half: they check pages they reuse without writing them once no
//! lease is live. The argument, step by step, is in
//! docs/checkpoint-format.md (garbage collection).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{InspectError, Target, units};
use crate::checkpoint::uploader::{Round, collect_round};

/// How many rounds a collection runs at most: one more each time another
/// collector (the running pipeline's) deletes an epoch it read, or its
/// lease runs out with pages left to delete.
const ROUNDS: usize = 5;

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
    /// Collection rounds run (more than one when the store changed under
    /// a round, or a round's lease ran out).
    pub rounds: usize,
}

/// Collects the garbage of the target's task.
pub async fn gc(target: &Target, options: &GcOptions) -> Result<GcReport, InspectError> {
    let store = target.store();
    let task = target.task();
    // Leases of collectors that crashed would hold writers up until they
    // expire.
    store.delete_expired_gc_leases(task).await?;
    let mut report = GcReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: task.to_owned(),
        keep: options.keep,
        grace: units::duration(options.grace),
        epochs_deleted: Vec::new(),
        epochs_left: Vec::new(),
        pages_deleted: 0,
        unreferenced_pages_deleted: 0,
        unreferenced_pages_spared: 0,
        bytes_deleted: 0,
        rounds: 0,
    };
    while report.rounds < ROUNDS {
        report.rounds += 1;
        match collect_round(store, task, options.keep, Some(options.grace)).await? {
            Round::Raced => continue,
            Round::Done(round) => {
                report.epochs_deleted.extend(&round.epochs);
                report.epochs_left = round.epochs_left;
                report.pages_deleted += round.pages.len() as u64;
                report.unreferenced_pages_deleted += round.orphans.len() as u64;
                report.unreferenced_pages_spared = round.orphans_spared;
                report.bytes_deleted += round.bytes_deleted;
                if !round.unfinished {
                    return Ok(report);
                }
            }
        }
    }
    Err(InspectError::Contended {
        task: task.to_owned(),
        attempts: ROUNDS,
    })
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
