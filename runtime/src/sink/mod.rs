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
//! Not guaranteed yet: atomicity across a crash. Epoch staging (visible only
//! when the checkpoint commits) is a separate, stronger sink mode.
//!
//! Every implementation passes [`crate::conformance::sink`].

mod line;
mod null;

pub use line::LineSink;
pub use null::NullSink;

use crate::record::Output;

/// Where outputs go. See the [module docs](self) for the contract.
pub trait Sink: Send {
    /// Names the sink for messages, e.g. `sink main (file out/ledger.csv)`.
    fn describe(&self) -> String;

    /// Writes outputs in order. May buffer until [`Sink::flush`].
    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError>;

    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Outputs accepted so far.
    fn written(&self) -> u64;
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
}
