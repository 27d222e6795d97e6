//! The background half of a checkpoint: upload, commit, collect garbage.
//!
//! The task thread captures state at a barrier and hands the epoch over;
//! from then on nothing here stops the operators. Epochs are committed
//! strictly in order, one at a time: pages first, then the manifest, then
//! the commit marker. Only after the marker is written does the task hear
//! `Committed`, and only then may sinks publish the epoch's outputs.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{CheckpointStore, Hash, Manifest, StoreError};
use crate::crashpoint;

/// One epoch to make durable.
pub struct EpochUpload {
    /// The manifest; `stats.upload_us` and `stats.new_bytes` are filled in
    /// here.
    pub manifest: Manifest,
    /// Pages whose content changed since the previous epoch.
    pub fresh_pages: Vec<(Hash, Bytes)>,
    /// Components not stored yet by this process.
    pub components: Vec<Bytes>,
}

/// What the uploader reports back.
#[derive(Debug)]
pub enum UploadEvent {
    /// The epoch is the recovery point now.
    Committed(Box<Manifest>),
    /// The epoch could not be made durable; it is not committed.
    Failed {
        /// The epoch.
        epoch: u64,
        /// Why.
        error: StoreError,
    },
}

/// Handle on the upload thread of one task.
pub struct Uploader {
    jobs: Option<mpsc::Sender<EpochUpload>>,
    events: mpsc::Receiver<UploadEvent>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl Uploader {
    /// Starts the thread; its I/O runs on `runtime`, which must be a
    /// multi-thread runtime shared with every other user of `store` (an
    /// HTTP client's pooled connections are driven by the runtime that
    /// opened them, so a runtime that sits idle would stall them). After
    /// each commit it keeps the newest `keep` committed epochs of `task`
    /// and deletes older ones with their pages.
    pub fn spawn(
        store: CheckpointStore,
        task: String,
        keep: usize,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Uploader> {
        let (jobs, job_rx) = mpsc::channel::<EpochUpload>();
        let (event_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("weir-upload-{task}"))
            .spawn(move || {
                for job in job_rx {
                    let epoch = job.manifest.epoch;
                    let event = match runtime.block_on(commit_epoch(&store, &task, keep, job)) {
                        Ok(manifest) => UploadEvent::Committed(Box::new(manifest)),
                        Err(error) => UploadEvent::Failed { epoch, error },
                    };
                    if event_tx.send(event).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Uploader {
            jobs: Some(jobs),
            events,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Epochs handed over and not reported yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Hands an epoch over.
    pub fn submit(&mut self, job: EpochUpload) {
        if let Some(jobs) = &self.jobs
            && jobs.send(job).is_ok()
        {
            self.in_flight += 1;
        }
    }

    /// Reports that arrived, without waiting.
    pub fn poll(&mut self) -> Vec<UploadEvent> {
        let events: Vec<UploadEvent> = self.events.try_iter().collect();
        self.in_flight -= events.len().min(self.in_flight);
        events
    }

    /// Waits until every epoch handed over is reported.
    pub fn drain(&mut self) -> Vec<UploadEvent> {
        let mut events = Vec::new();
        while self.in_flight > 0 {
            match self.events.recv() {
                Ok(event) => {
                    events.push(event);
                    self.in_flight -= 1;
                }
                Err(_) => break,
            }
        }
        events
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn commit_epoch(
    store: &CheckpointStore,
    task: &str,
    keep: usize,
    job: EpochUpload,
) -> Result<Manifest, StoreError> {
    let EpochUpload {
        mut manifest,
        fresh_pages,
        components,
    } = job;
    let started = Instant::now();
    for component in components {
        store.put_component(component).await?;
    }
    let mut new_bytes = 0;
    let mut uploads = futures::stream::iter(fresh_pages.into_iter().map(|(hash, bytes)| {
        let len = bytes.len() as u64;
        async move {
            let outcome = store.put_page(task, &hash, bytes).await?;
            Ok::<_, StoreError>((outcome, len))
        }
    }))
    .buffer_unordered(store.upload_concurrency());
    let mut uploaded = 0usize;
    while let Some((outcome, len)) = uploads.try_next().await? {
        if outcome == super::PutOutcome::Uploaded {
            new_bytes += len;
        }
        uploaded += 1;
        if uploaded == 1 {
            crashpoint::reached("during-page-upload");
        }
    }
    drop(uploads);
    manifest.stats.upload_us = started.elapsed().as_micros() as u64;
    manifest.stats.new_bytes = new_bytes;
    let marker = store.put_manifest(&manifest).await?;
    crashpoint::reached("before-commit");
    store.commit(task, manifest.epoch, &marker).await?;
    crashpoint::reached("after-commit");
    if let Err(e) = collect_garbage(store, task, keep).await {
        // Garbage is harmless; the next commit tries again.
        tracing::warn!(task, "checkpoint garbage collection failed: {e}");
    }
    Ok(manifest)
}

/// What one garbage collection deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// The epochs deleted (committed or not), oldest first.
    pub epochs: Vec<u64>,
    /// The pages deleted: referenced by a deleted epoch and by no kept one.
    pub pages: Vec<Hash>,
}

/// Keeps the newest `keep` committed epochs; deletes every older epoch,
/// committed or not, and the pages that no kept epoch references. Commit
/// markers go first, so a crash halfway leaves garbage, never a damaged
/// recovery point. Epochs newer than the newest committed one are never
/// touched. Every kept manifest is read before anything is deleted: if one
/// cannot be read (even because another collector deleted it meanwhile),
/// nothing is deleted and the error is returned.
pub async fn collect_garbage(
    store: &CheckpointStore,
    task: &str,
    keep: usize,
) -> Result<Collected, StoreError> {
    let epochs = store.epochs(task).await?;
    let committed: Vec<u64> = epochs
        .iter()
        .filter(|e| e.committed)
        .map(|e| e.epoch)
        .collect();
    let Some(&oldest_kept) = committed.get(committed.len().saturating_sub(keep.max(1))) else {
        return Ok(Collected::default());
    };
    let victims: Vec<u64> = epochs
        .iter()
        .map(|e| e.epoch)
        .filter(|&e| e < oldest_kept)
        .collect();
    if victims.is_empty() {
        return Ok(Collected::default());
    }
    let mut kept_pages = HashSet::new();
    for epoch in committed.iter().filter(|&&e| e >= oldest_kept) {
        // A kept epoch that cannot be read keeps every page: deleting on a
        // guess could destroy a recovery point.
        let manifest = store.read_committed(task, *epoch).await?;
        kept_pages.extend(manifest.pages());
    }
    let mut doomed = HashSet::new();
    for &epoch in &victims {
        let manifest = store.read_manifest(task, epoch).await.ok().flatten();
        store.delete_epoch(task, epoch).await?;
        if let Some(manifest) = manifest {
            doomed.extend(manifest.pages().filter(|p| !kept_pages.contains(p)));
        }
    }
    let pages: Vec<Hash> = doomed.into_iter().collect();
    futures::stream::iter(
        pages
            .iter()
            .map(|hash| async move { store.delete_page(task, hash).await }),
    )
    .buffer_unordered(store.upload_concurrency())
    .try_collect::<Vec<()>>()
    .await?;
    Ok(Collected {
        epochs: victims,
        pages,
    })
}
