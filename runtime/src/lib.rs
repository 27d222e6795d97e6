//! weir: a stream operator runtime for sandboxed WebAssembly components.
//!
//! A [`config::Pipeline`] names a [`source::Source`], a chain of operators
//! (WebAssembly components implementing `wit/operator.wit`, run by
//! [`operator`]) and [`sink::Sink`]s. [`pipeline::run`] drives records
//! through it in batches. See ARCHITECTURE.md for the map.

pub mod checkpoint;
pub mod config;
pub mod conformance;
pub mod crashpoint;
pub mod inspect;
pub mod operator;
pub mod pipeline;
pub mod record;
pub mod sink;
pub mod source;
pub mod verify;

pub use config::Pipeline;
pub use pipeline::{PipelineError, RunOptions, Summary, run, validate};
