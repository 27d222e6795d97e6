//! Manifests as `weir checkpoints --json` shows them. These names are the
//! stable interface for scripts: they follow docs/checkpoint-format.md
//! field for field, with hashes as lowercase hex and enums tagged by
//! `kind` (or `type`, for globals).

use std::fmt;

use serde::Serialize;

use crate::checkpoint::{
    EpochStats, GlobalState, HeldHandle, Manifest, MemoryState, OperatorState,
};
use crate::record::Position;

/// A manifest, every field of the format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestView {
    /// The format version it was written in.
    pub format_version: u32,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// The epoch.
    pub epoch: u64,
    /// Wall time of the capture, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// Where the source resumes.
    pub source_position: PositionView,
    /// The operators, in chain order.
    pub operators: Vec<OperatorView>,
    /// The measurements (field names as in the format).
    pub stats: EpochStats,
}

impl From<&Manifest> for ManifestView {
    fn from(m: &Manifest) -> ManifestView {
        ManifestView {
            format_version: m.format_version,
            pipeline: m.pipeline.clone(),
            task: m.task.clone(),
            epoch: m.epoch,
            created_unix_ms: m.created_unix_ms,
            source_position: (&m.source_position).into(),
            operators: m.operators.iter().map(OperatorView::from).collect(),
            stats: m.stats,
        }
    }
}

/// A source position: `{"kind": "file", "line", "byte"}`,
/// `{"kind": "sequence", "index"}` or `{"kind": "offset", "partition",
/// "offset"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PositionView {
    /// A line of a file.
    File {
        /// 1-based line number.
        line: u64,
        /// Byte offset of the line's start.
        byte: u64,
    },
    /// A generator's record index.
    Sequence {
        /// The index.
        index: u64,
    },
    /// An offset in a Kafka partition.
    Offset {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
    },
}

impl From<&Position> for PositionView {
    fn from(p: &Position) -> PositionView {
        match *p {
            Position::File { line, byte } => PositionView::File { line, byte },
            Position::Sequence(index) => PositionView::Sequence { index },
            Position::Offset { partition, offset } => PositionView::Offset { partition, offset },
        }
    }
}

impl fmt::Display for PositionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PositionView::File { line, byte } => write!(f, "line {line} (byte {byte})"),
            PositionView::Sequence { index } => write!(f, "record #{index}"),
            PositionView::Offset { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
        }
    }
}

/// One operator's captured state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatorView {
    /// Its name in the pipeline.
    pub name: String,
    /// blake3 of its component (hex), the key under `components/`.
    pub component: String,
    /// Its memories, in layout order.
    pub memories: Vec<MemoryView>,
    /// Its mutable globals, in layout order.
    pub globals: Vec<GlobalView>,
    /// The WASI handles it held, in acquisition order.
    pub handles: Vec<HandleView>,
}

impl From<&OperatorState> for OperatorView {
    fn from(op: &OperatorState) -> OperatorView {
        OperatorView {
            name: op.name.clone(),
            component: op.component.to_string(),
            memories: op.memories.iter().map(MemoryView::from).collect(),
            globals: op.globals.iter().map(GlobalView::from).collect(),
            handles: op.handles.iter().map(HandleView::from).collect(),
        }
    }
}

/// One linear memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryView {
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Bytes per page.
    pub page_bytes: u32,
    /// Its pages in address order (hex blake3, the keys under `pages/`).
    pub pages: Vec<String>,
}

impl From<&MemoryState> for MemoryView {
    fn from(m: &MemoryState) -> MemoryView {
        MemoryView {
            size_bytes: m.size_bytes,
            page_bytes: m.page_bytes,
            pages: m.pages.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A global's type and raw bits: `{"type": "i32", "bits": "0x00100000"}`
/// (hex, 8 digits for 32-bit types and 16 for 64-bit ones, so every JSON
/// reader gets them exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalView {
    /// `i32`, `i64`, `f32` or `f64`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// The raw bits, `0x`-prefixed hex.
    pub bits: String,
}

impl From<&GlobalState> for GlobalView {
    fn from(g: &GlobalState) -> GlobalView {
        let (ty, bits) = match *g {
            GlobalState::I32(b) => ("i32", format!("{b:#010x}")),
            GlobalState::I64(b) => ("i64", format!("{b:#018x}")),
            GlobalState::F32(b) => ("f32", format!("{b:#010x}")),
            GlobalState::F64(b) => ("f64", format!("{b:#018x}")),
        };
        GlobalView { ty, bits }
    }
}

/// A global for people: integers in decimal (signed), floats as numbers
/// (with their bits when they are NaN).
pub fn describe_global(g: &GlobalState) -> String {
    match *g {
        GlobalState::I32(b) => format!("i32 {}", b as i32),
        GlobalState::I64(b) => format!("i64 {}", b as i64),
        GlobalState::F32(b) if f32::from_bits(b).is_nan() => format!("f32 NaN ({b:#010x})"),
        GlobalState::F32(b) => format!("f32 {}", f32::from_bits(b)),
        GlobalState::F64(b) if f64::from_bits(b).is_nan() => format!("f64 NaN ({b:#018x})"),
        GlobalState::F64(b) => format!("f64 {}", f64::from_bits(b)),
    }
}

/// A held WASI handle: `{"kind": "stdout"}`, or
/// `{"kind": "pollable", "of": 0}` for a pollable on the stream at that
/// index of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HandleView {
    /// stdin.
    Stdin,
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
    /// A pollable.
    Pollable {
        /// Index of its stream in the handle list.
        of: u32,
    },
}

impl From<&HeldHandle> for HandleView {
    fn from(h: &HeldHandle) -> HandleView {
        match *h {
            HeldHandle::Stdin => HandleView::Stdin,
            HeldHandle::Stdout => HandleView::Stdout,
            HeldHandle::Stderr => HandleView::Stderr,
            HeldHandle::Pollable { of } => HandleView::Pollable { of },
        }
    }
}

impl fmt::Display for HandleView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleView::Stdin => f.write_str("stdin"),
            HandleView::Stdout => f.write_str("stdout"),
            HandleView::Stderr => f.write_str("stderr"),
            HandleView::Pollable { of } => write!(f, "pollable on handle {of}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_keep_every_bit_and_read_well() {
        let nan = GlobalState::F64(0x7ff8_0000_0000_0001);
        let view = GlobalView::from(&nan);
        assert_eq!(view.ty, "f64");
        assert_eq!(view.bits, "0x7ff8000000000001");
        assert_eq!(describe_global(&nan), "f64 NaN (0x7ff8000000000001)");
        assert_eq!(GlobalView::from(&GlobalState::I32(16)).bits, "0x00000010");
        assert_eq!(describe_global(&GlobalState::I32(u32::MAX)), "i32 -1");
        assert_eq!(
            describe_global(&GlobalState::F32(1.5f32.to_bits())),
            "f32 1.5"
        );
    }

    #[test]
    fn enums_are_tagged_by_kind() {
        let json = serde_json::to_string(&PositionView::File { line: 3, byte: 10 });
        assert_eq!(
            json.ok().as_deref(),
            Some(r#"{"kind":"file","line":3,"byte":10}"#)
        );
        let json = serde_json::to_string(&HandleView::Pollable { of: 1 });
        assert_eq!(json.ok().as_deref(), Some(r#"{"kind":"pollable","of":1}"#));
    }
}
