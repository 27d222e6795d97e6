//! Conformance suites: one set of checks that every [`Source`] and every
//! [`Sink`] implementation must pass, run by each implementation's tests.
//!
//! The checks panic with a message naming the broken promise; they are test
//! helpers, not runtime code.
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::record::{Output, Position, SourceBatch};
use crate::sink::{Sink, SinkError};
use crate::source::{ReadOutcome, Source};

/// One record as the suite compares them: position and value.
type Seen = (Position, Vec<u8>, Option<Vec<u8>>);

fn drain(source: &mut dyn Source, max: usize) -> (Vec<Seen>, Vec<Position>) {
    let mut seen = Vec::new();
    let mut malformed = Vec::new();
    let mut batch = SourceBatch::default();
    for _ in 0..10_000_000 {
        batch.clear();
        let outcome = source.read(max, &mut batch).expect("read failed");
        assert!(
            batch.len() <= max,
            "{}: read returned {} records for max {max}",
            source.describe(),
            batch.len()
        );
        assert_eq!(batch.records.len(), batch.positions.len());
        for (r, p) in batch.records.iter().zip(&batch.positions) {
            seen.push((p.clone(), r.value.clone(), r.key.clone()));
        }
        match outcome {
            ReadOutcome::More => {}
            ReadOutcome::Malformed(m) => malformed.push(m.position),
            ReadOutcome::End | ReadOutcome::Idle => return (seen, malformed),
        }
    }
    panic!("{}: never ended", source.describe());
}

/// Checks the [`Source`] contract. `open` must return a fresh source over the
/// same, finite content (a bounded source, or an unbounded one that has
/// nothing more and reports `Idle`), holding at least three records.
pub fn source(open: &mut dyn FnMut() -> Box<dyn Source>) {
    // Cut independence: any max gives the same sequence.
    let (all, malformed) = drain(&mut *open(), 1024);
    assert!(
        all.len() >= 3,
        "the suite needs at least 3 records, got {}",
        all.len()
    );
    for max in [1, 2, 7] {
        let (again, again_malformed) = drain(&mut *open(), max);
        assert_eq!(again, all, "records differ when read with max = {max}");
        assert_eq!(
            again_malformed, malformed,
            "malformed records differ when read with max = {max}"
        );
    }
    // Positions increase strictly and start at the initial position.
    let first = open().position();
    assert_eq!(
        all[0].0, first,
        "the first record is not at the initial position()"
    );
    for pair in all.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "positions do not increase: {} then {}",
            pair[0].0,
            pair[1].0
        );
    }
    // Replay from every position yields the same suffix.
    for (k, (position, ..)) in all.iter().enumerate() {
        let mut source = open();
        source
            .seek(position)
            .expect("seek to a position the source produced");
        let (suffix, _) = drain(&mut *source, 3);
        assert_eq!(suffix, all[k..], "replay from {position} differs");
    }
    // position() after a read is where the next read starts.
    let mut source = open();
    let mut batch = SourceBatch::default();
    source.read(2, &mut batch).expect("read");
    let resume = source.position();
    let (rest, _) = drain(&mut *source, 5);
    let mut again = open();
    again.seek(&resume).expect("seek to position()");
    assert_eq!(
        drain(&mut *again, 5).0,
        rest,
        "seek(position()) does not resume where reading stopped"
    );
    // The end position is valid and yields nothing.
    let mut source = open();
    let _ = drain(&mut *source, 1024);
    let end = source.position();
    let mut at_end = open();
    at_end.seek(&end).expect("seek to the end position");
    assert!(
        drain(&mut *at_end, 10).0.is_empty(),
        "seek(end) yields records"
    );
    // A position from elsewhere is refused, not misread.
    let foreign = match first {
        Position::Sequence(_) => Position::File { line: 1, byte: 0 },
        _ => Position::Sequence(0),
    };
    assert!(
        open().seek(&foreign).is_err(),
        "seek to a foreign position was accepted"
    );
}

fn output(value: &[u8]) -> Output {
    Output {
        sink: String::new(),
        key: Some(b"k".to_vec()),
        value: value.to_vec(),
        headers: Vec::new(),
    }
}

/// Reads back the values a sink made durable; `None` when it keeps nothing.
pub type ReadBack = Box<dyn Fn() -> Option<Vec<Vec<u8>>>>;

/// Checks the [`Sink`] contract. `open` returns a fresh, empty sink and a
/// function that reads back the values it made durable (`None` when the sink
/// keeps nothing, like the null sink: then only counts are checked).
pub fn sink(open: &mut dyn FnMut() -> (Box<dyn Sink>, ReadBack)) {
    // Order across calls, empty calls, durability after flush.
    let (mut sink, read_back) = open();
    let values: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("value {i} \u{e9}").into_bytes())
        .collect();
    sink.write(&[]).expect("empty write");
    for chunk in values.chunks(7) {
        let outputs: Vec<Output> = chunk.iter().map(|v| output(v)).collect();
        sink.write(&outputs).expect("write");
    }
    sink.flush().expect("flush");
    sink.flush().expect("second flush");
    assert_eq!(
        sink.written(),
        100,
        "{}: written() is wrong",
        sink.describe()
    );
    if let Some(back) = read_back() {
        assert_eq!(back, values, "{}: values read back differ", sink.describe());
    }
    // Empty values are values.
    let (mut sink, read_back) = open();
    sink.write(&[output(b""), output(b"x")])
        .expect("write empty value");
    sink.flush().expect("flush");
    if let Some(back) = read_back() {
        assert_eq!(
            back,
            vec![b"".to_vec(), b"x".to_vec()],
            "{}: empty value lost",
            sink.describe()
        );
    }
    // An output the sink cannot represent fails with Unrepresentable and
    // nothing after it in the batch is written; a sink that can represent
    // everything accepts it.
    let (mut sink, read_back) = open();
    match sink.write(&[output(b"a"), output(b"b\nc"), output(b"d")]) {
        Ok(()) => {}
        Err(SinkError::Unrepresentable { index, .. }) => {
            assert_eq!(
                index,
                1,
                "{}: wrong index in Unrepresentable",
                sink.describe()
            );
            sink.flush().expect("flush");
            if let Some(back) = read_back() {
                assert_eq!(
                    back,
                    vec![b"a".to_vec()],
                    "{}: wrote past an unrepresentable output",
                    sink.describe()
                );
            }
        }
        Err(e) => panic!("{}: unexpected error {e}", sink.describe()),
    }
}

/// Checks a [`CheckpointStore`](crate::checkpoint::CheckpointStore) over a
/// backend. `raw` is the same backend, for tampering with objects. The store
/// must be empty.
pub async fn checkpoint_store(store: &crate::checkpoint::CheckpointStore) {
    const TASK: &str = "t-0";
    use crate::checkpoint::{
        EpochEntry, EpochStats, GlobalState, Hash, HeldHandle, Manifest, MemoryState,
        OperatorState, PutOutcome, StoreError,
    };
    use bytes::Bytes;
    use object_store::{ObjectStoreExt, PutPayload};

    // Content-addressed pages: a second put is a no-op; reads verify.
    let page = Bytes::from(vec![7u8; 65536]);
    let hash = Hash::of(&page);
    assert!(!store.has_page(TASK, &hash).await.unwrap());
    assert_eq!(
        store.put_page(TASK, &hash, page.clone()).await.unwrap(),
        PutOutcome::Uploaded
    );
    assert_eq!(
        store.put_page(TASK, &hash, page.clone()).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert!(store.has_page(TASK, &hash).await.unwrap());
    assert_eq!(store.get_page(TASK, &hash).await.unwrap(), page);
    let missing = Hash::of(b"never stored");
    assert!(matches!(
        store.get_page(TASK, &missing).await,
        Err(StoreError::NotFound { .. })
    ));

    // A page whose bytes were altered is reported corrupt, naming the key.
    let bad = Bytes::from(vec![9u8; 100]);
    let bad_hash = Hash::of(&bad);
    store.put_page(TASK, &bad_hash, bad).await.unwrap();
    let key = crate::checkpoint::layout::page(store.root(), TASK, &bad_hash);
    store
        .object_store()
        .put(&key, PutPayload::from(vec![8u8; 100]))
        .await
        .unwrap();
    match store.get_page(TASK, &bad_hash).await {
        Err(StoreError::Corrupt { key: k, .. }) => assert_eq!(k, key.to_string()),
        other => panic!("a tampered page was not reported corrupt: {other:?}"),
    }

    // Components.
    let component = Bytes::from_static(b"\0asm component bytes");
    let c = store.put_component(component.clone()).await.unwrap();
    assert_eq!(store.get_component(&c).await.unwrap(), component);

    // Manifests, commit markers, epoch listing in numeric order.
    let manifest = |epoch: u64| Manifest {
        format_version: crate::checkpoint::FORMAT_VERSION,
        pipeline: "p".into(),
        task: "t-0".into(),
        epoch,
        created_unix_ms: 1_700_000_000_000 + epoch,
        source_position: Position::File {
            line: epoch * 10,
            byte: epoch * 100,
        },
        operators: vec![OperatorState {
            name: "op".into(),
            component: c,
            memories: vec![MemoryState {
                size_bytes: 65536,
                page_bytes: 65536,
                pages: vec![hash],
            }],
            globals: vec![
                GlobalState::I32(1 << 20),
                GlobalState::F64(0x7ff8_0000_0000_0001),
            ],
            handles: vec![HeldHandle::Stdout, HeldHandle::Pollable { of: 0 }],
        }],
        stats: EpochStats {
            capture_pause_us: 5,
            state_bytes: 65536,
            new_bytes: 65536,
            upload_us: 7,
            records_in: 10 * epoch,
        },
        journal: None,
    };
    for epoch in [1, 2, 10] {
        let marker = store.put_manifest(&manifest(epoch)).await.unwrap();
        if epoch != 10 {
            store.commit("t-0", epoch, &marker).await.unwrap();
            store.commit("t-0", epoch, &marker).await.unwrap(); // idempotent
        }
    }
    assert_eq!(
        store.epochs("t-0").await.unwrap(),
        vec![
            EpochEntry {
                epoch: 1,
                committed: true
            },
            EpochEntry {
                epoch: 2,
                committed: true
            },
            EpochEntry {
                epoch: 10,
                committed: false
            },
        ]
    );
    assert_eq!(store.read_committed("t-0", 2).await.unwrap(), manifest(2));
    assert!(matches!(
        store.read_committed("t-0", 10).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.epochs("other-task").await.unwrap().is_empty());

    // A second, different manifest cannot take over a committed epoch.
    let mut other = manifest(2);
    other.created_unix_ms += 1;
    let other_marker = store.put_manifest(&other).await.unwrap();
    assert!(matches!(
        store.commit("t-0", 2, &other_marker).await,
        Err(StoreError::Conflict { .. })
    ));
    // ...and since its manifest was overwritten, epoch 2 now reads corrupt.
    assert!(matches!(
        store.read_committed("t-0", 2).await,
        Err(StoreError::Corrupt { .. })
    ));

    // Deleting an epoch removes it from the listing; pages stay.
    store.delete_epoch("t-0", 1).await.unwrap();
    store.delete_epoch("t-0", 1).await.unwrap();
    assert_eq!(store.epochs("t-0").await.unwrap()[0].epoch, 2);
    assert!(store.has_page(TASK, &hash).await.unwrap());

    // Names that would escape or confuse the layout are refused.
    assert!(matches!(
        store.epochs("../x").await,
        Err(StoreError::InvalidName { .. })
    ));
}

/// Opens an [`EpochSink`](crate::sink::EpochSink) over the same durable
/// location each time it is called (a reopen after a crash).
pub type OpenEpochSink<'a> = &'a mut dyn FnMut() -> Box<dyn crate::sink::EpochSink>;

/// Checks the [`EpochSink`](crate::sink::EpochSink) contract. `open` reopens
/// the same, initially empty location; `read_back` returns the values a
/// reader sees now. A crash is simulated by dropping the sink unflushed.
///
/// A sink that decides where a run resumes
/// ([`EpochSink::resume_epoch`](crate::sink::EpochSink::resume_epoch)
/// returns `Some`) is checked the way the runtime drives it: after a crash
/// it must name exactly its last published epoch, the suite "replays" the
/// lost epochs under new numbers, and `recover` must refuse any other
/// checkpoint.
pub fn epoch_sink(open: OpenEpochSink<'_>, read_back: &dyn Fn() -> Vec<Vec<u8>>) {
    let values = |epoch: u64| -> Vec<Output> {
        (0..3)
            .map(|i| output(format!("e{epoch} r{i}").as_bytes()))
            .collect()
    };
    let seen = |epochs: &[u64]| -> Vec<Vec<u8>> {
        epochs
            .iter()
            .flat_map(|&e| values(e).into_iter().map(|o| o.value))
            .collect()
    };
    let prepare = |sink: &mut Box<dyn crate::sink::EpochSink>, epoch: u64| {
        let position = Position::Offset {
            partition: 0,
            offset: epoch * 10,
        };
        sink.epoch_position(epoch, &position)
            .expect("epoch_position");
        sink.prepare(epoch).expect("prepare");
    };
    let mut sink = open();
    let decides = sink
        .resume_epoch()
        .expect("resume_epoch on an empty location");
    assert!(
        decides.is_none() || decides == Some(0),
        "{}: names epoch {decides:?} to resume from on an empty location",
        sink.describe()
    );
    let decides = decides.is_some();
    sink.recover(0).expect("recover on an empty location");
    assert!(read_back().is_empty());

    // Written and prepared is invisible; published is visible.
    sink.write(&values(1)).expect("write");
    sink.flush().expect("flush");
    assert!(
        read_back().is_empty(),
        "{}: outputs visible before their epoch was prepared",
        sink.describe()
    );
    prepare(&mut sink, 1);
    assert!(
        read_back().is_empty(),
        "{}: outputs visible before publish",
        sink.describe()
    );
    sink.publish(1).expect("publish");
    sink.publish(1).expect("publish is idempotent");
    assert_eq!(read_back(), seen(&[1]));

    // An epoch without outputs is fine.
    prepare(&mut sink, 2);
    sink.publish(2).expect("publish an empty epoch");

    // Outputs written after a prepare belong to the next epoch, even while
    // the prepared one waits for its checkpoint.
    sink.write(&values(3)).expect("write");
    prepare(&mut sink, 3);
    sink.write(&values(4)).expect("write while epoch 3 waits");
    sink.publish(3).expect("publish");
    assert_eq!(
        read_back(),
        seen(&[1, 3]),
        "{}: an epoch published with outputs of the next one",
        sink.describe()
    );
    prepare(&mut sink, 4);
    sink.publish(4).expect("publish");
    assert_eq!(read_back(), seen(&[1, 3, 4]));

    // Crash after prepare, before publish, with the checkpoint committed.
    sink.write(&values(5)).expect("write");
    prepare(&mut sink, 5);
    if decides {
        return decided_resume(open, read_back, sink, &prepare, &values, &seen);
    }
    let mut sink = crash_and_recover(open, sink, 5);
    assert_eq!(
        read_back(),
        seen(&[1, 3, 4, 5]),
        "a committed, prepared epoch was not published on recovery"
    );

    // Crash after prepare with the checkpoint NOT committed, and a crash
    // mid-epoch: both are discarded.
    sink.write(&values(6)).expect("write");
    prepare(&mut sink, 6);
    sink.write(&values(7)).expect("write");
    sink.flush().expect("flush");
    let mut sink = crash_and_recover(open, sink, 5);
    assert_eq!(
        read_back(),
        seen(&[1, 3, 4, 5]),
        "uncommitted output survived recovery"
    );

    // Epoch 6 is then redone (a replay) and commits.
    sink.write(&values(6)).expect("write");
    prepare(&mut sink, 6);
    sink.publish(6).expect("publish");
    assert_eq!(read_back(), seen(&[1, 3, 4, 5, 6]));

    // Recovering to a checkpoint older than what is published (the newer
    // checkpoints were damaged): the replay must reproduce the published
    // outputs, which are checked and not written twice; new epochs are
    // numbered after the published ones.
    drop(sink);
    let mut sink = open();
    sink.recover(4).expect("recover to an older checkpoint");
    assert_eq!(sink.newest_epoch().expect("newest epoch"), 6);
    sink.write(&values(5)).expect("replay of published epoch 5");
    sink.write(&values(6)).expect("replay of published epoch 6");
    sink.write(&values(7)).expect("write");
    prepare(&mut sink, 7);
    sink.publish(7).expect("publish");
    assert_eq!(
        read_back(),
        seen(&[1, 3, 4, 5, 6, 7]),
        "replayed output was published twice, or new output lost"
    );

    // A replay that does not reproduce the published output is an error.
    drop(sink);
    let mut sink = open();
    sink.recover(5).expect("recover");
    assert!(
        sink.write(&values(9)).is_err(),
        "{}: a replay that diverged from published output was accepted",
        sink.describe()
    );
    assert_eq!(read_back(), seen(&[1, 3, 4, 5, 6, 7]));
}

/// The rest of [`epoch_sink`] for a sink that decides where a run resumes:
/// epoch 5 is prepared, its checkpoint committed, and the process dies.
fn decided_resume(
    open: OpenEpochSink<'_>,
    read_back: &dyn Fn() -> Vec<Vec<u8>>,
    sink: Box<dyn crate::sink::EpochSink>,
    prepare: &dyn Fn(&mut Box<dyn crate::sink::EpochSink>, u64),
    values: &dyn Fn(u64) -> Vec<Output>,
    seen: &dyn Fn(&[u64]) -> Vec<Vec<u8>>,
) {
    let mut reopen = |sink: Box<dyn crate::sink::EpochSink>| {
        drop(sink);
        let mut sink = open();
        let resume = sink
            .resume_epoch()
            .expect("resume_epoch")
            .expect("a sink that decided once decides again");
        (sink, resume)
    };
    let (mut sink, resume) = reopen(sink);
    assert_eq!(
        resume,
        4,
        "{}: after a crash with epoch 5 prepared but not published, the run must resume from the last published epoch",
        sink.describe()
    );
    assert_eq!(
        read_back(),
        seen(&[1, 3, 4]),
        "{}: a prepared, unpublished epoch became visible after a crash",
        sink.describe()
    );
    for wrong in [3, 5] {
        assert!(
            sink.recover(wrong).is_err(),
            "{}: accepted to resume from checkpoint {wrong} while its output ends with epoch 4",
            sink.describe()
        );
    }
    sink.recover(4)
        .expect("recover to the epoch the sink named");
    assert!(
        sink.newest_epoch().expect("newest epoch") >= 4,
        "{}: newest_epoch is behind what is published",
        sink.describe()
    );
    // The replay of epoch 5's input, under the next free number, plus new
    // output in the epoch after.
    sink.write(&values(5)).expect("replayed write");
    prepare(&mut sink, 6);
    sink.publish(6).expect("publish the replayed epoch");
    assert_eq!(read_back(), seen(&[1, 3, 4, 5]));

    // A crash mid-epoch and one with an epoch prepared but its checkpoint
    // not committed: neither leaves a trace.
    sink.write(&values(6)).expect("write");
    prepare(&mut sink, 7);
    sink.write(&values(7)).expect("write");
    sink.flush().expect("flush");
    let (mut sink, resume) = reopen(sink);
    assert_eq!(resume, 6, "{}: wrong resume point", sink.describe());
    assert_eq!(
        read_back(),
        seen(&[1, 3, 4, 5]),
        "uncommitted output survived recovery"
    );
    sink.recover(6).expect("recover");
    sink.write(&values(6)).expect("write");
    prepare(&mut sink, 8);
    sink.publish(8).expect("publish");
    assert_eq!(read_back(), seen(&[1, 3, 4, 5, 6]));
}

/// Drops `sink` as a crash would (nothing flushed or published), reopens the
/// location and recovers to checkpoint `committed`.
fn crash_and_recover(
    open: OpenEpochSink<'_>,
    sink: Box<dyn crate::sink::EpochSink>,
    committed: u64,
) -> Box<dyn crate::sink::EpochSink> {
    drop(sink);
    let mut sink = open();
    sink.recover(committed).expect("recover");
    sink
}
