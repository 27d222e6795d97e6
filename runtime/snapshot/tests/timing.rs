//! Timings (printed, not asserted): instrumenting real components, and
//! snapshot/restore of a 64 MiB memory. Run with `--nocapture`; numbers
//! from a `--release` run are the meaningful ones.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{Host, engine, linker, load, restore, snapshot, store};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

const PAGES: u32 = 1024; // 64 MiB

#[test]
fn timing_64_mib() {
    let wat = format!(
        r#"(component
          (core module $m
            (memory 1)
            (global $seed (mut i64) (i64.const 0x9e3779b97f4a7c15))
            ;; grows to {PAGES} pages and fills every word
            (func (export "fill")
              (local $p i32) (local $end i32)
              (drop (memory.grow (i32.sub (i32.const {PAGES}) (memory.size))))
              (local.set $end (i32.shl (memory.size) (i32.const 16)))
              (block $done (loop $next
                (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
                (global.set $seed (i64.add (i64.mul (global.get $seed) (i64.const 6364136223846793005))
                                           (i64.const 1442695040888963407)))
                (i64.store (local.get $p) (global.get $seed))
                (local.set $p (i32.add (local.get $p) (i32.const 8)))
                (br $next))))
            (func (export "peek") (param $p i32) (result i64) (i64.load (local.get $p))))
          (core instance $i (instantiate $m))
          (func (export "fill") (canon lift (core func $i "fill")))
          (func (export "peek") (param "p" u32) (result u64) (canon lift (core func $i "peek"))))"#
    );
    let bytes = wat::parse_str(&wat).unwrap();
    let engine = engine();
    let linker = linker(&engine);
    let (component, layout) = load(&engine, &bytes);

    let mut st = store(&engine, Host::default());
    let inst = linker.instantiate(&mut st, &component).unwrap();
    let fill = inst.get_typed_func::<(), ()>(&mut st, "fill").unwrap();
    fill.call(&mut st, ()).unwrap();

    // Snapshot: the guest passes its memory in place; the host copies it
    // into a Vec (what a checkpoint writer would hash or compress).
    let mut snap = None;
    let mut best_snapshot = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        snap = Some(snapshot(&mut st, &inst, &layout));
        best_snapshot = best_snapshot.min(t.elapsed().as_secs_f64() * 1e3);
    }
    let snap = snap.unwrap();
    assert_eq!(snap.memories[0].len(), PAGES as usize * 65536);

    // The same read with the host only scanning the guest memory in place
    // (what hashing pages for an incremental checkpoint would start from).
    let mut in_place = Linker::<Host>::new(&engine);
    in_place
        .instance(weir_snapshot::HOST_INSTANCE)
        .unwrap()
        .func_wrap(
            weir_snapshot::PUT_MEMORY,
            |mut cx: StoreContextMut<'_, Host>, (_, data): (u32, WasmList<u8>)| {
                let sum = data
                    .as_le_slice(&cx)
                    .chunks_exact(8)
                    .fold(0u64, |a, w| a ^ u64::from_le_bytes(w.try_into().unwrap()));
                cx.data_mut().put_calls += usize::from(sum == 1);
                Ok(())
            },
        )
        .unwrap();
    let mut st3 = store(&engine, Host::default());
    let inst3 = in_place.instantiate(&mut st3, &component).unwrap();
    let fill3 = inst3.get_typed_func::<(), ()>(&mut st3, "fill").unwrap();
    fill3.call(&mut st3, ()).unwrap();
    let access = inst3
        .get_export_index(&mut st3, None, weir_snapshot::ACCESS_INSTANCE)
        .unwrap();
    let f = inst3
        .get_export_index(&mut st3, Some(&access), &layout.memories[0].snapshot_func())
        .unwrap();
    let f = inst3.get_typed_func::<(), ()>(&mut st3, &f).unwrap();
    let mut best_scan = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f.call(&mut st3, ()).unwrap();
        best_scan = best_scan.min(t.elapsed().as_secs_f64() * 1e3);
    }

    let mut best_restore = f64::MAX;
    let mut best_instantiate = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut st2 = store(&engine, Host::default());
        let fresh = linker.instantiate(&mut st2, &component).unwrap();
        best_instantiate = best_instantiate.min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        restore(&mut st2, &fresh, &layout, &snap).unwrap();
        best_restore = best_restore.min(t.elapsed().as_secs_f64() * 1e3);
        if std::env::var_os("TIMING_DETAIL").is_some() {
            let t = Instant::now();
            restore(&mut st2, &fresh, &layout, &snap).unwrap();
            println!(
                "second restore into the same instance: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        let peek = fresh
            .get_typed_func::<(u32,), (u64,)>(&mut st2, "peek")
            .unwrap();
        let want = u64::from_le_bytes(snap.memories[0][8_000_000..8_000_008].try_into().unwrap());
        assert_eq!(peek.call(&mut st2, (8_000_000,)).unwrap().0, want);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "[{profile}] 64 MiB: snapshot (incl. copy to a host Vec) {best_snapshot:.1} ms, \
         snapshot scanned in place {best_scan:.1} ms, instantiate fresh \
         {best_instantiate:.2} ms, restore {best_restore:.1} ms (best of 5)"
    );
}

#[test]
fn timing_instrument_real_components() {
    let guest = common::guest::test_guest();
    let t = Instant::now();
    let out = weir_snapshot::instrument(guest).unwrap();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "[{profile}] instrument test guest ({} KiB -> {} KiB): {:.1} ms",
        guest.len() / 1024,
        out.component.len() / 1024,
        t.elapsed().as_secs_f64() * 1e3
    );
}
