//! A real Rust component (tests/guest, built for wasm32-wasip2 with Rust
//! 1.95 std and wit-bindgen): state in a HashMap and Vecs, printing with
//! `println!`/`eprintln!`.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Host, StdioPipes, engine, load, restore, snapshot, store, wasi_host, wasi_linker};
use wasmtime::component::{Component, Instance, Linker};
use wasmtime::{Engine, Store};
use weir_snapshot::wasi::{
    HandleError, Held, Stdio, add_journaling, check_handles, probe_handles, rebuild_handles,
};

struct Guest {
    store: Store<Host>,
    instance: Instance,
    pipes: StdioPipes,
}

impl Guest {
    fn new(engine: &Engine, linker: &Linker<Host>, component: &Component) -> Guest {
        let (host, pipes) = wasi_host();
        let mut store = store(engine, host);
        let instance = linker.instantiate(&mut store, component).unwrap();
        Guest {
            store,
            instance,
            pipes,
        }
    }

    fn process(&mut self, word: &str) -> String {
        let f = self
            .instance
            .get_typed_func::<(&str,), (String,)>(&mut self.store, "process")
            .unwrap();
        f.call(&mut self.store, (word,)).unwrap().0
    }

    fn hoard(&mut self, kib: u32) {
        let f = self
            .instance
            .get_typed_func::<(u32,), ()>(&mut self.store, "hoard")
            .unwrap();
        f.call(&mut self.store, (kib,)).unwrap();
    }

    fn state_hash(&mut self) -> u64 {
        let f = self
            .instance
            .get_typed_func::<(), (u64,)>(&mut self.store, "state-hash")
            .unwrap();
        f.call(&mut self.store, ()).unwrap().0
    }

    fn print(&mut self, func: &str, line: &str) -> wasmtime::Result<()> {
        let f = self
            .instance
            .get_typed_func::<(&str,), ()>(&mut self.store, func)?;
        f.call(&mut self.store, (line,))
    }

    fn stdout(&self) -> String {
        String::from_utf8(self.pipes.stdout.contents()).unwrap()
    }

    fn stderr(&self) -> String {
        String::from_utf8(self.pipes.stderr.contents()).unwrap()
    }
}

const WORDS: &[&str] = &["fish", "whale", "fish", "krill", "whale", "fish", "seal"];

fn setup() -> (Engine, Linker<Host>, Component, weir_snapshot::StateLayout) {
    let engine = engine();
    let linker = wasi_linker(&engine);
    let (component, layout) = load(&engine, common::guest::test_guest());
    (engine, linker, component, layout)
}

#[test]
fn layout_of_a_rust_component() {
    let (_, _, _, layout) = setup();
    // wasm-component-ld's output: the main module owns the only memory and
    // the only mutable global (__stack_pointer); the shim/fixup modules
    // have none.
    assert_eq!(layout.memories.len(), 1);
    assert_eq!(layout.globals.len(), 1);
    assert_eq!(layout.globals[0].ty, weir_snapshot::GlobalType::I32);
    assert!(
        layout
            .resource("wasi:io/streams@0.2.6", "output-stream")
            .is_some()
    );
    println!("{layout:#?}");
}

#[test]
fn rust_state_roundtrip() {
    let (engine, linker, component, layout) = setup();
    let mut reference = Guest::new(&engine, &linker, &component);
    let mut original = Guest::new(&engine, &linker, &component);
    for w in WORDS {
        assert_eq!(original.process(w), reference.process(w));
    }
    original.hoard(300);
    reference.hoard(300);
    // No stdio was used: nothing to rebuild.
    assert_eq!(check_handles(original.store.data_mut()).unwrap(), []);

    let snap = snapshot(&mut original.store, &original.instance, &layout);
    assert!(snap.memories[0].len() > 300 * 1024);

    let mut restored = Guest::new(&engine, &linker, &component);
    restore(&mut restored.store, &restored.instance, &layout, &snap).unwrap();
    assert_eq!(restored.state_hash(), reference.state_hash());
    for w in ["seal", "fish", "orca", "orca"] {
        let expect = reference.process(w);
        assert_eq!(original.process(w), expect);
        assert_eq!(restored.process(w), expect);
    }
    restored.hoard(64);
    reference.hoard(64);
    assert_eq!(restored.process("krill"), reference.process("krill"));
    assert_eq!(restored.state_hash(), reference.state_hash());
    // Byte-identical memory, same size, same stack pointer as an instance
    // that was never snapshotted nor restored.
    assert_eq!(
        snapshot(&mut restored.store, &restored.instance, &layout),
        snapshot(&mut reference.store, &reference.instance, &layout)
    );
}

/// The hazard, as it is: Rust 1.95's std (through wasi-libc) caches the
/// stdout stream handle in linear memory on the first `println!`. A fresh
/// instance restored from that memory does not have the handle.
#[test]
fn println_after_naive_restore_fails() {
    let (engine, linker, component, layout) = setup();
    let mut original = Guest::new(&engine, &linker, &component);
    original.print("print", "before").unwrap();
    original.process("fish");
    assert_eq!(check_handles(original.store.data_mut()).unwrap().len(), 2);
    assert!(
        !original.store.data().table.is_empty(),
        "the guest keeps stdout open"
    );
    let snap = snapshot(&mut original.store, &original.instance, &layout);

    let mut restored = Guest::new(&engine, &linker, &component);
    restore(&mut restored.store, &restored.instance, &layout, &snap).unwrap();
    let err = restored.print("print", "after").unwrap_err();
    assert!(
        format!("{err:?}").contains("unknown handle index 1"),
        "{err:?}"
    );
    // The trap poisons the instance.
    let f = restored
        .instance
        .get_typed_func::<(&str,), (String,)>(&mut restored.store, "process")
        .unwrap();
    let err = f.call(&mut restored.store, ("fish",)).unwrap_err();
    assert!(
        format!("{err:?}").contains("cannot enter component instance"),
        "{err:?}"
    );
    assert_eq!(restored.stdout(), "");
}

/// The fix: record which stdio streams the guest acquired (in order), and
/// re-create them in the fresh instance with `adopt-resource` before
/// restoring memory, so they get the same handle indices.
#[test]
fn println_before_and_after_restore() {
    let (engine, linker, component, layout) = setup();
    let mut reference = Guest::new(&engine, &linker, &component);
    let mut original = Guest::new(&engine, &linker, &component);
    for g in [&mut reference, &mut original] {
        g.print("print", "before-1").unwrap();
        for w in WORDS {
            g.process(w);
        }
        g.print("eprint", "before-e").unwrap();
        g.print("print", "before-2").unwrap();
    }
    assert_eq!(original.stdout(), "before-1\nbefore-2\n");
    assert_eq!(original.stderr(), "before-e\n");

    // Checkpoint: the journal explains every handle the guest holds.
    let journal = check_handles(original.store.data_mut()).unwrap();
    // On its first write to a stdio fd, wasi-libc acquires the stream and
    // subscribes to it once; it keeps both.
    assert_eq!(
        journal,
        [
            Held::Stream(Stdio::Stdout),
            Held::Pollable { of: 0 },
            Held::Stream(Stdio::Stderr),
            Held::Pollable { of: 2 }
        ]
    );
    let future = probe_handles(&mut original.store, &original.instance, &layout, 4).unwrap();
    assert_eq!(
        future,
        [5, 6, 7, 8],
        "handles 1..=4 are held, the rest is free"
    );
    let snap = snapshot(&mut original.store, &original.instance, &layout);

    // Restore: rebuild the handle table, check it, then memory and globals.
    let mut restored = Guest::new(&engine, &linker, &component);
    let indices =
        rebuild_handles(&mut restored.store, &restored.instance, &layout, &journal).unwrap();
    assert_eq!(indices, [1, 2, 3, 4]);
    assert_eq!(
        probe_handles(&mut restored.store, &restored.instance, &layout, 4).unwrap(),
        future
    );
    restore(&mut restored.store, &restored.instance, &layout, &snap).unwrap();

    // Printing works again and goes to the restored instance's stdio.
    for g in [&mut reference, &mut original, &mut restored] {
        g.print("print", "after").unwrap();
        g.print("eprint", "after-e").unwrap();
    }
    assert_eq!(restored.stdout(), "after\n");
    assert_eq!(restored.stderr(), "after-e\n");
    assert_eq!(original.stdout(), "before-1\nbefore-2\nafter\n");
    for w in ["seal", "orca", "fish"] {
        let expect = reference.process(w);
        assert_eq!(restored.process(w), expect);
        assert_eq!(original.process(w), expect);
    }
    // Probing did not perturb either instance: all three are identical.
    let want = snapshot(&mut reference.store, &reference.instance, &layout);
    assert_eq!(
        snapshot(&mut original.store, &original.instance, &layout),
        want
    );
    assert_eq!(
        snapshot(&mut restored.store, &restored.instance, &layout),
        want
    );
    assert_eq!(check_handles(restored.store.data_mut()).unwrap(), journal);
}

/// A handle the host cannot recreate makes the checkpoint refuse.
#[test]
fn unexplained_handle_refuses_checkpoint() {
    let (engine, linker, component, layout) = setup();
    let mut g = Guest::new(&engine, &linker, &component);
    g.print("print", "hello").unwrap();
    assert!(check_handles(g.store.data_mut()).is_ok());
    // Simulate a guest that keeps some other stream: give it one directly.
    let info = layout
        .resource("wasi:io/streams@0.2.6", "output-stream")
        .unwrap()
        .clone();
    let access = g
        .instance
        .get_export_index(&mut g.store, None, weir_snapshot::ACCESS_INSTANCE)
        .unwrap();
    let adopt = g
        .instance
        .get_export_index(&mut g.store, Some(&access), &info.adopt_func())
        .unwrap();
    let adopt = g
        .instance
        .get_typed_func::<(wasmtime::component::Resource<wasmtime_wasi::p2::DynOutputStream>,), (u32,)>(
            &mut g.store,
            &adopt,
        )
        .unwrap();
    let sink: wasmtime_wasi::p2::DynOutputStream =
        Box::new(wasmtime_wasi::p2::pipe::SinkOutputStream);
    let r = g.store.data_mut().table.push(sink).unwrap();
    assert_eq!(adopt.call(&mut g.store, (r,)).unwrap().0, 3);
    let err = check_handles(g.store.data_mut()).unwrap_err().to_string();
    assert!(
        err.starts_with("the guest holds 3 WASI resources but only 2"),
        "{err}"
    );
}

/// Calls `drop-resource{k}` of the `interface`/`name` resource on handle
/// `index` of the guest (as if the guest had dropped it).
fn drop_guest_handle(
    g: &mut Guest,
    layout: &weir_snapshot::StateLayout,
    interface: &str,
    name: &str,
    index: u32,
) {
    let info = layout.resource(interface, name).unwrap().clone();
    let access = g
        .instance
        .get_export_index(&mut g.store, None, weir_snapshot::ACCESS_INSTANCE)
        .unwrap();
    let drop = g
        .instance
        .get_export_index(&mut g.store, Some(&access), &info.drop_func())
        .unwrap();
    let drop = g
        .instance
        .get_typed_func::<(u32,), ()>(&mut g.store, &drop)
        .unwrap();
    drop.call(&mut g.store, (index,)).unwrap();
}

/// A journaled handle the guest dropped leaves a hole the journal cannot
/// recreate: the checkpoint refuses, also when its table slot has since
/// been reused by a pollable of something else.
#[test]
fn dropped_handle_refuses_checkpoint() {
    let (engine, linker, component, layout) = setup();
    let mut g = Guest::new(&engine, &linker, &component);
    g.print("print", "hello").unwrap();
    // Handle 2 is stdout's pollable.
    drop_guest_handle(&mut g, &layout, "wasi:io/poll@0.2.6", "pollable", 2);
    let err = check_handles(g.store.data_mut()).unwrap_err();
    assert!(
        matches!(
            err,
            HandleError::Stale {
                entry: 1,
                held: Held::Pollable { of: 0 }
            }
        ),
        "{err}"
    );

    // The freed slot of the host table now holds a pollable again, but of
    // another stream.
    use wasmtime_wasi::p2::{DynOutputStream, pipe::SinkOutputStream};
    let table = &mut g.store.data_mut().table;
    let filler = table.push(()).unwrap();
    let freed = filler.rep();
    let sink: DynOutputStream = Box::new(SinkOutputStream);
    let sink = table.push(sink).unwrap();
    table.delete(filler).unwrap();
    let pollable = wasmtime_wasi::p2::subscribe(table, sink).unwrap();
    assert_eq!(pollable.rep(), freed);
    let err = check_handles(g.store.data_mut()).unwrap_err();
    assert!(matches!(err, HandleError::Stale { entry: 1, .. }), "{err}");
}

/// A journal that does not fit the instance is refused with an error.
#[test]
fn rebuild_refuses_bad_journals() {
    let (engine, linker, component, layout) = setup();
    let fresh = || Guest::new(&engine, &linker, &component);

    let mut g = fresh();
    let err = rebuild_handles(
        &mut g.store,
        &g.instance,
        &layout,
        &[Held::Pollable { of: 0 }],
    )
    .unwrap_err();
    assert!(
        matches!(err, HandleError::BadJournal { entry: 0, of: 0 }),
        "{err}"
    );

    let mut g = fresh();
    let journal = [Held::Stream(Stdio::Stdout), Held::Pollable { of: 7 }];
    let err = rebuild_handles(&mut g.store, &g.instance, &layout, &journal).unwrap_err();
    assert!(
        matches!(err, HandleError::BadJournal { entry: 1, of: 7 }),
        "{err}"
    );

    let mut g = fresh();
    let journal = [Held::Stream(Stdio::Stderr), Held::Pollable { of: 0 }];
    assert_eq!(
        rebuild_handles(&mut g.store, &g.instance, &layout, &journal).unwrap(),
        [1, 2]
    );
    let err = rebuild_handles(&mut g.store, &g.instance, &layout, &journal).unwrap_err();
    assert!(matches!(err, HandleError::NotFresh { entries: 2 }), "{err}");

    // A component that imports no streams cannot have held one.
    let mut g = fresh();
    let no_resources = weir_snapshot::StateLayout::default();
    let err = rebuild_handles(&mut g.store, &g.instance, &no_resources, &journal).unwrap_err();
    assert!(
        matches!(
            err,
            HandleError::MissingResource {
                name: "output-stream",
                ..
            }
        ),
        "{err}"
    );
}

/// Journaling shadows wasmtime-wasi's definitions; without them (or with
/// another WASI version) it fails instead of journaling nothing.
#[test]
fn journaling_needs_wasi_in_the_linker() {
    let engine = engine();
    let mut linker = common::linker(&engine);
    let err = add_journaling(&mut linker).unwrap_err();
    let err = err.downcast_ref::<HandleError>().unwrap();
    assert!(matches!(err, HandleError::WasiNotLinked { .. }), "{err}");
}
