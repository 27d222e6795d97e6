//! `weir checkpoints diff`: what changed between two epochs, per operator,
//! from their manifests alone (pages are compared by hash, nothing is
//! downloaded).

use std::fmt;

use serde::Serialize;

use super::table::{Align, Table};
use super::view::PositionView;
use super::{EpochSelector, InspectError, Target, units};
use crate::checkpoint::{GlobalState, Manifest, MemoryState, OperatorState};
use crate::record::Position;

/// The differences between two epochs of a task.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The store's location.
    pub store: String,
    /// The pipeline.
    pub pipeline: String,
    /// The task.
    pub task: String,
    /// The first epoch.
    pub from: DiffSide,
    /// The second epoch.
    pub to: DiffSide,
    /// `to.records_in - from.records_in`: records read in between.
    pub records_delta: i64,
    /// How far the source position moved, if both are of the same kind.
    pub position_delta: Option<PositionDelta>,
    /// Whether the state hashes are equal (every memory, global and handle
    /// the same).
    pub same_state: bool,
    /// Per operator: the `to` epoch's operators in chain order, then those
    /// only in `from`.
    pub operators: Vec<OperatorDiff>,
}

/// One side of a [`DiffReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DiffSide {
    /// The epoch.
    pub epoch: u64,
    /// Whether it is committed.
    pub committed: bool,
    /// Where the source resumes from it.
    pub source_position: PositionView,
    /// Records read up to it.
    pub records_in: u64,
    /// Bytes of state.
    pub state_bytes: u64,
    /// Its state hash.
    pub state_hash: String,
}

/// How far a source position moved (negative when `to` is older).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PositionDelta {
    /// Between two file positions.
    File {
        /// Lines.
        lines: i64,
        /// Bytes.
        bytes: i64,
    },
    /// Between two generator positions.
    Sequence {
        /// Records.
        records: i64,
    },
}

/// What changed in one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorDiff {
    /// The operator.
    pub name: String,
    /// Whether the `from` epoch has it.
    pub in_from: bool,
    /// Whether the `to` epoch has it.
    pub in_to: bool,
    /// Whether it runs another component.
    pub component_changed: bool,
    /// Pages (addresses) whose content differs, over all memories.
    pub pages_changed: u64,
    /// Bytes of those pages.
    pub bytes_changed: u64,
    /// Mutable globals whose bits differ (or that only one side has).
    pub globals_changed: u64,
    /// Globals in the larger of the two.
    pub globals: u64,
    /// Whether the held WASI handles differ.
    pub handles_changed: bool,
    /// Per memory, by index.
    pub memories: Vec<MemoryDiff>,
}

/// What changed in one memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryDiff {
    /// Its index.
    pub index: usize,
    /// Its size at `from` (`null` if it did not exist).
    pub size_from: Option<u64>,
    /// Its size at `to`.
    pub size_to: Option<u64>,
    /// Pages in the larger of the two.
    pub pages: u64,
    /// Pages whose content differs at the same address (a page only one
    /// side has counts as changed).
    pub pages_changed: u64,
    /// Bytes of those pages.
    pub bytes_changed: u64,
}

/// Compares two epochs of the target's task.
pub async fn diff(
    target: &Target,
    from: EpochSelector,
    to: EpochSelector,
) -> Result<DiffReport, InspectError> {
    let epochs = target.epochs().await?;
    let from = target.manifest(target.select(&epochs, from)?).await?;
    let to = target.manifest(target.select(&epochs, to)?).await?;
    let mut report = compare(&from.manifest, &to.manifest);
    report.store = target.location().to_owned();
    report.from.committed = from.committed;
    report.to.committed = to.committed;
    Ok(report)
}

/// The differences between two manifests (`store` empty, both sides
/// marked committed: [`diff`] fills those in).
pub fn compare(from: &Manifest, to: &Manifest) -> DiffReport {
    let side = |m: &Manifest| DiffSide {
        epoch: m.epoch,
        committed: true,
        source_position: (&m.source_position).into(),
        records_in: m.stats.records_in,
        state_bytes: m.stats.state_bytes,
        state_hash: m.state_hash().to_string(),
    };
    let mut operators: Vec<OperatorDiff> = to
        .operators
        .iter()
        .map(|op| compare_operator(find(from, &op.name), Some(op)))
        .collect();
    operators.extend(
        from.operators
            .iter()
            .filter(|op| find(to, &op.name).is_none())
            .map(|op| compare_operator(Some(op), None)),
    );
    let (a, b) = (side(from), side(to));
    DiffReport {
        store: String::new(),
        pipeline: to.pipeline.clone(),
        task: to.task.clone(),
        records_delta: delta(from.stats.records_in, to.stats.records_in),
        position_delta: position_delta(&from.source_position, &to.source_position),
        same_state: a.state_hash == b.state_hash,
        from: a,
        to: b,
        operators,
    }
}

fn find<'a>(m: &'a Manifest, name: &str) -> Option<&'a OperatorState> {
    m.operators.iter().find(|op| op.name == name)
}

fn memories_of(op: Option<&OperatorState>) -> &[MemoryState] {
    op.map_or(&[], |op| op.memories.as_slice())
}

fn globals_of(op: Option<&OperatorState>) -> &[GlobalState] {
    op.map_or(&[], |op| op.globals.as_slice())
}

fn delta(from: u64, to: u64) -> i64 {
    (i128::from(to) - i128::from(from)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn position_delta(from: &Position, to: &Position) -> Option<PositionDelta> {
    match (from, to) {
        (Position::File { line: l1, byte: b1 }, Position::File { line: l2, byte: b2 }) => {
            Some(PositionDelta::File {
                lines: delta(*l1, *l2),
                bytes: delta(*b1, *b2),
            })
        }
        (Position::Sequence(a), Position::Sequence(b)) => Some(PositionDelta::Sequence {
            records: delta(*a, *b),
        }),
        _ => None,
    }
}

fn compare_operator(from: Option<&OperatorState>, to: Option<&OperatorState>) -> OperatorDiff {
    let name = to.or(from).map_or_else(String::new, |op| op.name.clone());
    let (ma, mb) = (memories_of(from), memories_of(to));
    let memories: Vec<MemoryDiff> = (0..ma.len().max(mb.len()))
        .map(|i| compare_memory(i, ma.get(i), mb.get(i)))
        .collect();
    let (ga, gb) = (globals_of(from), globals_of(to));
    let globals = ga.len().max(gb.len());
    OperatorDiff {
        name,
        in_from: from.is_some(),
        in_to: to.is_some(),
        component_changed: from.map(|op| op.component) != to.map(|op| op.component),
        pages_changed: memories.iter().map(|m| m.pages_changed).sum(),
        bytes_changed: memories.iter().map(|m| m.bytes_changed).sum(),
        globals_changed: (0..globals).filter(|&i| ga.get(i) != gb.get(i)).count() as u64,
        globals: globals as u64,
        handles_changed: from.map(|op| &op.handles) != to.map(|op| &op.handles),
        memories,
    }
}

fn compare_memory(
    index: usize,
    from: Option<&MemoryState>,
    to: Option<&MemoryState>,
) -> MemoryDiff {
    let pages_of = |m: Option<&MemoryState>| m.map_or(0, |m| m.pages.len());
    let pages = pages_of(from).max(pages_of(to));
    let mut changed = MemoryDiff {
        index,
        size_from: from.map(|m| m.size_bytes),
        size_to: to.map(|m| m.size_bytes),
        pages: pages as u64,
        pages_changed: 0,
        bytes_changed: 0,
    };
    for i in 0..pages {
        if from.and_then(|m| m.pages.get(i)) != to.and_then(|m| m.pages.get(i)) {
            changed.pages_changed += 1;
            changed.bytes_changed += page_len(from, i).max(page_len(to, i));
        }
    }
    changed
}

/// Bytes of page `i` of a memory (every page but the last is full).
fn page_len(memory: Option<&MemoryState>, i: usize) -> u64 {
    memory.map_or(0, |m| {
        let start = i as u64 * u64::from(m.page_bytes);
        m.size_bytes
            .saturating_sub(start)
            .min(u64::from(m.page_bytes))
    })
}

fn signed(n: i64) -> String {
    if n >= 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.from, &self.to);
        writeln!(
            f,
            "pipeline {}, task {}: epoch {} -> epoch {}",
            self.pipeline, self.task, a.epoch, b.epoch
        )?;
        let moved = match self.position_delta {
            Some(PositionDelta::File { lines, bytes }) => {
                format!(": {} lines, {} bytes", signed(lines), signed(bytes))
            }
            Some(PositionDelta::Sequence { records }) => format!(": {} records", signed(records)),
            None => String::new(),
        };
        writeln!(
            f,
            "{:<16} {} -> {}{moved}",
            "source position", a.source_position, b.source_position
        )?;
        writeln!(
            f,
            "{:<16} {} -> {} ({})",
            "records in",
            a.records_in,
            b.records_in,
            signed(self.records_delta)
        )?;
        writeln!(
            f,
            "{:<16} {} -> {}, {}",
            "state",
            units::bytes(a.state_bytes),
            units::bytes(b.state_bytes),
            if self.same_state {
                "identical (same state hash)"
            } else {
                "state hash changed"
            }
        )?;
        let mut table = Table::new(&[
            ("OPERATOR", Align::Left),
            ("MEMORY", Align::Right),
            ("SIZE FROM", Align::Right),
            ("SIZE TO", Align::Right),
            ("PAGES CHANGED", Align::Right),
            ("BYTES CHANGED", Align::Right),
        ]);
        let size = |s: Option<u64>| s.map_or_else(|| "-".to_owned(), units::bytes);
        for op in &self.operators {
            for m in &op.memories {
                table.row(vec![
                    op.name.clone(),
                    m.index.to_string(),
                    size(m.size_from),
                    size(m.size_to),
                    format!("{} of {}", m.pages_changed, m.pages),
                    units::bytes(m.bytes_changed),
                ]);
            }
        }
        writeln!(f)?;
        write!(f, "{table}")?;
        for op in &self.operators {
            let note = match (op.in_from, op.in_to) {
                (true, false) => format!("only in epoch {}", a.epoch),
                (false, true) => format!("only in epoch {}", b.epoch),
                _ => format!(
                    "{} of {} global(s) changed, handles {}, component {}",
                    op.globals_changed,
                    op.globals,
                    if op.handles_changed {
                        "changed"
                    } else {
                        "unchanged"
                    },
                    if op.component_changed {
                        "CHANGED"
                    } else {
                        "unchanged"
                    }
                ),
            };
            writeln!(f, "{}: {note}", op.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{EpochStats, Hash, HeldHandle};

    fn manifest(epoch: u64, pages: &[u8], global: u32, line: u64) -> Manifest {
        Manifest {
            format_version: 1,
            pipeline: "p".into(),
            task: "main".into(),
            epoch,
            created_unix_ms: 0,
            source_position: Position::File {
                line,
                byte: line * 10,
            },
            operators: vec![OperatorState {
                name: "op".into(),
                component: Hash([7; 32]),
                memories: vec![MemoryState {
                    size_bytes: pages.len() as u64 * 65536,
                    page_bytes: 65536,
                    pages: pages.iter().map(|&b| Hash([b; 32])).collect(),
                }],
                globals: vec![GlobalState::I32(1), GlobalState::I32(global)],
                handles: vec![HeldHandle::Stdout],
            }],
            stats: EpochStats {
                records_in: line - 1,
                ..EpochStats::default()
            },
            journal: None,
        }
    }

    #[test]
    fn changed_grown_and_equal_pages_are_counted_by_address() {
        let a = manifest(2, &[1, 2, 3], 5, 61);
        let b = manifest(4, &[1, 9, 3, 4, 4], 6, 101);
        let d = compare(&a, &b);
        assert_eq!(d.records_delta, 40);
        assert_eq!(
            d.position_delta,
            Some(PositionDelta::File {
                lines: 40,
                bytes: 400
            })
        );
        assert!(!d.same_state);
        let op = &d.operators[0];
        assert_eq!((op.pages_changed, op.bytes_changed), (3, 3 * 65536));
        assert_eq!((op.globals_changed, op.globals), (1, 2));
        assert!(!op.handles_changed && !op.component_changed);
        assert_eq!(op.memories[0].pages, 5);
    }

    #[test]
    fn an_epoch_against_itself_changes_nothing_and_backwards_is_negative() {
        let a = manifest(2, &[1, 2], 5, 61);
        let same = compare(&a, &a);
        assert!(same.same_state);
        assert_eq!(same.operators[0].pages_changed, 0);
        let back = compare(&manifest(4, &[1], 5, 101), &a);
        assert_eq!(back.records_delta, -40);
    }

    #[test]
    fn operators_only_on_one_side_are_reported() {
        let a = manifest(2, &[1], 5, 61);
        let mut b = manifest(3, &[1], 5, 71);
        b.operators[0].name = "other".into();
        let d = compare(&a, &b);
        let names: Vec<_> = d
            .operators
            .iter()
            .map(|o| (o.name.as_str(), o.in_from, o.in_to))
            .collect();
        assert_eq!(names, [("other", false, true), ("op", true, false)]);
        assert_eq!(d.operators[0].pages_changed, 1);
    }
}
