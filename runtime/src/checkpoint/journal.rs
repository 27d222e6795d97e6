//! The epoch journal: every input of an epoch that does not come from the
//! source's records, recorded so that the epoch can be replayed bit for bit
//! from the checkpoint it started from (docs/determinism.md,
//! docs/checkpoint-format.md). Stored in the epoch's [`Manifest`] from
//! format version 2 on.
//!
//! [`Manifest`]: super::Manifest

use serde::{Deserialize, Serialize};

use crate::record::Position;

/// The recorded inputs of one epoch of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochJournal {
    /// The committed epoch whose state this epoch started from; `None`:
    /// fresh instances (each operator's `init` with its configuration) at
    /// the start of the source.
    pub base_epoch: Option<u64>,
    /// Where the source stood when the epoch started (the base's
    /// `source_position`, or the source's first position).
    pub start_position: Position,
    /// The task's seed: every operator's random streams derive from it. The
    /// same in every epoch of a task, from its first start on.
    pub seed: [u8; 32],
    /// The task's recorded clock at the end of the epoch (the time of its
    /// last read), in milliseconds since the Unix epoch; the next epoch's
    /// times never go below it.
    pub clock_ms: i64,
    /// Every source read of the epoch that returned records or a malformed
    /// record, in order: where batches were cut, and when.
    pub reads: Vec<RecordedRead>,
    /// One per operator of the chain, in order.
    pub operators: Vec<OperatorJournal>,
    /// Outputs the epoch wrote, per sink (sorted by name).
    pub outputs: Vec<SinkOutputs>,
}

/// One read from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRead {
    /// Records it returned (the batch).
    pub records: u32,
    /// What the source said after them.
    pub end: ReadEnd,
    /// The batch's recorded time, in milliseconds since the Unix epoch: what
    /// the operators' clocks return while they process it.
    pub time_ms: i64,
}

/// A recorded time for a run of records, written to the task's clock log
/// before any operator reads it (`tasks/<task>/clock/<from>`,
/// docs/determinism.md). Records are numbered by their *ordinal*: how many
/// records the task read before them, counted from the start of the source
/// (a checkpoint's `stats.records_in` is the ordinal of the first record
/// after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeGrant {
    /// The ordinal of the first record it covers.
    pub from: u64,
    /// One past the ordinal of the last record it may cover: a later grant
    /// starting before `until` ends it there.
    pub until: u64,
    /// The time the clocks return for those records, in milliseconds since
    /// the Unix epoch.
    pub time_ms: i64,
}

impl TimeGrant {
    /// Records `from..until` at `time_ms`.
    pub const fn new(from: u64, until: u64, time_ms: i64) -> TimeGrant {
        TimeGrant {
            from,
            until,
            time_ms,
        }
    }
}

impl EpochJournal {
    /// The times this epoch's records had, as grants: one per read that
    /// returned records, given `end`, the ordinal after the epoch's last
    /// record (its manifest's `stats.records_in`).
    pub fn time_grants(&self, end: u64) -> Vec<TimeGrant> {
        let total: u64 = self.reads.iter().map(|r| u64::from(r.records)).sum();
        let mut from = end.saturating_sub(total);
        let mut grants = Vec::with_capacity(self.reads.len());
        for read in self.reads.iter().filter(|r| r.records > 0) {
            let until = from + u64::from(read.records);
            grants.push(TimeGrant {
                from,
                until,
                time_ms: read.time_ms,
            });
            from = until;
        }
        grants
    }
}

/// What a source said after the records of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadEnd {
    /// More may follow.
    More,
    /// The next record was malformed (the error policy applied to it).
    Malformed,
    /// The end of a bounded source.
    End,
    /// Nothing more for now.
    Idle,
}

/// What one operator's instance drew from its recorded inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorJournal {
    /// The operator's name.
    pub name: String,
    /// Where the instance stands at the end of the epoch.
    pub at_end: RecordedState,
    /// The lookups of the epoch: numbers `at_end.lookups - entries.len()`
    /// to `at_end.lookups - 1`, in order.
    pub entries: Vec<LookupEntry>,
}

/// How far an instance has read its recorded inputs, counted from its
/// creation (`init`): part of its state, captured at every checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedState {
    /// Bytes drawn from its `wasi:random/random` stream.
    pub random_bytes: u64,
    /// Bytes drawn from its `wasi:random/insecure` stream.
    pub insecure_random_bytes: u64,
    /// Lookups made (`weir:operator/recorded`), denied ones not counted.
    pub lookups: u64,
}

/// One recorded lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupEntry {
    /// Its number in the instance's lookups, from 0.
    pub index: u64,
    /// What was asked.
    pub request: LookupRequest,
    /// What the operator got.
    pub answer: LookupAnswer,
}

/// What a lookup asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LookupRequest {
    /// `http-get(url)`.
    HttpGet {
        /// The URL, as the operator wrote it.
        url: String,
    },
    /// `read-file(path)`.
    ReadFile {
        /// The path, as the operator wrote it.
        path: String,
    },
}

/// What a lookup got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupAnswer {
    /// An HTTP response.
    Http {
        /// Status code.
        status: u16,
        /// Headers in order, names in lower case.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// A file's content.
    File {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// It was performed and failed.
    Failed {
        /// Why, as the operator was told.
        message: String,
    },
    /// The answer exceeded the limit (bytes).
    TooLarge {
        /// `max_response_bytes` at the time.
        limit: u64,
    },
}

/// How many outputs an epoch wrote to one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkOutputs {
    /// The sink's name.
    pub sink: String,
    /// Outputs written (dead letters included).
    pub outputs: u64,
}

impl std::fmt::Display for LookupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupRequest::HttpGet { url } => write!(f, "GET {url}"),
            LookupRequest::ReadFile { path } => write!(f, "read-file {path}"),
        }
    }
}
