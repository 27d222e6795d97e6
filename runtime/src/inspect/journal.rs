//! A summary of an epoch's journal for `weir checkpoints show`: where the
//! epoch started, its seed, its reads and their recorded times, what each
//! operator drew from its recorded inputs, and the outputs it committed.

use std::fmt;

use serde::Serialize;

use super::units;
use crate::checkpoint::journal::{EpochJournal, LookupRequest};

/// The journal of one epoch, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct JournalSummary {
    /// The epoch whose state this one started from (`null`: fresh).
    pub base_epoch: Option<u64>,
    /// Where the source stood when the epoch started.
    pub start_position: String,
    /// The task's seed, hex.
    pub seed: String,
    /// Source reads (batches) in the epoch.
    pub reads: usize,
    /// Records those reads returned.
    pub records: u64,
    /// Recorded time of the first and the last read, RFC 3339 UTC.
    pub first_read_time: Option<String>,
    /// See `first_read_time`.
    pub last_read_time: Option<String>,
    /// One per operator of the chain.
    pub operators: Vec<OperatorSummary>,
    /// Outputs the epoch committed, per sink.
    pub outputs: Vec<SinkOutputsSummary>,
}

/// What one operator drew from its recorded inputs.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorSummary {
    /// The operator's name.
    pub name: String,
    /// Bytes drawn from `wasi:random/random` since the instance's `init`.
    pub random_bytes: u64,
    /// Bytes drawn from `wasi:random/insecure` since `init`.
    pub insecure_random_bytes: u64,
    /// Lookups since `init`.
    pub lookups: u64,
    /// What the lookups of this epoch asked for, in order.
    pub lookups_in_epoch: Vec<String>,
}

/// Outputs one sink got from the epoch.
#[derive(Debug, Clone, Serialize)]
pub struct SinkOutputsSummary {
    /// The sink's name.
    pub sink: String,
    /// How many.
    pub outputs: u64,
}

impl From<&EpochJournal> for JournalSummary {
    fn from(j: &EpochJournal) -> JournalSummary {
        let time = |ms: i64| units::rfc3339(u64::try_from(ms).unwrap_or(0));
        JournalSummary {
            base_epoch: j.base_epoch,
            start_position: j.start_position.to_string(),
            seed: j.seed.iter().map(|b| format!("{b:02x}")).collect(),
            reads: j.reads.len(),
            records: j.reads.iter().map(|r| u64::from(r.records)).sum(),
            first_read_time: j.reads.first().map(|r| time(r.time_ms)),
            last_read_time: j.reads.last().map(|r| time(r.time_ms)),
            operators: j
                .operators
                .iter()
                .map(|o| OperatorSummary {
                    name: o.name.clone(),
                    random_bytes: o.at_end.random_bytes,
                    insecure_random_bytes: o.at_end.insecure_random_bytes,
                    lookups: o.at_end.lookups,
                    lookups_in_epoch: o
                        .entries
                        .iter()
                        .map(|e| match &e.request {
                            LookupRequest::HttpGet { url } => format!("#{} GET {url}", e.index),
                            LookupRequest::ReadFile { path } => {
                                format!("#{} read {path}", e.index)
                            }
                        })
                        .collect(),
                })
                .collect(),
            outputs: j
                .outputs
                .iter()
                .map(|o| SinkOutputsSummary {
                    sink: o.sink.clone(),
                    outputs: o.outputs,
                })
                .collect(),
        }
    }
}

impl fmt::Display for JournalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.base_epoch {
            Some(epoch) => format!("epoch {epoch}"),
            None => "fresh instances".to_owned(),
        };
        writeln!(f, "\njournal")?;
        writeln!(
            f,
            "  {:<14} {base}, at {}",
            "started from", self.start_position
        )?;
        writeln!(f, "  {:<14} {}", "seed", self.seed)?;
        let times = match (&self.first_read_time, &self.last_read_time) {
            (Some(first), Some(last)) => format!(", recorded times {first} .. {last}"),
            _ => String::new(),
        };
        writeln!(
            f,
            "  {:<14} {} read(s) of {} record(s){times}",
            "reads", self.reads, self.records
        )?;
        for op in &self.operators {
            writeln!(
                f,
                "  {:<14} {} random byte(s), {} insecure, {} lookup(s) since init, {} in this epoch",
                format!("operator {}", op.name),
                op.random_bytes,
                op.insecure_random_bytes,
                op.lookups,
                op.lookups_in_epoch.len()
            )?;
            for lookup in &op.lookups_in_epoch {
                writeln!(f, "  {:<14}   {lookup}", "")?;
            }
        }
        writeln!(f, "outputs committed")?;
        if self.outputs.is_empty() {
            writeln!(f, "  none")?;
        }
        for sink in &self.outputs {
            writeln!(
                f,
                "  {:<14} {}",
                format!("sink {}", sink.sink),
                sink.outputs
            )?;
        }
        Ok(())
    }
}
