//! Capturing and restoring the complete state of an instance, through the
//! accessors `weir-snapshot` adds to every component at load time.
//!
//! A capture runs between two calls of the guest: for each memory, the
//! guest's `snapshot-memory{k}` hands the host the whole memory in place (no
//! copy, no write to the guest); the host hashes it page by page and keeps
//! only the pages whose content the previous capture did not have. Globals
//! are read by value. A restore instantiates the component afresh (no
//! `init`), writes every memory and global, and leaves the instance exactly
//! as the captured one was.

use std::collections::HashSet;

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentExportIndex, Linker, WasmList};
use weir_dirty::DirtyTracker;
use weir_snapshot::wasi::{self, Held, Stdio};
use weir_snapshot::{ACCESS_INSTANCE, GlobalType, HOST_INSTANCE, PUT_MEMORY};

use super::OperatorError;
use super::instance::{HostState, OperatorInstance, PreparedOperator};
use super::recorded::TaskInputs;
use crate::checkpoint::{
    GlobalState, Hash, HeldHandle, MemoryState, OperatorState, PAGE_BYTES, RecordedState,
};

/// The state of one instance, as a checkpoint stores it.
#[derive(Debug, Clone)]
pub struct CapturedState {
    /// Memories (as page hashes), globals and held handles. `name` and
    /// `component` are filled in.
    pub state: OperatorState,
    /// The pages whose content was not in the previous capture or restore,
    /// each once.
    pub fresh_pages: Vec<(Hash, Bytes)>,
    /// How far the instance has read its recorded inputs (host-side state,
    /// stored in the epoch journal).
    pub recorded: RecordedState,
}

/// Setting this environment variable (to anything) turns dirty-page
/// tracking off: every capture hashes every page. For comparison in tests
/// and benchmarks, and as an escape hatch.
pub const NO_DIRTY_TRACKING_ENV: &str = "WEIR_NO_DIRTY_TRACKING";

/// Per-store record of page hashes, so a capture only copies what changed.
#[derive(Debug)]
pub struct PageBaseline {
    /// Page hashes of each memory at the last capture or restore.
    known: Vec<Vec<Hash>>,
    /// Per memory: the kernel's record of written pages since the last
    /// capture (see `weir-dirty`), when available.
    trackers: Vec<Option<DirtyTracker>>,
    /// Set once the kernel refuses tracking: hash every page from then on.
    untrackable: bool,
    /// Filled by `put-memory` during a capture.
    received: Vec<Option<ReceivedMemory>>,
}

impl Default for PageBaseline {
    fn default() -> Self {
        PageBaseline {
            known: Vec::new(),
            trackers: Vec::new(),
            untrackable: std::env::var_os(NO_DIRTY_TRACKING_ENV).is_some(),
            received: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct ReceivedMemory {
    size_bytes: u64,
    pages: Vec<Hash>,
    fresh: Vec<(Hash, Bytes)>,
}

/// Registers the host side of the snapshot protocol: `put-memory`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance(HOST_INSTANCE)?.func_wrap(
        PUT_MEMORY,
        |mut cx: StoreContextMut<'_, HostState>, (index, data): (u32, WasmList<u8>)| {
            let index = index as usize;
            let mut untrackable = false;
            let mut tracker = cx
                .data_mut()
                .pages
                .trackers
                .get_mut(index)
                .and_then(Option::take);
            let (received, tracker) = {
                // The memory, in place: nothing is copied but changed pages.
                let bytes = data.as_le_slice(&cx);
                let baseline = &cx.data().pages;
                let known = baseline.known.get(index).map_or(&[][..], Vec::as_slice);
                let dirty = tracker.as_mut().and_then(|t| dirty_pages(t, bytes, known));
                let received = match &dirty {
                    Some(dirty) => diff_dirty_pages(bytes, known, dirty),
                    None => diff_pages(bytes, known),
                };
                // Without a working tracker, start one now: its first report
                // covers everything, the ones after only what was written.
                let tracker = match (dirty.is_some(), tracker) {
                    (true, tracker) => tracker,
                    (false, _) if baseline.untrackable => None,
                    (false, _) => match DirtyTracker::new(bytes) {
                        Ok(tracker) => Some(tracker),
                        Err(e) => {
                            tracing::debug!(
                                "dirty-page tracking unavailable, hashing every page: {e}"
                            );
                            untrackable = true;
                            None
                        }
                    },
                };
                (received, tracker)
            };
            let pages = &mut cx.data_mut().pages;
            if pages.received.len() <= index {
                pages.received.resize_with(index + 1, || None);
            }
            if pages.trackers.len() <= index {
                pages.trackers.resize_with(index + 1, || None);
            }
            pages.received[index] = Some(received);
            pages.trackers[index] = tracker;
            pages.untrackable |= untrackable;
            Ok(())
        },
    )
}

/// Indexes of the 64 KiB pages written since the tracker's last report, or
/// `None` if it cannot tell (then every page must be hashed).
fn dirty_pages(tracker: &mut DirtyTracker, memory: &[u8], known: &[Hash]) -> Option<Vec<usize>> {
    if known.len() * PAGE_BYTES > memory.len() {
        return None; // memories never shrink; something is off
    }
    if memory.len() > tracker.len() {
        tracker.grow(memory).ok()?;
    }
    let mut ranges = Vec::new();
    tracker.take(memory, &mut ranges).ok()?;
    Some(weir_dirty::granules(&ranges, PAGE_BYTES).collect())
}

/// Hashes `memory` page by page; copies the pages that differ from `known`.
fn diff_pages(memory: &[u8], known: &[Hash]) -> ReceivedMemory {
    let all: Vec<usize> = (0..memory.len().div_ceil(PAGE_BYTES)).collect();
    diff_dirty_pages(memory, known, &all)
}

/// Like [`diff_pages`], but only the pages in `dirty` (and those past the
/// end of `known`) can have changed.
fn diff_dirty_pages(memory: &[u8], known: &[Hash], dirty: &[usize]) -> ReceivedMemory {
    let count = memory.len().div_ceil(PAGE_BYTES);
    let mut pages: Vec<Option<Hash>> = (0..count).map(|i| known.get(i).copied()).collect();
    let mut fresh = Vec::new();
    let mut seen = HashSet::new();
    let grown = known.len().min(count)..count;
    for i in dirty.iter().copied().filter(|&i| i < count).chain(grown) {
        let page = &memory[i * PAGE_BYTES..((i + 1) * PAGE_BYTES).min(memory.len())];
        let hash = Hash::of(page);
        if known.get(i) != Some(&hash) && seen.insert(hash) {
            fresh.push((hash, Bytes::copy_from_slice(page)));
        }
        pages[i] = Some(hash);
    }
    ReceivedMemory {
        size_bytes: memory.len() as u64,
        pages: pages
            .into_iter()
            .map(|p| p.unwrap_or_else(|| unreachable!("every page past `known` was hashed")))
            .collect(),
        fresh,
    }
}

/// Why a capture or restore failed.
fn failure(operator: &str, what: &str, message: impl std::fmt::Display) -> OperatorError {
    OperatorError::State {
        operator: operator.to_owned(),
        message: format!("{what}: {message}"),
    }
}

impl OperatorInstance {
    /// Captures the instance's complete state. Call only between calls of
    /// the guest; the guest is not changed in any way.
    pub fn capture(&mut self, prepared: &PreparedOperator) -> Result<CapturedState, OperatorError> {
        let name = self.name.clone();
        let fail = |message: String| failure(&name, "cannot capture state", message);
        let layout = &prepared.loaded.layout;
        let handles = self.held_handles().map_err(&fail)?;
        // The accessors are a handful of instructions; they must not be
        // stopped by whatever fuel the last batch left.
        self.store
            .set_fuel(u64::MAX)
            .map_err(|e| fail(format!("{e:#}")))?;
        self.store.data_mut().pages.received.clear();
        let mut memories = Vec::with_capacity(layout.memories.len());
        let mut fresh_pages = Vec::new();
        let mut known = Vec::with_capacity(layout.memories.len());
        for memory in &layout.memories {
            let index = self.accessor(&memory.snapshot_func()).map_err(&fail)?;
            let func = self
                .instance
                .get_typed_func::<(), ()>(&mut self.store, index)
                .map_err(|e| fail(format!("{e:#}")))?;
            func.call(&mut self.store, ())
                .map_err(|e| fail(format!("{}: {e:#}", memory.snapshot_func())))?;
            let received = self
                .store
                .data_mut()
                .pages
                .received
                .get_mut(memory.k as usize)
                .and_then(Option::take)
                .ok_or_else(|| fail(format!("memory {} was not handed over", memory.k)))?;
            memories.push(MemoryState {
                size_bytes: received.size_bytes,
                page_bytes: PAGE_BYTES as u32,
                pages: received.pages.clone(),
            });
            fresh_pages.extend(received.fresh);
            known.push(received.pages);
        }
        let mut globals = Vec::with_capacity(layout.globals.len());
        for global in &layout.globals {
            let index = self.accessor(&global.get_func()).map_err(&fail)?;
            let bits = if global.ty.is_64() {
                let func = self
                    .instance
                    .get_typed_func::<(), (u64,)>(&mut self.store, index)
                    .map_err(|e| fail(format!("{e:#}")))?;
                func.call(&mut self.store, ())
                    .map_err(|e| fail(format!("{e:#}")))?
                    .0
            } else {
                let func = self
                    .instance
                    .get_typed_func::<(), (u32,)>(&mut self.store, index)
                    .map_err(|e| fail(format!("{e:#}")))?;
                u64::from(
                    func.call(&mut self.store, ())
                        .map_err(|e| fail(format!("{e:#}")))?
                        .0,
                )
            };
            globals.push(global_state(global.ty, bits));
        }
        // Pages seen in another memory of this capture count once.
        let mut seen = HashSet::new();
        fresh_pages.retain(|(hash, _)| seen.insert(*hash));
        self.store.data_mut().pages.known = known;
        let recorded = self.store.data().recorded_state();
        Ok(CapturedState {
            recorded,
            state: OperatorState {
                name: prepared.name.to_string(),
                component: prepared.loaded.hash,
                memories,
                globals,
                handles,
            },
            fresh_pages,
        })
    }

    fn accessor(&mut self, name: &str) -> Result<ComponentExportIndex, String> {
        let access = self
            .instance
            .get_export_index(&mut self.store, None, ACCESS_INSTANCE)
            .ok_or_else(|| format!("the component lacks `{ACCESS_INSTANCE}`"))?;
        self.instance
            .get_export_index(&mut self.store, Some(&access), name)
            .ok_or_else(|| format!("the component lacks `{ACCESS_INSTANCE}#{name}`"))
    }

    /// The WASI handles the guest holds between calls, if weir can recreate
    /// them (stdio streams and their pollables); otherwise an error saying
    /// what it holds.
    fn held_handles(&mut self) -> Result<Vec<HeldHandle>, String> {
        let held = wasi::check_handles(self.store.data_mut()).map_err(|e| e.to_string())?;
        Ok(held
            .into_iter()
            .map(|held| match held {
                Held::Stream(Stdio::Stdin) => HeldHandle::Stdin,
                Held::Stream(Stdio::Stdout) => HeldHandle::Stdout,
                Held::Stream(Stdio::Stderr) => HeldHandle::Stderr,
                Held::Pollable { of } => HeldHandle::Pollable { of },
            })
            .collect())
    }
}

fn global_state(ty: GlobalType, bits: u64) -> GlobalState {
    match ty {
        GlobalType::I32 => GlobalState::I32(bits as u32),
        GlobalType::I64 => GlobalState::I64(bits),
        GlobalType::F32 => GlobalState::F32(bits as u32),
        GlobalType::F64 => GlobalState::F64(bits),
    }
}

fn global_bits(global: GlobalState) -> (GlobalType, u64) {
    match global {
        GlobalState::I32(b) => (GlobalType::I32, u64::from(b)),
        GlobalState::I64(b) => (GlobalType::I64, b),
        GlobalState::F32(b) => (GlobalType::F32, u64::from(b)),
        GlobalState::F64(b) => (GlobalType::F64, b),
    }
}

impl PreparedOperator {
    /// A new instance in exactly the state `state` describes, on default
    /// recorded inputs (see [`PreparedOperator::restore_with`]).
    pub fn restore(
        &self,
        state: &OperatorState,
        memories: &[Vec<u8>],
    ) -> Result<OperatorInstance, OperatorError> {
        self.restore_with(
            &TaskInputs::default(),
            state,
            memories,
            &RecordedState::default(),
        )
    }

    /// A new instance of a task with recorded inputs `inputs`, in exactly
    /// the state `state` describes, continuing its recorded inputs from
    /// `recorded`. `memories` holds the bytes of each memory of `state`, in
    /// order (the caller fetched and verified its pages).
    pub fn restore_with(
        &self,
        inputs: &TaskInputs,
        state: &OperatorState,
        memories: &[Vec<u8>],
        recorded: &RecordedState,
    ) -> Result<OperatorInstance, OperatorError> {
        let fail = |message: String| failure(&self.name, "cannot restore state", message);
        let layout = &self.loaded.layout;
        if state.component != self.loaded.hash {
            return Err(fail(format!(
                "the checkpoint was taken with component {}, but the pipeline now runs {} \
                 (a different build); weir cannot carry state across components yet: run the \
                 component the checkpoint was taken with, or start over with --from-scratch",
                state.component, self.loaded.hash
            )));
        }
        if state.memories.len() != layout.memories.len()
            || memories.len() != layout.memories.len()
            || state.globals.len() != layout.globals.len()
        {
            return Err(fail(format!(
                "the checkpoint has {} memories and {} globals, the component {} and {}",
                state.memories.len(),
                state.globals.len(),
                layout.memories.len(),
                layout.globals.len()
            )));
        }
        let mut instance = self
            .instantiate_bare(inputs)
            .map_err(|e| fail(format!("instantiation failed: {e:#}")))?;
        // Handles first, so they get the indices the restored memory holds.
        let journal: Vec<Held> = state
            .handles
            .iter()
            .map(|handle| match *handle {
                HeldHandle::Stdin => Held::Stream(Stdio::Stdin),
                HeldHandle::Stdout => Held::Stream(Stdio::Stdout),
                HeldHandle::Stderr => Held::Stream(Stdio::Stderr),
                HeldHandle::Pollable { of } => Held::Pollable { of },
            })
            .collect();
        wasi::rebuild_handles(&mut instance.store, &instance.instance, layout, &journal)
            .map_err(|e| fail(format!("cannot recreate the guest's WASI handles: {e}")))?;
        instance
            .store
            .set_fuel(u64::MAX)
            .map_err(|e| fail(format!("{e:#}")))?;
        for (memory, bytes) in layout.memories.iter().zip(memories) {
            let index = instance.accessor(&memory.restore_func()).map_err(&fail)?;
            let func = instance
                .instance
                .get_typed_func::<(&[u8],), ()>(&mut instance.store, index)
                .map_err(|e| fail(format!("{e:#}")))?;
            func.call(&mut instance.store, (bytes.as_slice(),))
                .map_err(|e| fail(format!("memory {}: {e:#}", memory.k)))?;
        }
        for (global, value) in layout.globals.iter().zip(&state.globals) {
            let (ty, bits) = global_bits(*value);
            if ty != global.ty {
                return Err(fail(format!(
                    "global {} is {:?} in the checkpoint but {:?} in the component",
                    global.k, ty, global.ty
                )));
            }
            let index = instance.accessor(&global.set_func()).map_err(&fail)?;
            let result = if ty.is_64() {
                instance
                    .instance
                    .get_typed_func::<(u64,), ()>(&mut instance.store, index)
                    .and_then(|f| f.call(&mut instance.store, (bits,)))
            } else {
                instance
                    .instance
                    .get_typed_func::<(u32,), ()>(&mut instance.store, index)
                    .and_then(|f| f.call(&mut instance.store, (bits as u32,)))
            };
            result.map_err(|e| fail(format!("global {}: {e:#}", global.k)))?;
        }
        let host = instance.store.data_mut();
        host.set_recorded_state(recorded);
        host.pages.known = state.memories.iter().map(|m| m.pages.clone()).collect();
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_pages_are_rehashed_and_the_rest_taken_from_the_baseline() {
        let mut memory = vec![0u8; 4 * PAGE_BYTES];
        let first = diff_pages(&memory, &[]);
        memory[PAGE_BYTES + 1] = 1;
        memory[3 * PAGE_BYTES] = 2;
        // Only page 1 reported: page 3's change is (wrongly) not rehashed,
        // which shows the baseline is trusted for unreported pages.
        let partial = diff_dirty_pages(&memory, &first.pages, &[1]);
        assert_eq!(
            partial.pages[1],
            Hash::of(&memory[PAGE_BYTES..2 * PAGE_BYTES])
        );
        assert_eq!(partial.pages[3], first.pages[3]);
        assert_eq!(partial.fresh.len(), 1);
        // Grown memory: the new pages are hashed even if not reported.
        memory.extend(vec![5u8; PAGE_BYTES]);
        let grown = diff_dirty_pages(&memory, &first.pages, &[]);
        assert_eq!(grown.pages.len(), 5);
        assert_eq!(grown.pages[4], Hash::of(&memory[4 * PAGE_BYTES..]));
    }

    #[test]
    fn only_changed_pages_are_fresh_and_each_once() {
        let mut memory = vec![0u8; 4 * PAGE_BYTES];
        let first = diff_pages(&memory, &[]);
        assert_eq!(first.pages.len(), 4);
        assert_eq!(first.fresh.len(), 1, "four zero pages are one object");
        memory[2 * PAGE_BYTES + 7] = 1;
        let second = diff_pages(&memory, &first.pages);
        assert_eq!(second.fresh.len(), 1);
        assert_eq!(second.fresh[0].0, second.pages[2]);
        assert_eq!(second.size_bytes, 4 * PAGE_BYTES as u64);
    }
}
