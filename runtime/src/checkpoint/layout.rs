//! Object keys of the checkpoint store. One function per kind of object, so
//! the layout is written down exactly once.

use object_store::path::Path;

use super::Hash;

/// Characters allowed in a pipeline or task name used in a key.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// `<root>/<pipeline>`.
pub fn pipeline_root(root: &Path, pipeline: &str) -> Path {
    root.clone().join(pipeline)
}

/// `<pipeline root>/components/<blake3>.wasm`.
pub fn component(pipeline_root: &Path, hash: &Hash) -> Path {
    pipeline_root
        .clone()
        .join("components")
        .join(format!("{hash}.wasm"))
}

/// `<pipeline root>/tasks/<task>/pages/`.
pub fn pages(pipeline_root: &Path, task: &str) -> Path {
    pipeline_root.clone().join("tasks").join(task).join("pages")
}

/// `<pipeline root>/tasks/<task>/pages/<first two hex digits>/<blake3>`. Pages
/// belong to a task, so a task collects its own garbage without looking at
/// other tasks' checkpoints; the fan-out keeps directories of a local store
/// small.
pub fn page(pipeline_root: &Path, task: &str, hash: &Hash) -> Path {
    let hex = hash.to_string();
    pages(pipeline_root, task).join(&hex[..2]).join(hex)
}

/// `<pipeline root>/tasks/<task>/gc/`: the leases of garbage collectors
/// at work on the task (see `inspect::gc`).
pub fn gc_leases(pipeline_root: &Path, task: &str) -> Path {
    pipeline_root.clone().join("tasks").join(task).join("gc")
}

/// One collector's lease, `<pipeline root>/tasks/<task>/gc/<id>`.
pub fn gc_lease(pipeline_root: &Path, task: &str, id: &str) -> Path {
    gc_leases(pipeline_root, task).join(id)
}

/// `<pipeline root>/tasks/<task>/epochs/`.
pub fn epochs(pipeline_root: &Path, task: &str) -> Path {
    pipeline_root
        .clone()
        .join("tasks")
        .join(task)
        .join("epochs")
}

/// The directory of one epoch. Epochs are zero-padded to 20 digits so that
/// lexicographic order (what object stores list in) is numeric order.
pub fn epoch(pipeline_root: &Path, task: &str, epoch: u64) -> Path {
    epochs(pipeline_root, task).join(format!("{epoch:020}"))
}

/// The manifest of an epoch.
pub fn manifest(pipeline_root: &Path, task: &str, epoch_number: u64) -> Path {
    epoch(pipeline_root, task, epoch_number).join("manifest")
}

/// The commit marker of an epoch.
pub fn commit(pipeline_root: &Path, task: &str, epoch_number: u64) -> Path {
    epoch(pipeline_root, task, epoch_number).join("commit")
}

/// `<pipeline root>/tasks/<task>/lookups/`: the lookup write-ahead log.
pub fn lookups(pipeline_root: &Path, task: &str) -> Path {
    pipeline_root
        .clone()
        .join("tasks")
        .join(task)
        .join("lookups")
}

/// `<pipeline root>/tasks/<task>/lookups/<operator>/<index>`: lookup number
/// `index` of an operator, written before the operator sees its answer. The
/// operator's name is one key segment (percent-encoded where needed); the
/// index has 20 digits, so listing order is numeric order.
pub fn lookup(pipeline_root: &Path, task: &str, operator: &str, index: u64) -> Path {
    lookups(pipeline_root, task)
        .join(operator)
        .join(format!("{index:020}"))
}

/// `<pipeline root>/tasks/<task>/clock/`: the clock log, the recorded
/// times written before an operator reads them.
pub fn clock_log(pipeline_root: &Path, task: &str) -> Path {
    pipeline_root.clone().join("tasks").join(task).join("clock")
}

/// `<pipeline root>/tasks/<task>/clock/<from>`: the time grant starting at
/// record ordinal `from` (20 digits, so listing order is numeric order).
pub fn time_grant(pipeline_root: &Path, task: &str, from: u64) -> Path {
    clock_log(pipeline_root, task).join(format!("{from:020}"))
}

/// Parses the epoch number out of an epoch directory name.
pub fn parse_epoch(segment: &str) -> Option<u64> {
    (segment.len() == 20 && segment.bytes().all(|b| b.is_ascii_digit()))
        .then(|| segment.parse().ok())
        .flatten()
}
