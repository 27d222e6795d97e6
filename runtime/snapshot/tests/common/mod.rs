//! Host side of the snapshot protocol, as weir's runtime would implement it.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod guest;

use wasmtime::component::{
    Component, ComponentExportIndex, Instance, Linker, Resource, ResourceTable, WasmList,
};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::cli::StdinStream;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};
use weir_snapshot::{ACCESS_INSTANCE, HOST_INSTANCE, PUT_MEMORY, StateLayout};

/// Per-store host data.
pub struct Host {
    /// Filled by `put-memory` during a snapshot.
    pub received: Vec<Option<Vec<u8>>>,
    /// Number of `put-memory` calls.
    pub put_calls: usize,
    pub table: ResourceTable,
    pub wasi: Option<wasmtime_wasi::WasiCtx>,
    /// The guest's stdio, as configured in `wasi`.
    pub stdio: Option<StdioPipes>,
    /// Long-lived WASI handles the guest acquired, in order (see
    /// `wasi_linker`), with their rep in this store's table.
    pub journal: Vec<(Held, u32)>,
    /// Lines the guest logged through weir's host interface.
    pub logs: Vec<String>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            received: Vec::new(),
            put_calls: 0,
            table: ResourceTable::new(),
            wasi: None,
            stdio: None,
            journal: Vec::new(),
            logs: Vec::new(),
        }
    }
}

/// Captured stdout/stderr of one instance.
#[derive(Clone)]
pub struct StdioPipes {
    pub stdout: Capture,
    pub stderr: Capture,
}

/// An output stream that records what is written. Unlike wasmtime-wasi's
/// `MemoryOutputPipe`, whose `check-write` budget shrinks as it fills, it
/// always grants the same budget: a deterministic host must not let the
/// amount written so far leak into the guest (a restored instance writes
/// into a new, empty stream).
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl wasmtime_wasi::p2::OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.0.lock().unwrap().extend_from_slice(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(4096)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Capture {
    async fn ready(&mut self) {}
}

/// A host with WASI whose stdout and stderr are captured.
pub fn wasi_host() -> (Host, StdioPipes) {
    let pipes = StdioPipes {
        stdout: Capture::default(),
        stderr: Capture::default(),
    };
    // Deterministic randomness (as weir configures it): Rust's HashMap seeds
    // come from it, so two instances fed the same inputs have the same
    // memory.
    // (stdio is served by the getters of `wasi_linker`.)
    let wasi = wasmtime_wasi::WasiCtxBuilder::new()
        .insecure_random_seed(7)
        .insecure_random(wasmtime_wasi::Deterministic::new(vec![1, 2, 3, 4]))
        .secure_random(wasmtime_wasi::Deterministic::new(vec![5, 6, 7, 8]))
        .build();
    let host = Host {
        wasi: Some(wasi),
        stdio: Some(pipes.clone()),
        ..Host::default()
    };
    (host, pipes)
}

/// A stdio stream a guest acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    Stdin,
    Stdout,
    Stderr,
}

/// A WASI handle the host knows how to recreate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// From `get-stdin`/`get-stdout`/`get-stderr`.
    Stream(Stdio),
    /// From `subscribe` on the stream of journal entry `of`.
    Pollable { of: usize },
}

impl Host {
    /// A new host stream for `which`, as wasmtime-wasi's getters make it.
    fn stdio_stream(&mut self, which: Stdio) -> wasmtime::Result<StdioResource> {
        let pipes = self.stdio.clone().expect("stdio pipes");
        Ok(match which {
            Stdio::Stdin => {
                let stream: DynInputStream = StdinStream::p2_stream(&MemoryInputPipe::new(""));
                StdioResource::Input(self.table.push(stream)?)
            }
            Stdio::Stdout => {
                let stream: DynOutputStream = Box::new(pipes.stdout);
                StdioResource::Output(self.table.push(stream)?)
            }
            Stdio::Stderr => {
                let stream: DynOutputStream = Box::new(pipes.stderr);
                StdioResource::Output(self.table.push(stream)?)
            }
        })
    }
}

enum StdioResource {
    Input(Resource<DynInputStream>),
    Output(Resource<DynOutputStream>),
}

/// The WASI version wasmtime-wasi 48 registers its interfaces under.
const WASI_CLI: &str = "0.2.12";

/// Records a subscription to a stream if that stream is journaled.
fn journal_pollable(host: &mut Host, stream_rep: u32, pollable_rep: u32) {
    if let Some(of) = host
        .journal
        .iter()
        .position(|(held, rep)| matches!(held, Held::Stream(_)) && *rep == stream_rep)
    {
        host.journal.push((Held::Pollable { of }, pollable_rep));
    }
}

/// The snapshot linker plus WASI p2, with the three stdio getters and the
/// two stream `subscribe` methods replaced by versions that also record,
/// in `Host::journal`, which handle the guest acquired, in what order. That
/// journal is what a restore needs to rebuild the guest's handle table (see
/// `rebuild_handles`). wasi-libc (Rust 1.95 std) acquires exactly these:
/// the stream on the first write to a stdio fd, and one pollable for it,
/// both kept for the life of the instance.
pub fn wasi_linker(engine: &Engine) -> Linker<Host> {
    let mut linker = linker(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    linker.allow_shadowing(true);
    let mut streams = linker
        .instance(&format!("wasi:io/streams@{WASI_CLI}"))
        .unwrap();
    streams
        .func_wrap(
            "[method]output-stream.subscribe",
            |mut cx: StoreContextMut<'_, Host>, (stream,): (Resource<DynOutputStream>,)| {
                let host = cx.data_mut();
                let rep = stream.rep();
                let pollable = wasmtime_wasi::p2::subscribe(&mut host.table, stream)?;
                journal_pollable(host, rep, pollable.rep());
                Ok((pollable,))
            },
        )
        .unwrap();
    streams
        .func_wrap(
            "[method]input-stream.subscribe",
            |mut cx: StoreContextMut<'_, Host>, (stream,): (Resource<DynInputStream>,)| {
                let host = cx.data_mut();
                let rep = stream.rep();
                let pollable = wasmtime_wasi::p2::subscribe(&mut host.table, stream)?;
                journal_pollable(host, rep, pollable.rep());
                Ok((pollable,))
            },
        )
        .unwrap();
    for (interface, func, which) in [
        ("stdin", "get-stdin", Stdio::Stdin),
        ("stdout", "get-stdout", Stdio::Stdout),
        ("stderr", "get-stderr", Stdio::Stderr),
    ] {
        let mut inst = linker
            .instance(&format!("wasi:cli/{interface}@{WASI_CLI}"))
            .unwrap();
        match which {
            Stdio::Stdin => inst
                .func_wrap(func, move |mut cx: StoreContextMut<'_, Host>, (): ()| {
                    let host = cx.data_mut();
                    let StdioResource::Input(r) = host.stdio_stream(which)? else {
                        unreachable!()
                    };
                    host.journal.push((Held::Stream(which), r.rep()));
                    Ok((r,))
                })
                .unwrap(),
            _ => inst
                .func_wrap(func, move |mut cx: StoreContextMut<'_, Host>, (): ()| {
                    let host = cx.data_mut();
                    let StdioResource::Output(r) = host.stdio_stream(which)? else {
                        unreachable!()
                    };
                    host.journal.push((Held::Stream(which), r.rep()));
                    Ok((r,))
                })
                .unwrap(),
        }
    }
    linker.allow_shadowing(false);
    linker
}

/// Checks, between two calls, that every WASI resource the guest holds is
/// journaled (so `rebuild_handles` can recreate it), and returns the
/// journal to store with the snapshot.
pub fn check_handles(store: &mut Store<Host>) -> Result<Vec<Held>, String> {
    let host = store.data_mut();
    // Live entries. (`iter_mut` would also yield the tombstones a debug
    // build leaves for deleted entries; `Debug` lists only live ones.)
    let listed = format!("{:?}", host.table);
    let total = listed
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|s| !s.is_empty())
        .count();
    let live: Vec<u32> = listed
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut journaled: Vec<u32> = host.journal.iter().map(|(_, rep)| *rep).collect();
    journaled.sort_unstable();
    if total != live.len() || live != journaled {
        return Err(format!(
            "the guest holds {total} WASI resources but only {} of them are stdio streams \
             or their pollables, which can be recreated after a restore; refusing to \
             checkpoint",
            host.journal.len()
        ));
    }
    Ok(host.journal.iter().map(|(held, _)| *held).collect())
}

/// Recreates, in a fresh instance and before its memory is restored, the
/// stdio handles of `journal` in the same order, so they get the same
/// handle indices the guest's restored memory refers to. Returns them.
pub fn rebuild_handles(
    store: &mut Store<Host>,
    instance: &Instance,
    layout: &StateLayout,
    journal: &[Held],
) -> wasmtime::Result<Vec<u32>> {
    let mut indices = Vec::new();
    for held in journal {
        let which = match held {
            Held::Stream(which) => *which,
            Held::Pollable { of } => {
                let host = store.data_mut();
                let stream_rep = host.journal[*of].1;
                let pollable = match host.journal[*of].0 {
                    Held::Stream(Stdio::Stdin) => wasmtime_wasi::p2::subscribe(
                        &mut host.table,
                        Resource::<DynInputStream>::new_borrow(stream_rep),
                    )?,
                    _ => wasmtime_wasi::p2::subscribe(
                        &mut host.table,
                        Resource::<DynOutputStream>::new_borrow(stream_rep),
                    )?,
                };
                host.journal.push((*held, pollable.rep()));
                let info = wasi_resource(layout, "wasi:io/poll@", "pollable");
                let idx = access_export(store, instance, &info.adopt_func());
                let f = instance
                    .get_typed_func::<(Resource<DynPollable>,), (u32,)>(&mut *store, &idx)?;
                indices.push(f.call(&mut *store, (pollable,))?.0);
                continue;
            }
        };
        let resource = store.data_mut().stdio_stream(which)?;
        let rep = match &resource {
            StdioResource::Input(r) => r.rep(),
            StdioResource::Output(r) => r.rep(),
        };
        store.data_mut().journal.push((*held, rep));
        let index = match resource {
            StdioResource::Input(r) => {
                let info = wasi_resource(layout, "wasi:io/streams@", "input-stream");
                let idx = access_export(store, instance, &info.adopt_func());
                let f = instance
                    .get_typed_func::<(Resource<DynInputStream>,), (u32,)>(&mut *store, &idx)?;
                f.call(&mut *store, (r,))?.0
            }
            StdioResource::Output(r) => {
                let info = wasi_resource(layout, "wasi:io/streams@", "output-stream");
                let idx = access_export(store, instance, &info.adopt_func());
                let f = instance
                    .get_typed_func::<(Resource<DynOutputStream>,), (u32,)>(&mut *store, &idx)?;
                f.call(&mut *store, (r,))?.0
            }
        };
        indices.push(index);
    }
    Ok(indices)
}

/// The next `n` handle indices `instance` would allocate, found without
/// changing anything: adopt `n` throw-away output streams, note their
/// indices, drop them again in reverse order (the handle table's free list
/// is LIFO, so its state is as before).
pub fn probe_handles(
    store: &mut Store<Host>,
    instance: &Instance,
    layout: &StateLayout,
    n: usize,
) -> wasmtime::Result<Vec<u32>> {
    let info = wasi_resource(layout, "wasi:io/streams@", "output-stream");
    let adopt = access_export(store, instance, &info.adopt_func());
    let adopt =
        instance.get_typed_func::<(Resource<DynOutputStream>,), (u32,)>(&mut *store, &adopt)?;
    let drop = access_export(store, instance, &info.drop_func());
    let drop = instance.get_typed_func::<(u32,), ()>(&mut *store, &drop)?;
    let mut indices = Vec::new();
    for _ in 0..n {
        let sink: DynOutputStream = Box::new(wasmtime_wasi::p2::pipe::SinkOutputStream);
        let r = store.data_mut().table.push(sink)?;
        indices.push(adopt.call(&mut *store, (r,))?.0);
    }
    for index in indices.iter().rev() {
        drop.call(&mut *store, (*index,))?;
    }
    Ok(indices)
}

fn wasi_resource<'a>(
    layout: &'a StateLayout,
    interface_prefix: &str,
    name: &str,
) -> &'a weir_snapshot::ResourceInfo {
    layout
        .resources
        .iter()
        .find(|r| r.interface.starts_with(interface_prefix) && r.name == name)
        .unwrap_or_else(|| panic!("component imports no {interface_prefix}*/{name}"))
}

impl wasmtime_wasi::WasiView for Host {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: self.wasi.as_mut().expect("WASI context"),
            table: &mut self.table,
        }
    }
}

/// Captured state.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub memories: Vec<Vec<u8>>,
    /// Raw bits, zero-extended for 32-bit globals.
    pub globals: Vec<u64>,
}

impl std::fmt::Debug for Snapshot {
    /// Sizes and a checksum, not megabytes of bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let memories: Vec<String> = self
            .memories
            .iter()
            .map(|m| {
                let sum = m.iter().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
                format!("{} pages, checksum {sum:#x}", m.len() / 65536)
            })
            .collect();
        f.debug_struct("Snapshot")
            .field("memories", &memories)
            .field("globals", &self.globals)
            .finish()
    }
}

/// The engine configuration weir uses (deterministic floats).
pub fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_multi_memory(true);
    config.cranelift_nan_canonicalization(true);
    Engine::new(&config).unwrap()
}

/// A linker with the snapshot host interface.
pub fn linker(engine: &Engine) -> Linker<Host> {
    let mut linker = Linker::new(engine);
    linker
        .instance(HOST_INSTANCE)
        .unwrap()
        .func_wrap(
            PUT_MEMORY,
            |mut cx: StoreContextMut<'_, Host>, (index, data): (u32, WasmList<u8>)| {
                let bytes = data.as_le_slice(&cx).to_vec();
                let host = cx.data_mut();
                let index = index as usize;
                if host.received.len() <= index {
                    host.received.resize(index + 1, None);
                }
                host.received[index] = Some(bytes);
                host.put_calls += 1;
                Ok(())
            },
        )
        .unwrap();
    linker
}

/// A store that allows 1 GiB host calls.
pub fn store(engine: &Engine, host: Host) -> Store<Host> {
    let mut store = Store::new(engine, host);
    store.set_hostcall_fuel(1 << 30);
    store
}

fn access_export(store: &mut Store<Host>, instance: &Instance, name: &str) -> ComponentExportIndex {
    let access = instance
        .get_export_index(&mut *store, None, ACCESS_INSTANCE)
        .expect("access instance");
    instance
        .get_export_index(&mut *store, Some(&access), name)
        .unwrap_or_else(|| panic!("no export {name}"))
}

/// Reads every memory and global of `instance`.
pub fn snapshot(store: &mut Store<Host>, instance: &Instance, layout: &StateLayout) -> Snapshot {
    store.data_mut().received.clear();
    let mut memories = Vec::new();
    for memory in &layout.memories {
        let idx = access_export(store, instance, &memory.snapshot_func());
        let f = instance
            .get_typed_func::<(), ()>(&mut *store, &idx)
            .unwrap();
        f.call(&mut *store, ()).unwrap();
        let bytes = store.data_mut().received[memory.k as usize]
            .take()
            .expect("put-memory called");
        memories.push(bytes);
    }
    let mut globals = Vec::new();
    for global in &layout.globals {
        let idx = access_export(store, instance, &global.get_func());
        let value = if global.ty.is_64() {
            let f = instance
                .get_typed_func::<(), (u64,)>(&mut *store, &idx)
                .unwrap();
            f.call(&mut *store, ()).unwrap().0
        } else {
            let f = instance
                .get_typed_func::<(), (u32,)>(&mut *store, &idx)
                .unwrap();
            u64::from(f.call(&mut *store, ()).unwrap().0)
        };
        globals.push(value);
    }
    Snapshot { memories, globals }
}

/// Writes `snap` into `instance` (a fresh instance of the same component).
pub fn restore(
    store: &mut Store<Host>,
    instance: &Instance,
    layout: &StateLayout,
    snap: &Snapshot,
) -> wasmtime::Result<()> {
    for (memory, bytes) in layout.memories.iter().zip(&snap.memories) {
        let idx = access_export(store, instance, &memory.restore_func());
        let f = instance.get_typed_func::<(&[u8],), ()>(&mut *store, &idx)?;
        f.call(&mut *store, (bytes.as_slice(),))?;
    }
    for (global, bits) in layout.globals.iter().zip(&snap.globals) {
        let idx = access_export(store, instance, &global.set_func());
        if global.ty.is_64() {
            let f = instance.get_typed_func::<(u64,), ()>(&mut *store, &idx)?;
            f.call(&mut *store, (*bits,))?;
        } else {
            let f = instance.get_typed_func::<(u32,), ()>(&mut *store, &idx)?;
            f.call(&mut *store, (*bits as u32,))?;
        }
    }
    Ok(())
}

/// Instruments `bytes`, checks the result validates, and compiles it.
pub fn load(engine: &Engine, bytes: &[u8]) -> (Component, StateLayout) {
    let instrumented = weir_snapshot::instrument(bytes).unwrap();
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&instrumented.component)
        .unwrap();
    let component = Component::new(engine, &instrumented.component).unwrap();
    (component, instrumented.layout)
}
