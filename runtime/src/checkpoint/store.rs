//! [`CheckpointStore`]: the checkpoint layout on any `object_store` backend.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::layout;
use super::manifest::{CommitMarker, DecodeError, FORMAT_VERSION, Hash, Manifest};

/// How long one epoch's upload keeps being retried through retryable
/// errors (the store unreachable, timing out, failing on its side) before
/// the run stops: a duration such as `90s` or `10m`. Default
/// [`DEFAULT_UPLOAD_DEADLINE`].
pub const UPLOAD_DEADLINE_ENV: &str = "WEIR_CHECKPOINT_UPLOAD_DEADLINE";

/// The default of [`UPLOAD_DEADLINE_ENV`]: five minutes.
pub const DEFAULT_UPLOAD_DEADLINE: Duration = Duration::from_secs(300);

/// S3 connect timeout unless `AWS_CONNECT_TIMEOUT` says otherwise.
const S3_CONNECT_TIMEOUT: &str = "5s";

/// S3 timeout of a whole request unless `AWS_TIMEOUT` says otherwise.
const S3_REQUEST_TIMEOUT: &str = "30s";

/// How each S3 request is retried (by `object_store`) on a 5xx, 429 or 408
/// reply, a connection failure, and a timeout of a request that can be
/// repeated safely: up to 10 times, at most 30 s after the first try, with
/// exponential backoff from 100 ms to 5 s (with jitter). What fails beyond
/// that is retried a level up, per epoch, until [`UPLOAD_DEADLINE_ENV`].
fn s3_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(30),
    }
}

/// A failure of the checkpoint store, naming the object concerned. Every
/// message is one line: the backend's own error (which for S3 includes the
/// server's XML reply) is condensed to its status, S3 error code and
/// message, or to the transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, network, a server error).
    #[error("checkpoint store {store}: {operation} {key}: {cause}")]
    Backend {
        /// The store, e.g. `file:///data/weir`.
        store: String,
        /// What was being done.
        operation: &'static str,
        /// The object key.
        key: String,
        /// What went wrong, in one line.
        cause: String,
        /// Whether trying again may succeed (a server error, a timeout, a
        /// connection failure), as opposed to a refusal (a 4xx reply).
        retryable: bool,
    },
    /// The bucket of an `s3://` store does not exist.
    #[error(
        "checkpoint store {store}: bucket `{bucket}` does not exist at {endpoint} ({code}); create it first: weir does not create buckets"
    )]
    NoSuchBucket {
        /// The store.
        store: String,
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
        /// `S3 error NoSuchBucket`.
        code: String,
    },
    /// The store refused the credentials or the request.
    #[error(
        "checkpoint store {store}: access denied to {place} ({code} on {request}); check {}",
        access_hint(.place)
    )]
    AccessDenied {
        /// The store.
        store: String,
        /// `bucket `b` at ENDPOINT`, or `the directory`.
        place: String,
        /// `S3 error CODE` (`AccessDenied`, `InvalidAccessKeyId`,
        /// `SignatureDoesNotMatch`, ...), `HTTP 403`, or the OS's words.
        code: String,
        /// What was being done, to which key: `list a/b/c`.
        request: String,
    },
    /// An epoch kept failing with retryable errors until the upload
    /// deadline passed.
    #[error(
        "checkpoint store {store}: epoch {epoch} still could not be stored after {:.1} s and {attempts} attempt(s) (the limit is {UPLOAD_DEADLINE_ENV}={}); last error: {last}",
        .waited.as_secs_f64(),
        crate::inspect::units::duration(*.deadline)
    )]
    Unavailable {
        /// The store.
        store: String,
        /// The epoch.
        epoch: u64,
        /// How long it was tried.
        waited: Duration,
        /// The deadline.
        deadline: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The last error, one line.
        last: String,
    },
    /// A page an epoch takes over unchanged from the checkpoint its run
    /// resumed from is gone: deleted by a collector beside the run.
    #[error(
        "checkpoint store {store}: {key} is gone, but epoch {epoch} reuses it from the checkpoint this run resumed from (was it deleted by `weir checkpoints gc` beside the run?); the epoch is not committed"
    )]
    PageGone {
        /// The store.
        store: String,
        /// The page's key.
        key: String,
        /// The epoch that needs it.
        epoch: u64,
    },
    /// The upload thread stopped (it panicked) with an epoch not stored.
    #[error(
        "checkpoint store {store}: the upload thread stopped while epoch {epoch} was being stored (this is a bug in weir)"
    )]
    UploaderGone {
        /// The store.
        store: String,
        /// The epoch.
        epoch: u64,
    },
    /// An object is missing.
    #[error("checkpoint store {store}: {key} does not exist")]
    NotFound {
        /// The store.
        store: String,
        /// The object key.
        key: String,
    },
    /// An object's content does not match what refers to it.
    #[error("checkpoint store {store}: {key} is corrupt: {reason}")]
    Corrupt {
        /// The store.
        store: String,
        /// The object key.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// An object cannot be decoded.
    #[error("checkpoint store {store}: {key}: {source}")]
    Format {
        /// The store.
        store: String,
        /// The object key.
        key: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// An epoch was committed before with a different manifest.
    #[error(
        "checkpoint store {store}: {key} already commits another manifest (is a second process writing the same task?)"
    )]
    Conflict {
        /// The store.
        store: String,
        /// The commit marker's key.
        key: String,
    },
    /// The store location cannot be opened.
    #[error("cannot open checkpoint store `{location}`: {reason}")]
    Open {
        /// The location as given.
        location: String,
        /// Why.
        reason: String,
    },
    /// A name that cannot be part of a key.
    #[error(
        "`{name}` cannot name a pipeline or task in the checkpoint store: use 1-128 characters of A-Z a-z 0-9 - _ ."
    )]
    InvalidName {
        /// The name.
        name: String,
    },
}

impl StoreError {
    /// Whether trying the same thing again later may succeed: the store
    /// was unreachable, timed out or failed on its side. Refusals (missing
    /// bucket, access denied, conflicts) and damage are final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// Whether a content-addressed put stored new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Uploaded,
    /// An object with that name (so that content) was already there.
    AlreadyPresent,
}

/// An epoch found in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// Its number.
    pub epoch: u64,
    /// Whether its commit marker exists (not yet verified).
    pub committed: bool,
}

/// A state page found in the store by listing (for garbage collection and
/// inspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPage {
    /// The hash it is named by.
    pub hash: Hash,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written, by the store's clock.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// The longest lease a garbage collector takes ([`CheckpointStore::acquire_gc_lease`]).
pub const GC_LEASE_MAX: Duration = Duration::from_secs(120);

/// How far apart the clocks of weir processes and the store may be.
/// Leases are kept for this long past their expiry, and a garbage
/// collector's grace period must exceed a writer's fast path by at least
/// this much.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// A garbage collector's lease on a task (see [`CheckpointStore::acquire_gc_lease`]).
#[derive(Debug, Clone)]
pub struct GcLease {
    key: Path,
    /// When it expires, Unix ms by the collector's clock.
    pub expires_unix_ms: u64,
}

/// The leases on a task.
#[derive(Debug, Default)]
pub struct GcLeases {
    /// When each live lease expires (Unix ms).
    pub live: Vec<u64>,
    /// Expired leases.
    expired: Vec<Path>,
}

/// Milliseconds since 1970 by this machine's clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The checkpoints of one pipeline in an object store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    describe: String,
    /// The directory of a local store.
    local_dir: Option<std::path::PathBuf>,
    /// The bucket and endpoint of an S3 store.
    s3: Option<S3Place>,
    /// How long an epoch's upload is retried.
    upload_deadline: Duration,
}

/// Where an `s3://` store is, for messages.
#[derive(Debug, Clone)]
struct S3Place {
    bucket: String,
    endpoint: String,
}

impl CheckpointStore {
    /// Checkpoints of `pipeline` under `root` of `store`; `describe` names the
    /// store in messages (its URL).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: Path,
        pipeline: &str,
        describe: String,
    ) -> Result<CheckpointStore, StoreError> {
        if !layout::is_valid_name(pipeline) {
            return Err(StoreError::InvalidName {
                name: pipeline.to_owned(),
            });
        }
        Ok(CheckpointStore {
            store,
            root: layout::pipeline_root(&root, pipeline),
            describe,
            local_dir: None,
            s3: None,
            upload_deadline: DEFAULT_UPLOAD_DEADLINE,
        })
    }

    /// Opens the checkpoints of `pipeline` at `location`:
    ///
    /// - a local directory (`weir-data`, `/var/lib/weir`, `file:///var/lib/weir`),
    ///   created if missing;
    /// - `s3://bucket/prefix` on S3 or any S3-compatible server, configured
    ///   by the `AWS_*` environment variables (`AWS_ENDPOINT_URL`,
    ///   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    ///   `AWS_ALLOW_HTTP=true` for a plain-http endpoint, `AWS_TIMEOUT` and
    ///   `AWS_CONNECT_TIMEOUT`). The bucket must exist;
    /// - `memory://` for tests (gone with the process).
    ///
    /// [`UPLOAD_DEADLINE_ENV`] bounds how long an epoch's upload is retried.
    pub fn open(location: &str, pipeline: &str) -> Result<CheckpointStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            location: location.to_owned(),
            reason,
        };
        let upload_deadline = upload_deadline().map_err(fail)?;
        let mut store = if location == "memory://" {
            CheckpointStore::new(
                Arc::new(object_store::memory::InMemory::new()),
                Path::from(""),
                pipeline,
                location.to_owned(),
            )?
        } else if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail(
                    "no bucket: write s3://BUCKET or s3://BUCKET/PREFIX".into(),
                ));
            }
            let (s3, place) = open_s3(bucket).map_err(fail)?;
            let mut store =
                CheckpointStore::new(Arc::new(s3), Path::from(prefix), pipeline, location.into())?;
            store.s3 = Some(place);
            store
        } else if location.contains("://") && !location.starts_with("file://") {
            return Err(fail(
                "unsupported scheme: use a local directory, file:///dir, s3://bucket/prefix or memory://"
                    .into(),
            ));
        } else {
            let dir = std::path::Path::new(location.strip_prefix("file://").unwrap_or(location));
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            // No automatic cleanup of empty directories: page directories
            // would be removed and recreated all the time (measured: the
            // file system's inode churn cost the pipeline 5% of its
            // throughput). `delete_epoch` removes epoch directories itself.
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| fail(e.to_string()))?;
            let mut store = CheckpointStore::new(
                Arc::new(local),
                Path::from(""),
                pipeline,
                location.to_owned(),
            )?;
            store.local_dir = Some(dir.to_owned());
            store
        };
        store.upload_deadline = upload_deadline;
        Ok(store)
    }

    /// How long an epoch's upload is retried through retryable errors
    /// ([`UPLOAD_DEADLINE_ENV`]).
    pub fn upload_deadline(&self) -> Duration {
        self.upload_deadline
    }

    /// How many objects to upload at once: a local disk gains nothing from
    /// more than two writers but loses CPU the pipeline needs; a remote
    /// store hides its latency behind many.
    pub fn upload_concurrency(&self) -> usize {
        if self.local_dir.is_some() { 2 } else { 16 }
    }

    /// The underlying object store (for tools that read it directly).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store's location, as given (for messages).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Deletes every checkpoint and page of `task`, commit markers first, so
    /// that a crash halfway leaves no recovery point behind. Returns the
    /// number of objects deleted.
    pub async fn delete_task(&self, task: &str) -> Result<usize, StoreError> {
        self.check_task(task)?;
        let mut deleted = 0;
        for epoch in self.epochs(task).await? {
            self.delete_epoch(task, epoch.epoch).await?;
            deleted += 1;
        }
        let prefix = layout::pages(&self.root, task);
        let pages = self.list_all(&prefix).await?;
        for page in pages {
            match self.store.delete(&page.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(self.backend("delete", &page.location, e)),
            }
        }
        Ok(deleted)
    }

    /// The key prefix of this pipeline.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pipelines that have objects in this store, this one included if
    /// it has any (for inspection), sorted.
    pub async fn pipelines(&self) -> Result<Vec<String>, StoreError> {
        let mut parts: Vec<_> = self.root.parts().collect();
        parts.pop();
        let store_root: Path = parts.into_iter().collect();
        self.children(&store_root).await
    }

    /// The tasks of this pipeline that have objects in the store (for
    /// inspection), sorted.
    pub async fn tasks(&self) -> Result<Vec<String>, StoreError> {
        self.children(&self.root.clone().join("tasks")).await
    }

    /// The valid names one level below `prefix`.
    async fn children(&self, prefix: &Path) -> Result<Vec<String>, StoreError> {
        let listed = self
            .store
            .list_with_delimiter((!prefix.as_ref().is_empty()).then_some(prefix))
            .await
            .map_err(|e| self.backend("list", prefix, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|name| layout::is_valid_name(name))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Turns a backend error into a one-line [`StoreError`] that names the
    /// bucket and endpoint when the bucket is missing or access is denied.
    fn backend(
        &self,
        operation: &'static str,
        key: &Path,
        source: object_store::Error,
    ) -> StoreError {
        tracing::debug!(store = %self.describe, operation, key = %key, "store error: {source}");
        let cause = Cause::of(&source);
        let denied = matches!(cause.status, Some(401 | 403))
            || matches!(
                source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            );
        let code = || match (&cause.code, cause.status) {
            (Some(code), _) => format!("S3 error {code}"),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => "permission denied".to_owned(),
        };
        if let Some(place) = &self.s3 {
            if cause.code.as_deref() == Some("NoSuchBucket") {
                return StoreError::NoSuchBucket {
                    store: self.describe.clone(),
                    bucket: place.bucket.clone(),
                    endpoint: place.endpoint.clone(),
                    code: code(),
                };
            }
            if denied {
                return StoreError::AccessDenied {
                    store: self.describe.clone(),
                    place: format!("bucket `{}` at {}", place.bucket, place.endpoint),
                    code: code(),
                    request: format!("{operation} {key}"),
                };
            }
        } else if denied {
            return StoreError::AccessDenied {
                store: self.describe.clone(),
                place: "the directory".to_owned(),
                code: one_line(&source.to_string()),
                request: format!("{operation} {key}"),
            };
        }
        if let object_store::Error::NotFound { .. } = source {
            return StoreError::NotFound {
                store: self.describe.clone(),
                key: key.to_string(),
            };
        }
        StoreError::Backend {
            store: self.describe.clone(),
            operation,
            key: key.to_string(),
            cause: cause.describe(&source),
            retryable: !cause.is_final(&source),
        }
    }

    async fn put_new(&self, key: &Path, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from_bytes(bytes), options)
            .await
        {
            Ok(_) => Ok(PutOutcome::Uploaded),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyPresent),
            Err(e) => Err(self.backend("put", key, e)),
        }
    }

    async fn get(&self, key: &Path) -> Result<Bytes, StoreError> {
        let result = self
            .store
            .get(key)
            .await
            .map_err(|e| self.backend("get", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.backend("read", key, e))
    }

    async fn get_verified(&self, key: &Path, hash: &Hash) -> Result<Bytes, StoreError> {
        let bytes = self.get(key).await?;
        let actual = Hash::of(&bytes);
        if actual != *hash {
            return Err(StoreError::Corrupt {
                store: self.describe.clone(),
                key: key.to_string(),
                reason: format!("its blake3 is {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Stores a state page of `task` under its hash, unless it is already
    /// there.
    pub async fn put_page(
        &self,
        task: &str,
        hash: &Hash,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        self.check_task(task)?;
        let key = layout::page(&self.root, task, hash);
        if self.local_dir.is_none() {
            return self.put_new(&key, bytes).await;
        }
        // On a local disk a create-if-absent put is a staging file, a hard
        // link and an unlink; a look first and a plain (atomic, renaming)
        // put saves two of those file system operations per page. Two
        // writers racing write the same bytes: the name is their hash.
        match self.store.head(&key).await {
            Ok(_) => return Ok(PutOutcome::AlreadyPresent),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.backend("head", &key, e)),
        }
        self.store
            .put(&key, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| self.backend("put", &key, e))?;
        Ok(PutOutcome::Uploaded)
    }

    /// Writes a page again whether or not it is there (a writer restoring a
    /// page a collector deleted under it).
    pub async fn put_page_again(
        &self,
        task: &str,
        hash: &Hash,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.check_task(task)?;
        let key = layout::page(&self.root, task, hash);
        self.store
            .put(&key, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| self.backend("put", &key, e))?;
        Ok(())
    }

    /// The key of a page (for messages).
    pub fn page_key(&self, task: &str, hash: &Hash) -> String {
        layout::page(&self.root, task, hash).to_string()
    }

    /// Takes a garbage collector's lease on `task` for `duration`: writers
    /// that reuse a page they did not write wait until no lease is live
    /// before they check it (docs/checkpoint-format.md, garbage
    /// collection).
    pub async fn acquire_gc_lease(
        &self,
        task: &str,
        duration: Duration,
    ) -> Result<GcLease, StoreError> {
        static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        self.check_task(task)?;
        let now = unix_ms();
        let expires_unix_ms = now.saturating_add(duration.as_millis() as u64);
        let id = format!(
            "{now:013}-{}-{}",
            std::process::id(),
            TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let key = layout::gc_lease(&self.root, task, &id);
        let (host, pid_ns) = process_namespace().unwrap_or_default();
        let body = serde_json::json!({
            "expires_unix_ms": expires_unix_ms,
            "host": host,
            "pid_ns": pid_ns,
            "pid": std::process::id(),
        })
        .to_string();
        self.store
            .put(&key, PutPayload::from(body.into_bytes()))
            .await
            .map_err(|e| self.backend("put", &key, e))?;
        Ok(GcLease {
            key,
            expires_unix_ms,
        })
    }

    /// Gives a lease up.
    pub async fn release_gc_lease(&self, lease: &GcLease) -> Result<(), StoreError> {
        match self.store.delete(&lease.key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend("delete", &lease.key, e)),
        }
    }

    /// The leases of collectors on `task` that may still be at work, by the
    /// time they expire (Unix ms; a lease that cannot be read counts from
    /// when it was written). Expired leases are listed in `expired`, and so,
    /// in a local store, are those of processes on this machine that are
    /// gone (a local deletion takes effect before its process dies).
    pub async fn gc_leases(&self, task: &str) -> Result<GcLeases, StoreError> {
        self.check_task(task)?;
        let prefix = layout::gc_leases(&self.root, task);
        let now = unix_ms();
        let here = process_namespace();
        let mut leases = GcLeases::default();
        for object in self.list_all(&prefix).await? {
            let lease = match self.get(&object.location).await {
                Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
                // Released while we looked.
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let lease = lease.unwrap_or_default();
            let expires = lease["expires_unix_ms"].as_u64().unwrap_or_else(|| {
                (object.last_modified.timestamp_millis().max(0) as u64)
                    .saturating_add(GC_LEASE_MAX.as_millis() as u64)
            });
            let owner_gone = self.local_dir.is_some()
                && here.as_ref().is_some_and(|(host, pid_ns)| {
                    lease["host"] == host.as_str() && lease["pid_ns"] == pid_ns.as_str()
                })
                && lease["pid"]
                    .as_u64()
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            // A collector's clock may run behind ours.
            if !owner_gone && expires.saturating_add(CLOCK_SKEW.as_millis() as u64) > now {
                leases.live.push(expires);
            } else {
                leases.expired.push(object.location);
            }
        }
        Ok(leases)
    }

    /// Deletes leases that expired (their collector crashed).
    pub async fn delete_expired_gc_leases(&self, task: &str) -> Result<(), StoreError> {
        for key in self.gc_leases(task).await?.expired {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.backend("delete", &key, e)),
            }
        }
        Ok(())
    }

    /// Reads a page and checks it against its name.
    pub async fn get_page(&self, task: &str, hash: &Hash) -> Result<Bytes, StoreError> {
        self.check_task(task)?;
        self.get_verified(&layout::page(&self.root, task, hash), hash)
            .await
    }

    /// Whether a page exists (its content is not checked).
    pub async fn has_page(&self, task: &str, hash: &Hash) -> Result<bool, StoreError> {
        self.check_task(task)?;
        let key = layout::page(&self.root, task, hash);
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend("head", &key, e)),
        }
    }

    /// Every page of `task` in the store, referenced or not. Objects under
    /// `pages/` not named like a page are left out.
    pub async fn list_pages(&self, task: &str) -> Result<Vec<StoredPage>, StoreError> {
        self.check_task(task)?;
        let prefix = layout::pages(&self.root, task);
        let objects = self.list_all(&prefix).await?;
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let hash = object.location.filename().and_then(Hash::from_hex)?;
                (object.location == layout::page(&self.root, task, &hash)).then_some(StoredPage {
                    hash,
                    bytes: object.size,
                    last_modified: object.last_modified,
                })
            })
            .collect())
    }

    /// Deletes a page (absent is fine).
    pub async fn delete_page(&self, task: &str, hash: &Hash) -> Result<(), StoreError> {
        self.check_task(task)?;
        let key = layout::page(&self.root, task, hash);
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend("delete", &key, e)),
        }
    }

    /// Reads an epoch's manifest whether or not it is committed (for garbage
    /// collection and inspection); `None` if there is none.
    pub async fn read_manifest(
        &self,
        task: &str,
        epoch: u64,
    ) -> Result<Option<Manifest>, StoreError> {
        self.check_task(task)?;
        let key = layout::manifest(&self.root, task, epoch);
        let bytes = match self.get(&key).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Manifest::decode(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Format {
                store: self.describe.clone(),
                key: key.to_string(),
                source,
            })
    }

    /// Stores a component's bytes under their hash; returns the hash.
    pub async fn put_component(&self, bytes: Bytes) -> Result<Hash, StoreError> {
        let hash = Hash::of(&bytes);
        self.put_new(&layout::component(&self.root, &hash), bytes)
            .await?;
        Ok(hash)
    }

    /// Reads a component and checks it against its hash.
    pub async fn get_component(&self, hash: &Hash) -> Result<Bytes, StoreError> {
        self.get_verified(&layout::component(&self.root, hash), hash)
            .await
    }

    /// Writes the manifest of an uncommitted epoch (replacing a leftover of
    /// a crashed attempt). Returns what the commit marker must name.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<CommitMarker, StoreError> {
        self.check_task(&manifest.task)?;
        let bytes = manifest.encode();
        let marker = CommitMarker {
            format_version: FORMAT_VERSION,
            manifest: Hash::of(&bytes),
            manifest_bytes: bytes.len() as u64,
        };
        let key = layout::manifest(&self.root, &manifest.task, manifest.epoch);
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| self.backend("put", &key, e))?;
        Ok(marker)
    }

    /// Makes `epoch` of `task` a recovery point. Idempotent for the same
    /// marker; a different marker already there is a [`StoreError::Conflict`].
    pub async fn commit(
        &self,
        task: &str,
        epoch: u64,
        marker: &CommitMarker,
    ) -> Result<(), StoreError> {
        self.check_task(task)?;
        let key = layout::commit(&self.root, task, epoch);
        match self.put_new(&key, Bytes::from(marker.encode())).await? {
            PutOutcome::Uploaded => Ok(()),
            PutOutcome::AlreadyPresent => {
                let existing = self.read_marker(task, epoch).await?;
                if existing == *marker {
                    Ok(())
                } else {
                    Err(StoreError::Conflict {
                        store: self.describe.clone(),
                        key: key.to_string(),
                    })
                }
            }
        }
    }

    async fn read_marker(&self, task: &str, epoch: u64) -> Result<CommitMarker, StoreError> {
        let key = layout::commit(&self.root, task, epoch);
        let bytes = self.get(&key).await?;
        CommitMarker::decode(&bytes).map_err(|source| StoreError::Format {
            store: self.describe.clone(),
            key: key.to_string(),
            source,
        })
    }

    /// Every object under `prefix`.
    async fn list_all(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend("list", prefix, e))
    }

    /// The epochs of a task, oldest first.
    pub async fn epochs(&self, task: &str) -> Result<Vec<EpochEntry>, StoreError> {
        self.check_task(task)?;
        let prefix = layout::epochs(&self.root, task);
        let objects = self.list_all(&prefix).await?;
        let mut entries = std::collections::BTreeMap::<u64, bool>::new();
        for object in objects {
            let mut parts = object.location.prefix_match(&prefix).into_iter().flatten();
            let (Some(dir), Some(file)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(epoch) = layout::parse_epoch(dir.as_ref()) else {
                continue;
            };
            let committed = entries.entry(epoch).or_insert(false);
            *committed |= file.as_ref() == "commit";
        }
        Ok(entries
            .into_iter()
            .map(|(epoch, committed)| EpochEntry { epoch, committed })
            .collect())
    }

    /// Reads a committed epoch's manifest, verified against its marker.
    pub async fn read_committed(&self, task: &str, epoch: u64) -> Result<Manifest, StoreError> {
        self.check_task(task)?;
        let marker = self.read_marker(task, epoch).await?;
        let key = layout::manifest(&self.root, task, epoch);
        let bytes = self.get_verified(&key, &marker.manifest).await?;
        let manifest = Manifest::decode(&bytes).map_err(|source| StoreError::Format {
            store: self.describe.clone(),
            key: key.to_string(),
            source,
        })?;
        if manifest.epoch != epoch || manifest.task != task {
            return Err(StoreError::Corrupt {
                store: self.describe.clone(),
                key: key.to_string(),
                reason: format!(
                    "it describes task {} epoch {}",
                    manifest.task, manifest.epoch
                ),
            });
        }
        Ok(manifest)
    }

    /// Deletes every object of an epoch (manifest, marker). Pages are shared
    /// between epochs and collected separately.
    pub async fn delete_epoch(&self, task: &str, epoch: u64) -> Result<(), StoreError> {
        self.check_task(task)?;
        // The marker goes first: an epoch without its marker is just garbage.
        for key in [
            layout::commit(&self.root, task, epoch),
            layout::manifest(&self.root, task, epoch),
        ] {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.backend("delete", &key, e)),
            }
        }
        if let Some(dir) = &self.local_dir {
            // The now empty epoch directory; anything else in it stays.
            let _ = std::fs::remove_dir(dir.join(layout::epoch(&self.root, task, epoch).as_ref()));
        }
        Ok(())
    }

    fn check_task(&self, task: &str) -> Result<(), StoreError> {
        if layout::is_valid_name(task) {
            Ok(())
        } else {
            Err(StoreError::InvalidName {
                name: task.to_owned(),
            })
        }
    }
}

/// What to check when access is denied to `place`.
fn access_hint(place: &str) -> &'static str {
    if place.starts_with("bucket") {
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
    } else {
        "the directory's owner and permissions"
    }
}

/// This machine's name and this process's pid namespace (Linux), which
/// make a pid in a lease meaningful here.
fn process_namespace() -> Option<(String, String)> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some((host.trim().to_owned(), pid_ns.display().to_string()))
}

/// [`UPLOAD_DEADLINE_ENV`], or its default.
fn upload_deadline() -> Result<Duration, String> {
    match std::env::var(UPLOAD_DEADLINE_ENV) {
        Err(_) => Ok(DEFAULT_UPLOAD_DEADLINE),
        Ok(text) => crate::inspect::units::parse_duration(&text)
            .map_err(|e| format!("{UPLOAD_DEADLINE_ENV}: {e}")),
    }
}

/// An S3 client for `bucket` configured by the `AWS_*` environment, with
/// weir's timeouts and retries where the environment sets none.
fn open_s3(bucket: &str) -> Result<(object_store::aws::AmazonS3, S3Place), String> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(s3_retry());
    for (var, key, default) in [
        (
            "AWS_CONNECT_TIMEOUT",
            ClientConfigKey::ConnectTimeout,
            S3_CONNECT_TIMEOUT,
        ),
        ("AWS_TIMEOUT", ClientConfigKey::Timeout, S3_REQUEST_TIMEOUT),
    ] {
        if std::env::var_os(var).is_none() {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), default);
        }
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let s3 = builder.build().map_err(|e| one_line(&e.to_string()))?;
    Ok((
        s3,
        S3Place {
            bucket: bucket.to_owned(),
            endpoint,
        },
    ))
}

/// What an `object_store` error says, taken apart: S3 puts its error code
/// and message in an XML body, which `object_store` only has as text.
#[derive(Debug, Default)]
struct Cause {
    /// The HTTP status, e.g. 403.
    status: Option<u16>,
    /// The S3 error code, e.g. `NoSuchBucket`.
    code: Option<String>,
    /// The S3 error message.
    message: Option<String>,
    /// The transport failure, when no reply came.
    transport: Option<(HttpErrorKind, String)>,
}

impl Cause {
    fn of(error: &object_store::Error) -> Cause {
        let text = error.to_string();
        let between = |open: &str, close: &str| {
            let start = text.find(open)? + open.len();
            let len = text[start..].find(close)?;
            Some(text[start..start + len].to_owned())
        };
        let status = text.find("status code: ").and_then(|at| {
            let digits = &text[at + "status code: ".len()..];
            digits.get(..3)?.parse().ok()
        });
        let mut transport = None;
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(http) = e.downcast_ref::<HttpError>() {
                transport = Some((http.kind(), innermost(http)));
                break;
            }
            current = e.source();
        }
        Cause {
            status,
            code: between("<Code>", "</Code>"),
            message: between("<Message>", "</Message>"),
            transport,
        }
    }

    /// A refusal that trying again will not change.
    fn is_final(&self, error: &object_store::Error) -> bool {
        match self.status {
            Some(status) => (400..500).contains(&status) && status != 408 && status != 429,
            None if self.transport.is_some() => false,
            None => matches!(
                error,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
        }
    }

    /// One line: `S3 error CODE (HTTP STATUS): MESSAGE`, `cannot connect:
    /// ...`, or the error's first line.
    fn describe(&self, error: &object_store::Error) -> String {
        if let Some(code) = &self.code {
            let status = self
                .status
                .map_or(String::new(), |s| format!(" (HTTP {s})"));
            let message = self
                .message
                .as_ref()
                .map_or(String::new(), |m| format!(": {m}"));
            return format!("S3 error {code}{status}{message}");
        }
        if let Some(status) = self.status {
            return format!("HTTP {status} from the server");
        }
        if let Some((kind, what)) = &self.transport {
            let kind = match kind {
                HttpErrorKind::Connect => "cannot connect",
                HttpErrorKind::Timeout => "timed out",
                HttpErrorKind::Request => "request failed",
                HttpErrorKind::Interrupted => "connection interrupted",
                HttpErrorKind::Decode => "cannot read the reply",
                _ => "transport error",
            };
            return format!("{kind}: {what}");
        }
        one_line(&error.to_string())
    }
}

/// The deepest source of an error: what the OS or the HTTP stack said.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    one_line(&last.to_string())
}

/// `text` on one line, at most 300 characters.
fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}
