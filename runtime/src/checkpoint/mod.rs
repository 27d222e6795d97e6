//! Checkpoints in object storage: what is stored, under which key, and how a
//! checkpoint becomes the recovery point.
//!
//! Layout under the store's root (docs/checkpoint-format.md is the
//! reference; [`layout`] is the code):
//!
//! ```text
//! <pipeline>/components/<blake3>.wasm              a component, by content
//! <pipeline>/tasks/<task>/epochs/<epoch>/manifest  postcard Manifest
//! <pipeline>/tasks/<task>/epochs/<epoch>/commit    postcard CommitMarker
//! <pipeline>/tasks/<task>/pages/<hh>/<blake3>      a state page, by content
//! <pipeline>/tasks/<task>/lookups/<op>/<n>         lookup n, written ahead
//! <pipeline>/tasks/<task>/clock/<from>             a time grant, written ahead
//! ```
//!
//! **Architecture Invariant:** only this module writes to the checkpoint
//! store, and an epoch is the recovery point iff its commit marker exists and
//! names the blake3 of its manifest. Pages and components are immutable and
//! named by their hash, so writing one twice is harmless and reading one
//! verifies it.

pub mod clock_log;
pub mod journal;
pub mod layout;
pub mod lookups;
pub mod manifest;
pub mod recovery;
mod store;
pub mod uploader;
mod wal;

pub use journal::{
    EpochJournal, LookupAnswer, LookupEntry, LookupRequest, OperatorJournal, ReadEnd, RecordedRead,
    RecordedState, SinkOutputs, TimeGrant,
};
pub use manifest::{
    CommitMarker, EpochStats, FORMAT_VERSION, GlobalState, Hash, HeldHandle, Manifest, MemoryState,
    OperatorState, PAGE_BYTES,
};
pub use store::{CheckpointStore, EpochEntry, PutOutcome, StoreError, StoredPage};
