//! Every source and sink passes the shared conformance suites.

use std::io::Write;
use std::sync::{Arc, Mutex};

use weir::config::LineFormat;
use weir::conformance::{self, ReadBack};
use weir::sink::{EpochSink, LineSink, NullSink, PartFileSink, Sink};
use weir::source::{FileSource, GeneratorProfile, GeneratorSource, Source};

#[test]
fn file_source_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, "a,1\r\nb,2\n\n  \nc,3\nd,4 no newline at end").unwrap();
    conformance::source(&mut || {
        Box::new(FileSource::open(&path, LineFormat::Lines, 1 << 20).unwrap())
    });
}

#[test]
fn file_source_with_malformed_and_overlong_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let long = format!("{{\"value\":\"{}\"}}", "x".repeat(200));
    std::fs::write(
        &path,
        format!("{{\"value\":\"a\",\"key\":\"k\"}}\nnot json\n{long}\n{{\"value\":\"b\",\"timestamp_ms\":5}}\n{{\"value\":\"c\",\"headers\":{{\"h\":\"v\"}}}}\n"),
    )
    .unwrap();
    conformance::source(&mut || Box::new(FileSource::open(&path, LineFormat::Jsonl, 100).unwrap()));
}

#[test]
fn generator_source_both_profiles() {
    for profile in [GeneratorProfile::Payments, GeneratorProfile::Rides] {
        conformance::source(&mut || Box::new(GeneratorSource::new(profile, 7, 40)));
    }
}

#[test]
fn generator_source_behind_a_box_of_dyn() {
    conformance::source(&mut || {
        let inner: Box<dyn Source> =
            Box::new(GeneratorSource::new(GeneratorProfile::Payments, 1, 10));
        Box::new(inner)
    });
}

#[test]
fn file_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::sink(&mut || {
        n += 1;
        let path = dir.path().join(format!("out/{n}.csv"));
        let sink = LineSink::create_file("main", &path).unwrap();
        let read_back = move || {
            let bytes = std::fs::read(&path).unwrap();
            Some(lines(&bytes))
        };
        (
            Box::new(sink) as Box<dyn Sink>,
            Box::new(read_back) as ReadBack,
        )
    });
}

/// The stdout sink is a `LineSink` over stdout; the suite runs the same type
/// over a buffer it can read back.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn line_sink_over_a_stream() {
    conformance::sink(&mut || {
        let buffer = SharedBuffer::default();
        let sink = LineSink::new("sink main (stream)".into(), buffer.clone());
        let read_back = move || {
            let bytes = buffer.0.lock().unwrap().clone();
            Some(lines(&bytes))
        };
        (
            Box::new(sink) as Box<dyn Sink>,
            Box::new(read_back) as ReadBack,
        )
    });
}

#[test]
fn null_sink() {
    conformance::sink(&mut || {
        (
            Box::new(NullSink::new("null")) as Box<dyn Sink>,
            Box::new(|| None) as ReadBack,
        )
    });
}

/// Newline-terminated lines, without their terminators.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines.pop();
    lines
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn checkpoint_store_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let store = weir::checkpoint::CheckpointStore::new(
        Arc::new(backend),
        object_store::path::Path::from("ckpt"),
        "pipeline-a",
        format!("file://{}", dir.path().display()),
    )
    .unwrap();
    block_on(conformance::checkpoint_store(&store));
}

#[test]
fn checkpoint_store_in_memory() {
    let store = weir::checkpoint::CheckpointStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        object_store::path::Path::from(""),
        "pipeline-a",
        "memory://".into(),
    )
    .unwrap();
    block_on(conformance::checkpoint_store(&store));
}

/// A part-file sink seen as a plain sink: every flush ends an epoch whose
/// checkpoint commits at once, so a reader sees what was flushed.
struct PublishOnFlush {
    sink: PartFileSink,
    epoch: u64,
}

impl Sink for PublishOnFlush {
    fn describe(&self) -> String {
        self.sink.describe()
    }
    fn write(&mut self, outputs: &[weir::record::Output]) -> Result<(), weir::sink::SinkError> {
        self.sink.write(outputs)
    }
    fn flush(&mut self) -> Result<(), weir::sink::SinkError> {
        self.epoch += 1;
        self.sink.prepare(self.epoch)?;
        self.sink.publish(self.epoch)
    }
    fn written(&self) -> u64 {
        self.sink.written()
    }
}

#[test]
fn part_file_sink_is_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::sink(&mut || {
        n += 1;
        let path = dir.path().join(format!("out-{n}"));
        let mut sink = PartFileSink::open("main", &path, "csv").unwrap();
        sink.recover(0).unwrap();
        let read_back = move || Some(read_parts(&path));
        (
            Box::new(PublishOnFlush { sink, epoch: 0 }) as Box<dyn Sink>,
            Box::new(read_back) as ReadBack,
        )
    });
}

#[test]
fn part_file_sink_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    conformance::epoch_sink(
        &mut || Box::new(PartFileSink::open("main", &path, "csv").unwrap()),
        &|| read_parts(&path),
    );
}

/// What a reader of a part directory sees: published parts in name order.
fn read_parts(dir: &std::path::Path) -> Vec<Vec<u8>> {
    lines(&weir_tests::read_parts(dir))
}

#[test]
fn checkpoint_store_opened_by_path_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir-data");
    let store =
        weir::checkpoint::CheckpointStore::open(path.to_str().unwrap(), "pipeline-a").unwrap();
    block_on(conformance::checkpoint_store(&store));
    assert!(
        path.join("pipeline-a").is_dir(),
        "objects are not under the directory"
    );
    let url = format!("file://{}", dir.path().join("other").display());
    block_on(conformance::checkpoint_store(
        &weir::checkpoint::CheckpointStore::open(&url, "p").unwrap(),
    ));
    let err = weir::checkpoint::CheckpointStore::open("ftp://x/y", "p")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot open checkpoint store `ftp://x/y`: unsupported scheme: use a local directory, file:///dir, s3://bucket/prefix or memory://"
    );
}

#[test]
fn checkpoint_store_on_s3() {
    let bucket = weir_tests::services::fresh_bucket("conformance");
    let location = format!("s3://{bucket}/some/prefix");
    let store = weir::checkpoint::CheckpointStore::open(&location, "pipeline-a").unwrap();
    block_on(conformance::checkpoint_store(&store));
    // Everything went under the prefix, named as the format says.
    let listed: Vec<String> = block_on(async {
        use futures::TryStreamExt;
        store
            .object_store()
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
    })
    .unwrap();
    assert!(!listed.is_empty());
    for key in &listed {
        assert!(key.starts_with("some/prefix/pipeline-a/"), "{key}");
    }
    assert!(
        listed
            .iter()
            .any(|k| k.starts_with("some/prefix/pipeline-a/tasks/t-0/pages/")),
        "{listed:?}"
    );
}

/// A partition holding plain records (keys, headers, an empty value), an
/// aborted transaction in the middle and a committed one at the end (so
/// offsets have gaps and the partition ends with a control record).
fn kafka_source_topic() -> (String, String) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::time::Duration;
    let bootstrap = weir_tests::services::kafka_bootstrap();
    let topic = weir_tests::topics::unique("conformance-src");
    crate::kafka::create_topic(&topic, 1);
    let plain = crate::kafka::producer(&bootstrap);
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "h",
        value: Some("v"),
    });
    for i in 0..5 {
        let value = if i == 2 {
            String::new()
        } else {
            format!("plain {i}")
        };
        let mut record = BaseRecord::to(&topic).partition(0).payload(&value).key("k");
        if i == 3 {
            record = record.headers(headers.clone());
        }
        plain.send(record).map_err(|(e, _)| e).unwrap();
    }
    plain.flush(Duration::from_secs(30)).unwrap();
    let txn: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set(
            "transactional.id",
            weir_tests::topics::unique("conformance-txn"),
        )
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(60)).unwrap();
    txn.begin_transaction().unwrap();
    for i in 0..3 {
        let value = format!("aborted {i}");
        txn.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    txn.flush(Duration::from_secs(30)).unwrap();
    txn.abort_transaction(Duration::from_secs(60)).unwrap();
    txn.begin_transaction().unwrap();
    for i in 0..3 {
        let value = format!("committed {i}");
        txn.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    txn.commit_transaction(Duration::from_secs(60)).unwrap();
    (bootstrap, topic)
}

#[test]
fn kafka_source_unbounded_and_bounded() {
    use weir::source::kafka::{KafkaClient, StartAt};
    let (bootstrap, topic) = kafka_source_topic();
    let client = KafkaClient {
        bootstrap,
        properties: Vec::new(),
    };
    for bounded in [false, true] {
        conformance::source(&mut || {
            Box::new(
                weir::source::KafkaPartitionSource::open(
                    &client,
                    "conformance",
                    &topic,
                    0,
                    StartAt::Earliest,
                    bounded,
                )
                .unwrap(),
            )
        });
    }
    // What the suite read is what was committed: 8 records, none aborted.
    let mut source = weir::source::KafkaPartitionSource::open(
        &client,
        "conformance",
        &topic,
        0,
        StartAt::Earliest,
        true,
    )
    .unwrap();
    let mut batch = weir::record::SourceBatch::default();
    while source.read(100, &mut batch).unwrap() != weir::source::ReadOutcome::End {}
    let values: Vec<String> = batch
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            "plain 0",
            "plain 1",
            "",
            "plain 3",
            "plain 4",
            "committed 0",
            "committed 1",
            "committed 2"
        ]
    );
    assert_eq!(batch.records[3].headers.len(), 1);
    assert_eq!(batch.records[0].key.as_deref(), Some(&b"k"[..]));
}

#[test]
fn kafka_sink_is_exactly_once() {
    use std::sync::{Arc, Mutex};
    use weir::source::kafka::{GroupConsumer, KafkaClient};
    let bootstrap = weir_tests::services::kafka_bootstrap();
    let source_topic = weir_tests::topics::unique("conformance-offsets");
    let topic = weir_tests::topics::unique("conformance-sink");
    crate::kafka::create_topic(&source_topic, 1);
    crate::kafka::create_topic(&topic, 1);
    let group = weir_tests::topics::unique("conformance-group");
    let client = KafkaClient {
        bootstrap: bootstrap.clone(),
        properties: Vec::new(),
    };
    let mut open = || -> Box<dyn EpochSink> {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let group = Arc::new(GroupConsumer {
            consumer,
            group: group.clone(),
        });
        let producer = weir::sink::kafka::TransactionalProducer::open(
            &client,
            "conformance",
            "t-0",
            group,
            &source_topic,
            0,
            false,
        )
        .unwrap();
        Box::new(weir::sink::KafkaSink::exactly_once(
            "main",
            &topic,
            Arc::new(Mutex::new(producer)),
        ))
    };
    conformance::epoch_sink(&mut open, &|| {
        crate::kafka::read_committed(&topic)
            .into_iter()
            .map(|s| s.value)
            .collect()
    });
}
