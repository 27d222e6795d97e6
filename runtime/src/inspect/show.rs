//! `weir checkpoints show`: everything one epoch holds.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use super::journal::JournalSummary;
use super::view::{HandleView, ManifestView, describe_global};
use super::{EpochSelector, InspectError, Target, units};
use crate::checkpoint::Manifest;

/// One epoch: its manifest, whether it is committed, and its state hash.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    /// The store's location.
    pub store: String,
    /// Whether the epoch is committed (its manifest was then checked
    /// against the commit marker).
    pub committed: bool,
    /// Wall time of the capture, RFC 3339 UTC.
    pub created: String,
    /// The digest `weir run --json` prints as `state_hash`: equal for two
    /// epochs exactly when every memory, global and handle is.
    pub state_hash: String,
    /// Every field of the manifest.
    #[serde(flatten)]
    pub manifest: ManifestView,
    /// The epoch journal, summarized (`null` for format 1 manifests, which
    /// have none).
    pub journal: Option<JournalSummary>,
    #[serde(skip)]
    raw: Manifest,
}

/// Reads one epoch's manifest.
pub async fn show(target: &Target, epoch: EpochSelector) -> Result<ShowReport, InspectError> {
    let loaded = target.load(epoch).await?;
    let m = loaded.manifest;
    Ok(ShowReport {
        store: target.location().to_owned(),
        committed: loaded.committed,
        created: units::rfc3339(m.created_unix_ms),
        state_hash: m.state_hash().to_string(),
        manifest: (&m).into(),
        journal: m.journal.as_ref().map(JournalSummary::from),
        raw: m,
    })
}

impl fmt::Display for ShowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.raw;
        let stats = &m.stats;
        let pages = m.pages().count();
        writeln!(
            f,
            "epoch {} of pipeline {}, task {}: {}",
            m.epoch,
            m.pipeline,
            m.task,
            if self.committed {
                "committed"
            } else {
                "NOT committed (not a recovery point)"
            }
        )?;
        let lines = [
            ("store", self.store.clone()),
            ("format version", m.format_version.to_string()),
            (
                "wall time",
                format!("{} UTC", units::wall_time(m.created_unix_ms)),
            ),
            ("source position", self.manifest.source_position.to_string()),
            ("records in", stats.records_in.to_string()),
            (
                "state",
                format!("{} in {pages} page(s)", units::bytes(stats.state_bytes)),
            ),
            ("state hash", self.state_hash.clone()),
            ("capture pause", units::micros(stats.capture_pause_us)),
            (
                "new in epoch",
                format!(
                    "{}, uploaded in {}",
                    units::bytes(stats.new_bytes),
                    units::micros(stats.upload_us)
                ),
            ),
        ];
        for (label, value) in lines {
            writeln!(f, "{label:<16} {value}")?;
        }
        for op in &m.operators {
            writeln!(f, "\noperator {}", op.name)?;
            writeln!(f, "  {:<10} {}", "component", op.component)?;
            for (i, memory) in op.memories.iter().enumerate() {
                let distinct: HashSet<_> = memory.pages.iter().collect();
                writeln!(
                    f,
                    "  {:<10} {}: {} page(s) of {}, {} distinct",
                    format!("memory {i}"),
                    units::bytes(memory.size_bytes),
                    memory.pages.len(),
                    units::bytes(u64::from(memory.page_bytes)),
                    distinct.len()
                )?;
            }
            for (i, global) in op.globals.iter().enumerate() {
                writeln!(
                    f,
                    "  {:<10} {}",
                    format!("global {i}"),
                    describe_global(global)
                )?;
            }
            let handles: Vec<String> = op
                .handles
                .iter()
                .map(|h| HandleView::from(h).to_string())
                .collect();
            writeln!(
                f,
                "  {:<10} {}",
                "handles",
                if handles.is_empty() {
                    "none".to_owned()
                } else {
                    handles.join(", ")
                }
            )?;
        }
        match &self.journal {
            Some(journal) => write!(f, "{journal}")?,
            None => writeln!(
                f,
                "\njournal          none (format {} has none)",
                m.format_version
            )?,
        }
        Ok(())
    }
}
