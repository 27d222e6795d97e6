//! The checkpoint format is stable: bytes written by format version 1 are
//! kept in the repository and must decode to the same manifest forever.

use weir::checkpoint::{
    CommitMarker, EpochStats, FORMAT_VERSION, GlobalState, Hash, HeldHandle, Manifest, MemoryState,
    OperatorState,
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
    }
}

#[test]
fn a_version_1_manifest_decodes_unchanged() {
    let path = repo_root().join("tests/data/manifest-v1.postcard");
    if std::env::var_os("WEIR_WRITE_GOLDEN").is_some() {
        std::fs::write(&path, v1_manifest().encode()).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(Manifest::decode(&golden).unwrap(), v1_manifest());
    // Encoding has not drifted either: same struct, same bytes.
    assert_eq!(v1_manifest().encode(), golden);
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let mut newer = v1_manifest();
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
    let bytes = v1_manifest().encode();
    assert!(Manifest::decode(&bytes[..bytes.len() - 3]).is_err());
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(
        Manifest::decode(&padded)
            .unwrap_err()
            .to_string()
            .contains("1 trailing bytes")
    );
}
