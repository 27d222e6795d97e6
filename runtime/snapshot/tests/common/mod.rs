//! Host side of the snapshot protocol, as weir's runtime would implement it.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod guest;

use wasmtime::component::{
    Component, ComponentExportIndex, Instance, Linker, ResourceTable, WasmList,
};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::cli::StdinStream;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use weir_snapshot::wasi::{CaptureStream, HandleJournal, JournalHost, Stdio, add_journaling};
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
    /// `wasi_linker`).
    pub journal: HandleJournal,
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
            journal: HandleJournal::default(),
            logs: Vec::new(),
        }
    }
}

/// Captured stdout/stderr of one instance.
#[derive(Clone)]
pub struct StdioPipes {
    pub stdout: CaptureStream,
    pub stderr: CaptureStream,
}

/// A host with WASI whose stdout and stderr are captured.
pub fn wasi_host() -> (Host, StdioPipes) {
    let pipes = StdioPipes {
        stdout: CaptureStream::default(),
        stderr: CaptureStream::default(),
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

impl JournalHost for Host {
    fn journal(&mut self) -> &mut HandleJournal {
        &mut self.journal
    }

    fn stdin_stream(&mut self) -> DynInputStream {
        StdinStream::p2_stream(&MemoryInputPipe::new(""))
    }

    fn output_stream(&mut self, which: Stdio) -> DynOutputStream {
        let pipes = self.stdio.as_ref().expect("stdio pipes");
        match which {
            Stdio::Stdout => Box::new(pipes.stdout.clone()),
            Stdio::Stderr => Box::new(pipes.stderr.clone()),
            Stdio::Stdin => unreachable!("stdin is an input stream"),
        }
    }
}

/// The snapshot linker plus WASI p2, journaling the stdio handles the guest
/// acquires (see `weir_snapshot::wasi`).
pub fn wasi_linker(engine: &Engine) -> Linker<Host> {
    let mut linker = linker(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    add_journaling(&mut linker).unwrap();
    linker
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
