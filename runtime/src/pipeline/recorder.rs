//! The task's side of recorded inputs: it gives every batch its recorded
//! time (from its [`Timekeeper`]), notes where batches were cut and what the
//! epoch wrote, and closes each epoch's journal at a barrier. In a replay
//! (`weir verify`) it hands out the journal's cuts and times instead.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use super::timekeeper::Timekeeper;
use crate::checkpoint::{
    EpochJournal, Manifest, OperatorJournal, ReadEnd, RecordedRead, RecordedState, SinkOutputs,
    TimeGrant,
};
use crate::operator::TaskInputs;
use crate::record::Position;
use crate::source::ReadOutcome;

/// See the [module docs](self).
pub struct Recorder {
    inputs: TaskInputs,
    /// `Some`: a replay, with the journal's reads still to hand out.
    replay: Option<VecDeque<RecordedRead>>,
    base_epoch: Option<u64>,
    start_position: Position,
    /// The newest recorded time: times never go below it.
    clock_ms: i64,
    /// Which time each live read gets.
    timekeeper: Timekeeper,
    reads: Vec<RecordedRead>,
    /// Whether epochs are closed (a task with checkpoints, or a replay):
    /// without, no journal is ever written, and the reads are not kept.
    journaling: bool,
    /// Outputs written per sink (in sink order) since the epoch started.
    outputs: Vec<u64>,
}

impl Recorder {
    /// Records a live run that starts from `base` (or fresh) at `start`;
    /// `journaling`: whether it takes checkpoints (and so closes epochs);
    /// `clock`: the times earlier runs gave and how times are granted.
    pub fn live(
        inputs: TaskInputs,
        base: Option<&Manifest>,
        start: Position,
        journaling: bool,
        clock: ClockSettings,
    ) -> Recorder {
        let clock_ms = base
            .and_then(|m| m.journal.as_ref())
            .map_or(i64::MIN, |j| j.clock_ms);
        Recorder {
            inputs,
            replay: None,
            base_epoch: base.map(|m| m.epoch),
            start_position: start,
            clock_ms,
            timekeeper: Timekeeper::new(
                base.map_or(0, |m| m.stats.records_in),
                clock_ms,
                clock.recorded,
                clock.resolution_ms,
                clock.min_extent,
            ),
            reads: Vec::new(),
            journaling,
            outputs: Vec::new(),
        }
    }

    /// Replays `journal`: its cuts and times, in order.
    pub fn replay(inputs: TaskInputs, journal: &EpochJournal) -> Recorder {
        Recorder {
            inputs,
            replay: Some(journal.reads.iter().copied().collect()),
            base_epoch: journal.base_epoch,
            start_position: journal.start_position.clone(),
            clock_ms: i64::MIN,
            timekeeper: Timekeeper::new(0, i64::MIN, Vec::new(), 1, 1),
            reads: Vec::new(),
            journaling: true,
            outputs: Vec::new(),
        }
    }

    /// The recorded inputs the operators read.
    pub fn inputs(&self) -> &TaskInputs {
        &self.inputs
    }

    /// In a replay, the next read of the journal (`None` at its end); in a
    /// live run always `None`.
    pub fn next_replayed(&mut self) -> Option<Option<RecordedRead>> {
        self.replay.as_mut().map(VecDeque::pop_front)
    }

    /// In a live run, decides the time of the next read and returns how
    /// many records it may return (at most `max`): a read never mixes
    /// records of two recorded times.
    pub fn read_limit(&mut self, max: usize) -> usize {
        self.timekeeper.plan(max, now_ms())
    }

    /// Notes a read of `records` records ending with `outcome` and returns
    /// its recorded time: in a live run the one [`Recorder::read_limit`]
    /// decided, in a replay `replayed`'s.
    pub fn read(
        &mut self,
        records: usize,
        outcome: &ReadOutcome,
        replayed: Option<&RecordedRead>,
    ) -> i64 {
        let clock = self.inputs.clock();
        let time_ms = match replayed {
            Some(read) => {
                clock.grant(read.time_ms, None);
                read.time_ms
            }
            None => {
                let granted = self.timekeeper.read(records);
                match granted.new {
                    Some(grant) => clock.grant(granted.time_ms, Some(grant)),
                    None if granted.recorded => clock.grant(granted.time_ms, None),
                    None => clock.set_time_ms(granted.time_ms),
                }
                granted.time_ms
            }
        };
        self.clock_ms = time_ms;
        let end = match outcome {
            ReadOutcome::More => ReadEnd::More,
            ReadOutcome::Malformed(_) => ReadEnd::Malformed,
            ReadOutcome::End => ReadEnd::End,
            ReadOutcome::Idle => ReadEnd::Idle,
        };
        if (records > 0 || end == ReadEnd::Malformed)
            && self.journaling
            && crate::operator::recorded::recording()
        {
            self.reads.push(RecordedRead {
                records: records as u32,
                end,
                time_ms,
            });
        }
        time_ms
    }

    /// Counts `n` outputs written to sink number `sink`.
    pub fn wrote(&mut self, sink: usize, n: usize) {
        if self.outputs.len() <= sink {
            self.outputs.resize(sink + 1, 0);
        }
        self.outputs[sink] += n as u64;
    }

    /// Closes the epoch at a capture: its journal, given each operator's
    /// name and recorded state at the capture and the sinks' names (in
    /// order). The next epoch starts from `epoch` at `position`.
    pub fn close_epoch(
        &mut self,
        operators: &[(&str, RecordedState)],
        sinks: &[&str],
        epoch: u64,
        position: Position,
    ) -> EpochJournal {
        let journal = EpochJournal {
            base_epoch: self.base_epoch,
            start_position: std::mem::replace(&mut self.start_position, position),
            seed: self.inputs.seed(),
            clock_ms: self.clock_ms,
            reads: std::mem::take(&mut self.reads),
            operators: operators
                .iter()
                .map(|(name, at_end)| OperatorJournal {
                    name: (*name).to_owned(),
                    at_end: *at_end,
                    entries: self.inputs.close_epoch(name, at_end.lookups),
                })
                .collect(),
            outputs: sinks
                .iter()
                .enumerate()
                .map(|(i, sink)| SinkOutputs {
                    sink: (*sink).to_owned(),
                    outputs: self.outputs.get(i).copied().unwrap_or(0),
                })
                .collect(),
        };
        self.outputs.clear();
        self.base_epoch = Some(epoch);
        journal
    }
}

/// How a live run's times are granted.
pub struct ClockSettings {
    /// The times earlier runs gave the records from the base on
    /// (`clock_log::recorded`).
    pub recorded: Vec<TimeGrant>,
    /// `[determinism] clock_resolution_ms`.
    pub resolution_ms: u64,
    /// The fewest records a new grant covers: a whole batch.
    pub min_extent: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The recorded state of each operator at the checkpoint `manifest`, in
/// chain order (zero for a checkpoint without journal).
pub fn recorded_states(manifest: &Manifest) -> Vec<RecordedState> {
    manifest
        .operators
        .iter()
        .map(|op| recorded_state(manifest, &op.name))
        .collect()
}

fn recorded_state(manifest: &Manifest, operator: &str) -> RecordedState {
    manifest
        .journal
        .as_ref()
        .and_then(|j| j.operators.iter().find(|o| o.name == operator))
        .map(|o| o.at_end)
        .unwrap_or_default()
}

/// The seed of a task: the one recorded in the checkpoint it resumes from,
/// else `[determinism] seed`, else 32 bytes from the operating system.
pub fn task_seed(configured: Option<u64>, resumed: Option<&Manifest>) -> [u8; 32] {
    let configured = configured.map(|seed| {
        blake3::derive_key(
            "weir task seed from [determinism] seed",
            &seed.to_le_bytes(),
        )
    });
    if let Some(recorded) = resumed.and_then(|m| m.journal.as_ref()).map(|j| j.seed) {
        if configured.is_some_and(|c| c != recorded) {
            tracing::warn!(
                "[determinism] seed differs from the seed recorded in the checkpoint this run \
                 resumes from; the recorded one is kept (start over with --from-scratch to use \
                 the new one)"
            );
        }
        return recorded;
    }
    if let Some(seed) = configured {
        return seed;
    }
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut seed) {
        // Never silently predictable: mix in what differs between starts.
        tracing::warn!(
            "no entropy from the operating system ({e}); deriving the seed from the time and process"
        );
        let material = format!("{:?} {}", SystemTime::now(), std::process::id());
        seed = blake3::derive_key("weir task seed fallback", material.as_bytes());
    }
    seed
}
