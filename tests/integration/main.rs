//! weir's integration tests: one binary, one module per area. They run the
//! real `weir` binary and the real operator components built by
//! `scripts/setup`.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod bad_input;
mod checkpoint_format;
mod checkpoints;
mod cli;
mod conformance;
mod crash;
mod determinism;
mod examples;
mod inspect;
mod kafka;
mod s3;
