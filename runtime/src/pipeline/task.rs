//! One task: the read -> process -> write loop over one source, with the
//! error policy and fault recovery by replay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::checkpoint::recovery::{MemoryImages, Restorable};
use crate::checkpoint::{EpochJournal, Manifest, ReadEnd};
use crate::config::{ErrorPolicy, Pipeline};
use crate::crashpoint;
use crate::operator::{CapturedState, PreparedOperator, TaskInputs};
use crate::record::{Malformed, Output, Position, SourceBatch};
use crate::source::{ReadOutcome, Source};

use super::PipelineError;
use super::build::Sinks;
use super::chain::{Chain, ChainError, Rejected};
use super::checkpointing::Checkpointing;
use super::dead_letter::{self, Origin};
use super::recorder::{ClockSettings, Recorder};
use super::summary::{OperatorStats, SinkStats, Summary};

/// What the task fed its operators since the restore point, in order; replay
/// reproduces the operators' state from it.
#[derive(Debug, Clone, Copy)]
enum Fed {
    /// A batch of `records` records went through the chain, at recorded
    /// time `time_ms`.
    Batch { records: u32, time_ms: i64 },
    /// One record was removed from the stream (it made an operator fault).
    Removed,
}

/// What a replay of an epoch reached ([`Task::replay`]).
pub struct Replayed {
    /// Every operator's state at the end of the replay, in chain order.
    pub captured: Vec<CapturedState>,
    /// The journal of the replay: its reads, the lookups it used, what it
    /// wrote per sink.
    pub journal: EpochJournal,
    /// Where the source stands after it.
    pub position: Position,
}

/// How long an unbounded source that has nothing is left alone.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a replay waits for records an unbounded source had delivered
/// before.
const REPLAY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Task {
    name: String,
    policy: ErrorPolicy,
    dead_letter_sink: Option<usize>,
    max_records: usize,
    source: Box<dyn Source>,
    source_name: String,
    sinks: Sinks,
    chain: Chain,
    /// The source position that the restore point's state corresponds to:
    /// the start, or the newest checkpoint.
    restore_point: Position,
    checkpointing: Option<Checkpointing>,
    /// Records read before this run (from the checkpoint resumed from).
    records_before: u64,
    fed: Vec<Fed>,
    buffers: Vec<Vec<Output>>,
    rejected: Vec<Rejected>,
    summary: Summary,
    /// Recorded inputs: batch times, cuts, what the epoch wrote.
    recorder: Recorder,
    /// Without checkpointing, the state a replay started from (the restore
    /// point of fault recovery), if not fresh.
    initial: Option<(Manifest, MemoryImages)>,
}

impl Task {
    pub fn new(
        pipeline: &Pipeline,
        operators: Vec<PreparedOperator>,
        source: Box<dyn Source>,
        sinks: Sinks,
        mut checkpointing: Option<Checkpointing>,
        resume: Option<Restorable>,
    ) -> Result<Task, PipelineError> {
        let resumed = resume.as_ref().map(|r| &r.manifest);
        let seed = super::recorder::task_seed(pipeline.spec.determinism.seed, resumed);
        let log = checkpointing.as_ref().map(Checkpointing::lookup_log);
        let inputs = TaskInputs::new(seed, pipeline.lookup_policy().into(), log, false);
        let mut recorded_times = Vec::new();
        if let Some(checkpointing) = &mut checkpointing {
            for (operator, entries) in checkpointing.take_recorded_lookups() {
                inputs.add_recorded(&operator, entries);
            }
            inputs.clock().set_log(checkpointing.clock_log());
            recorded_times = checkpointing.take_recorded_times();
            if let (Some(first), Some(last)) = (recorded_times.first(), recorded_times.last()) {
                tracing::debug!(
                    "records {}..{} get the times an earlier run gave them",
                    first.from,
                    last.until
                );
            }
        }
        let start = match resumed {
            Some(manifest) => manifest.source_position.clone(),
            None => source.position(),
        };
        let clock = ClockSettings {
            recorded: recorded_times,
            resolution_ms: pipeline.spec.determinism.clock_resolution_ms,
            min_extent: pipeline.spec.batch.max_records,
        };
        let recorder = Recorder::live(inputs, resumed, start, checkpointing.is_some(), clock);
        Task::start(
            pipeline,
            operators,
            source,
            sinks,
            checkpointing,
            resume,
            recorder,
        )
    }

    /// A task recording (or replaying) with `recorder`.
    pub fn start(
        pipeline: &Pipeline,
        operators: Vec<PreparedOperator>,
        mut source: Box<dyn Source>,
        sinks: Sinks,
        checkpointing: Option<Checkpointing>,
        resume: Option<Restorable>,
        recorder: Recorder,
    ) -> Result<Task, PipelineError> {
        let spec = &pipeline.spec;
        let mut chain = Chain::new(operators, &sinks, recorder.inputs().clone())?;
        let mut records_before = 0;
        if let Some(resume) = &resume {
            chain.restore(&resume.manifest, &resume.memories)?;
            source.seek(&resume.manifest.source_position)?;
            records_before = resume.manifest.stats.records_in;
            tracing::info!(
                pipeline = %spec.name,
                epoch = resume.manifest.epoch,
                position = %resume.manifest.source_position,
                "resumed from checkpoint"
            );
        }
        let dead_letter_sink = spec
            .errors
            .dead_letter_sink
            .as_deref()
            .and_then(|n| sinks.index(n));
        let summary = Summary {
            pipeline: spec.name.clone(),
            source: source.describe(),
            operators: chain
                .names()
                .map(|name| OperatorStats {
                    name: name.to_owned(),
                    ..OperatorStats::default()
                })
                .collect(),
            ..Summary::default()
        };
        let initial = match (&checkpointing, resume) {
            (None, Some(resume)) => Some((resume.manifest, resume.memories)),
            _ => None,
        };
        Ok(Task {
            name: spec.name.clone(),
            policy: spec.errors.policy,
            dead_letter_sink,
            max_records: spec.batch.max_records,
            restore_point: source.position(),
            source_name: source.describe(),
            source,
            buffers: vec![Vec::new(); sinks.entries.len()],
            sinks,
            chain,
            checkpointing,
            records_before,
            fed: Vec::new(),
            rejected: Vec::new(),
            summary,
            recorder,
            initial,
        })
    }

    /// Runs until a bounded source ends or `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Summary, PipelineError> {
        let started = Instant::now();
        tracing::info!(pipeline = %self.name, source = %self.source_name, "started");
        self.run_loop(stop)?;
        self.finish(started)
    }

    /// Replays the epoch journal the task's recorder holds (a task started
    /// with [`Recorder::replay`], without checkpointing) to its end, and
    /// returns the state the operators reach, what the replay wrote, and
    /// the journal of the replay itself.
    pub fn replay(mut self) -> Result<Replayed, PipelineError> {
        self.run_loop(&AtomicBool::new(false))?;
        for (_, sink) in &mut self.sinks.entries {
            sink.flush()?;
        }
        let captured = self.chain.capture()?;
        let operators: Vec<(&str, _)> = self
            .chain
            .names()
            .zip(captured.iter().map(|c| c.recorded))
            .collect();
        let sinks: Vec<&str> = self.sinks.entries.iter().map(|(n, _)| n.as_str()).collect();
        let journal = self
            .recorder
            .close_epoch(&operators, &sinks, 0, self.source.position());
        Ok(Replayed {
            captured,
            journal,
            position: self.source.position(),
        })
    }

    fn run_loop(&mut self, stop: &AtomicBool) -> Result<(), PipelineError> {
        let mut batch = SourceBatch::default();
        loop {
            if stop.load(Ordering::Relaxed) {
                tracing::warn!(pipeline = %self.name, "stop requested: finishing at a batch boundary");
                self.summary.stopped_early = true;
                break;
            }
            batch.clear();
            let (outcome, time_ms) = self.read_batch(&mut batch)?;
            if !batch.is_empty() {
                self.summary.records_in += batch.len() as u64;
                self.process(&batch, time_ms)?;
                if let Some(e) = self.recorder.inputs().clock().take_failure() {
                    return Err(PipelineError::Checkpoint(e));
                }
            }
            let ended = match outcome {
                ReadOutcome::More => false,
                ReadOutcome::End => true,
                ReadOutcome::Idle => {
                    std::thread::sleep(IDLE_WAIT);
                    false
                }
                ReadOutcome::Malformed(malformed) => {
                    self.malformed(malformed)?;
                    false
                }
            };
            if let Some(checkpointing) = &mut self.checkpointing {
                checkpointing.note_records(batch.len() as u64);
                checkpointing.poll(&mut self.sinks)?;
                if checkpointing.due() {
                    self.barrier()?;
                }
            }
            if ended {
                break;
            }
        }
        Ok(())
    }

    fn finish(mut self, started: Instant) -> Result<Summary, PipelineError> {
        self.finish_checkpoints()?;
        for (_, sink) in &mut self.sinks.entries {
            sink.flush()?;
        }
        self.summary.elapsed = started.elapsed();
        self.summary.sinks = self
            .sinks
            .entries
            .iter()
            .map(|(name, sink)| SinkStats {
                name: name.clone(),
                describe: sink.describe(),
                written: sink.written(),
            })
            .collect();
        self.summary.checkpoints = self.checkpointing.as_ref().map(|c| c.summary().clone());
        tracing::info!(pipeline = %self.name, records = self.summary.records_in, "finished");
        Ok(self.summary)
    }

    /// Takes a checkpoint at the current batch boundary; it becomes the
    /// restore point for faults.
    fn barrier(&mut self) -> Result<(), PipelineError> {
        let Some(checkpointing) = &mut self.checkpointing else {
            return Ok(());
        };
        let position = self.source.position();
        checkpointing.barrier(
            &mut self.chain,
            &mut self.sinks,
            position.clone(),
            self.records_before + self.summary.records_in,
            &mut self.recorder,
        )?;
        self.restore_point = position;
        self.fed.clear();
        Ok(())
    }

    /// At the end of the input (or on a stop request): a last checkpoint for
    /// what is not covered yet, then waits until every epoch is committed
    /// and published.
    fn finish_checkpoints(&mut self) -> Result<(), PipelineError> {
        let pending = self
            .checkpointing
            .as_ref()
            .is_some_and(Checkpointing::has_unsaved_records);
        if pending {
            self.barrier()?;
        }
        if let Some(checkpointing) = &mut self.checkpointing {
            checkpointing.finish(&mut self.sinks)?;
            checkpointing.forget_clock_grants();
        }
        Ok(())
    }

    /// Reads the next batch, as the source cuts it (live) or exactly as
    /// the epoch journal does (replay). Returns what the source said after
    /// it, and the batch's recorded time.
    fn read_batch(&mut self, batch: &mut SourceBatch) -> Result<(ReadOutcome, i64), PipelineError> {
        let Some(replayed) = self.recorder.next_replayed() else {
            let max = self.recorder.read_limit(self.max_records);
            let outcome = self.source.read(max, batch)?;
            let time_ms = self.recorder.read(batch.len(), &outcome, None);
            return Ok((outcome, time_ms));
        };
        // A replay ends where the journal does.
        let Some(read) = replayed else {
            return Ok((ReadOutcome::End, self.recorder.inputs().clock().time_ms()));
        };
        let mut outcome = self.read_exactly(read.records as usize, batch)?;
        if read.end == ReadEnd::Malformed && !matches!(outcome, ReadOutcome::Malformed(_)) {
            let mut none = SourceBatch::default();
            outcome = self.source.read(1, &mut none)?;
            if !none.is_empty() || !matches!(outcome, ReadOutcome::Malformed(_)) {
                return Err(PipelineError::NotDeterministic {
                    operator: "(source)".into(),
                    detail: format!(
                        "{} does not replay: the journal has a malformed record after {}, the source does not",
                        self.source_name,
                        self.source.position()
                    ),
                });
            }
        }
        if read.end == ReadEnd::End {
            outcome = ReadOutcome::End;
        } else if !matches!(outcome, ReadOutcome::Malformed(_)) {
            outcome = ReadOutcome::More;
        }
        let time_ms = self.recorder.read(batch.len(), &outcome, Some(&read));
        Ok((outcome, time_ms))
    }

    /// Appends exactly `wanted` records to `batch` (reading as often as
    /// needed; a malformed record on the way is passed over); returns what
    /// the last read said. Fails if the source ends first.
    fn read_exactly(
        &mut self,
        wanted: usize,
        batch: &mut SourceBatch,
    ) -> Result<ReadOutcome, PipelineError> {
        let wanted = batch.len() + wanted;
        let mut outcome = ReadOutcome::More;
        // An unbounded source (Kafka) may say Idle right after a seek,
        // before its fetch arrives: give it a bounded while.
        let patience = Instant::now() + REPLAY_PATIENCE;
        while batch.len() < wanted {
            outcome = self.source.read(wanted - batch.len(), batch)?;
            let gave_up = match outcome {
                ReadOutcome::End => true,
                ReadOutcome::Idle => Instant::now() >= patience,
                _ => false,
            };
            if gave_up && batch.len() < wanted {
                return Err(PipelineError::NotDeterministic {
                    operator: "(source)".into(),
                    detail: format!("{} ended before the replay did", self.source_name),
                });
            }
            if outcome == ReadOutcome::Idle {
                std::thread::sleep(IDLE_WAIT);
            }
        }
        Ok(outcome)
    }

    /// Processes one source batch read at recorded time `time_ms`; on a
    /// fault, isolates the record at fault.
    fn process(&mut self, batch: &SourceBatch, time_ms: i64) -> Result<(), PipelineError> {
        match self.run_chain(&batch.records, &batch.positions) {
            Ok(()) => {
                self.fed.push(Fed::Batch {
                    records: batch.len() as u32,
                    time_ms,
                });
                self.write()?;
                crashpoint::reached("after-sink-write");
                Ok(())
            }
            Err(ChainError::Stop(e)) => Err(e),
            Err(ChainError::Fault { operator, fault }) => {
                self.summary.operators[operator].faults += 1;
                tracing::warn!(
                    operator = self.chain.name(operator),
                    "fault in a batch of {}: {fault}; isolating the record",
                    batch.len()
                );
                self.recover()?;
                self.isolate(batch, time_ms)
            }
        }
    }

    /// Runs the batch record by record, after a fault, to find the record
    /// that causes it. Records before it are processed normally, each at
    /// the batch's recorded time.
    fn isolate(&mut self, batch: &SourceBatch, time_ms: i64) -> Result<(), PipelineError> {
        for i in 0..batch.len() {
            let (record, position) = (&batch.records[i..=i], &batch.positions[i..=i]);
            self.recorder.inputs().clock().set_time_ms(time_ms);
            match self.run_chain(record, position) {
                Ok(()) => {
                    self.fed.push(Fed::Batch {
                        records: 1,
                        time_ms,
                    });
                    self.write()?;
                }
                Err(ChainError::Stop(e)) => return Err(e),
                Err(ChainError::Fault { operator, fault }) => {
                    let origin = Origin::Source(position[0].clone());
                    let name = self.chain.name(operator).to_owned();
                    if self.policy == ErrorPolicy::Stop {
                        return Err(PipelineError::Fault {
                            operator: name,
                            source_name: self.source_name.clone(),
                            origin: Box::new(origin),
                            fault: Box::new(fault),
                        });
                    }
                    let letter = dead_letter::render(
                        &self.source_name,
                        &origin,
                        Some(&name),
                        &fault.to_string(),
                        &record[0].value,
                    );
                    self.fed.push(Fed::Removed);
                    self.dead_letter(letter)?;
                    self.recover()?;
                }
            }
        }
        Ok(())
    }

    /// Runs the chain and applies the policy to rejections.
    fn run_chain(
        &mut self,
        records: &[crate::record::Record],
        positions: &[Position],
    ) -> Result<(), ChainError> {
        let result = self.chain.run(
            records,
            positions,
            &self.sinks,
            &mut self.buffers,
            &mut self.rejected,
            Some(&mut self.summary.operators),
        );
        if result.is_err() {
            self.discard();
            return result;
        }
        if self.rejected.is_empty() {
            return Ok(());
        }
        if self.policy == ErrorPolicy::Stop {
            let first = self.rejected.swap_remove(0);
            self.discard();
            return Err(ChainError::Stop(PipelineError::Rejected {
                operator: self.chain.name(first.operator).to_owned(),
                source_name: self.source_name.clone(),
                origin: Box::new(first.origin),
                reason: first.reason,
            }));
        }
        let Some(dlq) = self.dead_letter_sink else {
            return Ok(());
        };
        for r in std::mem::take(&mut self.rejected) {
            let letter = dead_letter::render(
                &self.source_name,
                &r.origin,
                Some(self.chain.name(r.operator)),
                &r.reason,
                &r.value,
            );
            self.buffers[dlq].push(letter);
            self.summary.dead_letters += 1;
        }
        Ok(())
    }

    fn malformed(&mut self, malformed: Malformed) -> Result<(), PipelineError> {
        self.summary.malformed += 1;
        let origin = Origin::Source(malformed.position);
        if self.policy == ErrorPolicy::Stop {
            return Err(PipelineError::Malformed {
                source_name: self.source_name.clone(),
                origin: Box::new(origin),
                reason: malformed.reason,
            });
        }
        let letter = dead_letter::render(
            &self.source_name,
            &origin,
            None,
            &malformed.reason,
            &malformed.raw,
        );
        self.dead_letter(letter)
    }

    fn dead_letter(&mut self, letter: Output) -> Result<(), PipelineError> {
        if let Some(dlq) = self.dead_letter_sink {
            self.recorder.wrote(dlq, 1);
            self.sinks.entries[dlq]
                .1
                .write(std::slice::from_ref(&letter))?;
            self.summary.dead_letters += 1;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), PipelineError> {
        for (i, (buffer, (_, sink))) in self
            .buffers
            .iter_mut()
            .zip(&mut self.sinks.entries)
            .enumerate()
        {
            if !buffer.is_empty() {
                self.recorder.wrote(i, buffer.len());
                sink.write(buffer)?;
                buffer.clear();
            }
        }
        Ok(())
    }

    fn discard(&mut self) {
        for buffer in &mut self.buffers {
            buffer.clear();
        }
        self.rejected.clear();
    }

    /// Rebuilds every operator instance at the restore point (the newest
    /// checkpoint, else fresh) and replays what was fed since, outputs
    /// suppressed, so the instances hold exactly the state they had before
    /// the fault. The source ends where it was.
    fn recover(&mut self) -> Result<(), PipelineError> {
        self.summary.recoveries += 1;
        let resume = self.source.position();
        let restore_point = match &mut self.checkpointing {
            Some(checkpointing) => checkpointing.restore_point(&mut self.sinks)?,
            None => self.initial.clone(),
        };
        let replay = self.fed.len();
        match restore_point {
            Some((manifest, memories)) => {
                tracing::warn!(
                    pipeline = %self.name,
                    "restoring the operators from checkpoint epoch {} and replaying {replay} batch(es) since",
                    manifest.epoch
                );
                self.chain.restore(&manifest, &memories)?;
            }
            None => {
                tracing::warn!(
                    pipeline = %self.name,
                    "rebuilding the operators and replaying {replay} batch(es) since the start"
                );
                self.chain.rebuild()?;
            }
        }
        self.source.seek(&self.restore_point)?;
        let mut batch = SourceBatch::default();
        for fed in self.fed.clone() {
            let wanted = match fed {
                Fed::Batch { records, .. } => records as usize,
                Fed::Removed => 1,
            };
            batch.clear();
            self.read_exactly(wanted, &mut batch)?;
            if let Fed::Batch { time_ms, .. } = fed {
                self.recorder.inputs().clock().set_time_ms(time_ms);
                let result = self.chain.run(
                    &batch.records,
                    &batch.positions,
                    &self.sinks,
                    &mut self.buffers,
                    &mut self.rejected,
                    None,
                );
                self.discard();
                if let Err(e) = result {
                    return Err(match e {
                        ChainError::Stop(e) => e,
                        ChainError::Fault { operator, fault } => PipelineError::NotDeterministic {
                            operator: self.chain.name(operator).to_owned(),
                            detail: format!("it faulted on replay: {fault}"),
                        },
                    });
                }
            }
        }
        self.source.seek(&resume)?;
        Ok(())
    }
}
