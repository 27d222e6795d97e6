//! [`InspectError`]: why an inspection cannot answer, in one line that names
//! the store, pipeline, task, epoch or object concerned.

use std::path::PathBuf;

use crate::checkpoint::StoreError;

/// Why `weir checkpoints` cannot do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The store failed, or an object in it is missing or damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local store location that is not a directory.
    #[error("no checkpoint store at `{location}`: {reason}")]
    NoStore {
        /// The location as given.
        location: String,
        /// What is there instead.
        reason: String,
    },
    /// The store holds no pipeline's checkpoints.
    #[error("checkpoint store `{location}` holds no checkpoints")]
    Empty {
        /// The location as given.
        location: String,
    },
    /// No pipeline was named and the store holds several.
    #[error(
        "checkpoint store `{location}` holds the checkpoints of several pipelines ({}): name one with --pipeline",
        .pipelines.join(", ")
    )]
    SeveralPipelines {
        /// The location as given.
        location: String,
        /// The pipelines in it.
        pipelines: Vec<String>,
    },
    /// The named pipeline has no checkpoints in the store.
    #[error(
        "checkpoint store `{location}` holds no checkpoints of pipeline `{pipeline}` (pipelines there: {})",
        list_or_none(.pipelines)
    )]
    NoSuchPipeline {
        /// The location as given.
        location: String,
        /// The pipeline asked for.
        pipeline: String,
        /// The pipelines in the store.
        pipelines: Vec<String>,
    },
    /// The named task has no checkpoints.
    #[error(
        "pipeline `{pipeline}` has no checkpoints of task `{task}` (tasks: {}){}",
        list_or_none(.tasks),
        if .tasks.len() == 1 { ": name it with --task" } else { "" }
    )]
    NoSuchTask {
        /// The pipeline.
        pipeline: String,
        /// The task asked for.
        task: String,
        /// The tasks the pipeline has.
        tasks: Vec<String>,
    },
    /// The epoch asked for is not in the store.
    #[error("task `{task}` of pipeline `{pipeline}` has no epoch {epoch} (epochs: {available})")]
    NoSuchEpoch {
        /// The pipeline.
        pipeline: String,
        /// The task.
        task: String,
        /// The epoch asked for.
        epoch: u64,
        /// The epochs there are, summarized.
        available: String,
    },
    /// `latest` was asked for and no epoch is committed.
    #[error("task `{task}` of pipeline `{pipeline}` has no committed epoch")]
    NoCommittedEpoch {
        /// The pipeline.
        pipeline: String,
        /// The task.
        task: String,
    },
    /// An epoch being written: its pages may be there, its manifest is not
    /// yet.
    #[error(
        "epoch {epoch} of task `{task}` has no manifest yet (it is being written, or its writer crashed)"
    )]
    NoManifest {
        /// The task.
        task: String,
        /// The epoch.
        epoch: u64,
    },
    /// The operator asked for is not in the checkpoint.
    #[error("epoch {epoch} has no operator `{operator}` (operators: {})", list_or_none(.operators))]
    NoSuchOperator {
        /// The epoch.
        epoch: u64,
        /// The name asked for.
        operator: String,
        /// The operators of the epoch.
        operators: Vec<String>,
    },
    /// The memory asked for is not in the operator's checkpoint.
    #[error("operator `{operator}` has no memory {memory} at epoch {epoch} (it has {count})")]
    NoSuchMemory {
        /// The epoch.
        epoch: u64,
        /// The operator.
        operator: String,
        /// The index asked for.
        memory: usize,
        /// How many memories it has.
        count: usize,
    },
    /// Writing a dump failed.
    #[error("cannot write {}: {message}", .path.as_ref().map_or("stdout".to_owned(), |p| p.display().to_string()))]
    Output {
        /// The file, or `None` for stdout.
        path: Option<PathBuf>,
        /// The I/O error, as text.
        message: String,
    },
    /// The store kept changing under a garbage collection.
    #[error(
        "task `{task}`: the garbage collection did not finish in {attempts} rounds (another process deleted checkpoints it was reading, or a round ran out of time); what it deleted is safe to have deleted, run it again"
    )]
    Contended {
        /// The task.
        task: String,
        /// How many times it was tried.
        attempts: usize,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
