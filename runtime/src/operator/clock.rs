//! What the WASI clocks return: the recorded time of the batch being
//! processed, which the task sets before each call. A time that no one has
//! read yet may be *pending*: the first clock read writes it to the task's
//! clock log ([`TimeLog`]) before returning it, so that a run recovering
//! after `kill -9` gives the same records the same time
//! (docs/determinism.md, "Wall clock").

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::checkpoint::TimeGrant;

/// Where a task's recorded times go before an operator reads them.
pub trait TimeLog: Send + Sync {
    /// Writes `grant` durably.
    fn append(&self, grant: &TimeGrant) -> Result<(), String>;
}

/// The recorded clock of one task, shared by the task (which sets it) and
/// its instances' WASI clocks (which read it).
#[derive(Default)]
pub struct TaskClock {
    time_ms: AtomicI64,
    /// Fast check for `pending`, read on every clock read.
    has_pending: AtomicBool,
    pending: Mutex<Option<TimeGrant>>,
    log: OnceLock<Arc<dyn TimeLog>>,
    /// Why a pending grant could not be written (the task stops).
    failure: Mutex<Option<String>>,
    /// Fast check for `failure`, read after every batch.
    has_failure: AtomicBool,
}

impl TaskClock {
    /// Writes grants to `log` from now on (once; later calls are ignored).
    pub fn set_log(&self, log: Arc<dyn TimeLog>) {
        let _ = self.log.set(log);
    }

    /// Sets the time the clocks return, leaving any pending grant pending.
    pub fn set_time_ms(&self, time_ms: i64) {
        self.time_ms.store(time_ms, Ordering::Relaxed);
    }

    /// Sets the time from `grant`'s time; the grant is written to the log
    /// when a clock is first read. `None` (a time already recorded)
    /// drops a grant still pending.
    pub fn grant(&self, time_ms: i64, grant: Option<TimeGrant>) {
        self.time_ms.store(time_ms, Ordering::Relaxed);
        let grant = grant.filter(|_| self.log.get().is_some());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.has_pending.store(grant.is_some(), Ordering::Relaxed);
        *pending = grant;
    }

    /// The time the clocks return now (without writing anything).
    pub fn time_ms(&self) -> i64 {
        self.time_ms.load(Ordering::Relaxed)
    }

    /// Why a time an operator read could not be written, if it could not.
    pub fn take_failure(&self) -> Option<String> {
        if !self.has_failure.load(Ordering::Acquire) {
            return None;
        }
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        self.has_failure.store(false, Ordering::Relaxed);
        failure.take()
    }

    /// What a clock read returns: the time, written ahead if pending.
    fn read_ms(&self) -> i64 {
        if self.has_pending.load(Ordering::Relaxed) {
            self.write_pending();
        }
        self.time_ms.load(Ordering::Relaxed)
    }

    fn write_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.has_pending.store(false, Ordering::Relaxed);
        let (Some(grant), Some(log)) = (pending.take(), self.log.get()) else {
            return;
        };
        if let Err(e) = log.append(&grant) {
            // The clock cannot fail: the operator gets the time, and the
            // task stops after the call, before anything that saw it is
            // committed.
            let message = format!(
                "the recorded time of records {}.. could not be written to the clock log: {e}",
                grant.from
            );
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
            self.has_failure.store(true, Ordering::Release);
        }
    }
}

/// `wasi:clocks/wall-clock`: the recorded time of the batch.
pub(super) struct RecordedWallClock(pub(super) Arc<TaskClock>);

impl wasmtime_wasi::clocks::HostWallClock for RecordedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        // WASI's wall clock cannot go before 1970; recorded times never do.
        let ms = self.0.read_ms().max(0);
        Duration::from_millis(ms as u64)
    }
}

/// `wasi:clocks/monotonic-clock`: the recorded time of the batch, in
/// nanoseconds since the Unix epoch (recorded times never decrease).
pub(super) struct RecordedMonotonicClock(pub(super) Arc<TaskClock>);

impl wasmtime_wasi::clocks::HostMonotonicClock for RecordedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        let ms = self.0.read_ms().max(0) as u64;
        ms.saturating_mul(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Mutex<Vec<TimeGrant>>, bool);

    impl TimeLog for Log {
        fn append(&self, grant: &TimeGrant) -> Result<(), String> {
            if self.1 {
                return Err("store down".into());
            }
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(*grant);
            Ok(())
        }
    }

    fn grant(from: u64, time_ms: i64) -> TimeGrant {
        TimeGrant {
            from,
            until: from + 10,
            time_ms,
        }
    }

    #[test]
    fn a_pending_time_is_written_once_by_the_first_read_and_only_then() {
        let log = Arc::new(Log::default());
        let clock = Arc::new(TaskClock::default());
        clock.set_log(log.clone());
        let wall = RecordedWallClock(clock.clone());
        use wasmtime_wasi::clocks::HostWallClock;
        clock.grant(5, Some(grant(0, 5)));
        clock.grant(7, Some(grant(3, 7)));
        assert_eq!(log.0.lock().map(|l| l.len()).unwrap_or(9), 0, "never read");
        assert_eq!(wall.now(), Duration::from_millis(7));
        assert_eq!(wall.now(), Duration::from_millis(7));
        clock.set_time_ms(7);
        assert_eq!(wall.now(), Duration::from_millis(7));
        clock.grant(9, None);
        assert_eq!(wall.now(), Duration::from_millis(9));
        assert_eq!(
            log.0.lock().map(|l| l.clone()).unwrap_or_default(),
            vec![grant(3, 7)]
        );
        assert_eq!(clock.take_failure(), None);
    }

    #[test]
    fn a_time_that_cannot_be_written_is_reported_after_the_read() {
        let clock = TaskClock::default();
        clock.set_log(Arc::new(Log(Mutex::default(), true)));
        clock.grant(5, Some(grant(40, 5)));
        assert_eq!(clock.read_ms(), 5);
        let failure = clock.take_failure().unwrap_or_default();
        assert!(failure.contains("records 40..") && failure.contains("store down"));
        assert_eq!(clock.take_failure(), None);
    }
}
