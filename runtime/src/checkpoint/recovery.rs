//! Finding the checkpoint to resume from: the newest committed epoch whose
//! manifest and every page verify. A damaged one is reported and skipped in
//! favour of the one before; damage never turns into an empty start.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{CheckpointStore, Hash, Manifest, StoreError};

/// Pages fetched at once.
const CONCURRENT_DOWNLOADS: usize = 16;

/// The bytes of every memory of a checkpoint: per operator, per memory.
pub type MemoryImages = Vec<Vec<Vec<u8>>>;

/// A verified checkpoint, with the bytes of every memory.
#[derive(Debug)]
pub struct Restorable {
    /// The epoch's manifest.
    pub manifest: Manifest,
    /// Per operator, per memory: its bytes.
    pub memories: MemoryImages,
    /// Newer committed epochs that could not be used, with the reason.
    pub skipped: Vec<(u64, String)>,
}

/// Why no checkpoint can be resumed from, although some exist.
#[derive(Debug, thiserror::Error)]
#[error(
    "task {task} has committed checkpoints, but none can be restored:\n{}\nweir will not silently start from empty state; repair the store, or pass --from-scratch to discard the checkpoints and the outputs and start over",
    .failures.iter().map(|(e, why)| format!("  epoch {e}: {why}")).collect::<Vec<_>>().join("\n")
)]
pub struct NoUsableCheckpoint {
    /// The task.
    pub task: String,
    /// Every committed epoch, newest first, with why it failed.
    pub failures: Vec<(u64, String)>,
}

/// Why recovery could not even look at the checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Listing failed (store unreachable, access denied).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every committed checkpoint is damaged.
    #[error(transparent)]
    NoUsable(#[from] NoUsableCheckpoint),
}

/// The newest restorable committed checkpoint of `task`; `None` if the task
/// has none committed.
pub async fn newest_restorable(
    store: &CheckpointStore,
    task: &str,
) -> Result<Option<Restorable>, RecoveryError> {
    let epochs = store.epochs(task).await?;
    let mut failures = Vec::new();
    for entry in epochs.iter().rev().filter(|e| e.committed) {
        match load(store, task, entry.epoch).await {
            Ok((manifest, memories)) => {
                return Ok(Some(Restorable {
                    manifest,
                    memories,
                    skipped: failures,
                }));
            }
            Err(e) => {
                tracing::warn!(
                    task,
                    "checkpoint epoch {} cannot be restored ({e}); falling back to the previous committed checkpoint",
                    entry.epoch
                );
                failures.push((entry.epoch, e.to_string()));
            }
        }
    }
    if failures.is_empty() {
        Ok(None)
    } else {
        Err(NoUsableCheckpoint {
            task: task.to_owned(),
            failures,
        }
        .into())
    }
}

/// Reads and verifies one committed epoch with all its pages.
pub async fn load(
    store: &CheckpointStore,
    task: &str,
    epoch: u64,
) -> Result<(Manifest, MemoryImages), StoreError> {
    let manifest = store.read_committed(task, epoch).await?;
    let memories = fetch_memories(store, &manifest).await?;
    Ok((manifest, memories))
}

/// Assembles every memory of `manifest` from its verified pages.
pub async fn fetch_memories(
    store: &CheckpointStore,
    manifest: &Manifest,
) -> Result<MemoryImages, StoreError> {
    let task = manifest.task.as_str();
    let mut wanted: Vec<Hash> = manifest
        .operators
        .iter()
        .flat_map(|op| op.memories.iter())
        .flat_map(|m| m.pages.iter().copied())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let pages: HashMap<Hash, Bytes> =
        futures::stream::iter(wanted.into_iter().map(|hash| async move {
            let bytes = store.get_page(task, &hash).await?;
            Ok::<_, StoreError>((hash, bytes))
        }))
        .buffer_unordered(CONCURRENT_DOWNLOADS)
        .try_collect()
        .await?;
    let mut operators = Vec::with_capacity(manifest.operators.len());
    for op in &manifest.operators {
        let mut memories = Vec::with_capacity(op.memories.len());
        for (k, memory) in op.memories.iter().enumerate() {
            let mut bytes = Vec::with_capacity(memory.size_bytes as usize);
            for hash in &memory.pages {
                if let Some(page) = pages.get(hash) {
                    bytes.extend_from_slice(page);
                }
            }
            if bytes.len() as u64 != memory.size_bytes {
                return Err(StoreError::Corrupt {
                    store: store.describe().to_owned(),
                    key: format!("manifest of epoch {}", manifest.epoch),
                    reason: format!(
                        "operator `{}` memory {k}: its pages hold {} bytes, the manifest says {}",
                        op.name,
                        bytes.len(),
                        memory.size_bytes
                    ),
                });
            }
            memories.push(bytes);
        }
        operators.push(memories);
    }
    Ok(operators)
}
