//! The SDK's hand-written canonical ABI for `process` (`src/abi.rs`)
//! against wasmtime's: builds `tests/echo` for `wasm32-wasip2` and
//! checks that keys, values, timestamps, headers, side outputs, large
//! outputs and rejections all round-trip, over batches of changing sizes
//! (so the input arena grows, overflows and is reused), through both
//! `handler.process` and `packed-handler.process-packed`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

#[path = "../../runtime/snapshot/tests/common/guest.rs"]
mod guest_build;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "../wit", world: "operator-packed" });

use weir::operator::types::{Header, Level, Record};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl weir::operator::types::Host for Host {}

impl weir::operator::host::Host for Host {
    fn log(&mut self, _level: Level, _message: String) {}
}

/// Builds `tests/echo` for `wasm32-wasip2` with the helper the snapshot
/// tests use for their guests (one copy of the cargo invocation).
fn echo_component() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/echo");
    guest_build::cargo_build_wasip2(&dir, "sdk-abi", &[]).join("weir_guest_test_echo.wasm")
}

type Row = (String, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn header_pairs(headers: &[Header]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// What `tests/echo` emits for `batch`, `seen` records in.
fn expected(batch: &[Record], seen: &mut u64) -> (Vec<Row>, Vec<(u32, String)>) {
    let mut outputs = Vec::new();
    let mut rejections = Vec::new();
    for (index, r) in batch.iter().enumerate() {
        *seen += 1;
        if r.value.starts_with(b"reject") {
            let reason = format!("rejected {}", String::from_utf8_lossy(&r.value));
            rejections.push((index as u32, reason));
            continue;
        }
        let side = format!("n={seen} ts={:?}", r.timestamp_ms).into_bytes();
        outputs.push(("side".into(), r.key.clone(), side, vec![]));
        if r.value.starts_with(b"big") {
            outputs.push((String::new(), None, vec![b'x'; 300_000], vec![]));
        }
        let mut headers = header_pairs(&r.headers);
        headers.push(("count".into(), seen.to_string().into_bytes()));
        outputs.push((String::new(), r.key.clone(), r.value.clone(), headers));
        if r.key.is_none() {
            outputs.push((String::new(), None, b"no key".to_vec(), vec![]));
        }
    }
    (outputs, rejections)
}

fn record(i: usize, round: usize) -> Record {
    let long = vec![b'h'; i * 13 % 50];
    let value = match i % 9 {
        0 => b"reject-me".to_vec(),
        1 => b"big".to_vec(),
        2 => Vec::new(),
        3 => vec![b'v'; (i * 997 + round * 131) % 70_000],
        _ => format!("value-{round}-{i}").into_bytes(),
    };
    let headers: Vec<(&str, &[u8])> = match i % 4 {
        0 => vec![],
        1 => vec![("a", b"1")],
        2 => vec![("a", b""), ("bb", &long)],
        _ => vec![("", b"z"), ("x", &long), ("ключ", b"2")],
    };
    Record {
        key: (!i.is_multiple_of(3)).then(|| format!("key{i}").into_bytes()),
        value,
        timestamp_ms: (!i.is_multiple_of(5)).then_some(-(i as i64) * 1000 + round as i64),
        headers: headers
            .into_iter()
            .map(|(name, value)| Header {
                name: name.to_owned(),
                value: value.to_vec(),
            })
            .collect(),
    }
}

/// `batch` in the grammar documented in `wit/packed.wit` (written from that
/// text, independently of weir's encoder).
fn pack(batch: &[Record]) -> Vec<u8> {
    fn list(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = (batch.len() as u32).to_le_bytes().to_vec();
    for r in batch {
        out.push(u8::from(r.key.is_some()) | (u8::from(r.timestamp_ms.is_some()) << 1));
        if let Some(ts) = r.timestamp_ms {
            out.extend_from_slice(&ts.to_le_bytes());
        }
        if let Some(key) = &r.key {
            list(&mut out, key);
        }
        list(&mut out, &r.value);
        out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for h in &r.headers {
            list(&mut out, h.name.as_bytes());
            list(&mut out, &h.value);
        }
    }
    out
}

/// Decodes a `process-packed` result (grammar of `wit/packed.wit`).
fn unpack_result(mut bytes: &[u8]) -> (Vec<Row>, Vec<(u32, String)>) {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, tail) = b.split_at(n);
        *b = tail;
        head
    }
    fn u32_(b: &mut &[u8]) -> u32 {
        u32::from_le_bytes(take(b, 4).try_into().unwrap())
    }
    fn list(b: &mut &[u8]) -> Vec<u8> {
        let n = u32_(b) as usize;
        take(b, n).to_vec()
    }
    fn string(b: &mut &[u8]) -> String {
        String::from_utf8(list(b)).unwrap()
    }
    let b = &mut bytes;
    let outputs = (0..u32_(b))
        .map(|_| {
            let flags = take(b, 1)[0];
            assert!(flags <= 1, "output flags {flags}");
            let sink = string(b);
            let key = (flags == 1).then(|| list(b));
            let value = list(b);
            let headers = (0..u32_(b)).map(|_| (string(b), list(b))).collect();
            (sink, key, value, headers)
        })
        .collect();
    let rejections = (0..u32_(b)).map(|_| (u32_(b), string(b))).collect();
    assert!(bytes.is_empty(), "{} trailing bytes", bytes.len());
    (outputs, rejections)
}

#[test]
fn process_round_trips_every_field() {
    let mut config = Config::new();
    config.wasm_component_model(true).consume_fuel(true);
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, echo_component()).unwrap();
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    // `tests/echo` imports only `host` (and `types`); `recorded` stays
    // unlinked.
    weir::operator::host::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h).unwrap();
    let host = Host {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&engine, host);
    store.set_fuel(u64::MAX).unwrap();
    let op = OperatorPacked::instantiate(&mut store, &component, &linker).unwrap();
    let handler = op.weir_operator_handler();
    let packed = op.weir_operator_packed_handler();
    handler.call_init(&mut store, &[]).unwrap().unwrap();

    let mut seen = 0;
    for round in 0..60 {
        // 1..=40 records, some with values far larger than the arena.
        let batch: Vec<Record> = (0..round * 7 % 40 + 1).map(|i| record(i, round)).collect();
        // Both exports, alternately, on one instance: same state, same
        // results.
        let (got, got_rejections) = if round % 2 == 0 {
            let result = handler.call_process(&mut store, &batch).unwrap();
            let outputs = result
                .outputs
                .iter()
                .map(|o| {
                    let headers = header_pairs(&o.headers);
                    (o.sink.clone(), o.key.clone(), o.value.clone(), headers)
                })
                .collect();
            let rejections = result
                .rejections
                .iter()
                .map(|r| (r.index, r.reason.clone()))
                .collect();
            (outputs, rejections)
        } else {
            let result = packed
                .call_process_packed(&mut store, &pack(&batch))
                .unwrap();
            unpack_result(&result)
        };
        let (outputs, rejections) = expected(&batch, &mut seen);
        assert_eq!(got.len(), outputs.len(), "round {round}");
        for (got, want) in got.iter().zip(&outputs) {
            assert_eq!(got, want, "round {round}");
        }
        assert_eq!(got_rejections, rejections, "round {round}");
    }
    // A second `init` (a host breaking the contract) traps instead of
    // freeing arena memory as if it were heap memory.
    assert!(handler.call_init(&mut store, &[]).is_err());

    // Config keys are still checked by the wit-bindgen `init` glue.
    let mut store2 = Store::new(
        &engine,
        Host {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    store2.set_fuel(u64::MAX).unwrap();
    let op = OperatorPacked::instantiate(&mut store2, &component, &linker).unwrap();
    let err = op
        .weir_operator_handler()
        .call_init(&mut store2, &[("x".into(), "1".into())])
        .unwrap()
        .unwrap_err();
    assert!(err.contains("unknown config key `x`"), "{err}");
}
