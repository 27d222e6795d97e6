//! The pipeline file: one TOML document describing source, operators, sinks
//! and limits.
//!
//! Every key is documented once, on its field, with its default and unit.
//! Unknown keys are errors. All errors name the file, line and column, and the
//! key path (`operators[0].component`), so a user can go straight to the
//! offending line.
//!
//! Relative paths in the file are resolved against the directory holding the
//! pipeline file, never against the current directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A pipeline file that parsed and passed validation.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Where the file was read from.
    pub file: PathBuf,
    /// The parsed content, with relative paths already resolved.
    pub spec: PipelineSpec,
}

/// The content of a pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline. Required. Used in logs, checkpoint paths and
    /// (later) transactional ids, so keep it stable across deploys.
    pub name: String,
    /// Where records come from. Required.
    pub source: SourceSpec,
    /// The operator chain, in order. May be empty (records flow straight to
    /// the `main` sink).
    #[serde(default)]
    pub operators: Vec<OperatorSpec>,
    /// Sinks by name. The main stream of the last operator goes to `main`;
    /// side outputs go to the sink of the name the operator gives.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// How records are grouped into calls.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Resource limits for every operator instance.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// What to do with a record that an operator cannot process.
    #[serde(default)]
    pub errors: ErrorsSpec,
    /// When and where operator state is checkpointed.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// What operators may call, and what weir records for replays.
    #[serde(default)]
    pub determinism: DeterminismSpec,
}

/// `[source]`: where records come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceSpec {
    /// Newline-delimited records in a local file. Replayable from any line.
    File {
        /// Path of the file (relative to the pipeline file). Required.
        path: PathBuf,
        /// How a line becomes a record. Default `lines`.
        #[serde(default)]
        format: LineFormat,
        /// Longest accepted line in bytes, without the newline. A longer line
        /// is malformed (the error policy applies). Default 1 MiB.
        #[serde(default = "default_max_line_bytes")]
        max_line_bytes: usize,
    },
    /// A deterministic generator of synthetic records, for benchmarks and
    /// tests. Record `i` is a pure function of `(profile, seed, i)`.
    Generator {
        /// Shape of the records. Required.
        profile: crate::source::GeneratorProfile,
        /// How many records to produce. Required.
        records: u64,
        /// Seed of the generator. Default 0.
        #[serde(default)]
        seed: u64,
    },
    /// A Kafka topic. Every partition is a task with its own operator
    /// instances and checkpoints (task name `<topic>-<partition>`);
    /// positions are offsets. Partitions are shared out among the `weir`
    /// processes running this pipeline through Kafka's consumer-group
    /// protocol (group `group`), unless `partitions` lists them. Records
    /// are read with `isolation.level = read_committed`.
    Kafka(KafkaSourceSpec),
}

/// `[source] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Brokers to connect to first, `host:port[,host:port...]`. Required.
    pub bootstrap: String,
    /// The topic to read. Required. Letters, digits, `.`, `_`, `-`; at most
    /// 120 characters (it names tasks and checkpoint directories).
    pub topic: String,
    /// The consumer group: processes with the same group share the
    /// partitions, and exactly-once Kafka sinks commit the consumed offsets
    /// to it. Required.
    pub group: String,
    /// Where a partition with no checkpoint and no committed offset starts:
    /// `earliest` (default) or `latest` (resolved once, when its task
    /// starts).
    #[serde(default)]
    pub start: KafkaStart,
    /// Read exactly these partitions instead of joining the group's
    /// partition assignment (no rebalancing; offsets are still committed to
    /// `group`). Default: unset, the group assigns.
    #[serde(default)]
    pub partitions: Option<Vec<u32>>,
    /// End the run once every partition this process holds is read to its
    /// end (for backfills and tests). Default `false`: run until stopped.
    #[serde(default)]
    pub stop_at_end: bool,
    /// librdkafka consumer properties, e.g. `"session.timeout.ms" = 10000`.
    /// Those weir sets itself (`bootstrap.servers`, `group.id`,
    /// `enable.auto.commit`, `isolation.level`, `auto.offset.reset`,
    /// `enable.partition.eof`) are refused. Default empty.
    #[serde(default)]
    pub properties: BTreeMap<String, ConfigValue>,
}

/// Where a Kafka partition without checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaStart {
    /// The oldest record the partition still holds.
    #[default]
    Earliest,
    /// The end of the partition: only records written later are read.
    Latest,
}

/// How a Kafka sink delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaDelivery {
    /// One Kafka transaction per task and epoch holding the epoch's outputs
    /// and the consumed offsets, committed after the checkpoint; a
    /// `read_committed` reader sees every output exactly once. Needs a
    /// Kafka source and checkpoints.
    ExactlyOnce,
    /// An idempotent producer, flushed at every barrier: nothing is lost,
    /// and after a crash outputs since the last checkpoint are written
    /// again.
    AtLeastOnce,
}

/// `[sinks.NAME] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// The topic to write. Required. Each output's key and headers become
    /// the record's; the partition is chosen from the key by librdkafka's
    /// partitioner.
    pub topic: String,
    /// `exactly-once` or `at-least-once`. Required.
    pub delivery: KafkaDelivery,
    /// Brokers, `host:port[,...]`. Default: the Kafka source's `bootstrap`
    /// (required without a Kafka source).
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// librdkafka producer properties, e.g. `"linger.ms" = 20`. Those weir
    /// sets itself (`bootstrap.servers`, `transactional.id`,
    /// `enable.idempotence`) are refused. All exactly-once Kafka sinks of a
    /// pipeline share one transactional producer per task, so they must
    /// have the same `bootstrap` and `properties`. Default empty.
    #[serde(default)]
    pub properties: BTreeMap<String, ConfigValue>,
}

/// Consumer properties weir sets itself.
const KAFKA_SOURCE_OWN_PROPERTIES: [&str; 6] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "isolation.level",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// Producer properties weir sets itself.
const KAFKA_SINK_OWN_PROPERTIES: [&str; 3] = [
    "bootstrap.servers",
    "transactional.id",
    "enable.idempotence",
];

/// The `transaction.timeout.ms` weir gives its transactional producers
/// unless the sink's properties say otherwise: 10 minutes (librdkafka's
/// default is 1 minute; brokers allow up to `transaction.max.timeout.ms`,
/// 15 minutes by default). An epoch's transaction stays open while its
/// checkpoint is stored, and storing may wait out an object-store outage
/// (`WEIR_CHECKPOINT_UPLOAD_DEADLINE`, 5 minutes) or a garbage collector's
/// lease (up to 2.5 minutes); a shorter timeout would have the coordinator
/// abort the transaction under a healthy process and fence it.
pub const KAFKA_TRANSACTION_TIMEOUT_MS: u64 = 600_000;

/// Properties as librdkafka takes them: `(key, value)` strings.
pub fn kafka_properties(properties: &BTreeMap<String, ConfigValue>) -> Vec<(String, String)> {
    properties
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn default_max_line_bytes() -> usize {
    1 << 20
}

/// How a line of a file source becomes a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineFormat {
    /// The line's bytes are the value; no key, no timestamp. Any bytes are
    /// accepted except a line longer than `max_line_bytes`.
    #[default]
    Lines,
    /// Each line is a JSON object `{"key": string?, "value": string,
    /// "timestamp_ms": integer?, "headers": {name: string}?}`. A line that is
    /// not such an object is malformed.
    Jsonl,
}

/// `[[operators]]`: one operator of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Name of the operator, unique in the pipeline. Required. Appears in
    /// every error and log line about the operator.
    pub name: String,
    /// Path of the `.wasm` component (relative to the pipeline file).
    /// Required.
    pub component: PathBuf,
    /// Configuration handed to the operator's `init`, as `(key, value)`
    /// strings sorted by key. Strings, integers, floats and booleans are
    /// accepted and passed in their TOML text form. Default empty.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
}

/// A scalar in an operator's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::Bool(b) => write!(f, "{b}"),
            ConfigValue::Integer(i) => write!(f, "{i}"),
            ConfigValue::Float(x) => write!(f, "{x}"),
            ConfigValue::String(s) => f.write_str(s),
        }
    }
}

impl OperatorSpec {
    /// The configuration as `init` receives it.
    pub fn init_config(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// `[sinks.NAME]`: where outputs go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkSpec {
    /// Appends each output's value and a newline to a local file. Created
    /// (with its directory) if missing; truncated at the start of a run
    /// from scratch, appended to when a run resumes from a checkpoint. Not
    /// transactional: after a crash, outputs written since the last
    /// checkpoint are written again (at least once). Use `parts` for
    /// exactly-once output.
    File {
        /// Path of the file (relative to the pipeline file). Required.
        path: PathBuf,
    },
    /// Exactly-once files: the outputs of each checkpoint epoch go to one
    /// part file, `<dir>/part-<epoch>.<extension>`, which appears (by an
    /// atomic rename) only once the checkpoint covering it has committed.
    /// Concatenating the parts in name order gives the committed output.
    Parts {
        /// Directory of the part files (relative to the pipeline file).
        /// Created if missing. Required.
        dir: PathBuf,
        /// Extension of the part files. Default `txt`.
        #[serde(default = "default_parts_extension")]
        extension: String,
    },
    /// Writes each output's value and a newline to standard output.
    Stdout,
    /// Counts outputs and drops them. For benchmarks.
    Null,
    /// A Kafka topic, exactly once (transactions) or at least once.
    Kafka(KafkaSinkSpec),
}

fn default_parts_extension() -> String {
    "txt".into()
}

/// `[batch]`: how records are grouped into calls to `process`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most records in one call. Larger batches amortize the call overhead;
    /// smaller ones bound latency and the work lost to a trap. Default 1024,
    /// range 1..=65536.
    #[serde(default = "default_batch_records")]
    pub max_records: usize,
}

fn default_batch_records() -> usize {
    1024
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_records: default_batch_records(),
        }
    }
}

/// `[limits]`: resources an operator instance may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// CPU budget in fuel units (about one per WebAssembly instruction) per
    /// record of a batch; a batch of n records may use n times this. A call
    /// that runs out traps with "CPU limit exceeded". Default 10,000,000.
    #[serde(default = "default_fuel_per_record")]
    pub fuel_per_record: u64,
    /// Largest linear memory an instance may grow to, in MiB. A guest that
    /// asks for more is refused the memory (it usually traps) and the error
    /// says "memory limit reached". Default 512.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
}

fn default_fuel_per_record() -> u64 {
    10_000_000
}

fn default_memory_mib() -> u64 {
    512
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            fuel_per_record: default_fuel_per_record(),
            memory_mib: default_memory_mib(),
        }
    }
}

/// `[errors]`: what happens to a record that cannot be processed (malformed
/// at the source, refused by an operator, or making an operator trap).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    /// `stop` (default): stop the pipeline with an error naming the operator,
    /// the record's position and the reason. `dead-letter`: write the record
    /// and the reason to the sink named by `dead_letter_sink` and continue.
    #[serde(default)]
    pub policy: ErrorPolicy,
    /// Sink that receives dead letters, as JSON lines. Required when
    /// `policy = "dead-letter"`; must name a sink in `[sinks]`.
    #[serde(default)]
    pub dead_letter_sink: Option<String>,
}

impl Default for ErrorsSpec {
    fn default() -> Self {
        ErrorsSpec {
            policy: ErrorPolicy::Stop,
            dead_letter_sink: None,
        }
    }
}

/// See [`ErrorsSpec::policy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the pipeline.
    #[default]
    Stop,
    /// Write to the dead-letter sink and continue.
    DeadLetter,
}

/// `[checkpoint]`: barrier checkpoints of operator state and source position.
///
/// A barrier is taken after a batch once `interval_records` records or
/// `interval_ms` milliseconds have passed since the previous one (whichever
/// comes first; 0 turns a trigger off), and at the end of a bounded source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Take checkpoints and recover from them. Default `true`. With
    /// `false`, every run starts from scratch and outputs are at least once.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where checkpoints are stored: a local directory (relative to the
    /// pipeline file), `file:///absolute/dir`, or `s3://bucket/prefix` (the
    /// endpoint, region and credentials come from the usual `AWS_*`
    /// environment variables). Default `weir-data`, next to the pipeline
    /// file.
    #[serde(default = "default_checkpoint_store")]
    pub store: String,
    /// Barrier after this many records since the previous one. Default 0
    /// (off).
    #[serde(default)]
    pub interval_records: u64,
    /// Barrier after this many milliseconds since the previous one.
    /// Default 1000.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Committed checkpoints kept; older ones and the pages only they
    /// reference are deleted. Default 3, at least 1.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_true() -> bool {
    true
}

fn default_checkpoint_store() -> String {
    "weir-data".into()
}

fn default_interval_ms() -> u64 {
    1000
}

fn default_keep() -> u32 {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            enabled: true,
            store: default_checkpoint_store(),
            interval_records: 0,
            interval_ms: default_interval_ms(),
            keep: default_keep(),
        }
    }
}

/// `[determinism]`: what an operator may call and how its recorded inputs
/// are made (docs/determinism.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterminismSpec {
    /// What happens to a component that imports what weir denies (files,
    /// sockets, HTTP, interfaces weir does not provide): `strict` (default)
    /// refuses it at load, naming every such import; `trap` loads it, and a
    /// call to a denied function traps (the error policy applies).
    #[serde(default)]
    pub denied: crate::operator::DeniedPolicy,
    /// Seed of the operators' random streams (`wasi:random`), a number.
    /// Default: 32 bytes from the operating system, drawn when a task first
    /// starts and recorded in every checkpoint; a resumed task always keeps
    /// the seed it started with.
    #[serde(default)]
    pub seed: Option<u64>,
    /// How often the operators' clocks may advance, in milliseconds: a
    /// batch read less than this after the time in force was recorded
    /// gets the same time. Each new time an operator reads is written to
    /// the checkpoint store first (one small write per task per period at
    /// most), so that a run recovering after a crash gives records the
    /// same time. Default 100, at least 1.
    #[serde(default = "default_clock_resolution_ms")]
    pub clock_resolution_ms: u64,
    /// Outside reads operators may make through `weir:operator/recorded`.
    #[serde(default)]
    pub lookups: LookupsSpec,
}

impl Default for DeterminismSpec {
    fn default() -> Self {
        DeterminismSpec {
            denied: Default::default(),
            seed: None,
            clock_resolution_ms: default_clock_resolution_ms(),
            lookups: LookupsSpec::default(),
        }
    }
}

fn default_clock_resolution_ms() -> u64 {
    100
}

/// `[determinism.lookups]`: what `http-get` and `read-file` may reach. Each
/// answer is recorded before the operator gets it and replayed from the
/// record afterwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupsSpec {
    /// URL prefixes `http-get` may fetch (`http://` or `https://`). A URL is
    /// allowed if it equals an entry, or starts with an entry that ends in
    /// `/`. Default empty: no HTTP.
    #[serde(default)]
    pub http: Vec<String>,
    /// Files `read-file` may read, written exactly as operators ask for
    /// them; a relative one is relative to the pipeline file. Default
    /// empty: no files.
    #[serde(default)]
    pub files: Vec<String>,
    /// Timeout of one HTTP GET, in milliseconds (a timeout is recorded as a
    /// failed lookup). Default 10,000.
    #[serde(default = "default_lookup_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest answer (HTTP body or file) in bytes; a longer one is recorded
    /// as `too-large`. Default 1,048,576 (1 MiB), at most 64 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_lookup_timeout_ms() -> u64 {
    10_000
}

fn default_max_response_bytes() -> u64 {
    1 << 20
}

impl Default for LookupsSpec {
    fn default() -> Self {
        LookupsSpec {
            http: Vec::new(),
            files: Vec::new(),
            timeout_ms: default_lookup_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

impl Pipeline {
    /// What `[determinism.lookups]` allows, with files resolved against the
    /// pipeline file's directory.
    pub fn lookup_policy(&self) -> crate::operator::LookupPolicy {
        let lookups = &self.spec.determinism.lookups;
        let base = self.file.parent().unwrap_or(Path::new("."));
        crate::operator::LookupPolicy {
            http: lookups
                .http
                .iter()
                .filter_map(|u| crate::operator::recorded::normalize_url(u).ok())
                .collect(),
            files: lookups
                .files
                .iter()
                .map(|name| (name.clone(), base.join(name)))
                .collect(),
            timeout: std::time::Duration::from_millis(lookups.timeout_ms),
            max_response_bytes: lookups.max_response_bytes,
        }
    }
}

fn validate_determinism(spec: &DeterminismSpec) -> Result<(), (String, String)> {
    if !(1..=3_600_000).contains(&spec.clock_resolution_ms) {
        return Err((
            "determinism.clock_resolution_ms".into(),
            format!(
                "must be between 1 and 3600000 (one hour), not {}",
                spec.clock_resolution_ms
            ),
        ));
    }
    let lookups = &spec.lookups;
    for (i, url) in lookups.http.iter().enumerate() {
        crate::operator::recorded::normalize_url(url).map_err(|e| {
            (
                format!("determinism.lookups.http[{i}]"),
                format!("`{url}` is not a URL weir can fetch: {e}"),
            )
        })?;
    }
    for (i, file) in lookups.files.iter().enumerate() {
        if file.is_empty() {
            return Err((
                format!("determinism.lookups.files[{i}]"),
                "must not be empty".into(),
            ));
        }
    }
    if lookups.timeout_ms == 0 {
        return Err((
            "determinism.lookups.timeout_ms".into(),
            "must be > 0".into(),
        ));
    }
    if !(1..=64 << 20).contains(&lookups.max_response_bytes) {
        return Err((
            "determinism.lookups.max_response_bytes".into(),
            format!(
                "must be in 1..=67108864 (64 MiB), got {}",
                lookups.max_response_bytes
            ),
        ));
    }
    Ok(())
}

/// Name of the sink that receives the last operator's main stream.
pub const MAIN_SINK: &str = "main";

/// A pipeline file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not fit the schema.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
    /// A value is well-formed but not usable.
    #[error("{}{}: {key}: {message}", path.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line and column of the key, when it appears in the file.
        location: Option<(usize, usize)>,
        /// Key path, e.g. `operators[1].component`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Pipeline {
    /// Reads, parses and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Pipeline::parse(path, &text)
    }

    /// Parses and validates pipeline text that was read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        let mut spec: PipelineSpec = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            location: locate(text, key),
            key: key.to_owned(),
            message,
        };
        validate(&spec).map_err(|(key, message)| invalid(&key, message))?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_paths(&mut spec, base);
        Ok(Pipeline {
            file: path.to_owned(),
            spec,
        })
    }
}

/// Checks what the schema cannot express. Returns the key path and message.
fn validate(spec: &PipelineSpec) -> Result<(), (String, String)> {
    if spec.name.trim().is_empty() {
        return Err(("name".into(), "must not be empty".into()));
    }
    if !(1..=65536).contains(&spec.batch.max_records) {
        return Err((
            "batch.max_records".into(),
            format!("must be in 1..=65536, got {}", spec.batch.max_records),
        ));
    }
    if spec.limits.fuel_per_record == 0 {
        return Err(("limits.fuel_per_record".into(), "must be > 0".into()));
    }
    if !(1..=4096).contains(&spec.limits.memory_mib) {
        return Err((
            "limits.memory_mib".into(),
            format!("must be in 1..=4096, got {}", spec.limits.memory_mib),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, op) in spec.operators.iter().enumerate() {
        if op.name.is_empty() {
            return Err((format!("operators[{i}].name"), "must not be empty".into()));
        }
        if !names.insert(op.name.as_str()) {
            return Err((
                format!("operators[{i}].name"),
                format!("operator name `{}` is used twice", op.name),
            ));
        }
    }
    if spec.sinks.is_empty() {
        return Err(("sinks".into(), "at least one sink is required".into()));
    }
    let checkpoint = &spec.checkpoint;
    if checkpoint.enabled && checkpoint.interval_records == 0 && checkpoint.interval_ms == 0 {
        return Err((
            "checkpoint.interval_ms".into(),
            "interval_records and interval_ms are both 0: set one of them, or enabled = false"
                .into(),
        ));
    }
    if checkpoint.keep == 0 {
        return Err(("checkpoint.keep".into(), "must be at least 1".into()));
    }
    if checkpoint.store.trim().is_empty() {
        return Err(("checkpoint.store".into(), "must not be empty".into()));
    }
    for (name, sink) in &spec.sinks {
        let SinkSpec::Parts { extension, .. } = sink else {
            continue;
        };
        if extension.is_empty() || !extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err((
                format!("sinks.{name}.extension"),
                format!("must be letters and digits, got `{extension}`"),
            ));
        }
        if !checkpoint.enabled {
            return Err((
                format!("sinks.{name}.kind"),
                "a `parts` sink publishes outputs when checkpoints commit, so it needs checkpoint.enabled = true".into(),
            ));
        }
    }
    validate_kafka(spec)?;
    validate_determinism(&spec.determinism)?;
    match (spec.errors.policy, &spec.errors.dead_letter_sink) {
        (ErrorPolicy::DeadLetter, None) => {
            return Err((
                "errors.dead_letter_sink".into(),
                "required when policy = \"dead-letter\"".into(),
            ));
        }
        (_, Some(name)) if !spec.sinks.contains_key(name) => {
            return Err((
                "errors.dead_letter_sink".into(),
                format!(
                    "no sink named `{name}` (sinks: {})",
                    spec.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Whether `topic` is a name Kafka accepts and weir can use in task names.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 120
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn validate_kafka(spec: &PipelineSpec) -> Result<(), (String, String)> {
    let own = |key: &str, name: &str, owned: &[&str]| -> Result<(), (String, String)> {
        if owned.contains(&name) {
            return Err((
                key.to_owned(),
                format!(
                    "`{name}` is set by weir and cannot be overridden (weir sets: {})",
                    owned.join(", ")
                ),
            ));
        }
        Ok(())
    };
    let source = match &spec.source {
        SourceSpec::Kafka(source) => {
            for (key, value) in [
                ("source.bootstrap", &source.bootstrap),
                ("source.group", &source.group),
            ] {
                if value.trim().is_empty() {
                    return Err((key.into(), "must not be empty".into()));
                }
            }
            if !valid_topic(&source.topic) {
                return Err((
                    "source.topic".into(),
                    format!(
                        "`{}` is not a usable topic name: 1 to 120 letters, digits, `.`, `_` or `-`",
                        source.topic
                    ),
                ));
            }
            if let Some(partitions) = &source.partitions {
                let mut seen = std::collections::BTreeSet::new();
                if partitions.is_empty() {
                    return Err(("source.partitions".into(), "must list at least one partition (or leave it out to join the group's assignment)".into()));
                }
                for p in partitions {
                    if !seen.insert(*p) || *p > i32::MAX as u32 {
                        return Err((
                            "source.partitions".into(),
                            format!("partition {p} is listed twice or out of range"),
                        ));
                    }
                }
            }
            for name in source.properties.keys() {
                own("source.properties", name, &KAFKA_SOURCE_OWN_PROPERTIES)?;
            }
            Some(source)
        }
        _ => None,
    };
    let mut exactly_once: Option<(&str, String, &BTreeMap<String, ConfigValue>)> = None;
    for (name, sink) in &spec.sinks {
        let SinkSpec::Kafka(sink) = sink else {
            continue;
        };
        let key = |field: &str| format!("sinks.{name}.{field}");
        if !valid_topic(&sink.topic) {
            return Err((
                key("topic"),
                format!(
                    "`{}` is not a usable topic name: 1 to 120 letters, digits, `.`, `_` or `-`",
                    sink.topic
                ),
            ));
        }
        for property in sink.properties.keys() {
            own(&key("properties"), property, &KAFKA_SINK_OWN_PROPERTIES)?;
        }
        let bootstrap = match (&sink.bootstrap, source) {
            (Some(b), _) if b.trim().is_empty() => {
                return Err((key("bootstrap"), "must not be empty".into()));
            }
            (Some(b), _) => b.clone(),
            (None, Some(source)) => source.bootstrap.clone(),
            (None, None) => {
                return Err((
                    key("bootstrap"),
                    "required (there is no Kafka source to take it from)".into(),
                ));
            }
        };
        if sink.delivery != KafkaDelivery::ExactlyOnce {
            continue;
        }
        if source.is_none() {
            return Err((
                key("delivery"),
                "exactly-once commits the consumed offsets in the sink's transaction, so it needs a Kafka source; use at-least-once, or a `parts` sink for exactly-once files".into(),
            ));
        }
        let checkpoint = &spec.checkpoint;
        if !checkpoint.enabled {
            return Err((
                key("delivery"),
                "exactly-once commits an epoch's outputs when its checkpoint is stored, so it needs checkpoint.enabled = true".into(),
            ));
        }
        if checkpoint.keep < 3 {
            return Err((
                "checkpoint.keep".into(),
                format!(
                    "must be at least 3 with an exactly-once Kafka sink (the checkpoint its last committed transaction matches must outlive the next one, and one that a fenced process may still commit), got {}",
                    checkpoint.keep
                ),
            ));
        }
        let timeout_ms = sink
            .properties
            .get("transaction.timeout.ms")
            .map(|v| v.to_string().parse::<u64>())
            .transpose()
            .map_err(|_| {
                (
                    key("properties"),
                    "transaction.timeout.ms must be a whole number of milliseconds".to_owned(),
                )
            })?
            .unwrap_or(KAFKA_TRANSACTION_TIMEOUT_MS);
        if checkpoint.interval_ms > 0 && checkpoint.interval_ms.saturating_mul(2) > timeout_ms {
            return Err((
                "checkpoint.interval_ms".into(),
                format!(
                    "{} ms is too long for sink `{name}`: an epoch's transaction stays open for about one interval and must stay well under transaction.timeout.ms ({timeout_ms} ms): use at most half of it, or raise transaction.timeout.ms in sinks.{name}.properties",
                    checkpoint.interval_ms
                ),
            ));
        }
        match &exactly_once {
            None => exactly_once = Some((name, bootstrap, &sink.properties)),
            Some((first, b, p)) => {
                if *b != bootstrap || kafka_properties(p) != kafka_properties(&sink.properties) {
                    return Err((
                        key("properties"),
                        format!(
                            "exactly-once Kafka sinks `{first}` and `{name}` share one transactional producer per task, so their bootstrap and properties must be the same"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn resolve_paths(spec: &mut PipelineSpec, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let SourceSpec::File { path, .. } = &mut spec.source {
        resolve(path);
    }
    for op in &mut spec.operators {
        resolve(&mut op.component);
    }
    for sink in spec.sinks.values_mut() {
        match sink {
            SinkSpec::File { path } => resolve(path),
            SinkSpec::Parts { dir, .. } => resolve(dir),
            SinkSpec::Stdout | SinkSpec::Null | SinkSpec::Kafka(_) => {}
        }
    }
    let store = &mut spec.checkpoint.store;
    if !store.contains("://") && Path::new(store.as_str()).is_relative() {
        *store = base.join(store.as_str()).to_string_lossy().into_owned();
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Finds where a key path such as `operators[1].component` is written.
fn locate(text: &str, key_path: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut span = None;
    let mut parts = key_path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        span = Some(key.span());
        let mut value = value.get_ref();
        if let Some(i) = index {
            let item = value.as_array()?.get(i)?;
            value = item.get_ref();
        }
        if parts.peek().is_some() {
            table = match value {
                DeValue::Table(t) => t,
                _ => return None,
            };
        }
    }
    span.map(|s| line_column(text, s.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, String> {
        Pipeline::parse(Path::new("/p/pipeline.toml"), text).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"
name = "t"
[source]
kind = "file"
path = "in.csv"
[[operators]]
name = "op"
component = "op.wasm"
[operators.config]
ttl_minutes = 60
flag = true
[sinks.main]
kind = "file"
path = "out/x.csv"
"#;

    #[test]
    fn minimal_file_parses_with_defaults_and_resolved_paths() -> Result<(), String> {
        let p = parse(MINIMAL)?;
        assert_eq!(p.spec.batch.max_records, 1024);
        assert_eq!(p.spec.limits.memory_mib, 512);
        assert_eq!(p.spec.errors.policy, ErrorPolicy::Stop);
        assert_eq!(p.spec.operators[0].component, PathBuf::from("/p/op.wasm"));
        assert_eq!(
            p.spec.operators[0].init_config(),
            vec![
                ("flag".to_string(), "true".to_string()),
                ("ttl_minutes".to_string(), "60".to_string())
            ]
        );
        Ok(())
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let text = MINIMAL.replace("[batch]", "") + "[batch]\nmax_record = 3\n";
        let err = parse(&text).err().unwrap_or_default();
        assert!(err.starts_with("/p/pipeline.toml:16:1: "), "{err}");
        assert!(err.contains("unknown field `max_record`"), "{err}");
    }

    #[test]
    fn unknown_source_kind_is_an_error() {
        let err = parse(&MINIMAL.replace(
            "kind = \"file\"\npath = \"in",
            "kind = \"ftp\"\npath = \"in",
        ))
        .err()
        .unwrap_or_default();
        assert!(err.contains("/p/pipeline.toml:4:"), "{err}");
        assert!(err.contains("ftp"), "{err}");
    }

    #[test]
    fn semantic_error_is_located() {
        let text = MINIMAL.to_string()
            + "[errors]\npolicy = \"dead-letter\"\ndead_letter_sink = \"dlq\"\n";
        let err = parse(&text).err().unwrap_or_default();
        assert_eq!(
            err,
            "/p/pipeline.toml:17:1: errors.dead_letter_sink: no sink named `dlq` (sinks: main)"
        );
    }

    #[test]
    fn duplicate_operator_name_is_located() {
        let text = MINIMAL.to_string() + "[[operators]]\nname = \"op\"\ncomponent = \"b.wasm\"\n";
        let err = parse(&text).err().unwrap_or_default();
        assert!(
            err.contains(":7:1: operators[0].name") || err.contains("operators[1].name"),
            "{err}"
        );
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn determinism_settings_are_checked_and_located() {
        let p = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.spec.determinism.denied,
            crate::operator::DeniedPolicy::Strict
        );
        let text = MINIMAL.to_string()
            + "[determinism]\ndenied = \"trap\"\nseed = 7\n[determinism.lookups]\nhttp = [\"ftp://x/\"]\n";
        let err = parse(&text).err().unwrap_or_default();
        assert_eq!(
            err,
            "/p/pipeline.toml:19:1: determinism.lookups.http[0]: `ftp://x/` is not a URL weir can fetch: scheme `ftp` (only http and https)"
        );
        let text = MINIMAL.to_string() + "[determinism]\ndenied = \"warn\"\n";
        let err = parse(&text).err().unwrap_or_default();
        assert!(err.starts_with("/p/pipeline.toml:16:10: "), "{err}");
        assert!(err.contains("unknown variant `warn`"), "{err}");
        let text = MINIMAL.to_string()
            + "[determinism.lookups]\nfiles = [\"rates.json\"]\nhttp = [\"http://127.0.0.1:9/r/\"]\n";
        let p = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let policy = p.lookup_policy();
        assert_eq!(
            policy.files,
            vec![("rates.json".to_string(), PathBuf::from("/p/rates.json"))]
        );
        assert_eq!(policy.http, vec!["http://127.0.0.1:9/r/".to_string()]);
    }

    const KAFKA: &str = r#"
name = "t"
[source]
kind = "kafka"
bootstrap = "127.0.0.1:9092"
topic = "in"
group = "g"
[source.properties]
"session.timeout.ms" = 10000
[sinks.main]
kind = "kafka"
topic = "out"
delivery = "exactly-once"
"#;

    #[test]
    fn kafka_source_and_sink_parse_with_defaults() -> Result<(), String> {
        let p = parse(KAFKA)?;
        let SourceSpec::Kafka(source) = &p.spec.source else {
            return Err("not a kafka source".into());
        };
        assert_eq!(source.start, KafkaStart::Earliest);
        assert!(!source.stop_at_end && source.partitions.is_none());
        assert_eq!(
            kafka_properties(&source.properties),
            vec![("session.timeout.ms".to_string(), "10000".to_string())]
        );
        assert!(matches!(
            &p.spec.sinks["main"],
            SinkSpec::Kafka(KafkaSinkSpec {
                delivery: KafkaDelivery::ExactlyOnce,
                bootstrap: None,
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn kafka_settings_weir_owns_are_refused_where_they_are_written() {
        let text = KAFKA.replace("\"session.timeout.ms\" = 10000", "\"group.id\" = \"x\"");
        let err = parse(&text).err().unwrap_or_default();
        assert!(
            err.starts_with("/p/pipeline.toml:8:9: source.properties: `group.id` is set by weir"),
            "{err}"
        );
    }

    #[test]
    fn exactly_once_kafka_needs_a_kafka_source_and_enough_checkpoints() {
        let file_source = KAFKA.replace(
            "kind = \"kafka\"\nbootstrap = \"127.0.0.1:9092\"\ntopic = \"in\"\ngroup = \"g\"\n[source.properties]\n\"session.timeout.ms\" = 10000",
            "kind = \"file\"\npath = \"in.csv\"",
        ) + "bootstrap = \"b:1\"\n";
        let err = parse(&file_source).err().unwrap_or_default();
        assert!(
            err.contains("sinks.main.delivery: exactly-once commits the consumed offsets"),
            "{err}"
        );
        let err = parse(&(KAFKA.to_string() + "[checkpoint]\nkeep = 2\n"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("checkpoint.keep: must be at least 3"), "{err}");
        let err = parse(&(KAFKA.to_string() + "[checkpoint]\ninterval_ms = 400000\n"))
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("checkpoint.interval_ms: 400000 ms is too long"),
            "{err}"
        );
    }

    #[test]
    fn batch_size_range_is_checked() {
        let text = MINIMAL.to_string() + "[batch]\nmax_records = 0\n";
        let err = parse(&text).err().unwrap_or_default();
        assert!(
            err.contains("batch.max_records: must be in 1..=65536, got 0"),
            "{err}"
        );
    }
}
