//! The checkpoint format is stable: bytes written by every format version
//! are kept in the repository and must decode to the same manifest forever
//! (format 1 without a journal, format 2 with one).

use weir::checkpoint::{
    CommitMarker, EpochJournal, EpochStats, FORMAT_VERSION, GlobalState, Hash, HeldHandle,
    LookupAnswer, LookupEntry, LookupRequest, Manifest, MemoryState, OperatorJournal,
    OperatorState, ReadEnd, RecordedRead, RecordedState, SinkOutputs,
};
use weir::record::Position;
use weir_tests::repo_root;

fn v1_manifest() -> Manifest {
    Manifest {
        format_version: 1,
        pipeline: "payments".into(),
        task: "file-0".into(),
        epoch: 42,
        created_unix_ms: 1_763_856_000_000,
        source_position: Position::File {
            line: 100_001,
            byte: 9_512_345,
        },
        operators: vec![OperatorState {
            name: "dedup".into(),
            component: Hash([0xab; 32]),
            memories: vec![MemoryState {
                size_bytes: 3 * 65536,
                page_bytes: 65536,
                pages: vec![Hash([1; 32]), Hash([2; 32]), Hash([1; 32])],
            }],
            globals: vec![
                GlobalState::I32(1_048_576),
                GlobalState::F64(0x7ff8_0000_0000_0001),
            ],
            handles: vec![HeldHandle::Stdout, HeldHandle::Pollable { of: 0 }],
        }],
        stats: EpochStats {
            capture_pause_us: 1_234,
            state_bytes: 196_608,
            new_bytes: 65_536,
            upload_us: 2_345,
            records_in: 100_000,
        },
        journal: None,
    }
}

/// A format-2 manifest: the v1 one with a journal that has a bit of
/// everything.
fn v2_manifest() -> Manifest {
    Manifest {
        format_version: 2,
        journal: Some(EpochJournal {
            base_epoch: Some(41),
            start_position: Position::File {
                line: 99_001,
                byte: 9_400_000,
            },
            seed: [7; 32],
            clock_ms: 1_763_856_000_123,
            reads: vec![
                RecordedRead {
                    records: 1024,
                    end: ReadEnd::More,
                    time_ms: 1_763_856_000_100,
                },
                RecordedRead {
                    records: 3,
                    end: ReadEnd::Malformed,
                    time_ms: 1_763_856_000_123,
                },
            ],
            operators: vec![OperatorJournal {
                name: "dedup".into(),
                at_end: RecordedState {
                    random_bytes: 64,
                    insecure_random_bytes: 16,
                    lookups: 12,
                },
                entries: vec![
                    LookupEntry {
                        index: 10,
                        request: LookupRequest::HttpGet {
                            url: "http://rates.internal/eur".into(),
                        },
                        answer: LookupAnswer::Http {
                            status: 200,
                            headers: vec![("content-type".into(), "text/plain".into())],
                            body: b"1.08".to_vec(),
                        },
                    },
                    LookupEntry {
                        index: 11,
                        request: LookupRequest::ReadFile {
                            path: "zones.csv".into(),
                        },
                        answer: LookupAnswer::Failed {
                            message: "No such file or directory (os error 2)".into(),
                        },
                    },
                ],
            }],
            outputs: vec![SinkOutputs {
                sink: "main".into(),
                outputs: 1_020,
            }],
        }),
        ..v1_manifest()
    }
}

#[test]
fn a_version_1_manifest_decodes_unchanged() {
    // Written by weir with format 1; never rewritten.
    let golden = std::fs::read(repo_root().join("tests/data/manifest-v1.postcard")).unwrap();
    assert_eq!(Manifest::decode(&golden).unwrap(), v1_manifest());
    // Format 2 is format 1 with the journal appended: the same bytes and a
    // `None`.
    let mut as_v2 = v1_manifest().encode();
    as_v2.pop();
    assert_eq!(as_v2, golden);
}

#[test]
fn a_version_2_manifest_decodes_unchanged() {
    let path = repo_root().join("tests/data/manifest-v2.postcard");
    if std::env::var_os("WEIR_WRITE_GOLDEN").is_some() {
        std::fs::write(&path, v2_manifest().encode()).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(Manifest::decode(&golden).unwrap(), v2_manifest());
    // Encoding has not drifted either: same struct, same bytes.
    assert_eq!(v2_manifest().encode(), golden);
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let mut newer = v2_manifest();
    newer.format_version = FORMAT_VERSION + 1;
    let err = Manifest::decode(&newer.encode()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "format version {} is newer than this weir reads ({FORMAT_VERSION}); upgrade weir",
            FORMAT_VERSION + 1
        )
    );
    let marker = CommitMarker {
        format_version: FORMAT_VERSION,
        manifest: Hash::of(b"m"),
        manifest_bytes: 1,
    };
    assert_eq!(CommitMarker::decode(&marker.encode()).unwrap(), marker);
}

#[test]
fn truncated_or_padded_manifests_are_refused() {
    let bytes = v2_manifest().encode();
    assert!(Manifest::decode(&bytes[..bytes.len() - 3]).is_err());
    let mut v1 = std::fs::read(repo_root().join("tests/data/manifest-v1.postcard")).unwrap();
    v1.push(0);
    assert!(
        Manifest::decode(&v1)
            .unwrap_err()
            .to_string()
            .contains("1 trailing bytes")
    );
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(
        Manifest::decode(&padded)
            .unwrap_err()
            .to_string()
            .contains("1 trailing bytes")
    );
}
