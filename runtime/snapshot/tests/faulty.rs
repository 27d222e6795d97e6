//! weir's real `faulty` operator (operators/faulty, built for wasm32-wasip2
//! from the workspace), called through `weir:operator/handler@0.1.0`:
//! process batches, snapshot, restore into a fresh instance, continue, and
//! compare with an instance that was never interrupted.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Host, engine, load, restore, snapshot, store};
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};
use weir_snapshot::wasi::{check_handles, rebuild_handles};

wasmtime::component::bindgen!({
    path: "../../wit/operator.wit",
    world: "weir:operator/operator",
    additional_derives: [PartialEq],
});

use weir::operator::types::{BatchResult, Level, Record};

impl weir::operator::types::Host for Host {}

impl weir::operator::host::Host for Host {
    fn log(&mut self, level: Level, message: String) {
        self.logs.push(format!("{level:?}: {message}"));
    }
}

fn faulty_wasm() -> Vec<u8> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = common::guest::cargo_build_wasip2(
        &workspace,
        "faulty",
        &["-p", "weir-op-faulty", "--locked"],
    );
    std::fs::read(out.join("weir_op_faulty.wasm")).unwrap()
}

struct Op {
    store: Store<Host>,
    op: Operator,
    instance: wasmtime::component::Instance,
}

impl Op {
    fn new(
        engine: &wasmtime::Engine,
        linker: &Linker<Host>,
        component: &wasmtime::component::Component,
    ) -> Op {
        let (host, _pipes) = common::wasi_host();
        let mut store = store(engine, host);
        let instance = linker.instantiate(&mut store, component).unwrap();
        let op = Operator::new(&mut store, &instance).unwrap();
        Op {
            store,
            op,
            instance,
        }
    }

    fn init(&mut self) {
        self.op
            .weir_operator_handler()
            .call_init(&mut self.store, &[])
            .unwrap()
            .unwrap();
    }

    fn process(&mut self, values: &[&str]) -> BatchResult {
        let batch: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: v.as_bytes().to_vec(),
                timestamp_ms: Some(1_700_000_000_000 + i as i64),
                headers: vec![],
            })
            .collect();
        self.op
            .weir_operator_handler()
            .call_process(&mut self.store, &batch)
            .unwrap()
    }
}

#[test]
fn faulty_operator_roundtrip() {
    let engine = engine();
    let mut linker = common::wasi_linker(&engine);
    // `faulty` imports only `host` (and `types`); `recorded` stays unlinked.
    weir::operator::host::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h).unwrap();
    let wasm = faulty_wasm();
    let t = std::time::Instant::now();
    weir_snapshot::instrument(&wasm).unwrap();
    println!(
        "instrument faulty ({} KiB): {:.1} ms",
        wasm.len() / 1024,
        t.elapsed().as_secs_f64() * 1e3
    );
    let (component, layout) = load(&engine, &wasm);
    println!(
        "faulty: {} memories, {} globals, {} imported resource types",
        layout.memories.len(),
        layout.globals.len(),
        layout.resources.len()
    );

    let mut reference = Op::new(&engine, &linker, &component);
    let mut original = Op::new(&engine, &linker, &component);
    reference.init();
    original.init();
    let before: &[&[&str]] = &[
        &["a", "b", "log:hello", "reject", "c"],
        &["d"; 50],
        &["reject", "e", "log:again"],
    ];
    for batch in before {
        assert_eq!(original.process(batch), reference.process(batch));
    }

    // weir-guest logs through weir's host interface, not stdio: no WASI
    // handle is held between calls.
    let journal = check_handles(original.store.data_mut()).unwrap();
    assert_eq!(journal, []);
    let snap = snapshot(&mut original.store, &original.instance, &layout);

    let mut restored = Op::new(&engine, &linker, &component);
    rebuild_handles(&mut restored.store, &restored.instance, &layout, &journal).unwrap();
    restore(&mut restored.store, &restored.instance, &layout, &snap).unwrap();

    let after: &[&[&str]] = &[&["f", "log:after", "reject"], &["g"; 20], &["h"]];
    for batch in after {
        let expect = reference.process(batch);
        assert_eq!(restored.process(batch), expect);
        assert_eq!(original.process(batch), expect);
    }
    let last = restored.process(&["z"]);
    assert_eq!(last, reference.process(&["z"]));
    assert_eq!(last, original.process(&["z"]));
    assert_eq!(
        last.outputs[0].value,
        b"seen 80: z".to_vec(),
        "the count survived the restore"
    );
    assert_eq!(restored.store.data().logs, ["Level::Info: after"]);

    // Byte-identical memory and globals with the uninterrupted instance.
    let want = snapshot(&mut reference.store, &reference.instance, &layout);
    assert_eq!(
        snapshot(&mut restored.store, &restored.instance, &layout),
        want
    );
    assert_eq!(
        snapshot(&mut original.store, &original.instance, &layout),
        want
    );
}
