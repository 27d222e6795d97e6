//! Kafka sinks: exactly once through one transaction per task and epoch,
//! or at least once through an idempotent producer.
//!
//! # Exactly once
//!
//! Every task has one transactional producer, shared by all exactly-once
//! Kafka sinks of the task, with `transactional.id = weir.<pipeline>.<task>`:
//! stable across restarts and processes, so whoever opens the task next
//! fences the previous holder (`init_transactions` bumps the producer epoch
//! and aborts the transaction it left open).
//!
//! Epoch `n`'s outputs are produced into one transaction. At the barrier
//! that ends the epoch (`prepare(n)`) the sink stops sending: outputs of
//! epoch `n + 1` are held in memory. When checkpoint `n` is durable in the
//! store, `publish(n)` adds the consumed offsets (the checkpoint's source
//! position, with `weir-epoch=<n>` as the offset's metadata) to the
//! transaction with `send_offsets_to_transaction` and commits it: outputs
//! and offsets become visible together, or not at all. Then the next
//! transaction begins with the held outputs.
//!
//! After a crash the prepared epoch cannot be published (its transaction
//! is aborted by the next `init_transactions`), so the sink decides where
//! the run resumes ([`EpochSink::resume_epoch`]): the epoch named by the
//! committed offset's metadata, whose checkpoint has exactly that source
//! position. Everything after it is replayed into new transactions.
//! docs/guarantees.md walks through every crash window.
//!
//! # At least once
//!
//! An idempotent producer (`enable.idempotence = true`, so retries do not
//! duplicate); `flush` waits until the broker acknowledged every output,
//! and the barrier flushes before the checkpoint: nothing checkpointed is
//! lost, and outputs after the last checkpoint are sent again after a
//! crash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{EpochSink, Sink, SinkError};
use crate::crashpoint;
use crate::record::{Output, Position};
use crate::source::kafka::{ConsumerGroup, KafkaClient};

/// Timeout of one transactional request (librdkafka retries inside it).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a flush of the at-least-once producer may take (librdkafka's
/// default `message.timeout.ms` fails a message after 300 s).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(310);

/// The prefix of the offset metadata weir commits.
const EPOCH_METADATA: &str = "weir-epoch=";

/// Collects the first delivery failure.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut failed) = self.failed.lock()
            && failed.is_none()
        {
            *failed = Some(e.to_string());
        }
    }
}

impl Deliveries {
    fn take_failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }
}

/// The first delivery failure since the last call, as an error.
fn delivered(
    producer: &BaseProducer<Deliveries>,
    describe: &str,
    consequence: &str,
) -> Result<(), SinkError> {
    match producer.context().take_failure() {
        None => Ok(()),
        Some(e) => Err(SinkError::Kafka {
            sink: describe.to_owned(),
            operation: "deliver an output",
            error: format!("{e}{consequence}"),
        }),
    }
}

/// Sends `outputs` to `topic`, waiting (and serving callbacks) while the
/// local queue is full.
fn produce(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    outputs: &[Output],
) -> Result<(), KafkaError> {
    for output in outputs {
        let headers = (!output.headers.is_empty()).then(|| {
            output.headers.iter().fold(
                OwnedHeaders::new_with_capacity(output.headers.len()),
                |h, x| {
                    h.insert(KafkaHeader {
                        key: &x.name,
                        value: Some(&x.value),
                    })
                },
            )
        });
        let mut record = BaseRecord::to(topic).payload(&output.value[..]);
        if let Some(key) = &output.key {
            record = record.key(&key[..]);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// The transactional producer of one task, shared by its exactly-once
/// Kafka sinks. See the [module docs](self).
pub struct TransactionalProducer {
    describe: String,
    producer: BaseProducer<Deliveries>,
    group: Arc<dyn ConsumerGroup>,
    source_topic: String,
    source_partition: u32,
    in_transaction: bool,
    /// Epochs prepared and not yet committed.
    prepared: BTreeMap<u64, ()>,
    /// Source positions epochs end at.
    positions: BTreeMap<u64, Position>,
    /// Outputs of the next epoch, held while the previous one waits for
    /// its checkpoint: each write's topic and outputs, in order.
    held: Vec<(String, Vec<Output>)>,
    /// The newest epoch committed in Kafka.
    committed: u64,
    /// The committed epoch found at open, and the offset committed with it.
    resume: (u64, Option<u64>),
}

impl TransactionalProducer {
    /// Creates the producer of `task` and fences every earlier one with the
    /// same transactional id (aborting what it left open), then reads where
    /// the task's output stands: the epoch committed with the source
    /// partition's offset. `from_scratch` ignores what is committed.
    pub fn open(
        client: &KafkaClient,
        pipeline: &str,
        task: &str,
        group: Arc<dyn ConsumerGroup>,
        source_topic: &str,
        source_partition: u32,
        from_scratch: bool,
    ) -> Result<TransactionalProducer, SinkError> {
        let transactional_id = format!("weir.{pipeline}.{task}");
        let describe = format!("kafka producer {transactional_id}");
        let fail = |operation: &'static str, e: KafkaError| kafka_error(&describe, operation, e);
        let timeout = crate::config::KAFKA_TRANSACTION_TIMEOUT_MS.to_string();
        let mut own = vec![
            ("transactional.id", transactional_id.as_str()),
            ("enable.idempotence", "true"),
        ];
        // weir's default, unless the sink's properties set their own.
        if !client
            .properties
            .iter()
            .any(|(k, _)| k == "transaction.timeout.ms")
        {
            own.push(("transaction.timeout.ms", &timeout));
        }
        let producer: BaseProducer<Deliveries> = client
            .config(&own)
            .create_with_context(Deliveries::default())
            .map_err(|e| fail("create", e))?;
        retry_retriable(|| producer.init_transactions(TXN_TIMEOUT))
            .map_err(|e| fail("init_transactions (fencing earlier holders of the task)", e))?;
        let committed = group
            .committed(source_topic, source_partition)
            .map_err(|e| fail("read the group's committed offset", e))?;
        let resume = match committed {
            _ if from_scratch => (0, None),
            None => (0, None),
            Some((offset, metadata)) => match metadata
                .strip_prefix(EPOCH_METADATA)
                .and_then(|e| e.parse::<u64>().ok())
            {
                Some(epoch) => (epoch, Some(offset)),
                None => {
                    return Err(SinkError::Inconsistent {
                        sink: describe,
                        reason: format!(
                            "group `{}` has offset {offset} committed for {source_topic}/{source_partition} with metadata `{metadata}`, which weir did not write: another application uses this group; give the pipeline a group of its own (or run with --from-scratch)",
                            group.group()
                        ),
                    });
                }
            },
        };
        tracing::info!(
            producer = %describe,
            committed_epoch = resume.0,
            "transactional producer ready (earlier holders fenced)"
        );
        Ok(TransactionalProducer {
            describe,
            producer,
            group,
            source_topic: source_topic.to_owned(),
            source_partition,
            in_transaction: false,
            prepared: BTreeMap::new(),
            positions: BTreeMap::new(),
            held: Vec::new(),
            committed: resume.0,
            resume,
        })
    }

    /// The epoch whose transaction committed last before this producer
    /// opened (0: none), and the source offset committed with it.
    pub fn committed_at_open(&self) -> (u64, Option<u64>) {
        self.resume
    }

    fn fail(&self, operation: &'static str, e: KafkaError) -> SinkError {
        kafka_error(&self.describe, operation, e)
    }

    /// An error that Kafka's transaction rules answer with an abort (the
    /// group's generation changed under a rebalance, KIP-447): aborts, so
    /// the task can start again from the committed checkpoint. Any other
    /// error is a failure.
    fn abort_or_fail(&mut self, epoch: u64, operation: &'static str, e: KafkaError) -> SinkError {
        let abortable = matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort());
        if !abortable {
            return self.fail(operation, e);
        }
        // The abort waits for every message of the transaction to be
        // reported on; nothing polls this producer on another thread, so
        // purge them and serve their (failed) delivery reports here.
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let deadline = Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(10));
        }
        if let Err(abort) = self.producer.abort_transaction(TXN_TIMEOUT) {
            return self.fail("abort_transaction", abort);
        }
        self.in_transaction = false;
        SinkError::TransactionAborted {
            sink: self.describe.clone(),
            epoch,
            reason: format!("{operation}: {e}"),
        }
    }

    fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(|e| self.fail("begin_transaction", e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn write(&mut self, topic: &str, outputs: &[Output]) -> Result<(), SinkError> {
        if !self.prepared.is_empty() {
            self.held.push((topic.to_owned(), outputs.to_vec()));
            return Ok(());
        }
        self.begin()?;
        produce(&self.producer, topic, outputs).map_err(|e| self.fail("produce", e))?;
        self.check_deliveries()
    }

    fn check_deliveries(&self) -> Result<(), SinkError> {
        delivered(
            &self.producer,
            &self.describe,
            "; the epoch's transaction cannot commit",
        )
    }

    fn publish(&mut self, epoch: u64) -> Result<(), SinkError> {
        if epoch <= self.committed {
            return Ok(());
        }
        if !self.prepared.contains_key(&epoch) {
            return Ok(()); // a number no barrier used (skipped after a takeover)
        }
        let offset = match self.positions.get(&epoch) {
            Some(&Position::Offset { partition, offset }) if partition == self.source_partition => {
                offset
            }
            other => {
                return Err(SinkError::Inconsistent {
                    sink: self.describe.clone(),
                    reason: format!(
                        "epoch {epoch} ends at {}, not at an offset of {}/{}",
                        other.map_or_else(|| "no known position".to_owned(), |p| p.to_string()),
                        self.source_topic,
                        self.source_partition
                    ),
                });
            }
        };
        self.begin()?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.source_topic,
                self.source_partition as i32,
                Offset::Offset(offset as i64),
            )
            .map_err(|e| self.fail("send_offsets_to_transaction", e))?;
        if let Some(mut elem) =
            offsets.find_partition(&self.source_topic, self.source_partition as i32)
        {
            elem.set_metadata(format!("{EPOCH_METADATA}{epoch}"));
        }
        let metadata = self.group.metadata().ok_or_else(|| SinkError::Kafka {
            sink: self.describe.clone(),
            operation: "send_offsets_to_transaction",
            error: format!("no metadata for group `{}`", self.group.group()),
        })?;
        retry_retriable(|| {
            self.producer
                .send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)
        })
        .map_err(|e| self.abort_or_fail(epoch, "send_offsets_to_transaction", e))?;
        crashpoint::reached("before-txn-commit");
        retry_retriable(|| self.producer.commit_transaction(TXN_TIMEOUT))
            .map_err(|e| self.abort_or_fail(epoch, "commit_transaction", e))?;
        crashpoint::reached("after-txn-commit");
        self.check_deliveries()?;
        self.in_transaction = false;
        self.committed = epoch;
        self.prepared.retain(|&e, _| e > epoch);
        self.positions.retain(|&e, _| e > epoch);
        if self.prepared.is_empty() && !self.held.is_empty() {
            self.begin()?;
            for (topic, outputs) in std::mem::take(&mut self.held) {
                produce(&self.producer, &topic, &outputs).map_err(|e| self.fail("produce", e))?;
            }
        }
        Ok(())
    }
}

/// Retries `op` while it fails with a retriable error, for up to two
/// minutes (a broker restarting, a coordinator loading).
fn retry_retriable(mut op: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match op() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                tracing::warn!("kafka transaction: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn kafka_error(describe: &str, operation: &'static str, e: KafkaError) -> SinkError {
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    );
    SinkError::Kafka {
        sink: describe.to_owned(),
        operation,
        error: if fenced {
            format!(
                "{e}: fenced, another weir process opened this task (same transactional.id) and took it over; this one must stop, and nothing it wrote since is visible"
            )
        } else {
            e.to_string()
        },
    }
}

/// A shared handle on a task's transactional producer.
pub type SharedProducer = Arc<Mutex<TransactionalProducer>>;

/// An exactly-once Kafka sink: one topic, written through the task's
/// [`TransactionalProducer`].
pub struct KafkaSink {
    describe: String,
    topic: String,
    producer: SharedProducer,
    written: u64,
}

impl KafkaSink {
    /// A sink writing to `topic` through `producer`.
    pub fn exactly_once(name: &str, topic: &str, producer: SharedProducer) -> KafkaSink {
        KafkaSink {
            describe: format!("sink {name} (kafka {topic}, exactly once)"),
            topic: topic.to_owned(),
            producer,
            written: 0,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, TransactionalProducer>, SinkError> {
        self.producer.lock().map_err(|_| SinkError::Inconsistent {
            sink: self.describe.clone(),
            reason: "the task's producer was poisoned by a panic".into(),
        })
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        if outputs.is_empty() {
            return Ok(());
        }
        self.lock()?.write(&self.topic, outputs)?;
        self.written += outputs.len() as u64;
        Ok(())
    }

    /// Serves delivery reports; outputs become durable and visible when
    /// their epoch's transaction commits (`publish`).
    fn flush(&mut self) -> Result<(), SinkError> {
        let producer = self.lock()?;
        producer.producer.poll(Duration::ZERO);
        producer.check_deliveries()
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn as_epoch_sink(&mut self) -> Option<&mut dyn EpochSink> {
        Some(self)
    }
}

impl EpochSink for KafkaSink {
    fn epoch_position(&mut self, epoch: u64, position: &Position) -> Result<(), SinkError> {
        self.lock()?.positions.insert(epoch, position.clone());
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<(), SinkError> {
        let mut producer = self.lock()?;
        if epoch > producer.committed {
            producer.prepared.insert(epoch, ());
        }
        Ok(())
    }

    fn publish(&mut self, epoch: u64) -> Result<(), SinkError> {
        self.lock()?.publish(epoch)
    }

    fn resume_epoch(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(Some(self.lock()?.resume.0))
    }

    fn recover(&mut self, committed: u64) -> Result<(), SinkError> {
        let producer = self.lock()?;
        if committed != producer.resume.0 {
            return Err(SinkError::Inconsistent {
                sink: self.describe.clone(),
                reason: format!(
                    "cannot resume from checkpoint {committed}: the outputs and offsets of epoch {} are what is committed in Kafka, so the run must resume from exactly that checkpoint (an older one would write committed outputs again, a newer one would lose the aborted epochs)",
                    producer.resume.0
                ),
            });
        }
        Ok(())
    }

    fn newest_epoch(&self) -> Result<u64, SinkError> {
        Ok(self.producer.lock().map_or(0, |p| p.committed))
    }
}

/// An at-least-once Kafka sink: an idempotent producer of its own,
/// flushed at every barrier.
pub struct KafkaAtLeastOnceSink {
    describe: String,
    topic: String,
    producer: BaseProducer<Deliveries>,
    written: u64,
}

impl KafkaAtLeastOnceSink {
    /// Creates the producer.
    pub fn open(name: &str, topic: &str, client: &KafkaClient) -> Result<Self, SinkError> {
        let describe = format!("sink {name} (kafka {topic}, at least once)");
        let producer = client
            .config(&[("enable.idempotence", "true")])
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka_error(&describe, "create producer", e))?;
        Ok(KafkaAtLeastOnceSink {
            describe,
            topic: topic.to_owned(),
            producer,
            written: 0,
        })
    }

    fn check_deliveries(&self) -> Result<(), SinkError> {
        delivered(&self.producer, &self.describe, "")
    }
}

impl Sink for KafkaAtLeastOnceSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        produce(&self.producer, &self.topic, outputs)
            .map_err(|e| kafka_error(&self.describe, "produce", e))?;
        self.written += outputs.len() as u64;
        self.check_deliveries()
    }

    /// Waits until the broker acknowledged every output written so far.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| kafka_error(&self.describe, "flush", e))?;
        self.check_deliveries()
    }

    fn written(&self) -> u64 {
        self.written
    }
}
