//! Barriers of one task: when to take a checkpoint, what goes into it, and
//! when the sinks may publish an epoch.
//!
//! At a barrier (between batches, so every operator is quiescent) the task
//! 1. makes each exactly-once sink's outputs of the epoch durable
//!    (`prepare`), and flushes the others;
//! 2. captures every operator's state: only this step pauses processing;
//! 3. hands the epoch to the [`Uploader`] and goes on processing.
//!
//! When the uploader reports the epoch committed, the sinks publish it.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::checkpoint::clock_log::{self, StoreClockLog};
use crate::checkpoint::lookups::{self, StoreLookupLog};
use crate::checkpoint::recovery::{self, MemoryImages, Restorable};
use crate::checkpoint::uploader::{CommitFate, EpochUpload, UploadEvent, Uploader};
use crate::checkpoint::{
    CheckpointStore, EpochStats, FORMAT_VERSION, LookupEntry, Manifest, RecordedState, TimeGrant,
};
use crate::config::{CheckpointSpec, Pipeline};
use crate::crashpoint;
use crate::record::Position;

use super::PipelineError;
use super::build::Sinks;
use super::chain::Chain;
use super::recorder::Recorder;

/// What checkpoints did in a run, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointSummary {
    /// Where checkpoints are stored.
    pub store: String,
    /// The epoch this run resumed from, if any.
    pub resumed_from: Option<u64>,
    /// Newer committed epochs that could not be restored, with why.
    pub skipped: Vec<(u64, String)>,
    /// Checkpoints committed in this run.
    pub committed: u64,
    /// The newest committed epoch.
    pub last_epoch: Option<u64>,
    /// Longest pause of the operators for a capture, in microseconds.
    pub max_pause_us: u64,
    /// State size at the newest checkpoint, in bytes.
    pub state_bytes: u64,
    /// Page bytes uploaded in this run.
    pub uploaded_bytes: u64,
    /// Digest of the operators' state at the newest checkpoint (equal
    /// digests, equal states).
    pub state_hash: Option<String>,
}

/// Which checkpoint a task resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The newest restorable committed checkpoint (falling back past
    /// damaged ones).
    Newest,
    /// Exactly this epoch, or none (`None`: fresh state), because a sink
    /// decided it (Kafka: the epoch whose transaction committed last).
    Exactly(Option<u64>),
}

/// The checkpoint side of a task.
pub struct Checkpointing {
    task: String,
    pipeline: String,
    spec: CheckpointSpec,
    store: CheckpointStore,
    uploader: Uploader,
    /// Drives all I/O on the store (see `Uploader::spawn` for why one).
    runtime: tokio::runtime::Runtime,
    next_epoch: u64,
    /// The newest captured epoch: the state fault recovery returns to.
    captured: Option<Manifest>,
    published: u64,
    components_stored: bool,
    records_since_barrier: u64,
    last_barrier: Instant,
    summary: CheckpointSummary,
    /// Lookup answers found in the lookup log (and newer journals) when the
    /// task opened, for the task's recorded inputs.
    recorded_lookups: Vec<(String, Vec<LookupEntry>)>,
    /// Per operator, the first lookup-log entry that may still exist.
    lookup_log_floor: std::collections::HashMap<String, u64>,
    /// The times earlier runs gave records from the restored checkpoint on.
    recorded_times: Vec<TimeGrant>,
    /// Where operators' recorded times are written before they read them.
    clock_log: Arc<StoreClockLog>,
}

impl Checkpointing {
    /// Opens the task's checkpoints and finds the one to resume from.
    /// `from_scratch` first deletes every checkpoint of the task.
    pub fn open(
        pipeline: &Pipeline,
        task: &str,
        from_scratch: bool,
    ) -> Result<(Checkpointing, Option<Restorable>), PipelineError> {
        Self::open_at(pipeline, task, from_scratch, ResumeFrom::Newest)
    }

    /// [`Checkpointing::open`], resuming from the checkpoint `resume` names.
    pub fn open_at(
        pipeline: &Pipeline,
        task: &str,
        from_scratch: bool,
        resume: ResumeFrom,
    ) -> Result<(Checkpointing, Option<Restorable>), PipelineError> {
        let spec = pipeline.spec.checkpoint.clone();
        let store = CheckpointStore::open(&spec.store, &pipeline.spec.name)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-store-io")
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Checkpoint(format!("cannot start I/O runtime: {e}")))?;
        let restorable = runtime.block_on(async {
            if from_scratch {
                let deleted = store.delete_task(task).await?
                    + lookups::delete_all(&store, task).await?
                    + clock_log::delete_all(&store, task).await?;
                if deleted > 0 {
                    tracing::info!(
                        task,
                        store = store.describe(),
                        "--from-scratch: deleted {deleted} checkpoint objects"
                    );
                }
                Ok(None)
            } else {
                match resume {
                    ResumeFrom::Newest => recovery::newest_restorable(&store, task)
                        .await
                        .map_err(PipelineError::from),
                    ResumeFrom::Exactly(None) => Ok(None),
                    ResumeFrom::Exactly(Some(epoch)) => {
                        match recovery::load(&store, task, epoch).await {
                            Ok((manifest, memories)) => Ok(Some(Restorable {
                                manifest,
                                memories,
                                skipped: Vec::new(),
                            })),
                            Err(e) => Err(PipelineError::Checkpoint(format!(
                                "task {task}: the sink's committed output ends with epoch {epoch}, so the run must resume from checkpoint {epoch}, which cannot be restored: {e}; resuming from another checkpoint would duplicate or lose output. Repair the store, or start over with --from-scratch"
                            ))),
                        }
                    }
                }
            }
        })?;
        let existing = runtime.block_on(store.epochs(task))?;
        let newest_existing = existing.last().map_or(0, |e| e.epoch);
        if let (ResumeFrom::Exactly(resume), false) = (resume, from_scratch) {
            // Checkpoints after the one the sink's output ends with belong
            // to epochs whose transactions were aborted: they can never be
            // resumed from. Deleting them keeps `keep` counting checkpoints
            // that matter (after repeated crashes they would otherwise push
            // the one needed out of the window). Their numbers stay unused.
            let resume = resume.unwrap_or(0);
            let orphans: Vec<u64> = existing
                .iter()
                .map(|e| e.epoch)
                .filter(|&e| e > resume)
                .collect();
            for &epoch in &orphans {
                runtime.block_on(store.delete_epoch(task, epoch))?;
            }
            if !orphans.is_empty() {
                tracing::info!(
                    task,
                    "deleted checkpoints {orphans:?}: newer than epoch {resume}, the last one whose output committed, so their output was aborted"
                );
            }
        }
        let uploader = Uploader::spawn(
            store.clone(),
            task.to_owned(),
            spec.keep as usize,
            runtime.handle().clone(),
        )
        .map_err(|e| PipelineError::Checkpoint(format!("cannot start the upload thread: {e}")))?;
        let summary = CheckpointSummary {
            store: spec.store.clone(),
            resumed_from: restorable.as_ref().map(|r| r.manifest.epoch),
            skipped: restorable
                .as_ref()
                .map(|r| r.skipped.clone())
                .unwrap_or_default(),
            last_epoch: restorable.as_ref().map(|r| r.manifest.epoch),
            state_bytes: restorable
                .as_ref()
                .map_or(0, |r| r.manifest.stats.state_bytes),
            state_hash: restorable
                .as_ref()
                .map(|r| r.manifest.state_hash().to_string()),
            ..CheckpointSummary::default()
        };
        let times = runtime.block_on(clock_log::recorded(
            &store,
            task,
            restorable.as_ref().map(|r| &r.manifest),
        ))?;
        let clock_log = Arc::new(StoreClockLog::new(
            store.clone(),
            task,
            runtime.handle().clone(),
            times.logged,
        ));
        let checkpointing = Checkpointing {
            task: task.to_owned(),
            pipeline: pipeline.spec.name.clone(),
            spec,
            store,
            uploader,
            runtime,
            // Never reuse the number of an epoch a crashed run left behind.
            next_epoch: newest_existing + 1,
            captured: restorable.as_ref().map(|r| r.manifest.clone()),
            published: restorable.as_ref().map_or(0, |r| r.manifest.epoch),
            components_stored: false,
            records_since_barrier: 0,
            last_barrier: Instant::now(),
            summary,
            recorded_lookups: Vec::new(),
            lookup_log_floor: Default::default(),
            recorded_times: times.grants,
            clock_log,
        };
        let mut checkpointing = checkpointing;
        let operators: Vec<String> = pipeline
            .spec
            .operators
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let restored = restorable.as_ref().map(|r| &r.manifest);
        checkpointing.recorded_lookups = checkpointing.runtime.block_on(lookups::recorded(
            &checkpointing.store,
            task,
            &operators,
            restored,
        ))?;
        for operator in operators {
            let floor = lookups::floor(restored, &operator);
            checkpointing.lookup_log_floor.insert(operator, floor);
        }
        Ok((checkpointing, restorable))
    }

    /// Where the task's operators' lookup answers are written before they
    /// get them.
    pub fn lookup_log(&self) -> std::sync::Arc<dyn crate::operator::LookupLog> {
        std::sync::Arc::new(StoreLookupLog::new(
            self.store.clone(),
            &self.task,
            self.runtime.handle().clone(),
        ))
    }

    /// Where the task's recorded times are written before an operator
    /// reads them.
    pub fn clock_log(&self) -> Arc<dyn crate::operator::TimeLog> {
        self.clock_log.clone()
    }

    /// The times earlier runs gave the records the task reads again (once).
    pub fn take_recorded_times(&mut self) -> Vec<TimeGrant> {
        std::mem::take(&mut self.recorded_times)
    }

    /// The lookup answers found when the task opened (each once).
    pub fn take_recorded_lookups(&mut self) -> Vec<(String, Vec<LookupEntry>)> {
        std::mem::take(&mut self.recorded_lookups)
    }

    /// Deletes the lookup-log entries `manifest`'s journal holds (the epoch
    /// committed), in the background.
    fn forget_logged_lookups(&mut self, manifest: &Manifest) {
        for op in manifest.journal.iter().flat_map(|j| &j.operators) {
            let floor = self.lookup_log_floor.entry(op.name.clone()).or_insert(0);
            if op.at_end.lookups > *floor {
                self.runtime.spawn(lookups::forget(
                    self.store.object_store().clone(),
                    self.store.root().clone(),
                    self.task.clone(),
                    op.name.clone(),
                    *floor,
                    op.at_end.lookups,
                ));
                *floor = op.at_end.lookups;
            }
        }
    }

    /// Numbers the next epoch after `epoch` at least (sinks may hold
    /// outputs of epochs whose checkpoints are gone).
    pub fn number_epochs_after(&mut self, epoch: u64) {
        self.next_epoch = self.next_epoch.max(epoch + 1);
    }

    /// Leaves one epoch number unused. A task taken over from a process
    /// that may still be alive (fenced, but with an upload in flight) must
    /// not reuse the number that upload may commit.
    pub fn skip_epoch_number(&mut self) {
        self.next_epoch += 1;
    }

    /// Counts records read since the last barrier.
    pub fn note_records(&mut self, n: u64) {
        self.records_since_barrier += n;
    }

    /// Whether a barrier is due.
    pub fn due(&self) -> bool {
        if self.records_since_barrier == 0 {
            return false;
        }
        let by_records = self.spec.interval_records > 0
            && self.records_since_barrier >= self.spec.interval_records;
        let by_time = self.spec.interval_ms > 0
            && self.last_barrier.elapsed().as_millis() >= u128::from(self.spec.interval_ms);
        by_records || by_time
    }

    /// Whether records arrived since the last barrier.
    pub fn has_unsaved_records(&self) -> bool {
        self.records_since_barrier > 0
    }

    /// Takes a barrier: prepares the sinks, captures the chain, hands the
    /// epoch to the uploader. If the previous epoch is still uploading, it
    /// waits for it first (one checkpoint in flight, like Flink's default):
    /// slow storage slows the pipeline down instead of piling up epochs, and
    /// barriers fall exactly where the interval puts them.
    pub fn barrier(
        &mut self,
        chain: &mut Chain,
        sinks: &mut Sinks,
        position: Position,
        records_in: u64,
        recorder: &mut Recorder,
    ) -> Result<(), PipelineError> {
        self.finish(sinks)?;
        let epoch = self.next_epoch;
        for (_, sink) in &mut sinks.entries {
            sink.flush()?;
            if let Some(epoch_sink) = sink.as_epoch_sink() {
                epoch_sink.epoch_position(epoch, &position)?;
                epoch_sink.prepare(epoch)?;
            }
        }
        let paused = Instant::now();
        let captured = chain.capture()?;
        let capture_pause_us = paused.elapsed().as_micros() as u64;
        let recorded: Vec<(&str, RecordedState)> = chain
            .names()
            .zip(captured.iter().map(|c| c.recorded))
            .collect();
        let sink_names: Vec<&str> = sinks.entries.iter().map(|(n, _)| n.as_str()).collect();
        let journal = recorder.close_epoch(&recorded, &sink_names, epoch, position.clone());
        let mut fresh_pages = Vec::new();
        let mut operators = Vec::with_capacity(captured.len());
        for state in captured {
            fresh_pages.extend(state.fresh_pages);
            operators.push(state.state);
        }
        let state_bytes = operators
            .iter()
            .flat_map(|op| &op.memories)
            .map(|m| m.size_bytes)
            .sum();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: self.pipeline.clone(),
            task: self.task.clone(),
            epoch,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            source_position: position,
            operators,
            stats: EpochStats {
                capture_pause_us,
                state_bytes,
                new_bytes: 0,
                upload_us: 0,
                records_in,
            },
            journal: Some(journal),
        };
        let components = if self.components_stored {
            Vec::new()
        } else {
            self.components_stored = true;
            chain
                .prepared()
                .iter()
                .map(|p| p.component().original.clone())
                .collect()
        };
        tracing::debug!(
            task = %self.task,
            epoch,
            pause_us = capture_pause_us,
            fresh_pages = fresh_pages.len(),
            "barrier"
        );
        self.uploader.submit(EpochUpload {
            manifest: manifest.clone(),
            fresh_pages,
            components,
        });
        self.summary.max_pause_us = self.summary.max_pause_us.max(capture_pause_us);
        self.captured = Some(manifest);
        self.next_epoch += 1;
        self.records_since_barrier = 0;
        self.last_barrier = Instant::now();
        Ok(())
    }

    /// Publishes the epochs the uploader committed since the last call.
    pub fn poll(&mut self, sinks: &mut Sinks) -> Result<(), PipelineError> {
        let events = self.uploader.poll();
        self.apply(events, sinks)
    }

    /// Waits for every epoch handed over and publishes it.
    pub fn finish(&mut self, sinks: &mut Sinks) -> Result<(), PipelineError> {
        let events = self.uploader.drain();
        self.apply(events, sinks)
    }

    /// Once every record read is in a committed checkpoint: the clock log
    /// is of no further use.
    pub fn forget_clock_grants(&self) {
        if !self.has_unsaved_records() {
            self.clock_log.forget_all();
        }
    }

    fn apply(&mut self, events: Vec<UploadEvent>, sinks: &mut Sinks) -> Result<(), PipelineError> {
        for event in events {
            match event {
                UploadEvent::Committed(manifest) => {
                    self.publish(sinks, manifest.epoch)?;
                    self.forget_logged_lookups(&manifest);
                    self.clock_log.forget_before(manifest.stats.records_in);
                    self.summary.committed += 1;
                    self.summary.last_epoch = Some(manifest.epoch);
                    self.summary.uploaded_bytes += manifest.stats.new_bytes;
                    self.summary.state_bytes = manifest.stats.state_bytes;
                    self.summary.state_hash = Some(manifest.state_hash().to_string());
                }
                UploadEvent::Failed {
                    epoch,
                    error,
                    commit,
                } => {
                    let may_be = |why: &str| {
                        format!(
                            "may or may not be committed: {why}, so this run does not publish its outputs; the next run restores epoch {epoch} and publishes them if the marker was stored, and resumes from the epoch before it if not"
                        )
                    };
                    let fate = match commit {
                        CommitFate::NotCommitted => "could not be stored, so it is not committed and its outputs stay unpublished".to_owned(),
                        CommitFate::Unconfirmed => may_be("its commit marker was sent but the store never confirmed it"),
                        CommitFate::Unknown => may_be("the upload thread stopped while storing it"),
                    };
                    return Err(PipelineError::Checkpoint(format!(
                        "epoch {epoch} {fate}: {error}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self, sinks: &mut Sinks, committed: u64) -> Result<(), PipelineError> {
        for epoch in self.published + 1..=committed {
            for (_, sink) in &mut sinks.entries {
                if let Some(epoch_sink) = sink.as_epoch_sink() {
                    epoch_sink.publish(epoch)?;
                    crashpoint::reached("during-publish");
                }
            }
        }
        self.published = self.published.max(committed);
        Ok(())
    }

    /// The newest captured state with its memories, once it is stored: what
    /// a task returns to after an operator fault. `None` before the first
    /// checkpoint (fresh instances are the restore point then).
    pub fn restore_point(
        &mut self,
        sinks: &mut Sinks,
    ) -> Result<Option<(Manifest, MemoryImages)>, PipelineError> {
        let events = self.uploader.drain();
        self.apply(events, sinks)?;
        let Some(manifest) = self.captured.clone() else {
            return Ok(None);
        };
        let memories = self
            .runtime
            .block_on(recovery::fetch_memories(&self.store, &manifest))?;
        Ok(Some((manifest, memories)))
    }

    /// What checkpoints did so far.
    pub fn summary(&self) -> &CheckpointSummary {
        &self.summary
    }
}
