//! `weir checkpoints list`: one line per epoch of a task.

use std::fmt;

use futures::StreamExt;
use serde::Serialize;

use super::table::{Align, Table};
use super::view::PositionView;
use super::{CONCURRENT_READS, InspectError, Progress, Target, units};
use crate::checkpoint::EpochStats;

/// Every epoch of a task, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// The store's location.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// The epochs, oldest first.
    pub epochs: Vec<ListEntry>,
}

/// One epoch in [`ListReport`]. The fields read from the manifest are
/// `null` when there is none yet or it cannot be read (`problem` says
/// which).
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    /// The epoch.
    pub epoch: u64,
    /// Whether its commit marker exists (the manifest is then checked
    /// against it).
    pub committed: bool,
    /// Wall time of the capture, RFC 3339 UTC.
    pub created: Option<String>,
    /// The same, ms since the Unix epoch.
    pub created_unix_ms: Option<u64>,
    /// Where the source resumes from this checkpoint.
    pub source_position: Option<PositionView>,
    /// The measurements recorded with the checkpoint.
    pub stats: Option<EpochStats>,
    /// Why the manifest cannot be read, if it cannot (an uncommitted epoch
    /// without a manifest is being written, which is no problem).
    pub problem: Option<String>,
}

impl ListReport {
    /// The epochs whose manifest cannot be read, with why.
    pub fn problems(&self) -> impl Iterator<Item = (u64, &str)> {
        self.epochs
            .iter()
            .filter_map(|e| e.problem.as_deref().map(|p| (e.epoch, p)))
    }
}

/// Lists the task's epochs with what their manifests record.
pub async fn list(target: &Target, progress: &Progress) -> Result<ListReport, InspectError> {
    let epochs = target.epochs().await?;
    let bar = progress.bar(epochs.len() as u64, "manifests");
    let entries: Vec<ListEntry> = futures::stream::iter(epochs)
        .map(|entry| {
            let bar = &bar;
            async move {
                let read = target.manifest(entry).await;
                bar.inc(1);
                let mut row = ListEntry {
                    epoch: entry.epoch,
                    committed: entry.committed,
                    created: None,
                    created_unix_ms: None,
                    source_position: None,
                    stats: None,
                    problem: None,
                };
                match read {
                    Ok(m) => {
                        let m = m.manifest;
                        row.created = Some(units::rfc3339(m.created_unix_ms));
                        row.created_unix_ms = Some(m.created_unix_ms);
                        row.source_position = Some((&m.source_position).into());
                        row.stats = Some(m.stats);
                    }
                    Err(InspectError::NoManifest { .. }) => {}
                    Err(e) => row.problem = Some(e.to_string()),
                }
                row
            }
        })
        .buffered(CONCURRENT_READS)
        .collect()
        .await;
    bar.finish_and_clear();
    let entries = drop_deleted(target, entries).await?;
    Ok(ListReport {
        store: target.location().to_owned(),
        pipeline: target.pipeline().to_owned(),
        task: target.task().to_owned(),
        epochs: entries,
    })
}

/// Leaves out epochs that could not be read because they were deleted
/// meanwhile (a running pipeline collects its garbage after every commit;
/// commit markers go first): they are no damage, just gone.
async fn drop_deleted(
    target: &Target,
    entries: Vec<ListEntry>,
) -> Result<Vec<ListEntry>, InspectError> {
    if entries.iter().all(|e| e.problem.is_none()) {
        return Ok(entries);
    }
    let now = target.epochs().await?;
    Ok(entries
        .into_iter()
        .filter(|e| {
            e.problem.is_none()
                || now
                    .iter()
                    .any(|n| n.epoch == e.epoch && (n.committed || !e.committed))
        })
        .collect())
}

impl fmt::Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let committed = self.epochs.iter().filter(|e| e.committed).count();
        writeln!(
            f,
            "pipeline {}, task {}, store {}: {} epoch(s), {committed} committed",
            self.pipeline,
            self.task,
            self.store,
            self.epochs.len()
        )?;
        if self.epochs.is_empty() {
            return Ok(());
        }
        let mut table = Table::new(&[
            ("EPOCH", Align::Right),
            ("WALL TIME (UTC)", Align::Left),
            ("COMMITTED", Align::Left),
            ("SOURCE POSITION", Align::Left),
            ("RECORDS", Align::Right),
            ("STATE", Align::Right),
            ("NEW", Align::Right),
            ("PAUSE", Align::Right),
            ("UPLOAD", Align::Right),
        ]);
        for e in &self.epochs {
            let committed = match (e.committed, &e.problem) {
                (_, Some(_)) => "DAMAGED",
                (true, None) => "yes",
                (false, None) if e.stats.is_none() => "no (being written?)",
                (false, None) => "no",
            };
            let mut row = vec![
                e.epoch.to_string(),
                e.created_unix_ms.map(units::wall_time).unwrap_or_default(),
                committed.to_owned(),
            ];
            if let (Some(position), Some(stats)) = (&e.source_position, &e.stats) {
                row.extend([
                    position.to_string(),
                    stats.records_in.to_string(),
                    units::bytes(stats.state_bytes),
                    units::bytes(stats.new_bytes),
                    units::micros(stats.capture_pause_us),
                    units::micros(stats.upload_us),
                ]);
            }
            table.row(row);
        }
        write!(f, "{table}")?;
        for (epoch, problem) in self.problems() {
            writeln!(f, "epoch {epoch}: {problem}")?;
        }
        Ok(())
    }
}
