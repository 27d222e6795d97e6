//! The manifest of an epoch and its commit marker: the documented, versioned
//! format (docs/checkpoint-format.md). Encoded with postcard; field order is
//! part of the format, so fields are only ever appended in a new version, and
//! a reader decodes an older version by taking the fields appended since as
//! absent.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::journal::EpochJournal;
use crate::record::Position;

/// The manifest format this weir writes. It reads this and every older one.
///
/// - 1: the first format.
/// - 2: appends [`Manifest::journal`] (the epoch journal).
pub const FORMAT_VERSION: u32 = 2;

/// Bytes per state page: one WebAssembly page, so every memory is a whole
/// number of pages.
pub const PAGE_BYTES: usize = 65536;

/// A blake3 hash: names pages and components, checks manifests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Parses 64 lowercase hex digits, as [`Hash`] displays.
    pub fn from_hex(hex: &str) -> Option<Hash> {
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut hash = [0; 32];
        for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Hash(hash))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Everything needed to restore one task at the end of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the weir that wrote it. Always first.
    pub format_version: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The task (one per source partition).
    pub task: String,
    /// The epoch: 1 for the first checkpoint of the task, then +1.
    pub epoch: u64,
    /// Wall time when the state was captured, ms since the Unix epoch.
    /// Informational only: never read on recovery.
    pub created_unix_ms: u64,
    /// Where the source resumes: the position of the first record not
    /// covered by this checkpoint.
    pub source_position: Position,
    /// Every operator of the chain, in order.
    pub operators: Vec<OperatorState>,
    /// Measurements of this checkpoint.
    pub stats: EpochStats,
    /// The recorded inputs of the epoch (format 2); `None` in a manifest of
    /// format 1, or when the pipeline ran without recording.
    pub journal: Option<EpochJournal>,
}

/// The captured state of one operator instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The operator's name in the pipeline.
    pub name: String,
    /// blake3 of the component's bytes (stored under `components/`).
    pub component: Hash,
    /// Every linear memory, in the order of the instrumented layout.
    pub memories: Vec<MemoryState>,
    /// Every mutable global, in the order of the instrumented layout.
    pub globals: Vec<GlobalState>,
    /// The WASI handles the guest held, in the order it acquired them; a
    /// restore recreates them first so they get the same handle indices.
    pub handles: Vec<HeldHandle>,
}

/// A WASI resource handle a guest keeps between calls (wasi-libc keeps its
/// stdio streams and one pollable per stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldHandle {
    /// `wasi:cli/stdin.get-stdin`.
    Stdin,
    /// `wasi:cli/stdout.get-stdout`.
    Stdout,
    /// `wasi:cli/stderr.get-stderr`.
    Stderr,
    /// `subscribe` on the stream held as entry `of` of this list.
    Pollable {
        /// Index of the stream in [`OperatorState::handles`].
        of: u32,
    },
}

/// One linear memory, as content-addressed pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryState {
    /// Size of the memory in bytes (a multiple of 64 KiB).
    pub size_bytes: u64,
    /// Bytes per page; every page but the last is full.
    pub page_bytes: u32,
    /// The pages in address order.
    pub pages: Vec<Hash>,
}

/// One mutable global: its value type and raw bits (floats bit-exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalState {
    /// An `i32` global.
    I32(u32),
    /// An `i64` global.
    I64(u64),
    /// An `f32` global, as bits.
    F32(u32),
    /// An `f64` global, as bits.
    F64(u64),
}

/// Measurements recorded with a checkpoint (for `weir checkpoints list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStats {
    /// How long operators were paused to capture state, in microseconds.
    pub capture_pause_us: u64,
    /// Total bytes of state (all memories).
    pub state_bytes: u64,
    /// Bytes of pages this epoch uploaded (new content).
    pub new_bytes: u64,
    /// How long uploading the new pages took, in microseconds.
    pub upload_us: u64,
    /// Records the task had read from its source when the state was
    /// captured, over all runs.
    pub records_in: u64,
}

/// The object whose existence makes an epoch the recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMarker {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// blake3 of the manifest object's bytes.
    pub manifest: Hash,
    /// Length of the manifest object in bytes.
    pub manifest_bytes: u64,
}

/// Why stored bytes are not a valid manifest or marker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer weir.
    #[error(
        "format version {found} is newer than this weir reads ({FORMAT_VERSION}); upgrade weir"
    )]
    TooNew {
        /// The version in the object.
        found: u32,
    },
    /// Not decodable.
    #[error("cannot decode: {0}")]
    Malformed(String),
}

/// Reads the format version, the first field of both objects, alone: a newer
/// format is reported as such rather than as garbage.
fn version_of(bytes: &[u8]) -> Result<u32, DecodeError> {
    let (version, _): (u32, _) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version > FORMAT_VERSION {
        return Err(DecodeError::TooNew { found: version });
    }
    Ok(version)
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, DecodeError> {
    version_of(bytes)?;
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

impl Manifest {
    /// A digest of the operators' complete state (pages, globals, handles):
    /// equal for two checkpoints exactly when their states are equal.
    pub fn state_hash(&self) -> Hash {
        Hash::of(&postcard::to_allocvec(&self.operators).unwrap_or_default())
    }

    /// Every page this manifest references, operator by operator and memory
    /// by memory, in address order (a page shared by two addresses comes
    /// twice).
    pub fn pages(&self) -> impl Iterator<Item = Hash> + '_ {
        self.operators
            .iter()
            .flat_map(|op| op.memories.iter())
            .flat_map(|m| m.pages.iter().copied())
    }

    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_else(|e| unreachable!("postcard to Vec: {e}"))
    }

    /// Decodes a manifest of this or any older format, refusing newer
    /// formats and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        if version_of(bytes)? >= 2 {
            return decode(bytes);
        }
        // Format 1 is format 2 without the journal: appending postcard's
        // `None` (one zero byte) makes it a format-2 encoding of the same
        // manifest with no journal.
        let mut upgraded = Vec::with_capacity(bytes.len() + 1);
        upgraded.extend_from_slice(bytes);
        upgraded.push(0);
        decode(&upgraded)
    }
}

impl CommitMarker {
    /// Encodes the marker.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_else(|e| unreachable!("postcard to Vec: {e}"))
    }

    /// Decodes a marker.
    pub fn decode(bytes: &[u8]) -> Result<CommitMarker, DecodeError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex_and_nothing_else_parses() {
        let hash = Hash::of(b"page");
        assert_eq!(Hash::from_hex(&hash.to_string()), Some(hash));
        assert_eq!(Hash::from_hex(&hash.to_string().to_uppercase()), None);
        assert_eq!(Hash::from_hex(&hash.to_string()[1..]), None);
        assert_eq!(Hash::from_hex(&format!("{hash}#1")), None);
    }
}
