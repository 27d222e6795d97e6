//! Checkpoints in object storage: what is stored, under which key, and how a
//! checkpoint becomes the recovery point.
//!
//! Layout under the store's root (docs/checkpoint-format.md is the
//! reference; [`layout`] is the code):
//!
//! ```text
//! <pipeline>/components/<blake3>.wasm              a component, by content
//! <pipeline>/pages/<hh>/<blake3>                   a state page, by content
//! <pipeline>/tasks/<task>/epochs/<epoch>/manifest  postcard Manifest
//! <pipeline>/tasks/<task>/epochs/<epoch>/commit    postcard CommitMarker
//! ```
//!
//! **Architecture Invariant:** only this module writes to the checkpoint
//! store, and an epoch is the recovery point iff its commit marker exists and
//! names the blake3 of its manifest. Pages and components are immutable and
//! named by their hash, so writing one twice is harmless and reading one
//! verifies it.

pub mod layout;
pub mod manifest;
mod store;

pub use manifest::{
    CommitMarker, EpochStats, FORMAT_VERSION, GlobalState, Hash, Manifest, MemoryState,
    OperatorState,
};
pub use store::{CheckpointStore, EpochEntry, PutOutcome, StoreError};
