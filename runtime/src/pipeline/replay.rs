//! Replaying one epoch from its journal: the engine of `weir verify`.
//!
//! The replay builds the chain from the components the checkpoint names
//! (read from the store, so it runs exactly the code that ran), restores the
//! epoch's base checkpoint (or creates fresh instances), seeks the source to
//! where the epoch started, and runs the task loop with the journal's cuts,
//! times, seed and lookup answers (never performing a lookup), writing to
//! in-memory sinks. Faults, rejections and malformed records take the same
//! paths as in the original run.

use std::sync::{Arc, Mutex};

use crate::checkpoint::recovery::Restorable;
use crate::checkpoint::{CheckpointStore, Manifest};
use crate::config::Pipeline;
use crate::operator::{ComponentCache, TaskInputs};
use crate::record::Output;
use crate::sink::{Sink, SinkError};

use super::PipelineError;
use super::build::{self, OperatorHost, Sinks};
use super::recorder::Recorder;
pub use super::task::Replayed;
use super::task::Task;

/// What a replay wrote to one sink, rendered as a line sink writes it (each
/// value and a newline).
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The sink's name.
    pub sink: String,
    /// Outputs written.
    pub outputs: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Replays epoch `manifest` of task `task` (which has a journal) from
/// `base`, its base checkpoint (`None`: the journal says fresh instances).
/// `components` reads a component's bytes by hash from the store.
pub fn replay_epoch(
    pipeline: &Pipeline,
    cache: &ComponentCache,
    manifest: &Manifest,
    base: Option<Restorable>,
    components: &dyn Fn(&crate::checkpoint::Hash) -> Result<Vec<u8>, PipelineError>,
    store: &CheckpointStore,
) -> Result<(Replayed, Vec<Written>), PipelineError> {
    let Some(journal) = &manifest.journal else {
        return Err(PipelineError::Checkpoint(format!(
            "epoch {} has no journal (written by a weir before format 2, or without recording)",
            manifest.epoch
        )));
    };
    let host = OperatorHost::new(pipeline)?;
    let mut operators = Vec::with_capacity(manifest.operators.len());
    for state in &manifest.operators {
        let config = pipeline
            .spec
            .operators
            .iter()
            .find(|op| op.name == state.name)
            .map(|op| op.init_config())
            .unwrap_or_default();
        let path = std::path::PathBuf::from(format!(
            "{}/{}",
            store.describe(),
            crate::checkpoint::layout::component(store.root(), &state.component)
        ));
        let loaded = cache.load_bytes(
            &host.engine,
            &state.name,
            &path,
            components(&state.component)?,
        )?;
        operators.push(host.link(pipeline, &state.name, loaded, config)?);
    }
    let mut source = build::source(pipeline)?;
    source.seek(&journal.start_position)?;
    let (sinks, written) = memory_sinks(pipeline);
    let inputs = TaskInputs::new(journal.seed, pipeline.lookup_policy().into(), None, true);
    for op in &journal.operators {
        inputs.add_recorded(&op.name, op.entries.iter().cloned());
    }
    let recorder = Recorder::replay(inputs, journal);
    let replayed =
        Task::start(pipeline, operators, source, sinks, None, base, recorder)?.replay()?;
    let written = written
        .into_iter()
        .map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    Ok((replayed, written))
}

/// One in-memory sink per sink of the pipeline, in the same order.
fn memory_sinks(pipeline: &Pipeline) -> (Sinks, Vec<Arc<Mutex<Written>>>) {
    let mut entries: Vec<(String, Box<dyn Sink>)> = Vec::new();
    let mut written = Vec::new();
    for name in pipeline.spec.sinks.keys() {
        let shared = Arc::new(Mutex::new(Written {
            sink: name.clone(),
            ..Written::default()
        }));
        written.push(shared.clone());
        entries.push((name.clone(), Box::new(MemorySink(shared))));
    }
    (Sinks { entries }, written)
}

/// Keeps what it is given, as lines.
struct MemorySink(Arc<Mutex<Written>>);

impl Sink for MemorySink {
    fn describe(&self) -> String {
        let sink = self.0.lock().unwrap_or_else(|e| e.into_inner());
        format!("sink {} (replayed in memory)", sink.sink)
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        let mut sink = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for output in outputs {
            sink.bytes.extend_from_slice(&output.value);
            sink.bytes.push(b'\n');
            sink.outputs += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn written(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).outputs
    }
}
