//! What the write-ahead logs (the lookup log, the clock log) share: one
//! postcard object per entry, written before the value it records is used,
//! listed and read back by a recovering run, deleted once a committed
//! epoch's journal holds it.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{CheckpointStore, StoreError};

/// Writes `value` (postcard) at `key` of a write-ahead log, blocking the
/// caller (an operator's host call) until the store has it.
pub(super) fn write_entry<T: serde::Serialize>(
    store: &CheckpointStore,
    runtime: &tokio::runtime::Handle,
    key: &object_store::path::Path,
    value: &T,
) -> Result<(), String> {
    let bytes = postcard::to_allocvec(value).map_err(|e| e.to_string())?;
    let put = store
        .object_store()
        .put(key, PutPayload::from_bytes(Bytes::from(bytes)));
    runtime
        .block_on(put)
        .map(drop)
        .map_err(|e| format!("checkpoint store {}: put {key}: {e}", store.describe()))
}

pub(super) fn backend(
    store: &CheckpointStore,
    operation: &'static str,
    key: &str,
    e: object_store::Error,
) -> StoreError {
    StoreError::Backend {
        store: store.describe().to_owned(),
        operation,
        key: key.to_owned(),
        cause: e.to_string(),
        retryable: false,
    }
}

/// Every object under `prefix`.
pub(super) async fn list(
    store: &CheckpointStore,
    prefix: &object_store::path::Path,
) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
    store
        .object_store()
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| backend(store, "list", prefix.as_ref(), e))
}

/// The postcard value at `key` in a write-ahead log (`what` names it in
/// errors).
pub(super) async fn read_entry<T: serde::de::DeserializeOwned>(
    store: &CheckpointStore,
    key: &object_store::path::Path,
    what: &str,
) -> Result<T, StoreError> {
    let bytes = store
        .object_store()
        .get(key)
        .await
        .map_err(|e| backend(store, "get", key.as_ref(), e))?
        .bytes()
        .await
        .map_err(|e| backend(store, "read", key.as_ref(), e))?;
    postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
        store: store.describe().to_owned(),
        key: key.to_string(),
        reason: format!("not {what}: {e}"),
    })
}

/// Deletes `key`; a failure is only logged (a leftover entry is garbage).
pub(super) async fn delete(store: &Arc<dyn ObjectStore>, key: &object_store::path::Path) {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!("cannot delete log entry {key}: {e}"),
    }
}
