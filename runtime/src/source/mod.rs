//! Sources: where records come from.
//!
//! # Contract
//!
//! A [`Source`] is a replayable, ordered sequence of records, each with a
//! [`Position`]. Implementations must guarantee:
//!
//! - **Replay.** After `seek(p)` the source yields exactly the records it
//!   yielded after `p` the first time, byte for byte and in the same order.
//!   Checkpoints depend on this: they store positions, not records.
//! - **Cut independence.** The sequence does not depend on `max`: reading
//!   with `max = 1` or `max = 65536` yields the same records.
//! - **Bounded reads.** `read` appends at most `max` records and returns
//!   promptly (an unbounded source returns [`ReadOutcome::Idle`] when it has
//!   nothing for now, rather than blocking forever).
//! - **Malformed input is data, not an error.** A record that cannot be
//!   decoded is returned as [`ReadOutcome::Malformed`] after the good records
//!   before it; the pipeline's error policy decides. [`SourceError`] is for
//!   failures of the source itself (I/O, a position from elsewhere).
//!
//! Not guaranteed: that positions of different sources compare meaningfully.
//!
//! Every implementation passes [`crate::conformance::source`].

mod file;
mod generator;
pub mod kafka;

pub use file::FileSource;
pub use generator::{GeneratorProfile, GeneratorSource};
pub use kafka::KafkaPartitionSource;

use crate::record::{Malformed, Position, SourceBatch};

/// What a call to [`Source::read`] found after the records it appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// More records may follow immediately.
    More,
    /// The next record is malformed; the source has moved past it.
    Malformed(Malformed),
    /// A bounded source has no record after the ones appended.
    End,
    /// Nothing is available right now; try again later.
    Idle,
}

/// A replayable, ordered source of records. See the [module docs](self) for
/// the contract.
pub trait Source: Send {
    /// Names the source for messages, e.g. `file data/input.csv`.
    fn describe(&self) -> String;

    /// Appends up to `max` records (`max >= 1`) to `batch`.
    fn read(&mut self, max: usize, batch: &mut SourceBatch) -> Result<ReadOutcome, SourceError>;

    /// The position of the next record `read` would return.
    fn position(&self) -> Position;

    /// Makes the record at `position` the next one read. Accepts any position
    /// this source has returned, including [`Source::position`] at the end.
    fn seek(&mut self, position: &Position) -> Result<(), SourceError>;
}

/// A failure of the source itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Reading failed.
    #[error("{source_name}: {operation}: {error}")]
    Io {
        /// The source, as [`Source::describe`] names it.
        source_name: String,
        /// What was being done.
        operation: &'static str,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A position that this source never produced.
    #[error("{source_name}: cannot seek to {position}: {reason}")]
    InvalidPosition {
        /// The source.
        source_name: String,
        /// The position asked for.
        position: Position,
        /// Why it is not valid here.
        reason: String,
    },
    /// The Kafka client failed.
    #[error("{source_name}: {operation}: {error}")]
    Kafka {
        /// The source (topic and partition).
        source_name: String,
        /// What was being done.
        operation: &'static str,
        /// What librdkafka said.
        error: String,
    },
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn read(&mut self, max: usize, batch: &mut SourceBatch) -> Result<ReadOutcome, SourceError> {
        (**self).read(max, batch)
    }

    fn position(&self) -> Position {
        (**self).position()
    }

    fn seek(&mut self, position: &Position) -> Result<(), SourceError> {
        (**self).seek(position)
    }
}
