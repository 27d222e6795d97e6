//! The Kafka source: one partition of a topic, read with
//! `isolation.level = read_committed`, positions are offsets.
//!
//! Each task reads its partition with a consumer of its own that never joins
//! the group (`assign` only, no offset commits): a seek is then a plain seek
//! on that consumer, and tasks never share a fetch queue. Which partitions a
//! process holds is decided by the consumer-group member in
//! `pipeline::group`; the committed offsets of exactly-once sinks go to the
//! group through the transactional producer (`sink::kafka`).
//!
//! Replay is Kafka's: the log is immutable, so reading from an offset again
//! yields the same records (as long as retention keeps them; a position
//! that is gone is an error, never a silent jump, because
//! `auto.offset.reset = error`). Aborted transactions and control records
//! are skipped by the broker and never become records.

use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{ReadOutcome, Source, SourceError};
use crate::record::{Header, Position, Record, SourceBatch};

/// How long a read waits for the first record before it returns.
const READ_WAIT: Duration = Duration::from_millis(100);

/// Timeout of metadata requests (watermarks, seeks, committed offsets).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a partition's reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// This offset.
    Offset(u64),
    /// The oldest offset the partition holds.
    Earliest,
    /// The end of the partition.
    Latest,
}

/// How to reach the cluster: `bootstrap.servers` and further librdkafka
/// properties.
#[derive(Debug, Clone)]
pub struct KafkaClient {
    /// `host:port[,...]`.
    pub bootstrap: String,
    /// Further properties, applied after weir's own.
    pub properties: Vec<(String, String)>,
}

impl KafkaClient {
    /// A client configuration with the bootstrap servers and the user's
    /// properties (`own` are weir's settings; the user's cannot override
    /// them, config validation refuses that).
    pub fn config(&self, own: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        for (k, v) in own {
            config.set(*k, *v);
        }
        config
    }
}

/// The reader consumer's callbacks: the end of the partition is an event
/// [`KafkaPartitionSource::read`] handles, not an error to log.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!("kafka consumer: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// See the [module docs](self).
pub struct KafkaPartitionSource {
    describe: String,
    topic: String,
    partition: u32,
    consumer: BaseConsumer<ReaderContext>,
    /// The offset of the next record to return.
    next: u64,
    /// The consumer reported the end of the partition at `next`, and no
    /// record came since.
    at_end: bool,
    /// End at the end of the partition instead of idling there.
    bounded: bool,
    last_warning: Option<Instant>,
}

impl KafkaPartitionSource {
    /// Opens `topic`/`partition` at `start`. `group` names the reader's own
    /// consumer (`<group>.weir-reader`; it never joins or commits). With
    /// `bounded`, reading ends at the end of the partition.
    pub fn open(
        client: &KafkaClient,
        group: &str,
        topic: &str,
        partition: u32,
        start: StartAt,
        bounded: bool,
    ) -> Result<KafkaPartitionSource, SourceError> {
        let describe = format!("kafka {topic}/{partition}");
        let error = |operation: &'static str, e: KafkaError| SourceError::Kafka {
            source_name: describe.clone(),
            operation,
            error: e.to_string(),
        };
        let reader_group = format!("{group}.weir-reader");
        let consumer: BaseConsumer<ReaderContext> = client
            .config(&[
                ("group.id", &reader_group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "error"),
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(ReaderContext)
            .map_err(|e| error("create consumer", e))?;
        let next = match start {
            StartAt::Offset(offset) => offset,
            StartAt::Earliest | StartAt::Latest => {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
                    .map_err(|e| error("read the partition's first and last offsets", e))?;
                let offset = if start == StartAt::Earliest {
                    low
                } else {
                    high
                };
                u64::try_from(offset).unwrap_or(0)
            }
        };
        let mut source = KafkaPartitionSource {
            describe,
            topic: topic.to_owned(),
            partition,
            consumer,
            next,
            at_end: false,
            bounded,
            last_warning: None,
        };
        source.assign(next)?;
        Ok(source)
    }

    fn error(&self, operation: &'static str, e: KafkaError) -> SourceError {
        SourceError::Kafka {
            source_name: self.describe.clone(),
            operation,
            error: e.to_string(),
        }
    }

    /// (Re)starts fetching at `offset`. A new assignment drops whatever was
    /// fetched for the old one.
    fn assign(&mut self, offset: u64) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            self.partition as i32,
            Offset::Offset(offset as i64),
        )
        .map_err(|e| self.error("assign the partition", e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| self.error("assign the partition", e))?;
        self.next = offset;
        self.at_end = false;
        Ok(())
    }

    fn to_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        Record {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            timestamp_ms: message.timestamp().to_millis(),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| Header {
                            name: h.key.to_owned(),
                            value: h.value.unwrap_or_default().to_vec(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Logs a transient consumer error, at most every 10 s.
    fn warn(&mut self, e: &KafkaError) {
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(source = %self.describe, "kafka consumer: {e} (retrying)");
            self.last_warning = Some(Instant::now());
        }
    }

    fn at_end_outcome(&self) -> ReadOutcome {
        if self.bounded {
            ReadOutcome::End
        } else {
            ReadOutcome::Idle
        }
    }
}

impl Source for KafkaPartitionSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Waits up to 100 ms for the first record, then takes what has arrived
    /// up to `max`. At the end of the partition: `Idle`, or `End` when
    /// bounded. Nothing yet but not at the end: `More` with no record.
    fn read(&mut self, max: usize, batch: &mut SourceBatch) -> Result<ReadOutcome, SourceError> {
        let deadline = Instant::now()
            + if self.at_end {
                Duration::ZERO
            } else {
                READ_WAIT
            };
        let mut got = 0;
        while got < max {
            let wait = if got > 0 {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    let (Ok(offset), true) = (
                        u64::try_from(message.offset()),
                        message.partition() == self.partition as i32,
                    ) else {
                        continue;
                    };
                    if offset < self.next {
                        continue; // fetched before a seek backwards
                    }
                    batch.push(
                        Self::to_record(&message),
                        Position::Offset {
                            partition: self.partition,
                            offset,
                        },
                    );
                    self.next = offset + 1;
                    self.at_end = false;
                    got += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.at_end = true;
                    if got == 0 {
                        return Ok(self.at_end_outcome());
                    }
                    break;
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(self.error("read", e));
                }
                Some(Err(e)) => {
                    if let Some(code) = e.rdkafka_error_code()
                        && matches!(
                            code,
                            RDKafkaErrorCode::OffsetOutOfRange
                                | RDKafkaErrorCode::AutoOffsetReset
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::TopicAuthorizationFailed
                        )
                    {
                        return Err(SourceError::Kafka {
                            source_name: self.describe.clone(),
                            operation: "read",
                            error: format!(
                                "{e} at offset {} (records the checkpoint needs are gone, e.g. deleted by retention, or the topic is missing)",
                                self.next
                            ),
                        });
                    }
                    self.warn(&e);
                    if got > 0 {
                        break;
                    }
                }
            }
        }
        if got == 0 && self.at_end {
            return Ok(self.at_end_outcome());
        }
        Ok(ReadOutcome::More)
    }

    fn position(&self) -> Position {
        Position::Offset {
            partition: self.partition,
            offset: self.next,
        }
    }

    fn seek(&mut self, position: &Position) -> Result<(), SourceError> {
        match *position {
            Position::Offset { partition, offset } if partition == self.partition => {
                self.assign(offset)
            }
            _ => Err(SourceError::InvalidPosition {
                source_name: self.describe.clone(),
                position: position.clone(),
                reason: format!("not an offset in partition {}", self.partition),
            }),
        }
    }
}

/// The consumer-group side of exactly-once Kafka output: the metadata a
/// transaction needs to commit offsets for the group, and the offsets
/// committed so far.
pub trait ConsumerGroup: Send + Sync {
    /// The group's name.
    fn group(&self) -> &str;
    /// Current membership metadata (generation, member id), for
    /// `send_offsets_to_transaction`.
    fn metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// The committed offset of `topic`/`partition` and its metadata string,
    /// `None` if nothing is committed. Reads stable offsets only (pending
    /// transactional commits are waited for).
    fn committed(&self, topic: &str, partition: u32) -> Result<Option<(u64, String)>, KafkaError>;
}

/// How long a group's coordinator may be moving before weir gives up.
const COORDINATOR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `e` says the group's coordinator is moving or loading.
fn coordinator_moving(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(
            Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::CoordinatorLoadInProgress
                | Code::RequestTimedOut
        )
    )
}

/// A group handle over any consumer configured with the group's id.
pub struct GroupConsumer<C: ConsumerContext + 'static> {
    /// The consumer (a member of the group, or not subscribed at all for
    /// static assignment).
    pub consumer: BaseConsumer<C>,
    /// The group id it was configured with.
    pub group: String,
}

impl<C: ConsumerContext + 'static> ConsumerGroup for GroupConsumer<C> {
    fn group(&self) -> &str {
        &self.group
    }

    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    fn committed(&self, topic: &str, partition: u32) -> Result<Option<(u64, String)>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        // The group's coordinator moves or loads (a broker restart, a new
        // group): transient, so ask again for a while.
        let deadline = std::time::Instant::now() + COORDINATOR_PATIENCE;
        let committed = loop {
            match self
                .consumer
                .committed_offsets(tpl.clone(), REQUEST_TIMEOUT)
            {
                Err(e) if coordinator_moving(&e) && std::time::Instant::now() < deadline => {
                    tracing::debug!(group = %self.group, "committed offsets: {e}; asking again");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => break other?,
            }
        };
        let Some(elem) = committed.find_partition(topic, partition as i32) else {
            return Ok(None);
        };
        elem.error()?;
        Ok(match elem.offset() {
            Offset::Offset(o) if o >= 0 => Some((o as u64, elem.metadata().to_owned())),
            _ => None,
        })
    }
}
