//! The background half of a checkpoint: upload, commit, collect garbage.
//!
//! The task thread captures state at a barrier and hands the epoch over;
//! from then on nothing here stops the operators. Epochs are committed
//! strictly in order, one at a time: pages first, then the manifest, then
//! the commit marker. Only after the marker is written does the task hear
//! `Committed`, and only then may sinks publish the epoch's outputs.
//!
//! **Store failures.** An attempt that fails with a retryable error (the
//! store unreachable, timing out, failing on its side) is started over from
//! the first page, after a backoff, until the store's upload deadline
//! ([`CheckpointStore::upload_deadline`]) has passed; then the epoch is
//! reported failed and the run stops. Every step of an attempt can be
//! repeated (pages and components are named by their content, the manifest
//! is sent again byte for byte as first sent, a commit marker already there
//! must be the same), and
//! the marker is only written once every page and the manifest are stored:
//! an epoch is never committed with a page missing, and never dropped
//! silently.
//!
//! **Garbage collection beside writers.** A collection (the run's own after
//! each commit, or `weir checkpoints gc`) may run while an epoch is being
//! written. The protocol that keeps it from deleting a page such an epoch
//! needs is described in docs/checkpoint-format.md (garbage collection);
//! the writer's half is here: pages it writes are young (a collector's
//! grace period protects them until the manifest is there), pages it keeps
//! from its previous epoch are protected by that epoch's manifest, and
//! pages it reuses without writing them are checked after its manifest is
//! stored and every collector's lease is gone, and written again if a
//! collector deleted them.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::store::{CLOCK_SKEW, GC_LEASE_MAX, unix_ms};
use super::{CheckpointStore, Hash, Manifest, PutOutcome, StoreError, layout};
use crate::crashpoint;

/// A writer whose epoch took longer than this from its first page to its
/// manifest checks every page it wrote before committing, instead of
/// relying on collectors' grace periods, which must exceed this plus
/// [`CLOCK_SKEW`] (docs/checkpoint-format.md).
pub const WRITER_FAST_PATH: Duration = Duration::from_secs(60);

/// How long after issuing it a page deletion can still take effect (the
/// S3 client's retries and timeouts, with a margin). A collector issues
/// deletions only while its lease has at least this long to run.
const DELETE_BOUND: Duration = Duration::from_secs(90);

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
    /// The epoch could not be made durable.
    Failed {
        /// The epoch.
        epoch: u64,
        /// Why.
        error: StoreError,
        /// Whether it may be committed all the same.
        commit: CommitFate,
    },
}

/// Whether a failed epoch may still become committed: a request the store
/// never answered may yet take effect (a server that stalls and then
/// catches up, a reply lost on the way back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFate {
    /// Its commit marker was never sent: it is not committed, and never
    /// will be (the next run numbers its epochs past it).
    NotCommitted,
    /// Its marker was sent and the store never confirmed it. It may be
    /// stored; the next run finds out and restores it if it is.
    Unconfirmed,
    /// The upload thread died, perhaps with the marker in flight.
    Unknown,
}

/// Handle on the upload thread of one task.
pub struct Uploader {
    jobs: Option<mpsc::Sender<EpochUpload>>,
    events: mpsc::Receiver<UploadEvent>,
    thread: Option<JoinHandle<()>>,
    /// Epochs handed over and not reported yet, oldest first.
    in_flight: VecDeque<u64>,
    /// The store, for messages.
    describe: String,
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
        let describe = store.describe().to_owned();
        let (jobs, job_rx) = mpsc::channel::<EpochUpload>();
        let (event_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("weir-upload-{task}"))
            .spawn(move || {
                // The pages of the epoch this thread committed last: the
                // next epoch's unchanged pages are among them.
                let mut previous: Option<HashSet<Hash>> = None;
                for job in job_rx {
                    let epoch = job.manifest.epoch;
                    let stored = runtime.block_on(store_epoch(&store, &task, &job, &previous));
                    let event = match stored {
                        Ok(manifest) => {
                            previous = Some(manifest.pages().collect());
                            // Garbage is harmless; the next commit tries
                            // again. A store that stops answering holds the
                            // next epoch up no longer than its upload would.
                            let collected = runtime.block_on(async {
                                tokio::time::timeout(
                                    store.upload_deadline(),
                                    collect_garbage(&store, &task, keep),
                                )
                                .await
                            });
                            match collected {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => tracing::warn!(
                                    task,
                                    "checkpoint garbage collection failed: {e}"
                                ),
                                Err(_) => tracing::warn!(
                                    task,
                                    "checkpoint garbage collection gave up after {}",
                                    crate::inspect::units::duration(store.upload_deadline())
                                ),
                            }
                            UploadEvent::Committed(Box::new(manifest))
                        }
                        Err((error, commit)) => UploadEvent::Failed {
                            epoch,
                            error,
                            commit,
                        },
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
            in_flight: VecDeque::new(),
            describe,
        })
    }

    /// Epochs handed over and not reported yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands an epoch over. If the upload thread is gone, the epoch is
    /// reported failed by the next [`Self::poll`] or [`Self::drain`].
    pub fn submit(&mut self, job: EpochUpload) {
        self.in_flight.push_back(job.manifest.epoch);
        if let Some(jobs) = &self.jobs {
            // A send fails only if the thread is gone: then the receiver
            // is disconnected too, and the epoch is reported failed.
            let _ = jobs.send(job);
        }
    }

    /// Reports that arrived, without waiting.
    pub fn poll(&mut self) -> Vec<UploadEvent> {
        let mut events = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(event) => events.push(self.reported(event)),
                Err(mpsc::TryRecvError::Empty) => return events,
                Err(mpsc::TryRecvError::Disconnected) => {
                    events.extend(self.lost());
                    return events;
                }
            }
        }
    }

    /// Waits until every epoch handed over is reported.
    pub fn drain(&mut self) -> Vec<UploadEvent> {
        let mut events = Vec::new();
        while !self.in_flight.is_empty() {
            match self.events.recv() {
                Ok(event) => events.push(self.reported(event)),
                Err(_) => events.extend(self.lost()),
            }
        }
        events
    }

    fn reported(&mut self, event: UploadEvent) -> UploadEvent {
        self.in_flight.pop_front();
        event
    }

    /// The epochs the thread will never report (it panicked): failed, never
    /// silently dropped.
    fn lost(&mut self) -> Vec<UploadEvent> {
        self.in_flight
            .drain(..)
            .map(|epoch| UploadEvent::Failed {
                epoch,
                error: StoreError::UploaderGone {
                    store: self.describe.clone(),
                    epoch,
                },
                commit: CommitFate::Unknown,
            })
            .collect()
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

/// What earlier attempts at the same epoch achieved.
#[derive(Default)]
struct Progress {
    /// Pages some attempt wrote (they are as young as the epoch).
    created: HashSet<Hash>,
    /// Their bytes.
    new_bytes: u64,
    /// The manifest as first sent. Every later attempt sends these very
    /// bytes: a request that timed out may still have been stored, and its
    /// commit marker with it, so a retry must not store a manifest with
    /// other statistics (a marker names its manifest by hash).
    manifest: Option<Manifest>,
    /// Whether some attempt sent the commit marker.
    commit_sent: bool,
}

/// Stores and commits one epoch, attempt after attempt while the errors
/// are retryable and the upload deadline has not passed.
async fn store_epoch(
    store: &CheckpointStore,
    task: &str,
    job: &EpochUpload,
    previous: &Option<HashSet<Hash>>,
) -> Result<Manifest, (StoreError, CommitFate)> {
    let mut progress = Progress::default();
    store_attempts(store, task, job, previous, &mut progress)
        .await
        .map_err(|error| {
            let fate = if progress.commit_sent {
                CommitFate::Unconfirmed
            } else {
                CommitFate::NotCommitted
            };
            (error, fate)
        })
}

async fn store_attempts(
    store: &CheckpointStore,
    task: &str,
    job: &EpochUpload,
    previous: &Option<HashSet<Hash>>,
    progress: &mut Progress,
) -> Result<Manifest, StoreError> {
    let epoch = job.manifest.epoch;
    let started = Instant::now();
    let deadline = store.upload_deadline();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(
            remaining,
            attempt(store, task, job, previous.as_ref(), started, progress),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Backend {
                store: store.describe().to_owned(),
                operation: "store",
                key: format!("epoch {epoch}"),
                cause: "the upload deadline passed during the attempt".into(),
                retryable: true,
            })
        });
        let error = match outcome {
            Ok(manifest) => {
                if attempts > 1 {
                    tracing::info!(
                        task,
                        epoch,
                        "checkpoint stored after {attempts} attempts in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(manifest);
            }
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            return Err(StoreError::Unavailable {
                store: store.describe().to_owned(),
                epoch,
                waited: elapsed,
                deadline,
                attempts,
                last: error.to_string(),
            });
        }
        // 1 s, 2 s, 4 s, ... at most 15 s between attempts.
        let pause = Duration::from_secs(1 << (attempts - 1).min(4))
            .min(Duration::from_secs(15))
            .min(deadline - elapsed);
        tracing::warn!(
            task,
            epoch,
            "checkpoint upload attempt {attempts} failed ({error}); trying again in {:.0} s, for at most {:.0} s more",
            pause.as_secs_f64(),
            (deadline - elapsed).as_secs_f64()
        );
        tokio::time::sleep(pause).await;
    }
}

/// One attempt: pages, manifest, the check of pages reused without being
/// written, commit marker.
async fn attempt(
    store: &CheckpointStore,
    task: &str,
    job: &EpochUpload,
    previous: Option<&HashSet<Hash>>,
    started: Instant,
    progress: &mut Progress,
) -> Result<Manifest, StoreError> {
    let epoch = job.manifest.epoch;
    for component in &job.components {
        store.put_component(component.clone()).await?;
    }
    // Pages found in the store, neither written by this epoch nor kept
    // from the previous one: a collector may be deleting them.
    let mut adopted: Vec<(Hash, Option<Bytes>)> = Vec::new();
    let mut uploads =
        futures::stream::iter(job.fresh_pages.iter().map(|(hash, bytes)| async move {
            let outcome = store.put_page(task, hash, bytes.clone()).await?;
            Ok::<_, StoreError>((hash, bytes, outcome))
        }))
        .buffer_unordered(store.upload_concurrency());
    let mut stored = 0usize;
    while let Some((hash, bytes, outcome)) = uploads.try_next().await? {
        match outcome {
            PutOutcome::Uploaded => {
                if progress.created.insert(*hash) {
                    progress.new_bytes += bytes.len() as u64;
                }
            }
            PutOutcome::AlreadyPresent => {
                let ours = progress.created.contains(hash)
                    || previous.is_some_and(|pages| pages.contains(hash));
                if !ours {
                    adopted.push((*hash, Some(bytes.clone())));
                }
            }
        }
        stored += 1;
        if stored == 1 {
            crashpoint::reached("during-page-upload");
        }
    }
    drop(uploads);
    let manifest = match &progress.manifest {
        Some(sent) => sent.clone(),
        None => {
            let mut manifest = job.manifest.clone();
            manifest.stats.upload_us = started.elapsed().as_micros() as u64;
            manifest.stats.new_bytes = progress.new_bytes;
            progress.manifest = Some(manifest.clone());
            manifest
        }
    };
    let marker = store.put_manifest(&manifest).await?;

    let mut check = adopted;
    if started.elapsed() > WRITER_FAST_PATH {
        // Too slow for collectors' grace periods to vouch for the pages
        // this epoch wrote: check them too.
        check.extend(
            job.fresh_pages
                .iter()
                .filter(|(hash, _)| progress.created.contains(hash))
                .map(|(hash, bytes)| (*hash, Some(bytes.clone()))),
        );
    }
    if previous.is_none() {
        // The first epoch after a restore keeps pages of the checkpoint it
        // resumed from, which need not be the newest one a collector keeps.
        let fresh: HashSet<Hash> = job.fresh_pages.iter().map(|(hash, _)| *hash).collect();
        let carried: HashSet<Hash> = manifest.pages().filter(|p| !fresh.contains(p)).collect();
        check.extend(carried.into_iter().map(|hash| (hash, None)));
    }
    if !check.is_empty() {
        let give_up = started + store.upload_deadline();
        confirm_pages(store, task, epoch, &check, give_up).await?;
    }

    crashpoint::reached("before-commit");
    progress.commit_sent = true;
    store.commit(task, epoch, &marker).await?;
    crashpoint::reached("after-commit");
    Ok(manifest)
}

/// Makes sure every page in `pages` exists, once no collector that could
/// have decided to delete one before this epoch's manifest was stored is
/// still at work: writes again those that are gone (`Some` bytes); a page
/// without bytes (kept from the restored checkpoint) that is gone fails the
/// epoch.
async fn confirm_pages(
    store: &CheckpointStore,
    task: &str,
    epoch: u64,
    pages: &[(Hash, Option<Bytes>)],
    give_up: Instant,
) -> Result<(), StoreError> {
    wait_for_collectors(store, task, give_up).await?;
    futures::stream::iter(pages.iter().map(|(hash, bytes)| async move {
        if store.has_page(task, hash).await? {
            return Ok(());
        }
        match bytes {
            Some(bytes) => {
                tracing::info!(
                    task,
                    epoch,
                    "page {hash} was deleted by a garbage collector while this epoch reused it; writing it again"
                );
                store.put_page_again(task, hash, bytes.clone()).await
            }
            None => Err(StoreError::PageGone {
                store: store.describe().to_owned(),
                key: store.page_key(task, hash),
                epoch,
            }),
        }
    }))
    .buffer_unordered(store.upload_concurrency())
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Waits until no collector holds a live lease on `task`.
async fn wait_for_collectors(
    store: &CheckpointStore,
    task: &str,
    give_up: Instant,
) -> Result<(), StoreError> {
    let mut said = false;
    loop {
        let leases = store.gc_leases(task).await?;
        let Some(&until) = leases.live.iter().max() else {
            return Ok(());
        };
        if Instant::now() >= give_up {
            return Err(StoreError::Backend {
                store: store.describe().to_owned(),
                operation: "wait for",
                key: layout::gc_leases(store.root(), task).to_string(),
                cause: "a garbage collector still holds its lease".into(),
                retryable: true,
            });
        }
        if !said {
            said = true;
            tracing::info!(
                task,
                "waiting for a garbage collector to finish (its lease ends in {:.0} s at the latest) before checking reused pages",
                (until + CLOCK_SKEW.as_millis() as u64).saturating_sub(unix_ms()) as f64 / 1000.0
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What one garbage collection round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// The epochs deleted (committed or not), oldest first.
    pub epochs: Vec<u64>,
    /// The epochs left, oldest first.
    pub epochs_left: Vec<u64>,
    /// The pages deleted because only deleted epochs referenced them.
    pub pages: Vec<Hash>,
    /// The pages deleted because no manifest referenced them and they were
    /// older than the grace period (only when sweeping).
    pub orphans: Vec<Hash>,
    /// Pages no manifest references, left because they are younger than
    /// the grace period (only when sweeping).
    pub orphans_spared: u64,
    /// Bytes of the deleted pages that were listed (only when sweeping).
    pub bytes_deleted: u64,
    /// The round ran out of its lease before deleting every page it meant
    /// to; another round finds the rest.
    pub unfinished: bool,
}

/// What became of one page deletion.
enum Deletion {
    Done,
    /// Not issued: the lease had too little time left.
    Late,
    Failed(StoreError),
}

/// How a collection round ended.
#[derive(Debug)]
pub enum Round {
    /// It did what it could.
    Done(Collected),
    /// Epochs it relied on were deleted while it looked (another
    /// collector); it deleted nothing. Start over.
    Raced,
}

/// The collection a run does after each commit: keeps the newest `keep`
/// committed epochs; deletes every older epoch, committed or not, and the
/// pages that only they reference. A round that finds the store changing
/// under it deletes nothing (the next commit tries again).
pub async fn collect_garbage(
    store: &CheckpointStore,
    task: &str,
    keep: usize,
) -> Result<Collected, StoreError> {
    // The common case, one listing: nothing to delete, so no lease.
    let epochs = store.epochs(task).await?;
    if victims(&epochs, keep).is_empty() {
        return Ok(Collected {
            epochs_left: epochs.iter().map(|e| e.epoch).collect(),
            ..Collected::default()
        });
    }
    match collect_round(store, task, keep, None).await? {
        Round::Done(collected) => Ok(collected),
        Round::Raced => {
            tracing::debug!(task, "garbage collection raced another collector; skipped");
            Ok(Collected::default())
        }
    }
}

/// The epochs a collection keeping `keep` deletes: every epoch older than
/// the oldest of the newest `keep` committed ones.
fn victims(epochs: &[super::EpochEntry], keep: usize) -> Vec<u64> {
    let committed: Vec<u64> = epochs
        .iter()
        .filter(|e| e.committed)
        .map(|e| e.epoch)
        .collect();
    let Some(&oldest_kept) = committed.get(committed.len().saturating_sub(keep.max(1))) else {
        return Vec::new();
    };
    epochs
        .iter()
        .map(|e| e.epoch)
        .filter(|&e| e < oldest_kept)
        .collect()
}

/// One collection round under a lease (docs/checkpoint-format.md, garbage
/// collection):
///
/// 1. takes a lease, so that writers reusing pages wait for the round;
/// 2. lists the epochs and reads every manifest: the victims' (epochs older
///    than the oldest of the newest `keep` committed), and everyone
///    else's, committed or not, whose pages are kept;
/// 3. when sweeping (`grace`), lists the pages;
/// 4. lists the epochs again: if one it read has gone (another collector),
///    the round deletes nothing and reports [`Round::Raced`];
/// 5. deletes the victims (commit markers first, so a crash halfway leaves
///    garbage, never a damaged recovery point), then the pages only they
///    referenced, and, when sweeping, the listed pages no manifest
///    references that were written more than `grace` before the round
///    began, all while its lease has time left;
/// 6. gives the lease up (unless a deletion failed: it may still take
///    effect, so the lease runs out instead).
///
/// Epochs newer than the newest committed one are never deleted; a kept
/// epoch that cannot be read stops the round before anything is deleted.
pub async fn collect_round(
    store: &CheckpointStore,
    task: &str,
    keep: usize,
    grace: Option<Duration>,
) -> Result<Round, StoreError> {
    let lease = store.acquire_gc_lease(task, GC_LEASE_MAX).await?;
    let delete_until = Instant::now() + GC_LEASE_MAX.saturating_sub(DELETE_BOUND);
    let mut deletions_failed = false;
    let result = round(
        store,
        task,
        keep,
        grace,
        delete_until,
        &mut deletions_failed,
    )
    .await;
    if !deletions_failed && let Err(e) = store.release_gc_lease(&lease).await {
        tracing::warn!(task, "cannot give up the garbage collection lease: {e}");
    }
    result
}

async fn round(
    store: &CheckpointStore,
    task: &str,
    keep: usize,
    grace: Option<Duration>,
    delete_until: Instant,
    deletions_failed: &mut bool,
) -> Result<Round, StoreError> {
    // Pages written before this instant minus the grace period may go.
    let began = chrono::Utc::now();
    let epochs = store.epochs(task).await?;
    let victims = victims(&epochs, keep);
    let mut referenced = HashSet::new();
    let mut victim_pages = HashSet::new();
    // Epochs whose manifest could not be found: gone (a race) or damaged.
    let mut missing = Vec::new();
    for entry in &epochs {
        let victim = victims.contains(&entry.epoch);
        let read = if entry.committed && !victim {
            // A kept epoch is read verified: deleting on a guess could
            // destroy a recovery point.
            store.read_committed(task, entry.epoch).await.map(Some)
        } else {
            store.read_manifest(task, entry.epoch).await
        };
        match (victim, read) {
            (true, Ok(Some(manifest))) => victim_pages.extend(manifest.pages()),
            // A victim that cannot be read: its pages stay (for a sweep).
            (true, _) => {}
            (false, Ok(Some(manifest))) => referenced.extend(manifest.pages()),
            (false, Ok(None) | Err(StoreError::NotFound { .. })) => missing.push(entry.epoch),
            (false, Err(e)) => return Err(e),
        }
    }
    let listed = match grace {
        Some(_) => store.list_pages(task).await?,
        None => Vec::new(),
    };
    let now = store.epochs(task).await?;
    let still_there = |epoch: u64| now.iter().any(|e| e.epoch == epoch);
    for entry in epochs.iter().filter(|e| !victims.contains(&e.epoch)) {
        if !still_there(entry.epoch) {
            return Ok(Round::Raced);
        }
    }
    if let Some(&epoch) = missing.first() {
        // Still listed, but its manifest is not there: damage.
        return Err(StoreError::NotFound {
            store: store.describe().to_owned(),
            key: layout::manifest(store.root(), task, epoch).to_string(),
        });
    }

    for &epoch in &victims {
        store.delete_epoch(task, epoch).await?;
    }
    let doomed: Vec<Hash> = victim_pages
        .iter()
        .filter(|p| !referenced.contains(*p))
        .copied()
        .collect();
    let mut orphans = Vec::new();
    let mut orphans_spared = 0;
    if let Some(grace) = grace {
        let cutoff = chrono::Duration::from_std(grace)
            .ok()
            .and_then(|grace| began.checked_sub_signed(grace))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        for page in &listed {
            if referenced.contains(&page.hash) || victim_pages.contains(&page.hash) {
                continue;
            }
            if page.last_modified < cutoff {
                orphans.push(page.hash);
            } else {
                orphans_spared += 1;
            }
        }
    }
    let wanted: Vec<Hash> = doomed.iter().chain(&orphans).copied().collect();
    let results: Vec<(Hash, Deletion)> =
        futures::stream::iter(wanted.iter().map(|hash| async move {
            if Instant::now() >= delete_until {
                return (*hash, Deletion::Late);
            }
            match store.delete_page(task, hash).await {
                Ok(()) => (*hash, Deletion::Done),
                Err(e) => (*hash, Deletion::Failed(e)),
            }
        }))
        .buffer_unordered(store.upload_concurrency())
        .collect()
        .await;
    let mut unfinished = false;
    let mut deleted = HashSet::new();
    let mut first_error = None;
    for (hash, result) in results {
        match result {
            Deletion::Done => {
                deleted.insert(hash);
            }
            Deletion::Late => unfinished = true,
            Deletion::Failed(e) => {
                *deletions_failed = true;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let bytes_deleted = listed
        .iter()
        .filter(|p| deleted.contains(&p.hash))
        .map(|p| p.bytes)
        .sum();
    Ok(Round::Done(Collected {
        epochs: victims.clone(),
        epochs_left: now
            .iter()
            .map(|e| e.epoch)
            .filter(|e| !victims.contains(e))
            .collect(),
        pages: doomed.into_iter().filter(|p| deleted.contains(p)).collect(),
        orphans: orphans
            .into_iter()
            .filter(|p| deleted.contains(p))
            .collect(),
        orphans_spared,
        bytes_deleted,
        unfinished,
    }))
}
