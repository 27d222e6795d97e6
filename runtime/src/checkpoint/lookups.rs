//! The lookup log: every lookup answer an operator got, written to the
//! store before the operator sees it (`tasks/<task>/lookups/<operator>/
//! <index>`, a postcard [`LookupEntry`]), so that a run recovering after a
//! crash answers the same questions the same way instead of asking the
//! outside world again. Once an epoch whose journal holds an entry commits,
//! the entry is deleted from the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;

use super::wal::{delete, list, read_entry, write_entry};
use super::{CheckpointStore, LookupEntry, Manifest, StoreError, layout};
use crate::operator::LookupLog;

/// The lookup log of one task in a checkpoint store.
pub struct StoreLookupLog {
    store: CheckpointStore,
    task: String,
    runtime: tokio::runtime::Handle,
}

impl StoreLookupLog {
    /// The log of `task`, written through `runtime`.
    pub fn new(store: CheckpointStore, task: &str, runtime: tokio::runtime::Handle) -> Self {
        StoreLookupLog {
            store,
            task: task.to_owned(),
            runtime,
        }
    }
}

impl LookupLog for StoreLookupLog {
    fn append(&self, operator: &str, entry: &LookupEntry) -> Result<(), String> {
        let key = layout::lookup(self.store.root(), &self.task, operator, entry.index);
        write_entry(&self.store, &self.runtime, &key, entry)
    }
}

/// The answers a task resuming from `restored` (or fresh) may be asked
/// again, per operator: the entries of the log numbered from where the
/// checkpoint left each operator, and the lookups in the journals of
/// committed epochs newer than it (a recovery that fell back past a damaged
/// checkpoint replays those). Entries numbered below the checkpoint's are
/// never asked again and are deleted.
pub async fn recorded(
    store: &CheckpointStore,
    task: &str,
    operators: &[String],
    restored: Option<&Manifest>,
) -> Result<Vec<(String, Vec<LookupEntry>)>, StoreError> {
    let mut found: BTreeMap<String, BTreeMap<u64, LookupEntry>> = BTreeMap::new();
    for operator in operators {
        let floor = floor(restored, operator);
        let prefix = layout::lookups(store.root(), task).join(operator.as_str());
        for object in list(store, &prefix).await? {
            let Some(index) = object
                .location
                .filename()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if index < floor {
                delete(store.object_store(), &object.location).await;
                continue;
            }
            let entry: LookupEntry = read_entry(store, &object.location, "a lookup entry").await?;
            found
                .entry(operator.clone())
                .or_default()
                .insert(entry.index, entry);
        }
    }
    if let Some(restored) = restored {
        for newer in store.epochs(task).await? {
            if newer.epoch <= restored.epoch || !newer.committed {
                continue;
            }
            let Ok(manifest) = store.read_committed(task, newer.epoch).await else {
                continue;
            };
            for op in manifest.journal.iter().flat_map(|j| &j.operators) {
                let answers = found.entry(op.name.clone()).or_default();
                for entry in &op.entries {
                    answers.entry(entry.index).or_insert_with(|| entry.clone());
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(op, entries)| (op, entries.into_values().collect()))
        .collect())
}

/// The number of `operator`'s first lookup after checkpoint `restored`.
pub fn floor(restored: Option<&Manifest>, operator: &str) -> u64 {
    restored
        .and_then(|m| m.journal.as_ref())
        .and_then(|j| j.operators.iter().find(|o| o.name == operator))
        .map_or(0, |o| o.at_end.lookups)
}

/// Deletes log entries `from..to` of `operator` (their answers are in a
/// committed epoch's journal now). Failures are logged: a leftover entry is
/// only garbage.
pub async fn forget(
    store: Arc<dyn ObjectStore>,
    root: object_store::path::Path,
    task: String,
    operator: String,
    from: u64,
    to: u64,
) {
    for index in from..to {
        delete(&store, &layout::lookup(&root, &task, &operator, index)).await;
    }
}

/// Deletes the whole lookup log of `task` (a start from scratch).
pub async fn delete_all(store: &CheckpointStore, task: &str) -> Result<usize, StoreError> {
    let objects = list(store, &layout::lookups(store.root(), task)).await?;
    for object in &objects {
        delete(store.object_store(), &object.location).await;
    }
    Ok(objects.len())
}
