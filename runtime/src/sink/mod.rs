//! Sinks: where outputs go.
//!
//! # Contract
//!
//! - **Order.** Outputs passed to `write` become visible in the order given,
//!   after those of earlier calls.
//! - **Durability.** After `flush` returns `Ok`, everything written before is
//!   durable (for a file: written to the OS; for stdout: written out).
//!   Before it, nothing is promised.
//! - **Bad output is an error, never silently altered.** An output the sink
//!   cannot represent (for example a value with a newline in a line-framed
//!   sink) fails the call with [`SinkError::Unrepresentable`] and writes none
//!   of the batch's later outputs.
//!
//! Not guaranteed by a plain `Sink`: atomicity across a crash. A sink that
//! also implements [`EpochSink`] makes outputs visible per epoch, only once
//! the checkpoint covering them has committed (exactly once).
//!
//! Every implementation passes [`crate::conformance::sink`]; every
//! [`EpochSink`] also passes [`crate::conformance::epoch_sink`].

pub mod kafka;
mod line;
mod null;
mod parts;

pub use kafka::{KafkaAtLeastOnceSink, KafkaSink};
pub use line::LineSink;
pub use null::NullSink;
pub use parts::PartFileSink;

use crate::record::{Output, Position};

/// Where outputs go. See the [module docs](self) for the contract.
pub trait Sink: Send {
    /// Names the sink for messages, e.g. `sink main (parts in out/ledger)`.
    fn describe(&self) -> String;

    /// Writes outputs in order. May buffer until [`Sink::flush`].
    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError>;

    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Outputs accepted so far.
    fn written(&self) -> u64;

    /// The sink's part in checkpoints, if it takes part (exactly-once).
    fn as_epoch_sink(&mut self) -> Option<&mut dyn EpochSink> {
        None
    }
}

/// A sink that takes part in checkpoints, for exactly-once output.
///
/// # Contract
///
/// Outputs written between two `prepare` calls belong to the epoch named by
/// the second. The runtime calls, in this order:
///
/// 1. `prepare(n)` at the barrier that ends epoch `n`: the epoch's outputs
///    become durable and stay invisible. An epoch with no outputs is fine.
/// 2. `publish(n)`, only after checkpoint `n` has committed: they become
///    visible, atomically. Idempotent.
/// 3. After a crash, `recover(c)` before any write, with `c` the checkpoint
///    the run resumes from (0 for none): prepared epochs `<= c` are
///    published, everything later and everything unprepared is discarded.
///    A sink whose prepared epochs do not survive a crash (a Kafka
///    transaction is aborted when the next producer opens) says so with
///    [`EpochSink::resume_epoch`]: the run must then resume from exactly
///    that checkpoint and replay what follows, and `recover` refuses any
///    other `c` with [`SinkError::Inconsistent`].
///    If epochs after `c` were *published* already (`c` is older than the
///    newest checkpoint because that one was damaged), the replay from `c`
///    must reproduce their outputs: the sink checks them and does not write
///    them again, and fails with [`SinkError::Inconsistent`] on the first
///    difference. The run numbers its next epoch after `newest_epoch`.
///
/// A reader never sees outputs of an epoch that did not commit, nor part of
/// an epoch.
pub trait EpochSink: Sink {
    /// Where the source stands at the end of epoch `epoch` (the position
    /// its checkpoint records); told right before `prepare(epoch)`. A sink
    /// that commits source progress atomically with the outputs (Kafka: the
    /// consumed offsets go into the epoch's transaction) keeps it; others
    /// ignore it.
    fn epoch_position(&mut self, epoch: u64, position: &Position) -> Result<(), SinkError> {
        let _ = (epoch, position);
        Ok(())
    }
    /// The checkpoint a run must resume from, if this sink decides it:
    /// `Some(e)` when the sink's visible output ends exactly with epoch `e`
    /// (0: nothing) and prepared, unpublished epochs were lost in the
    /// crash. `None` (the default): any committed checkpoint will do.
    fn resume_epoch(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }
    /// Makes the current epoch's outputs durable as epoch `epoch`.
    fn prepare(&mut self, epoch: u64) -> Result<(), SinkError>;
    /// Makes prepared epoch `epoch` visible.
    fn publish(&mut self, epoch: u64) -> Result<(), SinkError>;
    /// Brings the sink in line with checkpoint `committed` after a restart.
    fn recover(&mut self, committed: u64) -> Result<(), SinkError>;
    /// The newest epoch whose outputs the sink holds (0 for none); the run
    /// numbers its epochs after it, so none is ever published twice.
    fn newest_epoch(&self) -> Result<u64, SinkError>;
}

/// A failure to write outputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The underlying writer failed.
    #[error("{sink}: {operation}: {error}")]
    Io {
        /// The sink, as [`Sink::describe`] names it.
        sink: String,
        /// What was being done.
        operation: &'static str,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// An output this sink cannot write faithfully.
    #[error("{sink}: cannot write output #{index} of the batch: {reason}")]
    Unrepresentable {
        /// The sink.
        sink: String,
        /// Index of the output in the batch given to `write`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The Kafka client failed (the message says when the producer was
    /// fenced by another process).
    #[error("{sink}: {operation}: {error}")]
    Kafka {
        /// The sink, or the task's producer.
        sink: String,
        /// What was being done.
        operation: &'static str,
        /// What librdkafka said.
        error: String,
    },
    /// A transaction had to be aborted by Kafka's rules (for example the
    /// consumer group rebalanced between a checkpoint and its commit):
    /// nothing of the epoch is visible, and the task must start again from
    /// the checkpoint committed in Kafka.
    #[error(
        "{sink}: the transaction of epoch {epoch} was aborted ({reason}); nothing of it is visible, and the task starts again from the checkpoint committed in Kafka"
    )]
    TransactionAborted {
        /// The task's producer.
        sink: String,
        /// The epoch whose outputs were aborted.
        epoch: u64,
        /// What librdkafka said.
        reason: String,
    },
    /// The sink's durable state contradicts the checkpoints.
    #[error("{sink}: {reason}")]
    Inconsistent {
        /// The sink.
        sink: String,
        /// What contradicts what.
        reason: String,
    },
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        (**self).write(outputs)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        (**self).flush()
    }

    fn written(&self) -> u64 {
        (**self).written()
    }

    fn as_epoch_sink(&mut self) -> Option<&mut dyn EpochSink> {
        (**self).as_epoch_sink()
    }
}
