//! The pipeline driver: source -> operator chain -> sinks, with the error
//! policy applied to every record that cannot be processed.
//!
//! One [`task::Task`] runs the whole chain for one source: the whole input
//! of a local source (task `main`), or one partition of a Kafka topic
//! ([`group`] runs one task per partition the process holds). Its loop reads a batch, hands it through the chain,
//! routes the outputs, and writes them. A batch is atomic: if any operator
//! faults on it, none of its outputs are written.
//!
//! **Architecture Invariant:** a fault never loses operator state silently.
//! After a trap the instances are rebuilt from the task's restore point by
//! replaying the batches journaled since (outputs suppressed); the record
//! that trapped is then removed from the stream. Today the restore point is
//! the start of the input; checkpoints move it forward.

mod build;
mod chain;
mod checkpointing;
mod dead_letter;
pub mod group;
mod recorder;
pub mod replay;
mod summary;
mod task;
mod timekeeper;

pub use checkpointing::CheckpointSummary;
pub use dead_letter::Origin;
pub use summary::{OperatorStats, SinkStats, Summary};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::Pipeline;
use crate::operator::{ComponentCache, Fault, OperatorError};
use crate::sink::SinkError;
use crate::source::SourceError;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where compiled components are cached.
    pub cache: ComponentCache,
    /// Set to stop the run at the next batch boundary (outputs so far are
    /// checkpointed and published, and the summary says it stopped early).
    pub stop: Arc<AtomicBool>,
    /// Discard the task's checkpoints and outputs and start from the
    /// beginning of the input, instead of resuming.
    pub from_scratch: bool,
}

/// The only task of a pipeline with one local source.
const TASK: &str = "main";

/// Runs a pipeline to the end of its (bounded) source, resuming from the
/// newest checkpoint if there is one.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<Summary, PipelineError> {
    if let crate::config::SourceSpec::Kafka(spec) = &pipeline.spec.source {
        return group::run(pipeline, spec, options);
    }
    let operators = build::operators(pipeline, &options.cache)?;
    let (mut checkpointing, resume) = if pipeline.spec.checkpoint.enabled {
        let (checkpointing, resume) =
            checkpointing::Checkpointing::open(pipeline, TASK, options.from_scratch)?;
        (Some(checkpointing), resume)
    } else {
        (None, None)
    };
    let source = build::source(pipeline)?;
    let committed = resume.as_ref().map(|r| r.manifest.epoch);
    let mut sinks = build::sinks(pipeline, committed, options.from_scratch, None)?;
    if let Some(checkpointing) = &mut checkpointing {
        checkpointing.number_epochs_after(sinks.newest_epoch()?);
    }
    task::Task::new(pipeline, operators, source, sinks, checkpointing, resume)?.run(&options.stop)
}

/// Checks a pipeline without running it: the file, the components and their
/// links. Returns the operators' names.
pub fn validate(pipeline: &Pipeline, options: &RunOptions) -> Result<Vec<String>, PipelineError> {
    let operators = build::operators(pipeline, &options.cache)?;
    Ok(operators.iter().map(|o| o.name().to_owned()).collect())
}

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// An operator could not be loaded or started.
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// The WebAssembly engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// An operator faulted on a record (error policy `stop`).
    #[error("operator `{operator}` failed on {source_name} {origin}: {fault}{STOP_HINT}")]
    Fault {
        /// The operator.
        operator: String,
        /// The source.
        source_name: String,
        /// Which record.
        origin: Box<Origin>,
        /// What happened.
        fault: Box<Fault>,
    },
    /// An operator rejected a record (error policy `stop`).
    #[error(
        "operator `{operator}` rejected the record at {source_name} {origin}: {reason}{STOP_HINT}"
    )]
    Rejected {
        /// The operator.
        operator: String,
        /// The source.
        source_name: String,
        /// Which record.
        origin: Box<Origin>,
        /// The operator's reason.
        reason: String,
    },
    /// The source held a malformed record (error policy `stop`).
    #[error("{source_name}: malformed record at {origin}: {reason}{STOP_HINT}")]
    Malformed {
        /// The source.
        source_name: String,
        /// Which record.
        origin: Box<Origin>,
        /// Why.
        reason: String,
    },
    /// An operator addressed an output to a sink the pipeline lacks.
    #[error(
        "operator `{operator}` wrote to sink `{sink}`, but the pipeline has no sink of that name (sinks: {known}); add [sinks.{sink}] to the pipeline file"
    )]
    UnknownSink {
        /// The operator.
        operator: String,
        /// The name it used (`main` for the main stream).
        sink: String,
        /// The sinks there are.
        known: String,
    },
    /// The checkpoint store failed.
    #[error(transparent)]
    Store(#[from] crate::checkpoint::StoreError),
    /// No checkpoint can be resumed from.
    #[error(transparent)]
    Recovery(#[from] crate::checkpoint::recovery::RecoveryError),
    /// Checkpointing failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Replaying journaled input did not reproduce the operators' behaviour.
    #[error(
        "operator `{operator}` is not deterministic: replaying records it had processed before failed: {detail}"
    )]
    NotDeterministic {
        /// The operator.
        operator: String,
        /// What diverged.
        detail: String,
    },
}

const STOP_HINT: &str = "\n(errors.policy is \"stop\"; set policy = \"dead-letter\" and dead_letter_sink in [errors] to divert such records and continue)";
