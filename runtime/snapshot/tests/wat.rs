//! Hand-written components: snapshot, restore into a fresh instance,
//! compare; snapshots do not perturb; refusals.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Host, Snapshot, engine, linker, load, restore, snapshot, store};
use wasmtime::Store;
use wasmtime::component::{Component, Instance, Linker};
use weir_snapshot::{GlobalType, InstrumentError, instrument};

/// A signalling NaN with a payload: Cranelift's NaN canonicalization (on in
/// weir's engine) would turn it into 0x7fc00000 if any float op touched it.
const ODD_NAN32: u32 = 0x7fa0_0001;
const ODD_NAN64: u64 = 0xfff4_0000_dead_beef;

/// One core module with one memory (exported from the core module or not),
/// mutable i32/i64/f32/f64 globals, an immutable global, and a `step` that
/// grows memory, scatters writes and mixes everything into its result.
fn single_memory_component(export_memory: bool) -> Vec<u8> {
    let memory = if export_memory {
        r#"(memory (export "mem") 1 100)"#
    } else {
        "(memory 1 100)"
    };
    wat::parse_str(format!(
        r#"
(component
  (core module $m
    {memory}
    (global $count (mut i32) (i32.const 0))
    (global $acc (mut i64) (i64.const 7))
    (global $f (mut f32) (f32.const 0))
    (global $d (mut f64) (f64.const 0.5))
    (global $k i32 (i32.const 42))
    (func (export "step") (param $x i32) (result i64)
      (local $addr i32)
      ;; every 4th call grows memory by a page
      (if (i32.eqz (i32.and (global.get $count) (i32.const 3)))
        (then (drop (memory.grow (i32.const 1)))))
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (global.set $acc (i64.add (i64.mul (global.get $acc) (i64.const 6364136223846793005))
                                (i64.extend_i32_u (local.get $x))))
      (global.set $d (f64.add (global.get $d) (f64.convert_i32_u (local.get $x))))
      (local.set $addr
        (i32.and
          (i32.wrap_i64 (i64.rem_u (global.get $acc)
            (i64.extend_i32_u (i32.sub (i32.shl (memory.size) (i32.const 16)) (i32.const 8)))))
          (i32.const -8)))
      (i64.store (local.get $addr) (i64.add (i64.load (local.get $addr)) (global.get $acc)))
      (i64.xor (i64.load (local.get $addr))
        (i64.xor (i64.extend_i32_u (memory.size))
          (i64.xor (i64.reinterpret_f64 (global.get $d))
            (i64.extend_i32_u (i32.add (global.get $k) (i32.reinterpret_f32 (global.get $f))))))))
    ;; stores odd NaNs in the float globals without float arithmetic
    (func (export "set-nans")
      (global.set $f (f32.reinterpret_i32 (i32.const {ODD_NAN32})))
      (global.set $d (f64.reinterpret_i64 (i64.const {ODD_NAN64}))))
    (func (export "float-bits") (result i64)
      (i64.xor (i64.extend_i32_u (i32.reinterpret_f32 (global.get $f)))
               (i64.reinterpret_f64 (global.get $d))))
    ;; sum of the whole memory, as i64 words
    (func (export "checksum") (result i64)
      (local $p i32) (local $end i32) (local $sum i64)
      (local.set $end (i32.shl (memory.size) (i32.const 16)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
          (local.set $sum (i64.add (i64.rotl (local.get $sum) (i64.const 5))
                                   (i64.load (local.get $p))))
          (local.set $p (i32.add (local.get $p) (i32.const 8)))
          (br $next)))
      (local.get $sum))
    (func (export "pages") (result i32) (memory.size))
  )
  (core instance $i (instantiate $m))
  (func (export "step") (param "x" u32) (result u64) (canon lift (core func $i "step")))
  (func (export "set-nans") (canon lift (core func $i "set-nans")))
  (func (export "float-bits") (result u64) (canon lift (core func $i "float-bits")))
  (func (export "checksum") (result u64) (canon lift (core func $i "checksum")))
  (func (export "pages") (result u32) (canon lift (core func $i "pages")))
)"#,
        ODD_NAN32 = ODD_NAN32 as i32,
        ODD_NAN64 = ODD_NAN64 as i64,
    ))
    .unwrap()
}

/// Two core instances: one with a memory and an i32 global, one with two
/// memories (multi-memory) and an i64 global.
fn multi_memory_component() -> Vec<u8> {
    wat::parse_str(
        r#"
(component
  (core module $a
    (memory 1)
    (global $n (mut i32) (i32.const 0))
    (func (export "step") (param $x i32) (result i64)
      (global.set $n (i32.add (global.get $n) (local.get $x)))
      (i32.store (i32.and (i32.mul (global.get $n) (i32.const 4)) (i32.const 0xfffc))
                 (global.get $n))
      (i64.extend_i32_u (i32.load (i32.and (i32.mul (local.get $x) (i32.const 4)) (i32.const 0xfffc))))))
  (core module $b
    (memory $m0 1)
    (memory $m1 2)
    (global $h (mut i64) (i64.const 1469598103934665603))
    (func (export "step") (param $x i32) (result i64)
      (local $addr i32)
      (if (i32.eq (i32.rem_u (local.get $x) (i32.const 5)) (i32.const 0))
        (then (drop (memory.grow $m1 (i32.const 1)))))
      (global.set $h (i64.mul (i64.xor (global.get $h) (i64.extend_i32_u (local.get $x)))
                              (i64.const 1099511628211)))
      (local.set $addr (i32.and (i32.wrap_i64 (global.get $h)) (i32.const 0xfff8)))
      (i64.store $m0 (local.get $addr) (i64.add (i64.load $m0 (local.get $addr)) (global.get $h)))
      (i64.store $m1 (i32.add (local.get $addr) (i32.const 65536))
                     (i64.xor (i64.load $m0 (local.get $addr)) (global.get $h)))
      (i64.add (i64.load $m1 (i32.add (local.get $addr) (i32.const 65536)))
               (i64.extend_i32_u (memory.size $m1)))))
  (core instance $ia (instantiate $a))
  (core instance $ib (instantiate $b))
  (func (export "step-a") (param "x" u32) (result u64) (canon lift (core func $ia "step")))
  (func (export "step-b") (param "x" u32) (result u64) (canon lift (core func $ib "step")))
)"#,
    )
    .unwrap()
}

fn instantiate(
    engine: &wasmtime::Engine,
    linker: &Linker<Host>,
    component: &Component,
) -> (Store<Host>, Instance) {
    let mut store = store(engine, Host::default());
    let instance = linker.instantiate(&mut store, component).unwrap();
    (store, instance)
}

fn call_u64(store: &mut Store<Host>, instance: &Instance, name: &str, x: Option<u32>) -> u64 {
    match x {
        Some(x) => {
            let f = instance
                .get_typed_func::<(u32,), (u64,)>(&mut *store, name)
                .unwrap();
            f.call(&mut *store, (x,)).unwrap().0
        }
        None => {
            let f = instance
                .get_typed_func::<(), (u64,)>(&mut *store, name)
                .unwrap();
            f.call(&mut *store, ()).unwrap().0
        }
    }
}

fn pages(store: &mut Store<Host>, instance: &Instance) -> u32 {
    let f = instance
        .get_typed_func::<(), (u32,)>(&mut *store, "pages")
        .unwrap();
    f.call(&mut *store, ()).unwrap().0
}

fn set_nans(store: &mut Store<Host>, instance: &Instance) {
    let f = instance
        .get_typed_func::<(), ()>(&mut *store, "set-nans")
        .unwrap();
    f.call(&mut *store, ()).unwrap();
}

fn roundtrip_single(export_memory: bool) {
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &single_memory_component(export_memory));

    assert_eq!(layout.memories.len(), 1);
    assert_eq!(layout.memories[0].initial_pages, 1);
    assert_eq!(layout.memories[0].maximum_pages, Some(100));
    let tys: Vec<GlobalType> = layout.globals.iter().map(|g| g.ty).collect();
    assert_eq!(
        tys,
        [
            GlobalType::I32,
            GlobalType::I64,
            GlobalType::F32,
            GlobalType::F64
        ],
        "the immutable global is not captured"
    );

    let (mut store, original) = instantiate(&engine, &linker, &component);
    for x in 1..=9 {
        call_u64(&mut store, &original, "step", Some(x * 7919));
    }
    set_nans(&mut store, &original);
    let pages_before = pages(&mut store, &original);
    assert!(pages_before > 1, "memory grew");

    let snap = snapshot(&mut store, &original, &layout);
    assert_eq!(snap.memories[0].len(), pages_before as usize * 65536);
    assert_eq!(snap.globals[0], 9);
    assert_eq!(
        snap.globals[2],
        u64::from(ODD_NAN32),
        "f32 NaN payload read bit-exactly"
    );
    assert_eq!(
        snap.globals[3], ODD_NAN64,
        "f64 NaN payload read bit-exactly"
    );
    assert_eq!(
        pages(&mut store, &original),
        pages_before,
        "snapshot did not grow memory"
    );

    // A fresh instance in a fresh store, restored.
    let (mut store2, restored) = instantiate(&engine, &linker, &component);
    assert_eq!(pages(&mut store2, &restored), 1);
    restore(&mut store2, &restored, &layout, &snap).unwrap();
    assert_eq!(
        pages(&mut store2, &restored),
        pages_before,
        "memory.size restored"
    );
    assert_eq!(
        snapshot(&mut store2, &restored, &layout),
        snap,
        "same bytes and globals"
    );
    assert_eq!(
        call_u64(&mut store2, &restored, "float-bits", None),
        call_u64(&mut store, &original, "float-bits", None),
        "NaN payloads visible to the guest are identical"
    );
    assert_eq!(
        call_u64(&mut store2, &restored, "checksum", None),
        call_u64(&mut store, &original, "checksum", None),
    );
    // They continue identically.
    for x in 10..=20 {
        assert_eq!(
            call_u64(&mut store2, &restored, "step", Some(x)),
            call_u64(&mut store, &original, "step", Some(x)),
            "step({x})"
        );
    }
    assert_eq!(
        snapshot(&mut store2, &restored, &layout),
        snapshot(&mut store, &original, &layout)
    );
}

#[test]
fn roundtrip_memory_exported_by_core_module() {
    roundtrip_single(true);
}

#[test]
fn roundtrip_memory_not_exported_by_core_module() {
    roundtrip_single(false);
}

#[test]
fn roundtrip_two_instances_and_multi_memory() {
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &multi_memory_component());
    let origins: Vec<(u32, u32, u32)> = layout
        .memories
        .iter()
        .map(|m| (m.origin.module, m.origin.instance, m.origin.index))
        .collect();
    assert_eq!(origins, [(0, 0, 0), (1, 1, 0), (1, 1, 1)]);
    let globals: Vec<(u32, GlobalType)> = layout
        .globals
        .iter()
        .map(|g| (g.origin.instance, g.ty))
        .collect();
    assert_eq!(globals, [(0, GlobalType::I32), (1, GlobalType::I64)]);

    let (mut store, original) = instantiate(&engine, &linker, &component);
    for x in 1..=12 {
        call_u64(&mut store, &original, "step-a", Some(x));
        call_u64(&mut store, &original, "step-b", Some(x));
    }
    let snap = snapshot(&mut store, &original, &layout);
    assert_eq!(snap.memories[1].len(), 65536);
    assert_eq!(
        snap.memories[2].len(),
        (2 + 2) * 65536,
        "second memory grew twice"
    );

    let (mut store2, restored) = instantiate(&engine, &linker, &component);
    restore(&mut store2, &restored, &layout, &snap).unwrap();
    assert_eq!(snapshot(&mut store2, &restored, &layout), snap);
    for x in 13..=30 {
        for f in ["step-a", "step-b"] {
            assert_eq!(
                call_u64(&mut store2, &restored, f, Some(x)),
                call_u64(&mut store, &original, f, Some(x)),
                "{f}({x})"
            );
        }
    }
    assert_eq!(
        snapshot(&mut store2, &restored, &layout),
        snapshot(&mut store, &original, &layout)
    );
}

#[test]
fn snapshot_does_not_perturb() {
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &single_memory_component(false));
    let (mut store_a, a) = instantiate(&engine, &linker, &component);
    let (mut store_b, b) = instantiate(&engine, &linker, &component);
    let mut snaps = 0;
    for x in 1..=40u32 {
        let ra = call_u64(&mut store_a, &a, "step", Some(x));
        let rb = call_u64(&mut store_b, &b, "step", Some(x));
        assert_eq!(ra, rb, "step({x})");
        // Snapshot `a` after every call, several times.
        for _ in 0..3 {
            snapshot(&mut store_a, &a, &layout);
            snaps += 1;
        }
        assert_eq!(pages(&mut store_a, &a), pages(&mut store_b, &b));
    }
    assert_eq!(
        call_u64(&mut store_a, &a, "checksum", None),
        call_u64(&mut store_b, &b, "checksum", None)
    );
    let pages_b = pages(&mut store_b, &b);
    // Compare the final bytes (reading `b` once, at the very end).
    let final_a = snapshot(&mut store_a, &a, &layout);
    let final_b = snapshot(&mut store_b, &b, &layout);
    assert_eq!(final_a, final_b);
    assert_eq!(final_b.memories[0].len(), pages_b as usize * 65536);
    assert_eq!(store_a.data().put_calls, snaps + 1);
}

#[test]
fn restore_refuses_a_larger_fresh_memory() {
    // A snapshot smaller than the fresh instance's memory cannot be
    // restored (memory cannot shrink): the realloc traps instead of leaving
    // a stale tail.
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &single_memory_component(false));
    let (mut store, inst) = instantiate(&engine, &linker, &component);
    let mut snap = snapshot(&mut store, &inst, &layout);
    snap.memories[0].truncate(0);
    let (mut store2, fresh) = instantiate(&engine, &linker, &component);
    call_u64(&mut store2, &fresh, "step", Some(1)); // grows to 2 pages
    let mut one_page = snap.clone();
    one_page.memories[0] = vec![0; 65536];
    assert!(restore(&mut store2, &fresh, &layout, &one_page).is_err());

    // Not a whole number of pages: refused too.
    let (mut store3, fresh) = instantiate(&engine, &linker, &component);
    let mut ragged = snap;
    ragged.memories[0] = vec![0; 65536 + 1];
    assert!(restore(&mut store3, &fresh, &layout, &ragged).is_err());
}

#[test]
fn unchanged_behaviour_and_interface() {
    // The instrumented component keeps its exports and imports and adds
    // exactly the two snapshot instances.
    let engine = engine();
    let original = single_memory_component(true);
    let instrumented = instrument(&original).unwrap().component;
    let a = Component::new(&engine, &original).unwrap();
    let b = Component::new(&engine, &instrumented).unwrap();
    let names = |c: &Component| {
        let ty = c.component_type();
        let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_owned()).collect();
        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_owned()).collect();
        (imports, exports)
    };
    let (ia, ea) = names(&a);
    let (ib, eb) = names(&b);
    assert_eq!(
        ib,
        [ia.clone(), vec![weir_snapshot::HOST_INSTANCE.to_owned()]].concat()
    );
    assert_eq!(
        eb,
        [ea.clone(), vec![weir_snapshot::ACCESS_INSTANCE.to_owned()]].concat()
    );

    // Same results call for call (the original needs no host import).
    let mut store_a = store(&engine, Host::default());
    let inst_a = Linker::<Host>::new(&engine)
        .instantiate(&mut store_a, &a)
        .unwrap();
    let linker = linker(&engine);
    let (mut store_b, inst_b) = instantiate(&engine, &linker, &b);
    for x in 0..50 {
        assert_eq!(
            call_u64(&mut store_a, &inst_a, "step", Some(x)),
            call_u64(&mut store_b, &inst_b, "step", Some(x))
        );
    }
}

#[test]
fn component_without_memory_or_globals() {
    let bytes = wat::parse_str(
        r#"(component
          (core module $m (func (export "f") (result i32) i32.const 5))
          (core instance $i (instantiate $m))
          (func (export "f") (result u32) (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &bytes);
    assert!(layout.memories.is_empty() && layout.globals.is_empty());
    let (mut store, inst) = instantiate(&engine, &linker, &component);
    assert_eq!(
        snapshot(&mut store, &inst, &layout),
        Snapshot {
            memories: vec![],
            globals: vec![]
        }
    );
    let f = inst.get_typed_func::<(), (u32,)>(&mut store, "f").unwrap();
    assert_eq!(f.call(&mut store, ()).unwrap().0, 5);
}

#[test]
fn module_without_export_section_and_with_start() {
    // The core module has no export section at all (one is inserted), a
    // start function that writes memory and a global, and an imported
    // function that shifts the function index space.
    let bytes = wat::parse_str(
        r#"(component
          (core module $lib (func (export "seven") (result i32) i32.const 7))
          (core instance $l (instantiate $lib))
          (core module $m
            (import "lib" "seven" (func $seven (result i32)))
            (memory 2)
            (global $g (mut i32) (i32.const 0))
            (start $init)
            (func $init
              (global.set $g (call $seven))
              (i32.store (i32.const 65540) (i32.const 0x01020304))))
          (core instance $i (instantiate $m (with "lib" (instance $l))))
        )"#,
    )
    .unwrap();
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &bytes);
    assert_eq!(layout.memories.len(), 1);
    assert_eq!(layout.memories[0].origin.instance, 1);
    let (mut store, inst) = instantiate(&engine, &linker, &component);
    let snap = snapshot(&mut store, &inst, &layout);
    assert_eq!(snap.globals, [7]);
    assert_eq!(snap.memories[0].len(), 2 * 65536);
    assert_eq!(snap.memories[0][65540..65544], [4, 3, 2, 1]);
}

// ---------------------------------------------------------------- refusals

fn refusal(text: &str) -> String {
    let bytes = wat::parse_str(text).unwrap();
    match instrument(&bytes) {
        Ok(_) => panic!("instrumented, expected a refusal:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn module_component(body: &str) -> String {
    format!(
        "(component (core module $unused) (core module $m {body}) (core instance (instantiate $m)))"
    )
}

#[test]
fn refuses_shared_memory() {
    let msg = refusal(&module_component("(memory 1 1 shared)"));
    assert_eq!(
        msg,
        "core module 1, memory 0: shared memories are not supported (a snapshot of memory \
         other threads may write is not consistent)"
    );
}

#[test]
fn refuses_memory64() {
    let msg = refusal(&module_component("(memory 1) (memory i64 1)"));
    assert!(
        msg.starts_with("core module 1, memory 1: 64-bit memories (memory64) are not supported"),
        "{msg}"
    );
}

#[test]
fn refuses_custom_page_size() {
    let msg = refusal(&module_component("(memory 1 (pagesize 1))"));
    assert!(
        msg.starts_with("core module 1, memory 0: custom page size 2^0 is not supported"),
        "{msg}"
    );
}

#[test]
fn refuses_reference_and_v128_globals() {
    let msg = refusal(&module_component(
        "(global (mut i32) (i32.const 0)) (global (mut funcref) (ref.null func))",
    ));
    assert!(
        msg.starts_with("core module 1, global 1: mutable global of type funcref is not supported"),
        "{msg}"
    );
    let msg = refusal(&module_component(
        "(global (mut v128) (v128.const i64x2 0 0))",
    ));
    assert!(
        msg.starts_with("core module 1, global 0: mutable global of type v128 is not supported"),
        "{msg}"
    );
    // Immutable ones are fine.
    let bytes = wat::parse_str(module_component(
        "(global funcref (ref.null func)) (global v128 (v128.const i64x2 0 0))",
    ))
    .unwrap();
    assert!(instrument(&bytes).unwrap().layout.globals.is_empty());
}

#[test]
fn refuses_table_mutation() {
    for (body, insn) in [
        ("(table.set (i32.const 0) (ref.null func))", "table.set"),
        (
            "(drop (table.grow (ref.null func) (i32.const 1)))",
            "table.grow",
        ),
        (
            "(table.fill (i32.const 0) (ref.null func) (i32.const 1))",
            "table.fill",
        ),
        (
            "(table.copy (i32.const 0) (i32.const 0) (i32.const 0))",
            "table.copy",
        ),
        (
            "(table.init $e (i32.const 0) (i32.const 0) (i32.const 0))",
            "table.init",
        ),
    ] {
        let msg = refusal(&module_component(&format!(
            r#"(table 2 funcref)
               (elem $e func 0)
               (func)
               (func)
               (func {body})"#
        )));
        assert_eq!(
            msg,
            format!(
                "core module 1, function 2: `{insn}` mutates a table, and tables are not part of \
                 a snapshot (only what instantiation puts in a table is restored)"
            )
        );
    }
    // Function indices count imported functions.
    let msg = refusal(
        r#"(component
          (core module $lib (func (export "f")))
          (core instance $l (instantiate $lib))
          (core module $m
            (import "lib" "f" (func))
            (table 1 funcref)
            (elem declare func 0)
            (func (table.set (i32.const 0) (ref.func 0))))
          (core instance (instantiate $m (with "lib" (instance $l)))))"#,
    );
    assert!(
        msg.starts_with("core module 1, function 1: `table.set`"),
        "{msg}"
    );

    // A table filled only by an active element segment, read by
    // call_indirect, is fine.
    let bytes = wat::parse_str(module_component(
        r#"(table 1 funcref) (elem (i32.const 0) func 0)
           (func (result i32) i32.const 1)
           (func (result i32) (call_indirect (result i32) (i32.const 0)))
           (export "t" (table 0))"#,
    ))
    .unwrap();
    instrument(&bytes).unwrap();
}

#[test]
fn refuses_segment_drop() {
    let msg = refusal(&module_component(
        r#"(memory 1) (data $d "abc") (func (data.drop $d))"#,
    ));
    assert!(
        msg.starts_with("core module 1, function 0: `data.drop` drops a segment"),
        "{msg}"
    );
    let msg = refusal(&module_component("(elem $e func) (func (elem.drop $e))"));
    assert!(
        msg.starts_with("core module 1, function 0: `elem.drop` drops a segment"),
        "{msg}"
    );
}

#[test]
fn refuses_gc_types() {
    let msg = refusal(&module_component(
        "(type (func)) (type (struct (field (mut i32))))",
    ));
    assert_eq!(
        msg,
        "core module 1, type 1: struct types are not supported (GC objects and continuations \
         live outside linear memory and are not part of a snapshot)"
    );
}

#[test]
fn refuses_module_instantiated_twice() {
    let msg = refusal(
        "(component (core module $m (memory 1))
           (core instance (instantiate $m))
           (core instance (instantiate $m)))",
    );
    assert_eq!(
        msg,
        "core module 0 is instantiated twice (core instances 0 and 1); each core module must be \
         instantiated at most once"
    );
}

#[test]
fn refuses_imported_module() {
    let msg =
        refusal("(component (import \"m\" (core module $m)) (core instance (instantiate $m)))");
    assert_eq!(
        msg,
        "core instance 0 instantiates core module 0, which is imported; only core modules \
         defined inside the component can be instrumented"
    );
}

#[test]
fn refuses_nested_component_with_modules() {
    let msg = refusal(
        "(component
           (component $empty)
           (component $inner (core module $m) (core instance (instantiate $m))))",
    );
    assert_eq!(
        msg,
        "nested component 1 defines a core module; core instances inside nested components are \
         not supported (their state cannot be reached)"
    );
    // Nested components without core modules are fine.
    let bytes = wat::parse_str(
        r#"(component
             (core module $m (memory 1) (func (export "f") (result i32) i32.const 1))
             (core instance $i (instantiate $m))
             (func $f (result u32) (canon lift (core func $i "f")))
             (component $wrap
               (import "f" (func $g (result u32)))
               (export "g" (func $g)))
             (instance $w (instantiate $wrap (with "f" (func $f))))
             (export "w" (instance $w)))"#,
    )
    .unwrap();
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &bytes);
    assert_eq!(layout.memories.len(), 1);
    let (mut store, inst) = instantiate(&engine, &linker, &component);
    let w = inst.get_export_index(&mut store, None, "w").unwrap();
    let g = inst.get_export_index(&mut store, Some(&w), "g").unwrap();
    let g = inst.get_typed_func::<(), (u32,)>(&mut store, &g).unwrap();
    assert_eq!(g.call(&mut store, ()).unwrap().0, 1);
}

#[test]
fn refuses_async_builtins() {
    let msg = refusal("(component (core func (canon waitable-set.new)))");
    assert_eq!(
        msg,
        "canonical function 0 (WaitableSetNew) is not supported: component-model async and \
         threads keep state (tasks, waitables, streams, futures, threads) in the runtime, \
         outside the core instances"
    );
}

#[test]
fn refuses_core_module_and_reinstrumentation() {
    let core = wat::parse_str("(module)").unwrap();
    assert!(matches!(
        instrument(&core),
        Err(InstrumentError::CoreModule)
    ));
    let once = instrument(&single_memory_component(false))
        .unwrap()
        .component;
    let msg = instrument(&once).unwrap_err().to_string();
    assert!(
        msg.starts_with("component is already instrumented"),
        "{msg}"
    );
    assert!(matches!(
        instrument(b"\0asm garbage"),
        Err(InstrumentError::Invalid(_))
    ));
}
