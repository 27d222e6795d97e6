//! Inspecting checkpoints in a store: what `weir checkpoints` does. Reads
//! the documented format (docs/checkpoint-format.md) through
//! [`crate::checkpoint`]; nothing here is in the data path of a run.
//!
//! A [`Target`] is the checkpoints of one task of one pipeline at a store
//! location. Each command is one function returning a report that is both
//! `Serialize` (the `--json` output, with stable field names) and `Display`
//! (the table for people):
//!
//! - [`list()`]: every epoch, with its wall time, position and stats;
//! - [`show()`]: everything one epoch holds;
//! - [`diff()`]: what changed between two epochs, per operator;
//! - [`dump()`]: one memory's bytes, from verified pages;
//! - [`verify()`]: checks markers, manifests, pages and components;
//! - [`gc()`]: deletes old epochs and unreferenced pages, safely beside a
//!   running pipeline.

mod diff;
mod dump;
mod epochs;
mod error;
mod gc;
mod journal;
mod list;
mod progress;
mod show;
pub mod table;
mod target;
pub mod units;
mod verify;
pub mod view;

pub use diff::{DiffReport, DiffSide, MemoryDiff, OperatorDiff, PositionDelta, compare, diff};
pub use dump::{DumpReport, DumpTo, dump};
pub use epochs::{EpochManifest, EpochSelector};
pub use error::InspectError;
pub use gc::{GcOptions, GcReport, gc};
pub use list::{ListEntry, ListReport, list};
pub use progress::Progress;
pub use show::{ShowReport, show};
pub use target::{DEFAULT_TASK, Target};
pub use verify::{EpochVerdict, Problem, Verdict, VerifyReport, VerifyScope, verify};

/// Objects read from the store at once.
const CONCURRENT_READS: usize = 16;
