//! [`CheckpointStore`]: the checkpoint layout on any `object_store` backend.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::layout;
use super::manifest::{CommitMarker, DecodeError, FORMAT_VERSION, Hash, Manifest};

/// A failure of the checkpoint store, naming the object concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, network, permissions).
    #[error("checkpoint store {store}: {operation} {key}: {source}")]
    Backend {
        /// The store, e.g. `file:///data/weir`.
        store: String,
        /// What was being done.
        operation: &'static str,
        /// The object key.
        key: String,
        /// The backend's error (boxed: it is large).
        #[source]
        source: Box<object_store::Error>,
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

/// The checkpoints of one pipeline in an object store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    describe: String,
    /// The directory of a local store.
    local_dir: Option<std::path::PathBuf>,
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
        })
    }

    /// Opens the checkpoints of `pipeline` at `location`:
    ///
    /// - a local directory (`weir-data`, `/var/lib/weir`, `file:///var/lib/weir`),
    ///   created if missing;
    /// - `s3://bucket/prefix` on S3 or any S3-compatible server, configured
    ///   by the `AWS_*` environment variables (`AWS_ENDPOINT_URL`,
    ///   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    ///   `AWS_ALLOW_HTTP=true` for a plain-http endpoint);
    /// - `memory://` for tests (gone with the process).
    pub fn open(location: &str, pipeline: &str) -> Result<CheckpointStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            location: location.to_owned(),
            reason,
        };
        let (store, root): (Arc<dyn ObjectStore>, Path) = if location == "memory://" {
            (
                Arc::new(object_store::memory::InMemory::new()),
                Path::from(""),
            )
        } else if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail(
                    "no bucket: write s3://BUCKET or s3://BUCKET/PREFIX".into(),
                ));
            }
            // Endpoint, region, credentials and allow_http come from AWS_*
            // variables, as with the AWS tools.
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            (Arc::new(s3), Path::from(prefix))
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
            return Ok(store);
        };
        CheckpointStore::new(store, root, pipeline, location.to_owned())
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

    fn backend(
        &self,
        operation: &'static str,
        key: &Path,
        source: object_store::Error,
    ) -> StoreError {
        let unusable = |reason: &str| StoreError::Open {
            location: self.describe.clone(),
            reason: reason.to_owned(),
        };
        match source {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => unusable(
                "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy",
            ),
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                store: self.describe.clone(),
                key: key.to_string(),
            },
            source => StoreError::Backend {
                store: self.describe.clone(),
                operation,
                key: key.to_string(),
                source: Box::new(source),
            },
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
