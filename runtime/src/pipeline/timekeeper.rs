//! Which recorded time each batch of a live run gets.
//!
//! Times are handed out as [`TimeGrant`]s over record ordinals (the number
//! of records the task read before a record, from the start of the source).
//! A batch never straddles two grants, so a record's time does not depend
//! on where batches were cut. Where an earlier run already gave records a
//! time (the journals of committed epochs, the clock log) the same time is
//! given again; elsewhere a new grant starts with the current time once the
//! one in force is `resolution` old or used up. A new grant covers at least
//! a batch and twice the records its predecessor covered, so a busy task
//! writes about one grant per `resolution`, and a recovering run that finds
//! a grant in the log keeps its time for at most that many records.
//!
//! A grant is only written to the clock log if an operator reads its time
//! ([`crate::operator::TaskClock`]).

use std::collections::VecDeque;

use crate::checkpoint::TimeGrant;

/// See the [module docs](self).
pub struct Timekeeper {
    /// The ordinal of the next record.
    next: u64,
    /// Times earlier runs gave, disjoint and sorted, not yet passed.
    recorded: VecDeque<TimeGrant>,
    /// The grant of this run in force.
    current: Option<TimeGrant>,
    resolution_ms: i64,
    min_extent: u64,
    /// The newest time handed out: times never go below it.
    floor_ms: i64,
    planned: Option<Planned>,
}

/// The time the next read gets, decided before it.
#[derive(Debug, Clone, Copy)]
enum Planned {
    /// A time an earlier run gave.
    Recorded(i64),
    /// The current grant's time.
    Kept(i64),
    /// A new grant.
    New(TimeGrant),
}

/// What a read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The batch's time.
    pub time_ms: i64,
    /// A grant started by this read (to be written before anyone reads its
    /// time); `None` if the time was granted before.
    pub new: Option<TimeGrant>,
    /// Whether the time was already recorded (an earlier run's).
    pub recorded: bool,
}

impl Timekeeper {
    /// A timekeeper for a task whose next record has ordinal `next`, whose
    /// times never go below `floor_ms`, with the times `recorded` by
    /// earlier runs (disjoint, sorted by `from`).
    pub fn new(
        next: u64,
        floor_ms: i64,
        recorded: Vec<TimeGrant>,
        resolution_ms: u64,
        min_extent: usize,
    ) -> Timekeeper {
        Timekeeper {
            next,
            recorded: recorded.into(),
            current: None,
            resolution_ms: i64::try_from(resolution_ms).unwrap_or(i64::MAX),
            min_extent: min_extent.max(1) as u64,
            floor_ms,
            planned: None,
        }
    }

    /// Decides the time of the next read, at `now_ms`, and returns how many
    /// records it may return (at most `max`, at least 1).
    pub fn plan(&mut self, max: usize, now_ms: i64) -> usize {
        let max = max.max(1) as u64;
        while self.recorded.front().is_some_and(|g| g.until <= self.next) {
            self.recorded.pop_front();
        }
        let next = self.next;
        if let Some(grant) = self.recorded.front().filter(|g| g.from <= next) {
            self.planned = Some(Planned::Recorded(grant.time_ms));
            return max.min(grant.until - next) as usize;
        }
        // Up to where the next recorded time starts, this run decides.
        let open = self.recorded.front().map_or(u64::MAX, |g| g.from - next);
        if let Some(current) = self.current.filter(|c| {
            c.from <= next
                && next < c.until
                && now_ms.saturating_sub(c.time_ms) < self.resolution_ms
        }) {
            self.planned = Some(Planned::Kept(current.time_ms));
            return max.min(current.until - next).min(open) as usize;
        }
        let covered = self.current.map_or(0, |c| next.saturating_sub(c.from));
        let extent = self.min_extent.max(covered.saturating_mul(2)).min(open);
        let grant = TimeGrant {
            from: next,
            until: next.saturating_add(extent),
            time_ms: now_ms.max(self.floor_ms),
        };
        self.planned = Some(Planned::New(grant));
        max.min(extent) as usize
    }

    /// Notes that the planned read returned `records` records (at most
    /// what [`Timekeeper::plan`] allowed) and returns its time.
    pub fn read(&mut self, records: usize) -> Granted {
        // Unplanned (not a live read): the newest time, nothing granted.
        let planned = self.planned.take().unwrap_or(Planned::Kept(self.floor_ms));
        let granted = match planned {
            Planned::Recorded(time_ms) => Granted {
                time_ms,
                new: None,
                recorded: true,
            },
            Planned::Kept(time_ms) => Granted {
                time_ms,
                new: None,
                recorded: false,
            },
            Planned::New(grant) if records > 0 => {
                self.current = Some(grant);
                Granted {
                    time_ms: grant.time_ms,
                    new: Some(grant),
                    recorded: false,
                }
            }
            // Nothing read: nothing to grant a time to.
            Planned::New(grant) => Granted {
                time_ms: grant.time_ms,
                new: None,
                recorded: false,
            },
        };
        self.next += records as u64;
        self.floor_ms = self.floor_ms.max(granted.time_ms);
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(from: u64, until: u64, time_ms: i64) -> TimeGrant {
        TimeGrant::new(from, until, time_ms)
    }

    /// Reads of `max` records (all returned) at times `nows`: (records,
    /// time) per read.
    fn run(keeper: &mut Timekeeper, max: usize, nows: &[i64]) -> Vec<(usize, i64)> {
        nows.iter()
            .map(|&now| {
                let n = keeper.plan(max, now);
                (n, keeper.read(n).time_ms)
            })
            .collect()
    }

    #[test]
    fn a_grant_lasts_its_resolution_or_its_extent_and_grows_with_the_rate() {
        let mut keeper = Timekeeper::new(0, 0, vec![], 100, 10);
        let reads = run(&mut keeper, 10, &[1000, 1050, 1099, 1100, 1150, 1200]);
        assert_eq!(
            reads,
            vec![
                // 0..10: the minimum extent, used up by one read.
                (10, 1000),
                // 10..30: twice what the last one covered.
                (10, 1050),
                (10, 1050),
                // 30..70, then resolution reached at 50: 50..90.
                (10, 1100),
                (10, 1100),
                (10, 1200),
            ]
        );
    }

    #[test]
    fn recorded_times_are_given_again_and_batches_never_straddle_them() {
        let recorded = vec![g(100, 105, 7), g(105, 130, 9), g(140, 150, 11)];
        let mut keeper = Timekeeper::new(100, 7, recorded, 100, 10);
        let reads = run(&mut keeper, 8, &[5000, 5000, 5000, 5000, 5000, 5000, 5000]);
        assert_eq!(
            reads,
            vec![
                (5, 7),
                (8, 9),
                (8, 9),
                (8, 9),
                (1, 9),
                // The gap 130..140: this run's time, up to the next record.
                (8, 5000),
                (2, 5000)
            ]
        );
        let reads = run(&mut keeper, 8, &[5001, 5001, 5001]);
        assert_eq!(reads, vec![(8, 11), (2, 11), (8, 5001)]);
    }

    #[test]
    fn time_never_goes_back_and_an_empty_read_grants_nothing() {
        let mut keeper = Timekeeper::new(0, 2000, vec![], 100, 4);
        let n = keeper.plan(4, 1000);
        let granted = keeper.read(0);
        assert_eq!((n, granted.time_ms, granted.new), (4, 2000, None));
        let n = keeper.plan(4, 1000);
        let granted = keeper.read(n);
        assert_eq!(granted.new, Some(g(0, 4, 2000)));
    }
}
