//! The clock log: every recorded time an operator read, written to the
//! store before the operator saw it (`tasks/<task>/clock/<from>`, a
//! postcard [`TimeGrant`]), so that a run recovering after a crash gives
//! the records it reads again the times the crashed run gave them
//! (docs/determinism.md, docs/checkpoint-format.md). A grant no record
//! after the newest committed checkpoint can need is deleted.

use std::sync::Mutex;

use super::wal::{delete, list, read_entry, write_entry};
use super::{CheckpointStore, Manifest, StoreError, TimeGrant, layout};
use crate::operator::TimeLog;

/// The clock log of one task in a checkpoint store.
pub struct StoreClockLog {
    store: CheckpointStore,
    task: String,
    runtime: tokio::runtime::Handle,
    /// Every grant in the log that may still be needed, sorted by `from`.
    live: Mutex<Vec<TimeGrant>>,
}

impl StoreClockLog {
    /// The log of `task`, written through `runtime`, holding `logged` (as
    /// [`recorded`] found it).
    pub fn new(
        store: CheckpointStore,
        task: &str,
        runtime: tokio::runtime::Handle,
        logged: Vec<TimeGrant>,
    ) -> Self {
        StoreClockLog {
            store,
            task: task.to_owned(),
            runtime,
            live: Mutex::new(logged),
        }
    }

    /// Deletes, in the background, the grants that no record from ordinal
    /// `ordinal` on can need (a checkpoint there committed).
    pub fn forget_before(&self, ordinal: u64) {
        let dead = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let (dead, kept) = split_dead(std::mem::take(&mut *live), ordinal);
            *live = kept;
            dead
        };
        if !dead.is_empty() {
            self.runtime.spawn(self.delete(dead));
        }
    }

    /// Deletes every grant, and waits for it: the run ends with a committed
    /// checkpoint after every record it read, so none can be needed again
    /// (the newest grant reaches past the last record, so `forget_before`
    /// never drops it).
    pub fn forget_all(&self) {
        let dead = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        if !dead.is_empty() {
            self.runtime.block_on(self.delete(dead));
        }
    }

    fn delete(&self, grants: Vec<TimeGrant>) -> impl Future<Output = ()> + use<> {
        let store = self.store.object_store().clone();
        let keys: Vec<_> = grants
            .iter()
            .map(|g| layout::time_grant(self.store.root(), &self.task, g.from))
            .collect();
        async move {
            for key in keys {
                delete(&store, &key).await;
            }
        }
    }
}

impl TimeLog for StoreClockLog {
    fn append(&self, grant: &TimeGrant) -> Result<(), String> {
        let key = layout::time_grant(self.store.root(), &self.task, grant.from);
        write_entry(&self.store, &self.runtime, &key, grant)?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let at = live.partition_point(|g| g.from < grant.from);
        live.insert(at, *grant);
        Ok(())
    }
}

/// Grants sorted by `from`, each ending where the next begins if that is
/// before its `until`: the time of ordinal x is the time of the last grant
/// starting at or before x, if x is below that grant's end.
fn effective(mut grants: Vec<TimeGrant>) -> Vec<TimeGrant> {
    grants.sort_by_key(|g| g.from);
    grants.dedup_by_key(|g| g.from);
    for i in 1..grants.len() {
        let next = grants[i].from;
        let previous = &mut grants[i - 1];
        previous.until = previous.until.min(next);
    }
    grants.retain(|g| g.until > g.from);
    grants
}

/// `grants` split into those ending at or before `ordinal` and the rest
/// (both as stored, sorted by `from`).
fn split_dead(mut grants: Vec<TimeGrant>, ordinal: u64) -> (Vec<TimeGrant>, Vec<TimeGrant>) {
    grants.sort_by_key(|g| g.from);
    let ends: Vec<u64> = (0..grants.len())
        .map(|i| match grants.get(i + 1) {
            Some(next) => grants[i].until.min(next.from),
            None => grants[i].until,
        })
        .collect();
    let mut dead = Vec::new();
    let mut kept = Vec::new();
    for (grant, end) in grants.into_iter().zip(ends) {
        if end <= ordinal {
            dead.push(grant);
        } else {
            kept.push(grant);
        }
    }
    (dead, kept)
}

/// What a task resuming from `restored` (or fresh) finds recorded.
pub struct RecordedTimes {
    /// The times of the records from the restored checkpoint on, as
    /// disjoint grants sorted by `from`: from the journals of committed
    /// epochs newer than it (a recovery that fell back past a damaged
    /// checkpoint must reproduce their published outputs), then from the
    /// clock log.
    pub grants: Vec<TimeGrant>,
    /// The log's grants that may still be needed, as stored.
    pub logged: Vec<TimeGrant>,
}

/// Reads the clock log of `task` (deleting grants no record after
/// `restored` can need) and the times in newer committed journals.
pub async fn recorded(
    store: &CheckpointStore,
    task: &str,
    restored: Option<&Manifest>,
) -> Result<RecordedTimes, StoreError> {
    let start = restored.map_or(0, |m| m.stats.records_in);
    let mut grants = Vec::new();
    let mut covered = start;
    for newer in store.epochs(task).await? {
        if restored.is_some_and(|r| newer.epoch <= r.epoch) || !newer.committed {
            continue;
        }
        let manifest = match store.read_committed(task, newer.epoch).await {
            Ok(manifest) => manifest,
            Err(e) => {
                tracing::debug!(task, "no recorded times from epoch {}: {e}", newer.epoch);
                break;
            }
        };
        let Some(journal) = &manifest.journal else {
            break;
        };
        let times = journal.time_grants(manifest.stats.records_in);
        // Only an unbroken run of epochs from the restored one.
        if times.first().is_some_and(|g| g.from != covered) {
            tracing::debug!(
                task,
                "no recorded times from epoch {}: it starts at record {:?}, not {covered}",
                newer.epoch,
                times.first().map(|g| g.from)
            );
            break;
        }
        covered = manifest.stats.records_in.max(covered);
        grants.extend(times);
    }
    let mut logged = Vec::new();
    for object in list(store, &layout::clock_log(store.root(), task)).await? {
        if object
            .location
            .filename()
            .and_then(|n| n.parse::<u64>().ok())
            .is_none()
        {
            continue;
        }
        logged.push(read_entry(store, &object.location, "a time grant").await?);
    }
    let (dead, logged) = split_dead(logged, start);
    for grant in dead {
        delete(
            store.object_store(),
            &layout::time_grant(store.root(), task, grant.from),
        )
        .await;
    }
    for mut grant in effective(logged.clone()) {
        if grant.until <= covered {
            continue;
        }
        grant.from = grant.from.max(covered);
        grants.push(grant);
    }
    Ok(RecordedTimes { grants, logged })
}

/// Deletes the whole clock log of `task` (a start from scratch).
pub async fn delete_all(store: &CheckpointStore, task: &str) -> Result<usize, StoreError> {
    let objects = list(store, &layout::clock_log(store.root(), task)).await?;
    for object in &objects {
        delete(store.object_store(), &object.location).await;
    }
    Ok(objects.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::checkpoint::TimeGrant as G;

    fn g(from: u64, until: u64, time_ms: i64) -> G {
        G::new(from, until, time_ms)
    }

    #[test]
    fn a_later_grant_ends_the_one_before_it() {
        let grants = effective(vec![g(50, 90, 2), g(0, 100, 1), g(90, 95, 3)]);
        assert_eq!(grants, vec![g(0, 50, 1), g(50, 90, 2), g(90, 95, 3)]);
    }

    #[test]
    fn only_grants_ending_at_or_before_the_ordinal_are_dead() {
        let (dead, kept) = split_dead(vec![g(0, 100, 1), g(50, 90, 2), g(90, 95, 3)], 90);
        assert_eq!(dead, vec![g(0, 100, 1), g(50, 90, 2)]);
        assert_eq!(kept, vec![g(90, 95, 3)]);
    }
}
