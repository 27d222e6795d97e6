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
