//! A Kafka source: one [`Task`] per partition this process holds.
//!
//! A process joins the pipeline's consumer group with one consumer that
//! reads nothing (its partitions are paused as soon as they are assigned):
//! it only takes part in the group's partition assignment, so several
//! `weir` processes with the same pipeline share the partitions with no
//! coordinator of weir's own. Each assigned partition gets a task on a
//! thread of its own, with its own operator instances, checkpoints (task
//! `<topic>-<partition>`), reader consumer and, with exactly-once Kafka
//! sinks, transactional producer.
//!
//! - **Assignment.** A new task opens its transactional producer first,
//!   which fences whoever held the task before (even a process that is
//!   still alive) and aborts its open transaction; then it reads the epoch
//!   committed in Kafka with the partition's offset, restores exactly that
//!   checkpoint from the shared store and seeks there.
//! - **Revocation.** The rebalance callback stops the revoked partitions'
//!   tasks at a batch boundary and waits while each takes a last
//!   checkpoint and commits its transaction; only then does the partition
//!   go to another member. A process that dies instead is fenced by the
//!   next holder, and its open transaction is aborted.
//!
//! `[source] partitions = [...]` skips the group protocol: the listed
//! partitions are this process's, and offsets are still committed to the
//! group (as a group with no members).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use super::build;
use super::checkpointing::{CheckpointSummary, Checkpointing, ResumeFrom};
use super::summary::{OperatorStats, SinkStats, Summary};
use super::task::Task;
use super::{PipelineError, RunOptions};
use crate::config::{KafkaDelivery, KafkaSourceSpec, KafkaStart, Pipeline, SinkSpec};
use crate::record::Position;
use crate::sink::SinkError;
use crate::sink::kafka::{SharedProducer, TransactionalProducer};
use crate::source::SourceError;
use crate::source::kafka::{
    ConsumerGroup, GroupConsumer, KafkaClient, KafkaPartitionSource, StartAt,
};

/// How long the driver waits in one poll of the group consumer.
const POLL: Duration = Duration::from_millis(100);

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Summary, PipelineError>>,
}

/// The tasks of this process, shared with the rebalance callback.
#[derive(Default)]
struct Registry {
    running: BTreeMap<u32, Running>,
    /// Assigned, task not started yet.
    to_start: BTreeSet<u32>,
    /// Tasks that ended (stopped or failed), in the order they did.
    finished: Vec<(u32, Result<Summary, PipelineError>)>,
    /// An assignment (possibly empty) has arrived.
    assigned_once: bool,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A task thread never holds this lock, so it cannot be poisoned by one;
    // recover the data if it ever is.
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the tasks of `partitions` at their next batch boundary and waits
/// until each has taken its last checkpoint and committed.
fn stop_tasks(registry: &Mutex<Registry>, partitions: &[u32]) {
    let stopping: Vec<(u32, Running)> = {
        let mut registry = lock(registry);
        for p in partitions {
            registry.to_start.remove(p);
        }
        partitions
            .iter()
            .filter_map(|p| registry.running.remove(p).map(|r| (*p, r)))
            .collect()
    };
    for (_, running) in &stopping {
        running.stop.store(true, Ordering::Relaxed);
    }
    let mut finished = Vec::new();
    for (p, running) in stopping {
        let result = running.thread.join().unwrap_or_else(|_| {
            Err(PipelineError::Checkpoint(format!(
                "the task of partition {p} panicked"
            )))
        });
        finished.push((p, result));
    }
    lock(registry).finished.extend(finished);
}

struct GroupContext {
    topic: String,
    registry: Arc<Mutex<Registry>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<u32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned.and_then(|()| consumer.pause(tpl)) {
                    tracing::warn!(topic = %self.topic, "taking the assignment: {e}");
                }
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
                let mut registry = lock(&self.registry);
                registry.assigned_once = true;
                for p in partitions {
                    if !registry.running.contains_key(&p) {
                        registry.to_start.insert(p);
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(
                    topic = %self.topic,
                    ?partitions,
                    lost = consumer.assignment_lost(),
                    "partitions revoked: last checkpoint and commit, then release"
                );
                stop_tasks(&self.registry, &partitions);
                let released = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = released {
                    tracing::warn!(topic = %self.topic, "releasing partitions: {e}");
                }
            }
            other => {
                tracing::warn!(topic = %self.topic, "rebalance error: {other:?}");
            }
        }
    }
}

fn source_error(spec: &KafkaSourceSpec, operation: &'static str, e: KafkaError) -> PipelineError {
    PipelineError::Source(SourceError::Kafka {
        source_name: format!("kafka {} (group {})", spec.topic, spec.group),
        operation,
        error: e.to_string(),
    })
}

/// Runs the pipeline's Kafka source: until stopped, or with
/// `stop_at_end` until every partition this process holds is read to its
/// end.
pub fn run(
    pipeline: &Pipeline,
    spec: &KafkaSourceSpec,
    options: &RunOptions,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let properties = crate::config::kafka_properties(&spec.properties);
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("queued.max.messages.kbytes", "1024");
    for (k, v) in &properties {
        config.set(k, v);
    }
    config
        .set("bootstrap.servers", &spec.bootstrap)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer<GroupContext> = config
        .create_with_context(GroupContext {
            topic: spec.topic.clone(),
            registry: registry.clone(),
        })
        .map_err(|e| source_error(spec, "create the group consumer", e))?;
    let group = Arc::new(GroupConsumer {
        consumer,
        group: spec.group.clone(),
    });
    match &spec.partitions {
        Some(partitions) => {
            let mut registry = lock(&registry);
            registry.to_start.extend(partitions.iter().copied());
            registry.assigned_once = true;
        }
        None => group
            .consumer
            .subscribe(&[&spec.topic])
            .map_err(|e| source_error(spec, "join the group", e))?,
    }
    let group_handle: Arc<dyn ConsumerGroup> = group.clone();
    let mut summaries: Vec<(u32, Summary)> = Vec::new();
    let mut failure: Option<PipelineError> = None;
    loop {
        match group.consumer.poll(POLL) {
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                failure = Some(source_error(spec, "group membership", e));
            }
            Some(Err(e)) => tracing::warn!(topic = %spec.topic, "group consumer: {e}"),
            Some(Ok(_)) | None => {}
        }
        // Start the tasks of new partitions; collect the ones that ended.
        let (to_start, ended) = {
            let mut registry = lock(&registry);
            let to_start = std::mem::take(&mut registry.to_start);
            let ended: Vec<u32> = registry
                .running
                .iter()
                .filter(|(_, r)| r.thread.is_finished())
                .map(|(p, _)| *p)
                .collect();
            (to_start, ended)
        };
        if failure.is_none() {
            for partition in to_start {
                let running = spawn(pipeline, spec, options, group_handle.clone(), partition)?;
                lock(&registry).running.insert(partition, running);
            }
        }
        if !ended.is_empty() {
            let mut registry = lock(&registry);
            for p in ended {
                if let Some(running) = registry.running.remove(&p) {
                    let result = running.thread.join().unwrap_or_else(|_| {
                        Err(PipelineError::Checkpoint(format!(
                            "the task of partition {p} panicked"
                        )))
                    });
                    registry.finished.push((p, result));
                }
            }
        }
        // (Taken first: the registry must not stay locked in the loop.)
        let finished = std::mem::take(&mut lock(&registry).finished);
        for (p, result) in finished {
            match result {
                Ok(summary) => summaries.push((p, summary)),
                Err(e)
                    if matches!(e, PipelineError::Sink(SinkError::TransactionAborted { .. }))
                        && !options.stop.load(Ordering::Relaxed) =>
                {
                    // Nothing of the aborted epoch is visible: a fresh task
                    // resumes from what Kafka committed, if the partition
                    // is still this process's.
                    if still_assigned(&group, spec, p) {
                        tracing::warn!(topic = %spec.topic, partition = p, "{e}");
                        lock(&registry).to_start.insert(p);
                    } else {
                        tracing::info!(topic = %spec.topic, partition = p, "{e}; the partition went to another member");
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %spec.topic, partition = p, "task failed: {e}");
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() || options.stop.load(Ordering::Relaxed) {
            break;
        }
        let all_ended = {
            let registry = lock(&registry);
            registry.assigned_once && registry.running.is_empty() && registry.to_start.is_empty()
        };
        if spec.stop_at_end && all_ended {
            break;
        }
    }
    // Stop what still runs (each takes a last checkpoint), then leave the
    // group.
    let running: Vec<u32> = lock(&registry).running.keys().copied().collect();
    stop_tasks(&registry, &running);
    for (p, result) in std::mem::take(&mut lock(&registry).finished) {
        match result {
            Ok(summary) => summaries.push((p, summary)),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    drop(group_handle);
    drop(group);
    if let Some(e) = failure {
        return Err(e);
    }
    let mut summary = merge(pipeline, spec, summaries);
    summary.elapsed = started.elapsed();
    summary.stopped_early = options.stop.load(Ordering::Relaxed);
    Ok(summary)
}

/// Whether `partition` is this process's: listed in the pipeline, or in
/// the group consumer's current assignment.
fn still_assigned(
    group: &GroupConsumer<GroupContext>,
    spec: &KafkaSourceSpec,
    partition: u32,
) -> bool {
    if let Some(partitions) = &spec.partitions {
        return partitions.contains(&partition);
    }
    group
        .consumer
        .assignment()
        .is_ok_and(|tpl| tpl.find_partition(&spec.topic, partition as i32).is_some())
}

fn spawn(
    pipeline: &Pipeline,
    spec: &KafkaSourceSpec,
    options: &RunOptions,
    group: Arc<dyn ConsumerGroup>,
    partition: u32,
) -> Result<Running, PipelineError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (pipeline, spec, options, task_stop) = (
        pipeline.clone(),
        spec.clone(),
        options.clone(),
        stop.clone(),
    );
    // A task runs in the caller's async context, as the one task of a
    // local source does (the checkpoint store's clients expect one).
    let context = tokio::runtime::Handle::try_current().ok();
    let thread = std::thread::Builder::new()
        .name(format!("weir-task-{}-{partition}", spec.topic))
        .spawn(move || {
            let _entered = context.as_ref().map(tokio::runtime::Handle::enter);
            run_partition(&pipeline, &spec, &options, group, partition, &task_stop)
        })
        .map_err(|e| PipelineError::Checkpoint(format!("cannot start a task thread: {e}")))?;
    Ok(Running { stop, thread })
}

/// The name of the task of `partition`.
pub fn task_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// Opens and runs the task of one partition.
fn run_partition(
    pipeline: &Pipeline,
    spec: &KafkaSourceSpec,
    options: &RunOptions,
    group: Arc<dyn ConsumerGroup>,
    partition: u32,
    stop: &AtomicBool,
) -> Result<Summary, PipelineError> {
    let task = task_name(&spec.topic, partition);
    tracing::info!(task = %task, "task starting");
    let operators = build::operators(pipeline, &options.cache)?;
    // The transactional producer comes first: opening it fences any other
    // holder of this task, so what is committed cannot change after it is
    // read below.
    let exactly_once = pipeline.spec.sinks.values().find_map(|s| match s {
        SinkSpec::Kafka(k) if k.delivery == KafkaDelivery::ExactlyOnce => Some(k),
        _ => None,
    });
    let producer: Option<SharedProducer> = match exactly_once {
        Some(sink) => Some(Arc::new(Mutex::new(TransactionalProducer::open(
            &build::kafka_sink_client(pipeline, sink),
            &pipeline.spec.name,
            &task,
            group,
            &spec.topic,
            partition,
            options.from_scratch,
        )?))),
        None => None,
    };
    let committed_at_open = producer
        .as_ref()
        .map(|p| p.lock().map_or((0, None), |p| p.committed_at_open()));
    let resume_from = match committed_at_open {
        Some((0, _)) => ResumeFrom::Exactly(None),
        Some((epoch, _)) => ResumeFrom::Exactly(Some(epoch)),
        None => ResumeFrom::Newest,
    };
    let (mut checkpointing, resume) = if pipeline.spec.checkpoint.enabled {
        let (c, r) = Checkpointing::open_at(pipeline, &task, options.from_scratch, resume_from)?;
        (Some(c), r)
    } else {
        (None, None)
    };
    if let (Some((epoch, Some(offset))), Some(resume)) = (committed_at_open, &resume) {
        let expected = Position::Offset { partition, offset };
        if resume.manifest.source_position != expected {
            return Err(PipelineError::Sink(SinkError::Inconsistent {
                sink: format!("task {task}"),
                reason: format!(
                    "the transaction of epoch {epoch} committed offset {offset}, but checkpoint {epoch} resumes at {}: the store holds another run's checkpoints (a different store, or one cleared without clearing the group's offsets); use a new group or --from-scratch",
                    resume.manifest.source_position
                ),
            }));
        }
    }
    let committed = resume.as_ref().map(|r| r.manifest.epoch);
    let mut sinks = build::sinks(pipeline, committed, options.from_scratch, producer.as_ref())?;
    if let Some(checkpointing) = &mut checkpointing {
        checkpointing.number_epochs_after(sinks.newest_epoch()?);
        if producer.is_some() {
            checkpointing.skip_epoch_number();
        }
    }
    let start = match &resume {
        Some(r) => match r.manifest.source_position {
            Position::Offset { offset, .. } => StartAt::Offset(offset),
            ref other => {
                return Err(PipelineError::Source(SourceError::InvalidPosition {
                    source_name: format!("kafka {task}"),
                    position: other.clone(),
                    reason: "the checkpoint was not taken from a Kafka partition".into(),
                }));
            }
        },
        None => match spec.start {
            KafkaStart::Earliest => StartAt::Earliest,
            KafkaStart::Latest => StartAt::Latest,
        },
    };
    let reader = KafkaClient {
        bootstrap: spec.bootstrap.clone(),
        properties: crate::config::kafka_properties(&spec.properties)
            .into_iter()
            .filter(|(k, _)| k != "group.instance.id")
            .collect(),
    };
    let source = KafkaPartitionSource::open(
        &reader,
        &spec.group,
        &spec.topic,
        partition,
        start,
        spec.stop_at_end,
    )?;
    let mut summary = Task::new(
        pipeline,
        operators,
        Box::new(source),
        sinks,
        checkpointing,
        resume,
    )?
    .run(stop)?;
    summary.source = format!("kafka {task}");
    tracing::info!(task = %task, records = summary.records_in, "task ended");
    Ok(summary)
}

/// One summary for the process: counters added up over its tasks, per
/// operator and per sink.
fn merge(pipeline: &Pipeline, spec: &KafkaSourceSpec, mut tasks: Vec<(u32, Summary)>) -> Summary {
    tasks.sort_by_key(|(p, _)| *p);
    let mut merged = Summary {
        pipeline: pipeline.spec.name.clone(),
        source: format!(
            "kafka {} (group {}, partitions {})",
            spec.topic,
            spec.group,
            tasks
                .iter()
                .map(|(p, _)| p.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(",")
        ),
        ..Summary::default()
    };
    let mut sinks: BTreeMap<String, SinkStats> = BTreeMap::new();
    let mut checkpoints: Option<CheckpointSummary> = None;
    for (_, t) in &tasks {
        merged.records_in += t.records_in;
        merged.malformed += t.malformed;
        merged.dead_letters += t.dead_letters;
        merged.recoveries += t.recoveries;
        for (i, op) in t.operators.iter().enumerate() {
            if merged.operators.len() <= i {
                merged.operators.push(OperatorStats {
                    name: op.name.clone(),
                    ..OperatorStats::default()
                });
            }
            let m = &mut merged.operators[i];
            m.records_in += op.records_in;
            m.outputs += op.outputs;
            m.rejected += op.rejected;
            m.faults += op.faults;
        }
        for s in &t.sinks {
            let entry = sinks.entry(s.name.clone()).or_insert_with(|| SinkStats {
                name: s.name.clone(),
                describe: s.describe.clone(),
                written: 0,
            });
            entry.written += s.written;
        }
        if let Some(c) = &t.checkpoints {
            let m = checkpoints.get_or_insert_with(|| CheckpointSummary {
                store: c.store.clone(),
                ..CheckpointSummary::default()
            });
            m.skipped.extend(c.skipped.iter().cloned());
            m.committed += c.committed;
            m.last_epoch = m.last_epoch.max(c.last_epoch);
            m.max_pause_us = m.max_pause_us.max(c.max_pause_us);
            m.state_bytes += c.state_bytes;
            m.uploaded_bytes += c.uploaded_bytes;
        }
    }
    merged.sinks = sinks.into_values().collect();
    merged.checkpoints = checkpoints;
    merged
}
