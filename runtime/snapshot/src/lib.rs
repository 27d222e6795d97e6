//! Capture and restore the complete mutable state of a WebAssembly component.
//!
//! wasmtime gives the host no handle on the memories and globals of the core
//! instances inside a component. [`instrument`] therefore rewrites the
//! component once, at load time, so that it exports accessors for every
//! defined linear memory and every defined mutable global of every core
//! instance. The rewritten component behaves exactly like the original: it
//! keeps every import and export, and only adds one import instance and one
//! export instance.
//!
//! # What the instrumented component adds
//!
//! ```wit
//! package weir:snapshot@0.1.0;
//!
//! /// Imported: the host implements it.
//! interface host {
//!     /// Receives memory `index` (the `k` of `snapshot-memory{k}`) whole,
//!     /// read in place from guest memory: `data` is memory k from address
//!     /// 0 to its end (`memory.size * 65536` bytes).
//!     put-memory: func(index: u32, data: list<u8>);
//! }
//!
//! /// Exported: functions per item of the [`StateLayout`]. For memory k,
//! /// global k and resource k (see the layout for the order):
//! interface access {
//!     /// Calls `host.put-memory(k, <memory k>)`. Touches neither memory
//!     /// nor globals: `memory.size` is unchanged.
//!     snapshot-memory{k}: func();
//!     /// Grows memory k to `len(data)` bytes (which must be whole 64 KiB
//!     /// pages and at least its current size, else it traps) and makes
//!     /// `data` its contents.
//!     restore-memory{k}: func(data: list<u8>);
//!     /// The global's bits: `u32` for i32/f32 globals, `u64` for i64/f64.
//!     get-global{k}: func() -> u32;    // or u64
//!     set-global{k}: func(v: u32);     // or u64
//!     /// See "Resource handles" below.
//!     adopt-resource{k}: func(handle: own<T>) -> u32;
//!     drop-resource{k}: func(index: u32);
//! }
//! ```
//!
//! The names are [`HOST_INSTANCE`] (`weir:snapshot/host@0.1.0`, function
//! [`PUT_MEMORY`]) and [`ACCESS_INSTANCE`] (`weir:snapshot/access@0.1.0`).
//! The per-item export names come from [`MemoryInfo::snapshot_func`],
//! [`MemoryInfo::restore_func`], [`GlobalInfo::get_func`] and
//! [`GlobalInfo::set_func`], [`ResourceInfo::adopt_func`] and
//! [`ResourceInfo::drop_func`]. The host import is always present, even
//! when the component has no memory.
//!
//! ## How it works
//!
//! * Every core module that is instantiated gets extra exports
//!   (`weir-snapshot:memory{i}`, `weir-snapshot:global{i}`) for its defined
//!   memories and mutable globals; nothing else in it changes (function
//!   bodies are copied byte for byte).
//! * A generated *accessor* core module imports those memories and globals
//!   and one lowered `put-memory` per memory, each lowered with that memory
//!   as its `memory` option.
//! * Reading: `snapshot-memory{k}` calls `put-memory{k}(k, 0, memory.size <<
//!   16)`. The canonical ABI hands the host a `WasmList<u8>` that points into
//!   the guest memory; `WasmList::as_le_slice` reads it without copying. The
//!   guest writes nothing (unlike Wizer's accessor, which returns a
//!   `list<u8>` and grows memory by a page per call for its return area).
//! * Writing: `restore-memory{k}` is lifted with `(memory k) (realloc
//!   realloc-memory{k})`. When the host passes the snapshot bytes, the
//!   canonical ABI calls that realloc, which grows memory k to the snapshot's
//!   size and returns address 0, then copies the bytes there. The lifted core
//!   function itself is empty. No recompilation is involved.
//! * Globals go through `global.get`/`global.set`, floats through
//!   `reinterpret`, so no bit of a NaN payload is lost.
//!
//! # Host protocol
//!
//! Snapshot (between two calls of the guest, never during one):
//! 1. for each memory k, call `snapshot-memory{k}`; the host's `put-memory`
//!    receives `(k, data)` and copies or hashes `data.as_le_slice(&store)`;
//! 2. for each global k, call `get-global{k}`.
//!
//! Restore, into a *fresh* instance of the same instrumented component (same
//! engine and `Component`, so no compilation), before any other call:
//! 1. if the guest held handles, rebuild them (see "Resource handles");
//! 2. for each memory k, call `restore-memory{k}` with the bytes;
//! 3. for each global k, call `set-global{k}`.
//!
//! The restored instance then continues exactly as the original would have.
//! Large memories need `wasmtime::Store::set_hostcall_fuel` raised above
//! the memory size: wasmtime meters guest-to-host copies (default 128 MiB).
//! A memory of 4 GiB (65536 pages) cannot be passed as one list; its
//! `snapshot-memory` traps.
//!
//! # What is refused, and why
//!
//! [`instrument`] returns an [`InstrumentError`] naming the core module and
//! item for anything whose state would not be captured:
//!
//! * shared memories, 64-bit memories, custom page sizes;
//! * mutable globals of type `v128`, reference type, or `shared`;
//! * any function body containing `table.set`, `table.grow`, `table.fill`,
//!   `table.copy` or `table.init` (tables are not captured; a table that only
//!   instantiation fills, with active element segments, is fine because a
//!   fresh instance fills it the same way). Exporting or importing a table
//!   between core instances is accepted: inside a component no host can
//!   reach a core table, only core code can mutate it, and the code of
//!   every instantiated module is scanned;
//! * `data.drop` and `elem.drop` (whether a segment was dropped is state);
//! * GC `struct`/`array` and continuation types (objects outside memory);
//! * a core module instantiated more than once (its memories would have to
//!   be told apart; not needed by any toolchain we know);
//! * instantiating a core module the component imports or aliases from an
//!   instance;
//! * nested components that define or instantiate core modules;
//! * the component-model async and thread built-ins and `async` lifts and
//!   lowers (tasks, streams, futures, waitable sets and threads keep state in
//!   the runtime), and component start functions.
//!
//! # Resource handles
//!
//! A component's *handles* (e.g. the `own<output-stream>` of stdout) are
//! indices into wasmtime's per-instance handle table, which is neither in
//! linear memory nor visible to the host. A guest that keeps a handle
//! index in memory across calls refers, after a restore into a fresh
//! instance, to a slot that fresh instance never filled.
//!
//! ## What happens (measured: wasmtime 48.0.8, Rust 1.95.0 std on `wasm32-wasip2`)
//!
//! Rust's `std` prints through wasi-libc. On the first write to fd 1
//! (`println!`), wasi-libc's stdio descriptor calls
//! `wasi:cli/stdout.get-stdout` and then `[method]output-stream.subscribe`
//! once, and keeps both handles in linear memory for the life of the
//! instance: in a fresh instance they are handles 1 (the stream) and 2 (its
//! pollable). The first `eprintln!` does the same for stderr (handles 3 and
//! 4 if stdout came first), the first read of stdin for stdin. Nothing
//! else is held between calls; wasmtime-wasi's `ResourceTable` shows
//! exactly these entries. Restoring that memory into a fresh instance and
//! printing again traps with `unknown handle index 1` (in
//! `[method]output-stream.check-write`), after which the instance refuses
//! every call (`cannot enter component instance`). No wrong output is
//! written: the failure is loud, but the restored instance is lost.
//! A component that never touches stdio (weir's `faulty` operator logs
//! through weir's own `host.log`) holds no handle between calls and needs
//! nothing.
//!
//! ## What the instrumentation provides
//!
//! For every resource type `T` exported by an instance the component
//! imports ([`StateLayout::resources`]), the access instance has
//!
//! ```wit
//! /// Moves `handle` into this instance's handle table (the guest code never
//! /// sees it) and returns its index.
//! adopt-resource{k}: func(handle: own<T>) -> u32;
//! /// `resource.drop` of handle `index`.
//! drop-resource{k}: func(index: u32);
//! ```
//!
//! wasmtime's handle table hands out 1, 2, 3, ... and reuses freed slots
//! last-freed-first. So a host that knows which handles the guest acquired,
//! in which order, recreates them at the same indices in a fresh instance
//! by adopting equivalent resources in that order (and, to leave a hole,
//! adopting a throw-away resource and dropping it later). Adopting `n`
//! throw-away resources and dropping them in reverse order reveals the next
//! `n` indices an instance would allocate without changing its state: the
//! host compares that sequence between the original and the rebuilt
//! instance to verify the rebuild.
//!
//! ## The host protocol for WASI (module `wasi`, feature `wasi`)
//!
//! The `wasi` module implements it for any store data that implements
//! `wasi::JournalHost` (tested in `tests/rust_guest.rs`):
//!
//! 1. *Journal* (`wasi::add_journaling`). The host's linker shadows
//!    wasmtime-wasi's `get-stdin`, `get-stdout`, `get-stderr` and the two
//!    stream `subscribe` methods with versions that do the same and also
//!    append to a per-store journal (`stdout`, `pollable of entry 0`, ...),
//!    with the resource's rep.
//! 2. *Check at checkpoint* (`wasi::check_handles`). Every live entry of
//!    the WASI `ResourceTable` must be a journaled one the guest still
//!    holds; otherwise the host refuses to checkpoint ("the guest holds 3
//!    WASI resources but only 2 of them ... can be recreated"). A host
//!    without a journal can still detect the hazard: it refuses unless the
//!    table is empty (`ResourceTable::is_empty`). The journal is stored
//!    with the snapshot.
//! 3. *Rebuild before restoring* (`wasi::rebuild_handles`). In the fresh
//!    instance, for each journal entry in order, create the equivalent host
//!    resource (a new stdout stream, `subscribe` on the rebuilt stream) and
//!    `adopt-resource` it; the indices come out identical. Optionally
//!    compare the probe sequence (`wasi::probe_handles`) with the
//!    original's. Then restore memories and globals.
//!
//! Tested: a Rust component prints to stdout and stderr, is snapshotted,
//! rebuilt and restored; it prints again (into the new instance's
//! streams), continues, and ends with memory byte-identical to an instance
//! that was never interrupted. Caveats: the journal covers what wasi-libc
//! keeps (stdio streams and their pollables); a guest holding anything else
//! (files, sockets, clocks' pollables) is refused, not rebuilt, and so is
//! one that dropped a journaled handle (the hole it left is not recorded). Host
//! streams must be deterministic: wasmtime-wasi's `MemoryOutputPipe`
//! grants a `check-write` budget that shrinks as it fills, which leaks into
//! the guest's (dead) stack bytes; a restored instance writing into a new
//! pipe then differs in those bytes (`wasi::CaptureStream` does not).

#![forbid(unsafe_code)]

mod accessor;
mod error;
mod layout;
mod module;
#[cfg(feature = "wasi")]
pub mod wasi;

use std::ops::Range;

use wasm_encoder::Component;
use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind,
    ComponentOuterAliasKind, Encoding, Instance, Parser, Payload, Validator, WasmFeatures,
    component_types::{ComponentAnyTypeId, ComponentEntityType},
};

pub use error::InstrumentError;
pub use layout::{GlobalInfo, GlobalType, MemoryInfo, Origin, ResourceInfo, StateLayout};

/// The instance the instrumented component exports: the accessors.
pub const ACCESS_INSTANCE: &str = "weir:snapshot/access@0.1.0";
/// The instance the instrumented component imports: the host's receiver.
pub const HOST_INSTANCE: &str = "weir:snapshot/host@0.1.0";
/// The function of [`HOST_INSTANCE`]: `func(index: u32, data: list<u8>)`.
pub const PUT_MEMORY: &str = "put-memory";

/// An instrumented component and the description of its state.
#[derive(Debug, Clone)]
pub struct Instrumented {
    /// The rewritten component (binary).
    pub component: Vec<u8>,
    /// Its memories and globals, in accessor order.
    pub layout: StateLayout,
}

/// Where a module in the core-module index space comes from.
#[derive(Debug, Clone, Copy)]
enum ModuleSlot {
    /// Defined by the `n`th module section of the component.
    Defined(usize),
    /// Imported or aliased from a component instance.
    Foreign(&'static str),
}

/// A module section of the top-level component.
struct DefinedModule {
    /// Its index in the core-module index space.
    index: u32,
    range: Range<usize>,
    /// The core instance that instantiates it, if any.
    instance: Option<u32>,
}

/// A top-level section, kept to be written out after the walk.
enum Piece {
    Raw { id: u8, range: Range<usize> },
    Custom { name: String, range: Range<usize> },
    Module(usize),
}

/// Rewrites `component` so that its complete core state can be read and
/// written through the `weir:snapshot/access@0.1.0` export.
///
/// See the [crate documentation](crate) for the interface, the host protocol
/// and what is refused.
pub fn instrument(component: &[u8]) -> Result<Instrumented, InstrumentError> {
    if Parser::is_core_wasm(component) {
        return Err(InstrumentError::CoreModule);
    }
    let types = Validator::new_with_features(WasmFeatures::all()).validate_all(component)?;
    let types = types.as_ref();
    let counts = accessor::IndexCounts {
        component_types: types.component_type_count(),
        component_funcs: types.component_function_count(),
        component_instances: types.component_instance_count(),
        core_funcs: types.function_count(),
        core_memories: types.memory_count(),
        core_instances: types.core_instance_count(),
        core_modules: types.module_count(),
    };

    let mut modules: Vec<ModuleSlot> = Vec::new();
    let mut defined: Vec<DefinedModule> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut core_instances = 0u32;
    let mut components = 0u32;
    let mut component_instances = 0u32;
    // (component instance index, import name) of imported instances.
    let mut imported_instances: Vec<(u32, String)> = Vec::new();
    let mut canonicals = 0u32;

    let mut parser = Parser::new(0);
    let mut offset = 0usize;
    // (`NeedMoreData` cannot happen with `eof = true`.)
    while let wasmparser::Chunk::Parsed { consumed, payload } =
        parser.parse(&component[offset..], true)?
    {
        offset += consumed;
        match &payload {
            Payload::Version { encoding, .. } if *encoding != Encoding::Component => {
                return Err(InstrumentError::CoreModule);
            }
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                offset += unchecked_range.len();
                modules.push(ModuleSlot::Defined(defined.len()));
                pieces.push(Piece::Module(defined.len()));
                defined.push(DefinedModule {
                    index: modules.len() as u32 - 1,
                    range: unchecked_range.clone(),
                    instance: None,
                });
                continue;
            }
            Payload::ComponentSection {
                unchecked_range, ..
            } => {
                offset += unchecked_range.len();
                check_nested(components, &component[unchecked_range.clone()])?;
                components += 1;
            }
            Payload::InstanceSection(reader) => {
                for instance in reader.clone() {
                    if let Instance::Instantiate { module_index, .. } = instance? {
                        match modules.get(module_index as usize) {
                            Some(ModuleSlot::Defined(n)) => {
                                let m = &mut defined[*n];
                                if let Some(first) = m.instance {
                                    return Err(InstrumentError::ModuleInstantiatedTwice {
                                        module: m.index,
                                        first,
                                        second: core_instances,
                                    });
                                }
                                m.instance = Some(core_instances);
                            }
                            Some(ModuleSlot::Foreign(origin)) => {
                                return Err(InstrumentError::ForeignModule {
                                    module: module_index,
                                    instance: core_instances,
                                    origin,
                                });
                            }
                            // The validator guarantees the index exists.
                            None => {}
                        }
                    }
                    core_instances += 1;
                }
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader.clone() {
                    let import = import?;
                    if import.name.name == HOST_INSTANCE {
                        return Err(InstrumentError::AlreadyInstrumented(HOST_INSTANCE));
                    }
                    match import.ty.kind() {
                        ComponentExternalKind::Module => {
                            modules.push(ModuleSlot::Foreign("imported"));
                        }
                        ComponentExternalKind::Instance => {
                            imported_instances
                                .push((component_instances, import.name.name.to_owned()));
                            component_instances += 1;
                        }
                        ComponentExternalKind::Component => components += 1,
                        _ => {}
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader.clone() {
                    let export = export?;
                    if export.name.name == ACCESS_INSTANCE {
                        return Err(InstrumentError::AlreadyInstrumented(ACCESS_INSTANCE));
                    }
                    match export.kind {
                        // An export adds a new index naming the same item.
                        ComponentExternalKind::Module => {
                            let slot = modules
                                .get(export.index as usize)
                                .copied()
                                .unwrap_or(ModuleSlot::Foreign("exported"));
                            modules.push(slot);
                        }
                        ComponentExternalKind::Component => components += 1,
                        ComponentExternalKind::Instance => component_instances += 1,
                        _ => {}
                    }
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                component_instances += reader.count();
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader.clone() {
                    match alias? {
                        ComponentAlias::InstanceExport { kind, .. } => match kind {
                            ComponentExternalKind::Module => modules.push(ModuleSlot::Foreign(
                                "aliased from a component instance's exports",
                            )),
                            ComponentExternalKind::Component => components += 1,
                            ComponentExternalKind::Instance => component_instances += 1,
                            _ => {}
                        },
                        ComponentAlias::Outer { kind, count, index } => match kind {
                            ComponentOuterAliasKind::CoreModule => {
                                let slot = match (count, modules.get(index as usize)) {
                                    (0, Some(slot)) => *slot,
                                    _ => ModuleSlot::Foreign("aliased from an outer component"),
                                };
                                modules.push(slot);
                            }
                            ComponentOuterAliasKind::Component => components += 1,
                            _ => {}
                        },
                        ComponentAlias::CoreInstanceExport { .. } => {}
                    }
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                for function in reader.clone() {
                    check_canonical(canonicals, &function?)?;
                    canonicals += 1;
                }
            }
            Payload::ComponentStartSection { .. } => {
                return Err(InstrumentError::UnsupportedComponentFeature {
                    feature: "a component start function".to_owned(),
                    reason: "it runs guest code at instantiation outside any call the host makes",
                });
            }
            Payload::End(_) => break,
            _ => {}
        }
        match &payload {
            Payload::CustomSection(custom) => pieces.push(Piece::Custom {
                name: custom.name().to_owned(),
                range: custom.data_offset()..custom.range().end,
            }),
            other => {
                if let Some((id, range)) = other.as_section() {
                    pieces.push(Piece::Raw { id, range });
                }
            }
        }
    }

    // Analyze the instantiated modules, in instantiation order.
    let mut instantiated: Vec<(u32, usize)> = defined
        .iter()
        .enumerate()
        .filter_map(|(n, m)| m.instance.map(|i| (i, n)))
        .collect();
    instantiated.sort_unstable();
    let mut facts: Vec<Option<module::ModuleFacts>> = defined.iter().map(|_| None).collect();
    let mut layout = StateLayout::default();
    for &(instance, n) in &instantiated {
        let m = &defined[n];
        let f = module::analyze(m.index, &component[m.range.clone()])?;
        for memory in &f.memories {
            layout.memories.push(MemoryInfo {
                k: layout.memories.len() as u32,
                origin: Origin {
                    module: m.index,
                    instance,
                    index: memory.index,
                },
                initial_pages: memory.initial_pages,
                maximum_pages: memory.maximum_pages,
            });
        }
        for global in &f.globals {
            layout.globals.push(GlobalInfo {
                k: layout.globals.len() as u32,
                origin: Origin {
                    module: m.index,
                    instance,
                    index: global.index,
                },
                ty: global.ty,
            });
        }
        facts[n] = Some(f);
    }

    // Imported resource types, and the component instance each comes from.
    let mut resource_instances = Vec::new();
    for (instance, interface) in &imported_instances {
        let ty = &types[types.component_instance_at(*instance)];
        for (name, item) in &ty.exports {
            if let ComponentEntityType::Type {
                referenced: ComponentAnyTypeId::Resource(_),
                ..
            } = item.ty
            {
                layout.resources.push(ResourceInfo {
                    k: layout.resources.len() as u32,
                    interface: interface.clone(),
                    name: name.clone(),
                });
                resource_instances.push(*instance);
            }
        }
    }

    let mut exported = accessor::Exported {
        memories: Vec::new(),
        globals: Vec::new(),
        resource_instances,
    };
    for &(instance, n) in &instantiated {
        if let Some(f) = &facts[n] {
            for memory in &f.memories {
                exported
                    .memories
                    .push((instance, memory.export_name.as_str()));
            }
            for global in &f.globals {
                exported
                    .globals
                    .push((instance, global.export_name.as_str()));
            }
        }
    }

    let mut out = Component::new();
    for piece in &pieces {
        match piece {
            Piece::Raw { id, range } => {
                out.section(&wasm_encoder::RawSection {
                    id: *id,
                    data: &component[range.clone()],
                });
            }
            Piece::Custom { name, range } => {
                out.section(&wasm_encoder::CustomSection {
                    name: name.into(),
                    data: component[range.clone()].into(),
                });
            }
            Piece::Module(n) => {
                let m = &defined[*n];
                let bytes = &component[m.range.clone()];
                match &facts[*n] {
                    Some(f) if !f.memories.is_empty() || !f.globals.is_empty() => {
                        let rewritten = module::rewrite(m.index, bytes, f)?;
                        out.section(&wasm_encoder::ModuleSection(&rewritten));
                    }
                    _ => {
                        out.section(&wasm_encoder::RawSection {
                            id: wasm_encoder::ComponentSectionId::CoreModule as u8,
                            data: bytes,
                        });
                    }
                }
            }
        }
    }
    accessor::append(&mut out, counts, &layout, &exported);

    Ok(Instrumented {
        component: out.finish(),
        layout,
    })
}

/// Refuses a nested component that defines or instantiates core modules.
fn check_nested(index: u32, bytes: &[u8]) -> Result<(), InstrumentError> {
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } => {
                return Err(InstrumentError::NestedComponentWithModules {
                    component: index,
                    what: "defines a core module",
                });
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let Instance::Instantiate { .. } = instance? {
                        return Err(InstrumentError::NestedComponentWithModules {
                            component: index,
                            what: "instantiates a core module",
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses canonical built-ins whose state lives in the runtime.
fn check_canonical(index: u32, function: &CanonicalFunction) -> Result<(), InstrumentError> {
    let is_async = |options: &[CanonicalOption]| {
        options
            .iter()
            .any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)))
    };
    let refuse = |what: &str| InstrumentError::UnsupportedComponentFeature {
        feature: format!("canonical function {index} ({what})"),
        reason: "component-model async and threads keep state (tasks, waitables, streams, \
                 futures, threads) in the runtime, outside the core instances",
    };
    match function {
        CanonicalFunction::Lift { options, .. } if is_async(options) => Err(refuse("async lift")),
        CanonicalFunction::Lower { options, .. } if is_async(options) => Err(refuse("async lower")),
        CanonicalFunction::Lift { .. }
        | CanonicalFunction::Lower { .. }
        | CanonicalFunction::ResourceNew { .. }
        | CanonicalFunction::ResourceDrop { .. }
        | CanonicalFunction::ResourceRep { .. }
        | CanonicalFunction::ThreadAvailableParallelism => Ok(()),
        other => {
            let debug = format!("{other:?}");
            let name: String = debug
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            Err(refuse(&name))
        }
    }
}
