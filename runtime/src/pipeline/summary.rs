//! What a run did, for the final report.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::checkpointing::CheckpointSummary;

/// Counters of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source, as it describes itself.
    pub source: String,
    /// Records read from the source (not counting replays).
    pub records_in: u64,
    /// Source records that were malformed.
    pub malformed: u64,
    /// Per operator, in chain order.
    pub operators: Vec<OperatorStats>,
    /// Per sink, by name.
    pub sinks: Vec<SinkStats>,
    /// Records sent to the dead-letter sink.
    pub dead_letters: u64,
    /// Operator faults recovered from by replay.
    pub recoveries: u64,
    /// Whether the run was stopped on request before its input ended.
    pub stopped_early: bool,
    /// What checkpoints did (absent when they are disabled).
    pub checkpoints: Option<CheckpointSummary>,
    /// Wall time of the run.
    #[serde(with = "duration_secs")]
    pub elapsed: Duration,
}

/// Counters of one operator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorStats {
    /// Its name.
    pub name: String,
    /// Records given to it (not counting replays).
    pub records_in: u64,
    /// Outputs it produced.
    pub outputs: u64,
    /// Records it rejected.
    pub rejected: u64,
    /// Calls that trapped.
    pub faults: u64,
}

/// Counters of one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStats {
    /// Its name.
    pub name: String,
    /// What it is.
    pub describe: String,
    /// Outputs written.
    pub written: u64,
}

impl Summary {
    /// Source records per second of wall time.
    pub fn records_per_second(&self) -> f64 {
        self.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Outputs written to all sinks.
    pub fn records_out(&self) -> u64 {
        self.sinks.iter().map(|s| s.written).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}: {} records in, {} out in {:.2} s ({:.0} records/s)",
            self.pipeline,
            self.records_in,
            self.records_out(),
            self.elapsed.as_secs_f64(),
            self.records_per_second()
        )?;
        writeln!(
            f,
            "  source    {}: {} records, {} malformed",
            self.source, self.records_in, self.malformed
        )?;
        for op in &self.operators {
            writeln!(
                f,
                "  operator  {}: {} in, {} out, {} rejected, {} faults",
                op.name, op.records_in, op.outputs, op.rejected, op.faults
            )?;
        }
        for sink in &self.sinks {
            writeln!(f, "  {}: {} written", sink.describe, sink.written)?;
        }
        write!(
            f,
            "  dead letters: {}, recoveries by replay: {}",
            self.dead_letters, self.recoveries
        )?;
        if let Some(c) = &self.checkpoints {
            write!(f, "\n  checkpoints ({}): ", c.store)?;
            if let Some(epoch) = c.resumed_from {
                write!(f, "resumed from epoch {epoch}; ")?;
            }
            for (epoch, why) in &c.skipped {
                write!(f, "skipped damaged epoch {epoch} ({why}); ")?;
            }
            write!(
                f,
                "{} committed, newest epoch {}, state {:.1} MiB, {:.1} MiB uploaded, longest pause {:.1} ms",
                c.committed,
                c.last_epoch
                    .map_or_else(|| "none".to_owned(), |e| e.to_string()),
                c.state_bytes as f64 / (1 << 20) as f64,
                c.uploaded_bytes as f64 / (1 << 20) as f64,
                c.max_pause_us as f64 / 1000.0
            )?;
        }
        if self.stopped_early {
            write!(f, "\n  stopped on request before the end of the input")?;
        }
        Ok(())
    }
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
