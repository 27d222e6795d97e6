//! Recorded inputs: what an operator's clocks, random streams and lookups
//! return, so that every replay of the same records sees the same values
//! (docs/determinism.md is the reference for operator authors).
//!
//! - **Clocks** ([`super::clock`]). Both WASI clocks read the *recorded
//!   time of the batch* being processed, which the task sets before each
//!   call ([`TaskInputs::clock`]): the wall clock as that time, the
//!   monotonic clock as the same instant in nanoseconds. Time does not pass
//!   during a call.
//! - **Randomness.** Each instance has two byte streams
//!   ([`RandomStream`]), for `wasi:random/random` and
//!   `wasi:random/insecure`: blake3 in extendable-output mode, keyed by the
//!   task's recorded seed and the operator's name. How many bytes an
//!   instance has drawn is part of its captured state
//!   ([`RecordedState`]), so a restored instance continues the stream where
//!   the checkpoint left it. `insecure-seed` is a constant derived the same
//!   way.
//! - **Lookups** (`weir:operator/recorded`). Numbered per instance; the
//!   answer to number n comes from the [`LookupBook`] when it has one, and
//!   is otherwise performed, written ahead to the task's [`LookupLog`], and
//!   only then returned.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::clock::{RecordedMonotonicClock, RecordedWallClock, TaskClock};
use crate::checkpoint::{LookupAnswer, LookupEntry, LookupRequest, RecordedState};

/// What weir does when it cannot run WASI clocks and randomness from
/// recorded values: for the benchmark that measures what recording costs.
/// Off (recording on) unless a program sets it through
/// [`set_unrecorded_for_benchmarks`]; neither the command nor a pipeline
/// file can.
static UNRECORDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes instances created from now on in this process use the host's
/// clocks and entropy instead of recorded values, as a weir without
/// recording would. Only for measuring the cost of recording; replays of
/// such a run are not deterministic.
#[doc(hidden)]
pub fn set_unrecorded_for_benchmarks(unrecorded: bool) {
    UNRECORDED.store(unrecorded, Ordering::Relaxed);
}

/// Whether recording is on (see [`set_unrecorded_for_benchmarks`]).
pub fn recording() -> bool {
    !UNRECORDED.load(Ordering::Relaxed)
}

/// The recorded inputs of one task, shared by the task (which records and
/// sets them) and its operator instances (which read them).
#[derive(Clone)]
pub struct TaskInputs {
    shared: Arc<Shared>,
}

struct Shared {
    seed: [u8; 32],
    clock: Arc<TaskClock>,
    book: Mutex<LookupBook>,
    policy: Arc<LookupPolicy>,
    /// Where answers performed live are written before they are returned;
    /// `None` when the task keeps no checkpoints (nothing to recover into).
    log: Option<Arc<dyn LookupLog>>,
    /// A replay (`weir verify`) answers from the journal only.
    replay_only: bool,
    http: OnceLock<Result<HttpClient, String>>,
}

impl Default for TaskInputs {
    /// Inputs with seed zero, time zero, no lookups allowed and nothing
    /// recorded: for instances outside a pipeline (tests, benchmarks).
    fn default() -> Self {
        TaskInputs::new([0; 32], Arc::default(), None, false)
    }
}

impl TaskInputs {
    /// Inputs for a task with `seed`, the lookups `policy` allows, the
    /// write-ahead `log` (if the task checkpoints), and whether lookups
    /// may only be answered from what is already recorded (a replay).
    pub fn new(
        seed: [u8; 32],
        policy: Arc<LookupPolicy>,
        log: Option<Arc<dyn LookupLog>>,
        replay_only: bool,
    ) -> TaskInputs {
        TaskInputs {
            shared: Arc::new(Shared {
                seed,
                clock: Arc::default(),
                book: Mutex::default(),
                policy,
                log,
                replay_only,
                http: OnceLock::new(),
            }),
        }
    }

    /// The task's seed.
    pub fn seed(&self) -> [u8; 32] {
        self.shared.seed
    }

    /// The task's recorded clock: what the operators' clocks return.
    pub fn clock(&self) -> &TaskClock {
        &self.shared.clock
    }

    /// The two random streams of operator `operator`, positioned at `at`.
    pub(super) fn random_streams(
        &self,
        operator: &str,
        at: &RecordedState,
    ) -> (RandomStream, RandomStream) {
        (
            RandomStream::new(self.key(operator, "random"), at.random_bytes),
            RandomStream::new(self.key(operator, "insecure"), at.insecure_random_bytes),
        )
    }

    /// What `wasi:random/insecure-seed` returns to `operator`.
    pub(super) fn insecure_seed(&self, operator: &str) -> u128 {
        let key = self.key(operator, "insecure-seed");
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&key[..16]);
        u128::from_le_bytes(bytes)
    }

    fn key(&self, operator: &str, stream: &str) -> [u8; 32] {
        let mut material = Vec::with_capacity(32 + operator.len());
        material.extend_from_slice(&self.shared.seed);
        material.extend_from_slice(operator.as_bytes());
        blake3::derive_key(&format!("weir recorded inputs v1 {stream}"), &material)
    }

    /// The clocks that read the recorded time.
    pub(super) fn clocks(&self) -> (RecordedWallClock, RecordedMonotonicClock) {
        (
            RecordedWallClock(self.shared.clock.clone()),
            RecordedMonotonicClock(self.shared.clock.clone()),
        )
    }

    /// Adds answers recorded earlier (the lookup log after a crash, or an
    /// epoch's journal for a replay). An answer already known is kept.
    pub fn add_recorded(&self, operator: &str, entries: impl IntoIterator<Item = LookupEntry>) {
        let mut book = self.book();
        let answers = book.answers.entry(operator.to_owned()).or_default();
        for entry in entries {
            answers
                .entry(entry.index)
                .or_insert((entry.request, entry.answer));
        }
    }

    /// Closes the epoch of `operator` at a capture where its instance had
    /// made `lookups` lookups: returns the entries numbered from the
    /// previous close (or the restore) up to `lookups`, and forgets them.
    pub fn close_epoch(&self, operator: &str, lookups: u64) -> Vec<LookupEntry> {
        let mut book = self.book();
        let floor = book.floors.get(operator).copied().unwrap_or(0);
        book.floors.insert(operator.to_owned(), lookups);
        let Some(answers) = book.answers.get_mut(operator) else {
            return Vec::new();
        };
        let newer = answers.split_off(&lookups);
        let closed = std::mem::replace(answers, newer);
        closed
            .into_iter()
            .filter(|(index, _)| *index >= floor)
            .map(|(index, (request, answer))| LookupEntry {
                index,
                request,
                answer,
            })
            .collect()
    }

    /// Notes that `operator`'s instance was restored (or created) having made
    /// `lookups` lookups: the epoch's lookups are numbered from there.
    pub fn restored(&self, operator: &str, lookups: u64) {
        self.book().floors.insert(operator.to_owned(), lookups);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, LookupBook> {
        self.shared.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lookup number `index` of `operator`: from the book if recorded,
    /// else checked against the policy, performed, logged and recorded.
    /// `Ok(None)`: denied by the policy (nothing recorded, not counted).
    /// `Err`: the guest must trap (the message says why).
    pub(super) fn lookup(
        &self,
        operator: &str,
        index: u64,
        request: LookupRequest,
    ) -> Result<Result<LookupAnswer, String>, String> {
        let recorded = self
            .book()
            .answers
            .get(operator)
            .and_then(|answers| answers.get(&index))
            .cloned();
        // A recorded answer stands even if the pipeline file no longer
        // allows it: a replay must see what the run saw.
        if let Some((_, answer)) = recorded.as_ref().filter(|(r, _)| *r == request) {
            return Ok(Ok(answer.clone()));
        }
        // Denied requests are neither counted nor recorded.
        if let Err(denied) = self.shared.policy.check(&request) {
            return Ok(Err(denied));
        }
        if let Some((recorded, _)) = recorded {
            return Err(format!(
                "operator `{operator}` asked for `{request}` as its lookup #{index}, but the \
                 journal recorded `{recorded}` for #{index}: its lookups do not depend on its \
                 records alone (replays must ask the same questions in the same order)"
            ));
        }
        if self.shared.replay_only {
            return Err(format!(
                "operator `{operator}` asked for `{request}` as its lookup #{index}, which the \
                 epoch journal does not hold: the replay diverged from the recorded run"
            ));
        }
        let answer = self.perform(&request);
        let entry = LookupEntry {
            index,
            request,
            answer,
        };
        if let Some(log) = &self.shared.log {
            log.append(operator, &entry).map_err(|e| {
                format!(
                    "operator `{operator}`: lookup #{index} (`{}`) could not be written to the \
                     lookup log, so its answer is not returned: {e}",
                    entry.request
                )
            })?;
        }
        let answer = entry.answer.clone();
        self.add_recorded(operator, [entry]);
        Ok(Ok(answer))
    }

    fn perform(&self, request: &LookupRequest) -> LookupAnswer {
        let policy = &self.shared.policy;
        match request {
            LookupRequest::ReadFile { path } => {
                let Some(file) = policy.file(path) else {
                    return LookupAnswer::Failed {
                        message: format!("`{path}` is not allowed"),
                    };
                };
                read_file(file, policy.max_response_bytes)
            }
            LookupRequest::HttpGet { url } => {
                let client = self
                    .shared
                    .http
                    .get_or_init(|| HttpClient::new(policy.timeout));
                match client {
                    Ok(client) => client.get(url, policy.max_response_bytes),
                    Err(e) => LookupAnswer::Failed {
                        message: format!("weir could not start its HTTP client: {e}"),
                    },
                }
            }
        }
    }
}

/// Where answers performed live go before the operator sees them.
pub trait LookupLog: Send + Sync {
    /// Writes `entry` of `operator` durably.
    fn append(&self, operator: &str, entry: &LookupEntry) -> Result<(), String>;
}

/// The answers a task knows, per operator and number.
#[derive(Debug, Default)]
struct LookupBook {
    answers: HashMap<String, BTreeMap<u64, (LookupRequest, LookupAnswer)>>,
    /// Per operator, the number of its first lookup of the current epoch.
    floors: HashMap<String, u64>,
}

/// What `[determinism.lookups]` allows.
#[derive(Debug, Clone, Default)]
pub struct LookupPolicy {
    /// URL prefixes `http-get` may fetch (normalized).
    pub http: Vec<String>,
    /// Files `read-file` may read: the name an operator uses, and the file.
    pub files: Vec<(String, PathBuf)>,
    /// Timeout of one HTTP GET.
    pub timeout: Duration,
    /// Longest answer accepted, in bytes.
    pub max_response_bytes: u64,
}

impl LookupPolicy {
    /// `Err(reason)` unless the policy allows `request`.
    pub fn check(&self, request: &LookupRequest) -> Result<(), String> {
        match request {
            LookupRequest::HttpGet { url } => {
                let normalized = normalize_url(url)
                    .map_err(|e| format!("`{url}` is not an http(s) URL weir can fetch: {e}"))?;
                if self.http.iter().any(|p| url_allowed(p, &normalized)) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{normalized}` is not allowed: add a prefix of it to \
                         [determinism.lookups] http in the pipeline file (allowed: {})",
                        list_or_none(&self.http)
                    ))
                }
            }
            LookupRequest::ReadFile { path } => {
                if self.file(path).is_some() {
                    Ok(())
                } else {
                    let names: Vec<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
                    Err(format!(
                        "`{path}` is not allowed: add it to [determinism.lookups] files in the \
                         pipeline file (allowed: {})",
                        list_or_none(&names)
                    ))
                }
            }
        }
    }

    fn file(&self, name: &str) -> Option<&PathBuf> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The URL as weir fetches it (scheme and host lower case, `..` resolved),
/// or why it cannot be fetched.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` (only http and https)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL".into());
    }
    Ok(parsed.to_string())
}

/// Whether `prefix` (normalized) allows `url` (normalized): equal, or a
/// prefix ending in `/` (so `http://h/a/` does not allow `http://h/ab`).
fn url_allowed(prefix: &str, url: &str) -> bool {
    url == prefix || (prefix.ends_with('/') && url.starts_with(prefix))
}

fn read_file(path: &std::path::Path, limit: u64) -> LookupAnswer {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            return LookupAnswer::Failed {
                message: e.to_string(),
            };
        }
    };
    let mut bytes = Vec::new();
    match file.take(limit.saturating_add(1)).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > limit => LookupAnswer::TooLarge { limit },
        Ok(_) => LookupAnswer::File { bytes },
        Err(e) => LookupAnswer::Failed {
            message: e.to_string(),
        },
    }
}

/// A blocking HTTP client: reqwest on a runtime of its own, so it works on
/// the task's thread whatever else runs there.
struct HttpClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl HttpClient {
    fn new(timeout: Duration) -> Result<HttpClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpClient { runtime, client })
    }

    fn get(&self, url: &str, limit: u64) -> LookupAnswer {
        let request = self.client.get(url).send();
        self.runtime.block_on(async {
            let mut response = match request.await {
                Ok(response) => response,
                Err(e) => {
                    return LookupAnswer::Failed {
                        message: error_chain(&e),
                    };
                }
            };
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        body.extend_from_slice(&chunk);
                        if body.len() as u64 > limit {
                            return LookupAnswer::TooLarge { limit };
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return LookupAnswer::Failed {
                            message: error_chain(&e),
                        };
                    }
                }
            }
            LookupAnswer::Http {
                status,
                headers,
                body,
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A deterministic random byte stream: blake3's extendable output under a
/// key, read from a position that counts the bytes drawn so far. Clones
/// share the position (one is in the WASI context, one with the host state
/// that captures it).
#[derive(Clone)]
pub struct RandomStream {
    key: [u8; 32],
    position: Arc<AtomicU64>,
}

impl RandomStream {
    fn new(key: [u8; 32], position: u64) -> RandomStream {
        RandomStream {
            key,
            position: Arc::new(AtomicU64::new(position)),
        }
    }

    /// Bytes drawn so far.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// Continues from `position` bytes into the stream.
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// Fills `dst` with the next bytes of the stream.
    pub fn fill(&self, dst: &mut [u8]) {
        let at = self.position.fetch_add(dst.len() as u64, Ordering::Relaxed);
        let mut reader = blake3::Hasher::new_keyed(&self.key).finalize_xof();
        reader.set_position(at);
        reader.fill(dst);
    }
}

impl rand_core::TryRng for RandomStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_continues_from_any_position_with_the_same_bytes() {
        let stream = RandomStream::new([7; 32], 0);
        let mut all = [0u8; 100];
        stream.fill(&mut all);
        let resumed = RandomStream::new([7; 32], 37);
        let mut rest = [0u8; 63];
        resumed.fill(&mut rest);
        assert_eq!(&all[37..], &rest[..]);
        assert_eq!(resumed.position(), 100);
        let other = RandomStream::new([8; 32], 0);
        let mut different = [0u8; 100];
        other.fill(&mut different);
        assert_ne!(all, different);
    }

    #[test]
    fn url_prefixes_allow_only_below_a_slash() {
        let policy = LookupPolicy {
            http: vec![normalize_url("http://127.0.0.1:8080/rates/").unwrap_or_default()],
            ..LookupPolicy::default()
        };
        let get = |url: &str| LookupRequest::HttpGet { url: url.into() };
        assert!(
            policy
                .check(&get("http://127.0.0.1:8080/rates/eur"))
                .is_ok()
        );
        assert!(
            policy
                .check(&get("HTTP://127.0.0.1:8080/rates/x/../eur"))
                .is_ok()
        );
        assert!(policy.check(&get("http://127.0.0.1:8080/ratesx")).is_err());
        assert!(
            policy
                .check(&get("http://127.0.0.1:8080/rates/../admin"))
                .is_err()
        );
        assert!(policy.check(&get("file:///etc/passwd")).is_err());
    }

    #[test]
    fn lookups_are_answered_from_the_record_first_and_denied_ones_not_counted() {
        let dir = std::env::temp_dir().join(format!("weir-recorded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("rates");
        std::fs::write(&file, b"1.08").unwrap_or_default();
        let policy = LookupPolicy {
            files: vec![("rates".into(), file)],
            max_response_bytes: 1 << 20,
            ..LookupPolicy::default()
        };
        let read = |path: &str| LookupRequest::ReadFile { path: path.into() };
        let live = TaskInputs::new([1; 32], Arc::new(policy), None, false);
        assert!(matches!(live.lookup("op", 0, read("secret")), Ok(Err(_))));
        let first = live.lookup("op", 0, read("rates"));
        assert_eq!(
            first,
            Ok(Ok(LookupAnswer::File {
                bytes: b"1.08".to_vec()
            }))
        );
        // A replay with nothing allowed still gets what was recorded, and
        // a different question for #0 is a divergence.
        let replay = TaskInputs::new([1; 32], Arc::default(), None, true);
        replay.add_recorded("op", live.close_epoch("op", 1));
        assert_eq!(replay.lookup("op", 0, read("rates")), first);
        assert!(
            replay
                .lookup("op", 0, read("other"))
                .is_ok_and(|r| r.is_err()),
            "not allowed, so denied before anything else"
        );
        let open = LookupPolicy {
            files: vec![("other".into(), dir.join("other"))],
            ..LookupPolicy::default()
        };
        let strict = TaskInputs::new([1; 32], Arc::new(open), None, true);
        strict.add_recorded(
            "op",
            [LookupEntry {
                index: 0,
                request: read("rates"),
                answer: LookupAnswer::TooLarge { limit: 1 },
            }],
        );
        let mismatch = strict.lookup("op", 0, read("other")).err();
        assert!(
            mismatch
                .as_deref()
                .is_some_and(|m| m.contains("journal recorded `read-file rates`")),
            "{mismatch:?}"
        );
        let missing = strict.lookup("op", 1, read("other")).err();
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("does not hold")),
            "{missing:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn epochs_close_with_their_own_lookups() {
        let inputs = TaskInputs::default();
        let entry = |index| LookupEntry {
            index,
            request: LookupRequest::ReadFile { path: "f".into() },
            answer: LookupAnswer::Failed {
                message: index.to_string(),
            },
        };
        inputs.add_recorded("op", (0..5).map(entry));
        assert_eq!(inputs.close_epoch("op", 2), vec![entry(0), entry(1)]);
        assert_eq!(inputs.close_epoch("op", 4), vec![entry(2), entry(3)]);
        assert_eq!(inputs.close_epoch("op", 4), vec![]);
        assert_eq!(inputs.close_epoch("other", 0), vec![]);
    }
}
