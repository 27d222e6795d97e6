//! Drops outputs after counting them: the cheapest sink, for benchmarks.

use super::{Sink, SinkError};
use crate::record::Output;

/// Counts outputs and their bytes; writes nothing.
#[derive(Debug)]
pub struct NullSink {
    name: String,
    written: u64,
    bytes: u64,
}

impl NullSink {
    /// A null sink called `name`.
    pub fn new(name: &str) -> NullSink {
        NullSink {
            name: format!("sink {name} (null)"),
            written: 0,
            bytes: 0,
        }
    }

    /// Value bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Sink for NullSink {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        self.written += outputs.len() as u64;
        self.bytes += outputs.iter().map(|o| o.value.len() as u64).sum::<u64>();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }
}
