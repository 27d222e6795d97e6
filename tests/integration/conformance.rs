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
