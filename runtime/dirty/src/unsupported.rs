//! Targets other than Linux: no tracker, every `new` says so.

use std::convert::Infallible;
use std::ops::Range;

use crate::TrackError;

#[derive(Debug)]
pub(crate) struct Tracker(Infallible);

impl Tracker {
    pub(crate) fn new(_start: usize, _len: usize) -> Result<Tracker, TrackError> {
        Err(TrackError::Unsupported(
            "userfaultfd and PAGEMAP_SCAN exist only on Linux".to_owned(),
        ))
    }

    pub(crate) fn len(&self) -> usize {
        match self.0 {}
    }

    pub(crate) fn grow(&mut self, _start: usize, _len: usize) -> Result<(), TrackError> {
        match self.0 {}
    }

    pub(crate) fn take(
        &mut self,
        _start: usize,
        _len: usize,
        _out: &mut Vec<Range<usize>>,
    ) -> Result<(), TrackError> {
        match self.0 {}
    }
}

pub(crate) fn page_size() -> usize {
    4096
}
