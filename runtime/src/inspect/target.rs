//! [`Target`]: the checkpoints of one task of one pipeline in a store, found
//! from a location and optional names.

use std::path::Path;

use super::InspectError;
use crate::checkpoint::CheckpointStore;

/// The task inspected when none is named: a pipeline with one local source
/// has one task, `main`.
pub const DEFAULT_TASK: &str = "main";

/// Opening a [`CheckpointStore`] needs a pipeline name; this one (valid,
/// never used for a key) reaches the store to list the pipelines in it.
const PROBE_PIPELINE: &str = "_";

/// The checkpoints of one task of one pipeline: what every inspection
/// reads.
#[derive(Debug, Clone)]
pub struct Target {
    store: CheckpointStore,
    pipeline: String,
    task: String,
}

impl Target {
    /// Opens the checkpoints of `task` of `pipeline` at `location` (a local
    /// directory, `file:///dir` or `s3://bucket/prefix`). Without a
    /// pipeline name, the store must hold exactly one pipeline. Unlike a
    /// run, inspection never creates the store: a local directory that does
    /// not exist is an error, as are a pipeline or task without
    /// checkpoints (the error lists those there are).
    pub async fn open(
        location: &str,
        pipeline: Option<&str>,
        task: &str,
    ) -> Result<Target, InspectError> {
        check_local_dir(location)?;
        let store = CheckpointStore::open(location, pipeline.unwrap_or(PROBE_PIPELINE))?;
        let pipelines = store.pipelines().await?;
        let (store, pipeline) = match pipeline {
            Some(name) if pipelines.iter().any(|p| p == name) => (store, name.to_owned()),
            Some(name) => {
                return Err(InspectError::NoSuchPipeline {
                    location: location.to_owned(),
                    pipeline: name.to_owned(),
                    pipelines,
                });
            }
            None => match pipelines.as_slice() {
                [] => {
                    return Err(InspectError::Empty {
                        location: location.to_owned(),
                    });
                }
                [only] => (CheckpointStore::open(location, only)?, only.clone()),
                _ => {
                    return Err(InspectError::SeveralPipelines {
                        location: location.to_owned(),
                        pipelines,
                    });
                }
            },
        };
        let tasks = store.tasks().await?;
        if !tasks.iter().any(|t| t == task) {
            return Err(InspectError::NoSuchTask {
                pipeline,
                task: task.to_owned(),
                tasks,
            });
        }
        Ok(Target {
            store,
            pipeline,
            task: task.to_owned(),
        })
    }

    /// The store.
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The store's location, as given.
    pub fn location(&self) -> &str {
        self.store.describe()
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }
}

/// A local location must be an existing directory: opening it for a run
/// would create it, which inspection must not do.
fn check_local_dir(location: &str) -> Result<(), InspectError> {
    let dir = match location.strip_prefix("file://") {
        Some(path) => path,
        None if location.contains("://") => return Ok(()),
        None => location,
    };
    let reason = match std::fs::metadata(Path::new(dir)) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "it is not a directory".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "the directory does not exist".to_owned()
        }
        Err(e) => e.to_string(),
    };
    Err(InspectError::NoStore {
        location: location.to_owned(),
        reason,
    })
}
