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

mod line;
mod null;
mod parts;

pub use line::LineSink;
pub use null::NullSink;
pub use parts::PartFileSink;

use crate::record::Output;

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
///    If epochs after `c` were *published* already (`c` is older than the
///    newest checkpoint because that one was damaged), the replay from `c`
///    must reproduce their outputs: the sink checks them and does not write
///    them again, and fails with [`SinkError::Inconsistent`] on the first
///    difference. The run numbers its next epoch after `newest_epoch`.
///
/// A reader never sees outputs of an epoch that did not commit, nor part of
/// an epoch.
pub trait EpochSink: Sink {
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
